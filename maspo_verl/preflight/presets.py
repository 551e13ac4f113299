"""Checks that the chosen preset, recipe and overlays run as their files say, on the driver before
Ray starts. `preflight`'s first step calls `check_presets_and_recipes(config)`; each check is
a function of its own, and each raises a ValueError naming the setting, its value and what is allowed.

- `check_loss_registered`: the preset's loss is registered in this process. verl's own losses come
  and go with its releases (`VERL_LOSS_RELEASES`, read from verl's release tags): a missing one is
  refused naming the loss, the installed verl and the releases that register it. verl itself would
  only fail inside an actor worker, after the cluster and the GPUs are up.
- `check_recipe_and_preset_disjoint`: the chosen recipe sets no key that the chosen preset sets.
  `maspo_verl.main_ppo` (and so the shell recipes and the benchmark) composes the preset after the
  recipe, so the preset's value would win and the recipe's be dropped without a word; stock verl
  composes them in the order of the `+` overrides, so there either may be dropped. A recipe's
  value for one method belongs in its `size_settings`, which the preset reads
  (docs/reproducing.md, "Settings that depend on the model size").
- `check_rollout_correction_has_log_probs`: verl's rollout correction runs only on batches that
  carry the rollout's log-probs; without `actor_rollout_ref.rollout.calculate_log_probs` verl's
  trainer skips its importance weights and rejection sampling without a word.
"""

from __future__ import annotations

import functools
import weakref

from omegaconf import OmegaConf

POLICY_LOSS = "actor_rollout_ref.actor.policy_loss"
CORRECTION = "algorithm.rollout_correction"

# verl's own policy losses: the first and the last verl release whose registry has each (None:
# every release since, up to LAST_CHECKED), read from verl/trainer/ppo/core_algos.py at the
# release tags v0.4.0 to v0.9.0 and in the installed 0.9.1. Before 0.6.0, `vanilla` ran outside
# the registry; `rollout_correction` was renamed `bypass_mode` in 0.7.0.
LAST_CHECKED = "0.9.1"
VERL_LOSS_RELEASES = {
    "clip_cov": ("0.4.1", None),
    "kl_cov": ("0.4.1", None),
    "gpg": ("0.5.0", None),
    "vanilla": ("0.6.0", None),
    "gspo": ("0.6.0", None),
    "geo_mean": ("0.6.0", None),
    "rollout_correction": ("0.6.1", "0.6.1"),
    "sapo": ("0.7.0", None),
    "cispo": ("0.7.0", None),
    "bypass_mode": ("0.7.0", None),
    "dppo_tv": ("0.7.1", None),
    "dppo_kl": ("0.7.1", None),
    "dro": ("0.9.0", None),
}


# id(config) -> the config-group choices it was composed with, for configs composed with Hydra's
# compose API (maspo_verl.launch.compose_config), where no Hydra app holds them; dropped with the config
_COMPOSED_WITH: dict[int, dict] = {}


def remember_choices(config, choices) -> None:
    """Record which recipe, preset and overlays a config was composed with."""
    _COMPOSED_WITH[id(config)] = {group: choice for group, choice in choices.items() if choice is not None}
    weakref.finalize(config, _COMPOSED_WITH.pop, id(config), None)


def chosen_configs(config) -> dict:
    """The config-group choices (`recipe`, `algorithm`, ...) the config was composed with: recorded by
    `remember_choices`, or the running Hydra app's (`maspo_verl.main_ppo`); empty when unknown (a
    config composed some other way), and then the checks that need them have nothing to check."""
    from hydra.core.hydra_config import HydraConfig

    if id(config) in _COMPOSED_WITH:
        return _COMPOSED_WITH[id(config)]
    if not HydraConfig.initialized():
        return {}
    return {group: choice for group, choice in HydraConfig.get().runtime.choices.items() if choice is not None}


