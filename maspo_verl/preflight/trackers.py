"""Trackers checked before Ray: a wandb run needs a key, and every Ray worker needs it.

verl 0.9.1 builds its trackers (`verl/utils/tracking.py`) inside the TaskRunner, a Ray actor,
after the models load and vLLM starts: a missing wandb login shows up only then. And verl's
runtime env does not forward `WANDB_API_KEY`: on a cluster started beforehand (`ray start` on
each node), a key exported only in the driver's shell never reaches that actor, which may run on
another node.

So, before Ray starts, with `wandb` in `trainer.logger` and `WANDB_MODE` not offline or disabled:
the driver must have a key, from `WANDB_API_KEY` or from `wandb login` (the `.netrc` entry for
`WANDB_BASE_URL`'s host, api.wandb.ai by default); without one the run is refused, naming both
fixes. The key found, and the driver's other `WANDB_*` settings, go into the job's runtime env,
which Ray applies to every worker on every node (`maspo_verl.compat.run_verl_main`): the key is
added to verl's own `ray.init` call after verl prints its arguments, so no log shows it, and it
never enters the config (which verl prints and uploads to wandb).
"""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from urllib.parse import urlsplit

WANDB_KEY = "WANDB_API_KEY"
WANDB_HOST = "https://api.wandb.ai"
# WANDB_MODE values under which wandb.init needs no key
KEYLESS_MODES = ("offline", "disabled", "dryrun")


class WorkerEnv(dict):
    """Environment variables for every Ray worker; printing it shows their names, never their values."""

    def __repr__(self) -> str:
        return f"WorkerEnv({', '.join(sorted(self))})"

    __str__ = __repr__


def _loggers(config) -> list[str]:
    logger = config.trainer.get("logger") or []
    return [logger] if isinstance(logger, str) else [str(item) for item in logger]


def netrc_path() -> Path:
    """Where `wandb login` stores the key: $NETRC, else ~/.netrc."""
    return Path(os.environ.get("NETRC") or Path.home() / ".netrc")


def wandb_host() -> str:
    url = os.environ.get("WANDB_BASE_URL") or WANDB_HOST
    return urlsplit(url if "//" in url else f"https://{url}").netloc


def wandb_key() -> tuple[str | None, str]:
    """(the key, where it came from), or (None, "") when this machine has none."""
    if os.environ.get(WANDB_KEY):
        return os.environ[WANDB_KEY], f"${WANDB_KEY}"
    path = netrc_path()
    try:
        entry = netrc.netrc(path).authenticators(wandb_host())
    except (OSError, netrc.NetrcParseError):
        entry = None
    if entry and entry[2]:
        return entry[2], f"{path} (wandb login)"
    return None, ""


def check_trackers(config) -> tuple[list[str], WorkerEnv]:
    """(lines for the dry run, the environment every Ray worker gets); refuses wandb without a key."""
    loggers = _loggers(config)
    if "wandb" not in loggers:
        return [f"trainer.logger={loggers}: no key needed"], WorkerEnv()
    env = WorkerEnv({name: value for name, value in os.environ.items() if name.startswith("WANDB_") and name != WANDB_KEY})  # fmt: skip
    mode = os.environ.get("WANDB_MODE", "")
    if mode in KEYLESS_MODES:
        return [f"wandb with WANDB_MODE={mode}: no key needed"], env
    key, source = wandb_key()
    if key is None:
        raise ValueError(
            f"trainer.logger={loggers} logs to wandb, but this machine has no wandb key: {WANDB_KEY} is not set and "
            f"{netrc_path()} has no entry for {wandb_host()}. verl would find out inside its TaskRunner, after the "
            f"models load and vLLM starts. Fix: run `wandb login` (it stores the key in {netrc_path()}), or "
            f"`export {WANDB_KEY}=<your key>` (https://wandb.ai/authorize); either way the run passes the key to "
            "every Ray worker. Without a wandb account: trainer.logger=[console,tensorboard] (LOGGERS=console,"
            "tensorboard for the shell recipes), or WANDB_MODE=offline."
        )
    env[WANDB_KEY] = key
    return [f"wandb: key from {source}, passed to every Ray worker in the job's runtime env (not shown)"], env


def trackers_step(config, found: dict, dry_run: bool) -> dict:
    lines, worker_env = check_trackers(config)
    return {"trackers": lines, "worker_env": worker_env}
