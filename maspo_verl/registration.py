"""Registration of maspo-verl's extensions with verl: idempotent, polite and loud.

What is registered is the list ``EXTENSIONS``: the policy losses (maspo_verl.losses), the
hook around verl's ``ppo_loss`` (maspo_verl.hook, for advantage shapers and data-parallel
statistics), the `cpu` platform (maspo_verl.cpu_platform, used only with VERL_PLATFORM=cpu),
the `hf` rollout (maspo_verl.rollout), the Hydra search path to our presets (configs/) and
the `${maspo_kit:...}` config resolver of the tiny-model kit.

- Idempotent: registering twice (entry point, VERL_USE_EXTERNAL_MODULES, external_lib, an
  explicit call) is harmless.
- Polite: a name that verl (or another plugin) already owns is never replaced; we warn and
  leave theirs in place.
- Loud: verl imports plugins inside a try/except that logs at DEBUG, so a failure here would
  surface much later as "Unsupported loss mode: maspo". We print the traceback to stderr
  before re-raising.
"""

import sys
import traceback
import warnings

_registered = False


def _same_function(a, b) -> bool:
    """True when a and b are the same function, even if our module was imported twice."""
    return a is b or (
        getattr(a, "__module__", None) == getattr(b, "__module__", None)
        and getattr(a, "__qualname__", None) == getattr(b, "__qualname__", None)
    )


def register_policy_losses() -> list[str]:
    """Add our policy losses to verl's registry; returns the names now served by us."""
    from verl.trainer.ppo import core_algos

    from .losses import POLICY_LOSSES

    ours = []
    for name, fn in POLICY_LOSSES.items():
        existing = core_algos.POLICY_LOSS_REGISTRY.get(name)
        if existing is not None and not _same_function(existing, fn):
            warnings.warn(
                f"maspo-verl: verl already has a policy loss named '{name}' "
                f"({existing.__module__}.{existing.__qualname__}); keeping it and not registering ours.",
                stacklevel=2,
            )
            continue
        core_algos.register_policy_loss(name)(fn)
        ours.append(name)
    return ours


def register_hydra_search_path() -> None:
    """Make `+algorithm=<preset>` work in stock verl Hydra apps.

    Hydra finds `hydra_plugins/maspo_verl` by scanning a namespace package, which an
    editable install (setuptools' import finder) hides; registering the same class here, in
    every process that imports verl, works for both kinds of install.
    """
    from hydra_plugins.maspo_verl.searchpath import MaspoVerlSearchPathPlugin

    from .compat import register_hydra_plugin

    register_hydra_plugin(MaspoVerlSearchPathPlugin)


def _kit_path(name: str, task: str = "add") -> str:
    from .kit import build_kit

    kit = build_kit(task=task, log=lambda msg: print(f"[maspo kit] {msg}", file=sys.stderr))
    return str(getattr(kit, name))


def register_config_resolvers() -> None:
    """`${maspo_kit:model_dir}` (train_parquet, val_parquet, reward_path, reward_name), or
    `${maspo_kit:model_dir,chain}` for another kit task: the tiny-model kit's paths, built on first use. Registered in every verl process, since verl's TaskRunner
    resolves the config again on its side."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("maspo_kit"):
        OmegaConf.register_new_resolver("maspo_kit", _kit_path)


def register_ppo_loss_hook() -> None:
    from .compat import install_ppo_loss_hook
    from .hook import hooked_ppo_loss, measured_lookup

    install_ppo_loss_hook(hooked_ppo_loss, measured_lookup)


def register_cpu_platform() -> None:
    from .cpu_platform import register_cpu_platform as register

    register()


def register_hf_rollout() -> None:
    from .rollout import register_hf_rollout as register

    register()


# Everything registered in each process, in this order.
EXTENSIONS = [
    register_policy_losses,
    register_ppo_loss_hook,
    register_cpu_platform,
    register_hf_rollout,
    register_hydra_search_path,
    register_config_resolvers,
]


def register() -> None:
    """Register everything once per process; print the traceback and re-raise on failure."""
    global _registered
    if _registered:
        return
    try:
        for extension in EXTENSIONS:
            extension()
    except Exception:
        sys.stderr.write("maspo-verl: registration with verl FAILED; its losses and backends will not be available:\n")
        sys.stderr.write(traceback.format_exc())
        raise
    _registered = True
