"""Hydra search-path plugin: lets stock `python -m verl.trainer.main_ppo +algorithm=maspo` find
our presets. Hydra loads every plugin under the `hydra_plugins` namespace for every Hydra app
in the environment, so it points at `maspo_verl_configs`, a data-only package (YAML files,
no imports), and costs those apps nothing."""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class MaspoVerlSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append(provider="maspo-verl", path="pkg://maspo_verl_configs")
