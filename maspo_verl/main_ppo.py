"""`python -m maspo_verl.main_ppo algorithm=<preset> <verl overrides>`: verl's own trainer.

The config is verl's ppo_trainer.yaml with our `algorithm` group on top (configs/); the run
itself is verl's `verl.trainer.main_ppo.main`, unchanged. Before handing over, on the driver:
the policy-loss config is checked (a misspelt key or bad value stops the run before Ray or any
GPU starts), the config is resolved (so the tiny kit, if used, is built here, in view), and
`trainer.device=cpu` selects our CPU platform for every process of the run.
"""

import contextlib
import os
import sys

import hydra
from omegaconf import OmegaConf

from .config import check_algorithm_config
from .preflight import dry_run, preflight
from .preflight_memory import GPU_MEMORY_ENV

# `--dry-run` (or MASPO_VERL_DRY_RUN=1): compose, check and build the configs, print, stop.
DRY_RUN_ENV = "MASPO_VERL_DRY_RUN"


def use_cpu_platform_if_asked(config) -> None:
    """verl 0.9 has no CPU platform; ours is chosen by env vars that Ray workers inherit."""
    if config.trainer.device == "cpu":
        from .cpu_platform import cpu_trainer_env

        for key, value in cpu_trainer_env().items():
            os.environ.setdefault(key, value)


def prepare(config) -> dict:
    """Everything done on the driver before verl takes over: checks, resolution, platform.
    Returns the environment every Ray worker gets (a tracker's key; never printed)."""
    import maspo_verl

    maspo_verl.register()
    check_algorithm_config(config)
    worker_env = preflight(config)["worker_env"]
    OmegaConf.resolve(config)
    use_cpu_platform_if_asked(config)
    return worker_env


@contextlib.contextmanager
def refusals_reported():
    """A refused setting (ValueError, or FileNotFoundError for a data file) ends the command with
    its message and exit status 2, not a traceback; HYDRA_FULL_ERROR=1 shows the traceback."""
    try:
        yield
    except (ValueError, FileNotFoundError) as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"maspo_verl: refused before Ray started:\n{error}", file=sys.stderr, flush=True)
        sys.exit(2)


@hydra.main(config_path="pkg://maspo_verl_configs", config_name="maspo_trainer", version_base=None)
def main(config):
    if os.environ.get(DRY_RUN_ENV) == "1":
        import maspo_verl

        maspo_verl.register()
        with refusals_reported():
            check_algorithm_config(config)
            OmegaConf.resolve(config)
            dry_run(config)
        return
    with refusals_reported():
        worker_env = prepare(config)

    from .compat import run_verl_main

    run_verl_main(config, worker_env)


def _take_flag_value(flag: str) -> str | None:
    """Remove `--flag VALUE` or `--flag=VALUE` from sys.argv and return VALUE (None if absent)."""
    for index, arg in enumerate(sys.argv):
        if arg == flag and index + 1 < len(sys.argv):
            del sys.argv[index]
            return sys.argv.pop(index)
        if arg.startswith(flag + "="):
            return sys.argv.pop(index).split("=", 1)[1]
    return None


def cli() -> None:
    """`python -m maspo_verl.main_ppo` and `maspo-verl-train`: Hydra rejects unknown flags, so
    `--dry-run` and `--gpu-memory-gb N` (the card the memory estimate checks against) become
    environment switches first."""
    if "--dry-run" in sys.argv:
        sys.argv.remove("--dry-run")
        os.environ[DRY_RUN_ENV] = "1"
    gpu_memory = _take_flag_value("--gpu-memory-gb")
    if gpu_memory is not None:
        os.environ[GPU_MEMORY_ENV] = gpu_memory
    main()


if __name__ == "__main__":
    cli()
