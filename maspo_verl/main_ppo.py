"""`python -m maspo_verl.main_ppo algorithm=<preset> <verl overrides>`: verl's own trainer.

The config is verl's ppo_trainer.yaml with our `algorithm` group on top (configs/); the run
itself is verl's `verl.trainer.main_ppo.main`, unchanged. Before handing over, on the driver:
the policy-loss config is checked (a misspelt key or bad value stops the run before Ray or any
GPU starts), the config is resolved (so the tiny kit, if used, is built here, in view), and
`trainer.device=cpu` selects our CPU platform for every process of the run.

A refusal of these checks prints its message and exits with status 2 (`maspo_verl.refusal`);
`--debug` or HYDRA_FULL_ERROR=1 shows the traceback instead.
"""

import os
import sys

import hydra
from omegaconf import OmegaConf

from .preflight import check_algorithm_config, dry_run, preflight
from .refusal import DEBUG_ENV, refusals

# `--dry-run` (or MASPO_VERL_DRY_RUN=1): compose, check and build the configs, print, stop.
DRY_RUN_ENV = "MASPO_VERL_DRY_RUN"
COMMAND = "maspo_verl.main_ppo"


def use_cpu_platform_if_asked(config) -> None:
    """verl 0.9 has no CPU platform; ours is chosen by env vars that Ray workers inherit."""
    if config.trainer.device == "cpu":
        from .cpu_platform import cpu_trainer_env

        for key, value in cpu_trainer_env().items():
            os.environ.setdefault(key, value)


def prepare(config) -> None:
    """Everything done on the driver before verl takes over: checks, resolution, platform."""
    import maspo_verl

    maspo_verl.register()
    check_algorithm_config(config)
    preflight(config)
    OmegaConf.resolve(config)
    use_cpu_platform_if_asked(config)


@hydra.main(config_path="pkg://maspo_verl_configs", config_name="maspo_trainer", version_base=None)
def main(config):
    with refusals(COMMAND):
        if os.environ.get(DRY_RUN_ENV) == "1":
            import maspo_verl

            maspo_verl.register()
            check_algorithm_config(config)
            OmegaConf.resolve(config)
            dry_run(config)
            return
        prepare(config)

    from .compat import run_verl_main

    # verl's own validate_config runs first, on the driver: a config class's refusal of a value
    # is one too (only that: whatever else fails in the run keeps its traceback)
    with refusals(COMMAND, kinds=()):
        run_verl_main(config)


def cli() -> None:
    """`python -m maspo_verl.main_ppo` and `maspo-verl-train`: Hydra rejects unknown flags, so
    `--dry-run` and `--debug` become their environment switches first."""
    for flag, env in (("--dry-run", DRY_RUN_ENV), ("--debug", DEBUG_ENV)):
        if flag in sys.argv:
            sys.argv.remove(flag)
            os.environ[env] = "1"
    main()


if __name__ == "__main__":
    cli()