def check_loss_registered(loss_mode: str, preset: str | None = None) -> None:
    import verl
    from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY

    from ..algos import LOSSES

    if loss_mode in POLICY_LOSS_REGISTRY:
        return
    setting = f"{POLICY_LOSS}.loss_mode={loss_mode!r}" + (f" (algorithm={preset})" if preset else "")
    installed = f"the installed verl {verl.__version__}"
    if loss_mode in {spec.name for spec in LOSSES}:
        raise ValueError(
            f"{setting} is maspo-verl's own loss, but it is not registered with {installed} in this process: "
            "the plugin's registration did not run or failed (its traceback is printed above). Check that "
            "`import maspo_verl; maspo_verl.register()` works in this environment."
        )
    known = f"Losses of {installed}: {', '.join(sorted(POLICY_LOSS_REGISTRY))}."
    if loss_mode not in VERL_LOSS_RELEASES:
        raise ValueError(f"{setting} is not a registered policy loss. {known}")
    first, last = VERL_LOSS_RELEASES[loss_mode]
    releases = f"{first} to {last or LAST_CHECKED}" if first != last else first
    raise ValueError(
        f"{setting} is a loss of verl's own that {installed} does not register: verl registers it in releases "
        f"{releases} (checked up to {LAST_CHECKED}; this package is tested with verl {LAST_CHECKED}). Install one "
        f"of those (pip install 'verl=={last or LAST_CHECKED}'), or choose another preset. {known}"
    )


@functools.cache
def own_settings(group: str, name: str) -> dict:
    """{key: value} of every leaf a config-group file sets, with the files its defaults list names,
    unresolved (configs/<group>/<name>.yaml, or any file of that group on Hydra's search path)."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():  # inside a Hydra app: its own search path
        config = compose(config_name=f"{group}/{name}")
    else:
        with initialize_config_module(config_module="maspo_verl_configs", version_base=None):
            config = compose(config_name=f"{group}/{name}")
    return leaves(OmegaConf.to_container(config, resolve=False))


def leaves(node, prefix: str = "") -> dict:
    """{"a.b.c": value} of a nested container (an empty mapping has no leaves)."""
    if not isinstance(node, dict):
        return {prefix: node}
    found = {}
    for key, value in node.items():
        found.update(leaves(value, f"{prefix}.{key}" if prefix else str(key)))
    return found


def check_recipe_and_preset_disjoint(recipe: str, preset: str) -> None:
    recipe_settings, preset_settings = own_settings("recipe", recipe), own_settings("algorithm", preset)
    clashes = {key: (value, preset_settings[key]) for key, value in recipe_settings.items()
               if key in preset_settings and preset_settings[key] != value}  # fmt: skip
    if not clashes:
        return
    key, (recipe_value, preset_value) = sorted(clashes.items())[0]
    raise ValueError(
        f"recipe={recipe} sets {key}={recipe_value!r}, and algorithm={preset} sets it too ({preset_value!r}): "
        "maspo_verl.main_ppo, the shell recipes and the benchmark compose the preset after the recipe, so the "
        "recipe's value would be dropped without a word (stock verl keeps whichever `+` override comes last). "
        "A recipe must not set a preset's key: put a value that depends on the model size under the recipe's "
        "size_settings and have the preset read it (docs/reproducing.md, 'Settings that depend on the model "
        f"size'), or override the key on the command line. Every clashing key: {sorted(clashes)}."
    )


def check_rollout_correction_has_log_probs(config) -> None:
    correction = OmegaConf.select(config, CORRECTION, default=None) or {}
    used = {key: correction.get(key) for key in ("rollout_is", "rollout_rs", "bypass_mode") if correction.get(key)}
    if not used or OmegaConf.select(config, "actor_rollout_ref.rollout.calculate_log_probs", default=False):
        return
    key, value = next(iter(used.items()))
    raise ValueError(
        f"{CORRECTION}.{key}={value!r} needs the rollout's own log-probs, but "
        "actor_rollout_ref.rollout.calculate_log_probs=False: verl's trainer then skips the rollout correction "
        "without a word (importance weights and rejection sampling), or fails after the cluster is up (bypass "
        "mode). Set actor_rollout_ref.rollout.calculate_log_probs=True, or use the overlays +correction=tis / "
        "+correction=icepop, which do (docs/algorithms.md, 'Rollout correction')."
    )


def check_presets_and_recipes(config) -> None:
    """Every check of this module on a composed config."""
    choices = chosen_configs(config)
    check_loss_registered(
        OmegaConf.select(config, f"{POLICY_LOSS}.loss_mode", default="vanilla"), choices.get("algorithm")
    )
    if "recipe" in choices and "algorithm" in choices:
        check_recipe_and_preset_disjoint(choices["recipe"], choices["algorithm"])
    check_rollout_correction_has_log_probs(config)


def presets_step(config, found: dict, dry_run: bool) -> dict:
    check_presets_and_recipes(config)
    return {}
