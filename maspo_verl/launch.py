"""Launch verl training runs and read what they log: the one place that starts verl's trainer for
the quickstart, the end-to-end tests and the benchmark.

Every run is `maspo_verl.main_ppo`'s: our config (`maspo_trainer` + the overrides), our checks
before Ray starts, then verl's own `main_ppo`. Its per-step metrics are read from verl's file
logger (`trainer.logger=[console,file]`), the same numbers its console and trackers get.

Two ways to run:
- `run_process(overrides, out)`: one run in a subprocess with a Ray session of its own, its output
  in `out/train.log`. For a single run, and for runs that must not share a process.
- `RaySession`: runs one after another in ONE Ray session in this process. Ray, its dashboard
  and its worker pool start once (verl's `run_ppo` reuses an initialised Ray); after each run the
  session releases the run's placement groups, without which the next run would wait forever
  for accelerator slots. A run that raises is reported and the session goes on.
Both hand each step's record to `on_step` as it lands and return all records of the run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

METRICS_FILE = "metrics.jsonl"
LOG_FILE = "train.log"
REWARD = "critic/score/mean"


class RunFailed(RuntimeError):
    """A training run exited with an error; the message ends with the tail of its log."""


@dataclass
class RunResult:
    records: list = field(default_factory=list)  # verl's file-logger records: {"step": n, "data": {...}}
    seconds: float = 0.0
    startup_seconds: float | None = None  # launch to the start of the first training step

    def steps(self) -> dict:
        """{step: metrics}; a step logged twice (validation after training) is merged."""
        merged = {}
        for record in self.records:
            merged.setdefault(record["step"], {}).update(record["data"])
        return merged


def base_overrides(out: Path) -> list[str]:
    """What every launched run needs: the file logger on, checkpoints under `out`."""
    return ["trainer.logger=[console,file]", f"trainer.default_local_dir={out / 'checkpoints'}"]


class MetricsTail:
    """Reads the complete JSON lines verl's file logger has written so far, once each."""

    def __init__(self, path: Path, on_step: Callable | None = None):
        self.path, self.on_step, self.records = path, on_step, []
        self.started, self.startup_seconds = time.perf_counter(), None

    def poll(self) -> None:
        if not self.path.exists():
            return
        complete = self.path.read_text().split("\n")[:-1]  # the last piece is empty or still being written
        for line in complete[len(self.records) :]:
            record = json.loads(line)
            self.records.append(record)
            step_seconds = record["data"].get("timing_s/step")
            if self.startup_seconds is None and step_seconds is not None:
                # seen within a poll interval (0.5 s) of its writing
                self.startup_seconds = time.perf_counter() - self.started - step_seconds
            if self.on_step is not None:
                self.on_step(record)

    def result(self) -> RunResult:
        return RunResult(self.records, time.perf_counter() - self.started, self.startup_seconds)


def log_tail(log_path: Path, lines: int = 40) -> str:
    if not log_path.exists():
        return "(no log)"
    return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])


def run_process(
    overrides: list[str],
    out: Path,
    on_step: Callable | None = None,
    entry: str = "maspo_verl.main_ppo",
    env: dict | None = None,
    timeout: float | None = None,
) -> RunResult:
    """`python -m <entry> <base overrides> <overrides>` in a subprocess; raises RunFailed on a non-zero exit."""
    out.mkdir(parents=True, exist_ok=True)
    metrics = out / METRICS_FILE
    metrics.unlink(missing_ok=True)
    command = [sys.executable, "-m", entry, *base_overrides(out), *overrides]
    full_env = dict(os.environ, VERL_FILE_LOGGER_PATH=str(metrics), PYTHONUNBUFFERED="1", **(env or {}))
    tail = MetricsTail(metrics, on_step)
    with open(out / LOG_FILE, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=full_env)
        while process.poll() is None:
            tail.poll()
            if timeout is not None and time.perf_counter() - tail.started > timeout:
                process.kill()
                process.wait()
                raise RunFailed(f"{' '.join(command)} ran past {timeout:.0f} s; last lines of {out / LOG_FILE}:\n"
                                + log_tail(out / LOG_FILE))  # fmt: skip
            time.sleep(0.5)
    tail.poll()
    if process.returncode != 0:
        raise RunFailed(
            f"{' '.join(command)} exited {process.returncode}; last lines of {out / LOG_FILE}:\n"
            + log_tail(out / LOG_FILE)
        )
    return tail.result()


def compose_config(overrides: list[str]):
    """The config `python -m maspo_verl.main_ppo <overrides>` composes, unresolved and unchecked; the
    recipe and preset it was composed with are recorded for the driver-side checks, which in
    `main_ppo` read them from its Hydra app (maspo_verl/preflight/presets.py)."""
    from hydra import compose, initialize_config_module
    from omegaconf import open_dict

    from .preflight.presets import remember_choices

    with initialize_config_module(config_module="maspo_verl_configs", version_base=None):
        config = compose("maspo_trainer", overrides=list(overrides), return_hydra_config=True)
    choices = config.hydra.runtime.choices
    with open_dict(config):
        del config["hydra"]
    remember_choices(config, choices)
    return config


def compose_run_config(overrides: list[str]):
    """(The config `python -m maspo_verl.main_ppo <overrides>` would run, checked and resolved;
    the environment its Ray workers get, e.g. a wandb key)."""
    from .main_ppo import prepare

    config = compose_config(overrides)
    worker_env = prepare(config)
    return config, worker_env


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def describe_failure(exc: BaseException) -> str:
    """The error's last line first (for a Ray task error, the worker's own exception), then all of it."""
    text = _ANSI.sub("", f"{type(exc).__name__}: {exc}")
    last = next((line.strip() for line in reversed(text.splitlines()) if line.strip()), text)
    return text if last == text.strip() else f"{last}\n\n{text}"


