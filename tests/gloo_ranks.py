"""Run a test script as the ranks of a gloo group on this machine (two by default) and collect
what each prints.

Each rank runs `python <script> <args>` with RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT (and
any extra `env`) set and prints one line `RESULT_JSON <json>`. A rank that fails, or does not
finish in time (a hung collective), fails the test instead of hanging it.
"""

import json
import os
import socket
import subprocess
import sys

import pytest

RESULT_PREFIX = "RESULT_JSON "


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(script, *args, timeout: float, world_size: int = 2, what: str = "", env=None) -> list[dict]:
    """The JSON each rank printed, by rank; `env` adds environment variables for every rank."""
    env = {**os.environ, **(env or {})}
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE=str(world_size))
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), *args],
            env={**env, "RANK": str(rank)},
            cwd=os.path.dirname(os.path.abspath(script)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(world_size)
    ]
    outputs = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=timeout)
            lines = [line for line in out.splitlines() if line.startswith(RESULT_PREFIX)]
            assert proc.returncode == 0 and lines, f"rank failed:\n{out[-2000:]}\n{err[-4000:]}"
            outputs.append(json.loads(lines[-1].removeprefix(RESULT_PREFIX)))
    except subprocess.TimeoutExpired:
        pytest.fail(f"a rank did not finish within {timeout} s{': ' + what if what else ''}")
    finally:
        for proc in procs:
            proc.kill()
    return outputs


def verl_worker_env() -> dict:
    """What a process running verl's engine worker in-process on CPU needs (with `run_ranks`)."""
    from maspo_verl.cpu_platform import cpu_trainer_env

    # cpu_trainer_env: our CPU platform; the FSDP engines are registered for cuda/npu only
    return {**cpu_trainer_env(), "CUDA_VISIBLE_DEVICES": "", "LOCAL_RANK": "0", "TOKENIZERS_PARALLELISM": "false"}


def print_result(result) -> None:
    """What a rank prints for `run_ranks`."""
    print(RESULT_PREFIX + json.dumps(result))