SESSION_PROJECT = "session"


def session_trains(log_root: Path, pid: int) -> bool:
    """Whether the RaySession of process `pid` logging under `log_root` has trained a step."""
    return any(path.stat().st_size > 0 for path in (Path(log_root) / SESSION_PROJECT).glob(f"run{pid}_*.jsonl"))


class RaySession:
    """Several runs in one Ray session of this process (see the module docstring).

    verl's file logger takes its path from the environment of the Ray workers, fixed when Ray
    starts, so each run logs to `<log_root>/<project_name>/<experiment_name>.jsonl`
    (`VERL_FILE_LOGGER_ROOT`, also passed in the job's runtime env so that workers on other nodes
    of an existing cluster, `RAY_ADDRESS`, get it); the session names each run's project and
    experiment. On a cluster, `log_root` and each run's folder must be on a filesystem every node
    sees, as verl's checkpoints must.
    """

    def __init__(self, log_root: Path):
        self.log_root = Path(log_root)
        self.count = 0

    def __enter__(self) -> RaySession:
        import ray

        if ray.is_initialized():
            raise RuntimeError(
                "RaySession starts its own Ray session (its workers must see VERL_FILE_LOGGER_ROOT), but Ray is "
                "already initialised in this process; use run_session_process, which runs in a fresh one"
            )
        self.log_root.mkdir(parents=True, exist_ok=True)
        os.environ["VERL_FILE_LOGGER_ROOT"] = str(self.log_root)
        os.environ.pop("VERL_FILE_LOGGER_PATH", None)
        return self

    def __exit__(self, *exc) -> None:
        import ray

        if ray.is_initialized():
            ray.shutdown()

    def run(self, overrides: list[str], out: Path, on_step: Callable | None = None) -> RunResult:
        """One run; raises RunFailed (with the error) if composing, checking or training fails."""
        from .compat import release_placement_groups, run_verl_main

        out.mkdir(parents=True, exist_ok=True)
        self.count += 1
        project, experiment = SESSION_PROJECT, f"run{os.getpid()}_{self.count}"
        metrics = self.log_root / project / f"{experiment}.jsonl"
        metrics.unlink(missing_ok=True)
        overrides = [*base_overrides(out), *overrides, f"trainer.project_name={project}",
                     f"trainer.experiment_name={experiment}",
                     # a job-level env var reaches the workers on every node of a Ray cluster too
                     f"++ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_ROOT={self.log_root}"]  # fmt: skip
        tail = MetricsTail(metrics, on_step)
        stop = threading.Event()

        def follow():  # verl blocks this thread while it trains; its steps are read beside it
            while not stop.wait(0.5):
                tail.poll()

        follower = threading.Thread(target=follow, daemon=True)
        follower.start()
        try:
            run_verl_main(*compose_run_config(overrides))
        except Exception as exc:
            raise RunFailed(describe_failure(exc)) from exc
        finally:
            stop.set()
            follower.join()
            tail.poll()
            release_placement_groups()
            # appended: a run verl resumes from its checkpoint keeps the steps logged before
            with open(out / METRICS_FILE, "a") as metrics_file:
                metrics_file.write("".join(json.dumps(record) + "\n" for record in tail.records))
        return tail.result()


STATUS_FILE = "run_status.json"


def run_session_process(runs: list[tuple[list[str], Path]], log_root: Path, timeout: float | None = None) -> list:
    """Several runs in one Ray session of a fresh subprocess (so this process's environment and
    Ray state are left alone): `python -m maspo_verl.launch <plan.json>`. Returns, per run in
    order, a RunResult or the RunFailed it ended with; its output is in `<log_root>/session.log`."""
    log_root = Path(log_root)
    log_root.mkdir(parents=True, exist_ok=True)
    plan_file = log_root / "session_plan.json"
    plan_file.write_text(json.dumps([{"overrides": list(o), "out": str(out)} for o, out in runs], indent=2))
    for _, out in runs:
        (Path(out) / STATUS_FILE).unlink(missing_ok=True)
    with open(log_root / "session.log", "w") as log:
        subprocess.run([sys.executable, "-m", "maspo_verl.launch", str(plan_file)], stdout=log,
                       stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"), timeout=timeout)  # fmt: skip
    outcomes = []
    for _, out in runs:
        status_file = Path(out) / STATUS_FILE
        if not status_file.exists():
            outcomes.append(RunFailed(f"the session ended before this run finished; see {log_root / 'session.log'}:\n"
                                      + log_tail(log_root / "session.log")))  # fmt: skip
            continue
        status = json.loads(status_file.read_text())
        if status["error"] is not None:
            outcomes.append(RunFailed(status["error"]))
            continue
        records = [json.loads(line) for line in (Path(out) / METRICS_FILE).read_text().splitlines() if line]
        outcomes.append(RunResult(records, status["seconds"], status["startup_seconds"]))
    return outcomes


def _run_plan(plan_file: Path) -> None:
    runs = json.loads(plan_file.read_text())
    with RaySession(plan_file.parent / "verl_logs") as session:
        for run in runs:
            out = Path(run["out"])
            status = {"error": None, "seconds": None, "startup_seconds": None}
            try:
                result = session.run(run["overrides"], out)
                status.update(seconds=result.seconds, startup_seconds=result.startup_seconds)
            except RunFailed as exc:
                status["error"] = str(exc)
            print(f"[maspo launch] {out}: {'failed: ' + status['error'][:300] if status['error'] else 'done'}",
                  flush=True)  # fmt: skip
            (out / STATUS_FILE).write_text(json.dumps(status))


if __name__ == "__main__":
    _run_plan(Path(sys.argv[1]))
