"""Where a tiny-kit training step spends its time, and which process spends the CPU.

Runs `python -m maspo_verl.main_ppo +kit=<kit> algorithm=<algorithm>` (no validation) and reports:
- the median of verl's own `timing_s/*` metrics over the steps after `--warmup`;
- the start-up (launch to the first training step);
- CPU seconds per training step of every process of the run (the Ray processes by their
  `ray::` name, Ray's own daemons, the driver), read from the kernel's counters between two
  steps. On 2 cores the sum is what bounds the step: a process that polls costs CPU the model
  needs, whatever verl's timers say.

    python benchmarks/kit_step_times.py [--kit tiny_cpu|tiny_gpu] [--algorithm maspo] [--steps 20]
    python benchmarks/kit_step_times.py --compare <git-ref>     # today's code and <git-ref>'s, side by side
    python benchmarks/kit_step_times.py --py-spy 20             # and where each process spends its CPU

`--py-spy SECONDS` also samples every process of the run with py-spy (CPU time only, without
pausing them) for that long after the warm-up steps, and prints each process's functions by the
share of its samples they are on the stack for (frames of the event loop, threads and Ray's worker
loop left out). It then splits each process's CPU seconds per step by what its samples were doing,
by the innermost frame that says (CATEGORIES): the model's own work, FSDP2 and gloo, data plumbing
(TransferQueue, tensordict), Ray calls and event loops, other Python. py-spy is in verl's test
extra: `pip install py-spy`.

`--compare REF` checks REF out into a temporary worktree with a virtual environment of its own
(scripts/setup_env.sh there: a package installed in editable mode runs from its own folder) and runs
the same command there, the two alternating `--rounds` times so that both see the same machine; it
prints the medians and their ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

PARTS = [
    "timing_s/gen",
    "timing_s/reward",
    "timing_s/old_log_prob",
    "timing_s/adv",
    "timing_s/update_actor",
    "timing_s/update_weights",
    "timing_s/step",
]


def process_name(proc) -> str:
    """A stable label: `ray::Name` for Ray workers (method suffixes dropped), the script for others."""
    try:
        cmdline = proc.cmdline()
    except Exception:
        return "?"
    if cmdline and cmdline[0].startswith("ray::"):
        return cmdline[0].split(".")[0]
    for part in cmdline[1:]:
        if part.endswith(".py") or part.startswith("maspo_verl") or "/ray/" in part:
            return Path(part).name if "/" in part else part
    return Path(cmdline[0]).name if cmdline else proc.name()


def cpu_snapshot(root_pid: int) -> dict:
    """{pid: (name, cpu seconds)} for `root_pid` and every process below it."""
    import psutil

    snapshot = {}
    try:
        root = psutil.Process(root_pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return snapshot
    for proc in processes:
        try:
            times = proc.cpu_times()
            snapshot[proc.pid] = (process_name(proc), times.user + times.system)
        except psutil.NoSuchProcess:
            continue
    return snapshot


def cpu_per_step(first: dict, last: dict, steps: int) -> dict:
    """CPU seconds per step by process name, for the processes alive at both snapshots."""
    per_name = defaultdict(float)
    for pid, (name, seconds) in last.items():
        if pid in first:
            per_name[name] += (seconds - first[pid][1]) / steps
    return dict(sorted(per_name.items(), key=lambda item: -item[1]))


# frames that are on every stack of a Ray worker or an event loop: left out of the function table
GENERIC_FRAMES = ("threading.py", "asyncio/", "concurrent/futures", "selectors.py", "ray/_private/", "ray/util/tracing",
                  "default_worker.py", "contextlib.py", "<frozen", "tracing_helper")  # fmt: skip


# What a sample's CPU went to, by the innermost frame of its stack that names one of these (first
# category whose patterns it contains). The model's own work is what a plain PyTorch loop would also
# spend; everything else is the price of verl's processes talking to each other.
CATEGORIES = {
    "FSDP2 and gloo": ("torch/distributed/",),
    "model (forward, backward, optimizer, sampling)": (
        "torch/nn/",
        "torch/autograd/",
        "torch/optim/",
        "transformers/models/",
        "transformers/generation/",
        "transformers/integrations/",
        "verl/utils/torch_functional.py",
        "maspo_verl/algos/",
        "verl/workers/utils/losses.py",
        "verl/trainer/ppo/core_algos.py",
    ),
    "data plumbing (TransferQueue, tensordict, batch conversions)": (
        "transfer_queue/",
        "tensordict/",
        "zmq/",
        "msgpack",
        "verl/utils/transferqueue_utils.py",
        "verl/utils/tensordict_utils.py",
        "verl/protocol.py",
        "torch/nested/",
        "verl/workers/engine/utils.py",
    ),
    "Ray calls and event loops": ("ray/", "selectors.py", "asyncio/", "threading.py"),
}
OTHER = "other Python (verl's trainer and workers, ours)"
# Innermost frames of a thread blocked in native code (Ray's task loop, a poll, a lock, an idle pool
# thread): py-spy cannot tell these from work, so they are counted apart and the kernel's CPU
# seconds are split over the other samples
WAITS = ("Worker.main_loop (", "EpollSelector.select (", "Poller.poll (", "Condition.wait (", "_wait_for_next_poll (",
         "_worker (concurrent/futures/thread.py")  # fmt: skip
WAITING = "blocked (not CPU)"
# threads with no Python frame at all (Ray's core-worker and gRPC threads, among others)
NATIVE = "native threads"


def category_shares(raw: str) -> dict:
    """{category: share of the samples} from py-spy's raw output, each sample to the category of the
    innermost frame that matches one (CATEGORIES), OTHER when a frame of verl or of this package
    comes first or nothing matches, WAITING when the innermost frame is a blocking call (WAITS),
    NATIVE for a thread with no Python frame."""
    counts, total = defaultdict(int), 0
    for stack, count in _samples(raw):
        total += count
        frames = [frame for frame in stack if frame.strip("() ")]
        if not frames:
            counts[NATIVE] += count
        else:
            counts[WAITING if frames[-1].startswith(WAITS) else _category(frames)] += count
    return {name: n / total for name, n in counts.items()} if total else {}


def _category(frames: list) -> str:
    # innermost first; a frame of verl or of this package that names no category is their own Python
    # (a balancing loop run from Ray's worker loop is verl's work, not Ray's), while frames of the
    # standard library or of other packages (enum, pickle) defer to their callers
    for frame in reversed(frames):
        for name, patterns in CATEGORIES.items():
            if any(pattern in frame for pattern in patterns):
                return name
        if "verl/" in frame:
            return OTHER
    return OTHER


def py_spy(pids: dict, seconds: float, out: Path) -> dict:
    """{process name: {"functions": [(function, share)], "categories": {category: share}}}: py-spy on
    every pid at once, the processes of one name (Ray's idle workers) read as one."""
    records = {}
    for pid, name in pids.items():
        path = out / f"py-spy-{pid}.txt"
        command = ["py-spy", "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "50", "--nonblocking",
                   "--format", "raw", "-o", str(path)]  # fmt: skip
        records[pid] = (name, path, subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    raw = defaultdict(str)
    for name, path, process in records.values():
        process.wait()
        if path.exists():
            raw[name] += path.read_text()
    return {
        name: {"functions": function_table(text), "categories": category_shares(text)} for name, text in raw.items()
    }


def _samples(raw: str):
    """(frames outermost first, sample count) per line of py-spy's raw (collapsed) output."""
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        yield stack.split(";"), int(count)


def function_table(raw: str, top: int = 12) -> list:
    """[(function, share of the samples with it on the stack)] from py-spy's raw (collapsed) output,
    the frames every worker's stack has left out; a function counts once per sample."""
    inclusive, total = defaultdict(int), 0
    for stack, count in _samples(raw):
        total += count
        # "function (file:line)" -> "function (file)": one row per function, whatever the line
        frames = {frame.rsplit(":", 1)[0] + ")" if frame.endswith(")") else frame for frame in stack}
        for frame in frames:
            if not any(generic in frame for generic in GENERIC_FRAMES):
                inclusive[frame] += count
    ranked = sorted(inclusive.items(), key=lambda item: -item[1])[:top]
    return [(frame, n / total) for frame, n in ranked] if total else []


def measure(
    kit: str, algorithm: str, steps: int, warmup: int, out: Path, extra: list[str], checkout: Path | None = None,
    profile_seconds: float = 0,
):  # fmt: skip
    """One run; returns {"timing": {part: median}, "startup": s, "cpu": {name: s/step}, "wall_per_step": s}."""
    out.mkdir(parents=True, exist_ok=True)
    metrics = out / "metrics.jsonl"
    metrics.unlink(missing_ok=True)
    python = str(checkout / ".venv" / "bin" / "python") if checkout else sys.executable
    command = [python, "-m", "maspo_verl.main_ppo", f"+kit={kit}", f"algorithm={algorithm}",
               f"trainer.total_training_steps={steps}", "trainer.val_before_train=False", "trainer.test_freq=-1",
               "trainer.logger=[console,file]", f"trainer.default_local_dir={out / 'checkpoints'}", *extra]  # fmt: skip
    env = dict(os.environ, VERL_FILE_LOGGER_PATH=str(metrics), PYTHONUNBUFFERED="1")
    env.pop("RAY_ADDRESS", None)
    started = time.perf_counter()
    first = last = None
    first_step_at = last_step_at = startup = profiler = None
    records, profiles = [], {}
    with open(out / "train.log", "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=checkout)
        while process.poll() is None:
            time.sleep(0.05)
            if not metrics.exists():
                continue
            lines = metrics.read_text().split("\n")[:-1]
            for line in lines[len(records) :]:
                records.append(json.loads(line))
                step = records[-1]["step"]
                if startup is None and "timing_s/step" in records[-1]["data"]:
                    # seen within a poll (0.05 s) of its writing; the step's own duration taken off
                    startup = time.perf_counter() - started - records[-1]["data"]["timing_s/step"]
                # the step record lands after the step: snapshots between steps `warmup` and `steps - 1`
                if step == warmup:
                    first, first_step_at = cpu_snapshot(process.pid), time.perf_counter()
                    if profile_seconds:
                        named = {pid: name for pid, (name, _) in first.items()}
                        profiler = threading.Thread(
                            target=lambda pids=named: profiles.update(py_spy(pids, profile_seconds, out))
                        )
                        profiler.start()
                elif step == steps - 1:
                    last, last_step_at = cpu_snapshot(process.pid), time.perf_counter()
    if profiler is not None:
        profiler.join()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited {process.returncode}; see {out / 'train.log'}")
    data = [r["data"] for r in records if warmup < r["step"] < steps]
    timing = {
        part: statistics.median(d[part] for d in data if part in d) for part in PARTS if any(part in d for d in data)
    }
    measured_steps = steps - 1 - warmup
    return {
        "timing": timing,
        "startup": startup,
        "cpu": cpu_per_step(first, last, measured_steps) if first and last else {},
        "wall_per_step": (last_step_at - first_step_at) / measured_steps if first and last else None,
        "functions": profiles,
    }


def print_result(label: str, result: dict) -> None:
    print(f"{label}: start-up {result['startup']:.1f} s; wall per step {result['wall_per_step']:.3f} s")
    for part, value in result["timing"].items():
        print(f"  {part.split('/')[-1]:<16}{value:8.3f}")
    total = sum(result["cpu"].values())
    print(f"  CPU seconds per step, by process (sum {total:.2f}):")
    for name, seconds in result["cpu"].items():
        if seconds >= 0.005:
            print(f"    {name:<44}{seconds:8.3f}")
    profiles = result.get("functions", {})
    for name, profile in profiles.items():
        print(f"  {name}: share of its CPU samples with the function on the stack")
        for frame, share in profile["functions"]:
            print(f"    {share:6.1%}  {frame[:140]}")
    if profiles:
        print_categories(result["cpu"], profiles)


def print_categories(cpu: dict, profiles: dict) -> None:
    """CPU seconds per step of each process split by what its samples were doing (CATEGORIES)."""
    split = category_seconds(cpu, profiles)
    names = [*CATEGORIES, OTHER, NATIVE]
    print("  CPU seconds per step, by process and by what it was doing (py-spy's samples):")
    print(f"    {'process':<32}" + "".join(f"{name.split(' (')[0]:>27}" for name in names))
    for process, row in split.items():
        print(f"    {process:<32}" + "".join(f"{row.get(name, 0.0):27.3f}" for name in names))
    totals = {name: sum(row.get(name, 0.0) for row in split.values()) for name in names}
    print(f"    {'all profiled processes':<32}" + "".join(f"{totals[name]:27.3f}" for name in names))


def category_seconds(cpu: dict, profiles: dict) -> dict:
    """{process: {category: CPU seconds per step}}: each process's CPU seconds per step (kernel
    counters) split in proportion to its working samples (WAITING left out), for the processes
    with both, largest first."""
    rows = {}
    for name in cpu:
        shares = profiles.get(name, {}).get("categories", {})
        working = 1.0 - shares.get(WAITING, 0.0)
        if shares and working > 0:
            rows[name] = {c: cpu[name] * share / working for c, share in shares.items() if c != WAITING}
    return dict(sorted(rows.items(), key=lambda item: -sum(item[1].values())))


def worktree(ref: str) -> Path:
    """REF checked out in a temporary folder, installed in its own .venv."""
    path = Path(tempfile.mkdtemp(prefix="kit_step_times_"))
    subprocess.run(["git", "worktree", "add", "--detach", str(path), ref], check=True, capture_output=True)
    print(f"installing {ref} into {path / '.venv'} ...", flush=True)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "MASPO_VENV")}
    subprocess.run(["bash", "scripts/setup_env.sh"], cwd=path, env=env, check=True, capture_output=True)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kit", default="tiny_cpu")
    parser.add_argument("--algorithm", default="maspo")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3, help="steps left out of the figures")
    parser.add_argument("--out", type=Path, default=Path("outputs/kit_step_times"))
    parser.add_argument("--compare", metavar="REF", help="also run a git ref of this repository, alternating")
    parser.add_argument("--rounds", type=int, default=2, help="with --compare: runs of each")
    parser.add_argument("--json", type=Path, help="write every run's figures here")
    parser.add_argument("--py-spy", type=float, default=0, metavar="SECONDS",
                        help="also profile every process with py-spy for SECONDS after the warm-up")  # fmt: skip
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for both runs")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    runs = {"this checkout": None}
    if args.compare:
        runs[args.compare] = worktree(args.compare)
    results = defaultdict(list)
    try:
        for round_index in range(args.rounds if args.compare else 1):
            for label, cwd in runs.items():
                tag = "base" if cwd else "head"
                result = measure(args.kit, args.algorithm, args.steps, args.warmup, out / f"{tag}{round_index}",
                                 args.overrides, checkout=cwd, profile_seconds=args.py_spy)  # fmt: skip
                print_result(f"[{label}, round {round_index + 1}]", result)
                results[label].append(result)
    finally:
        for cwd in runs.values():
            if cwd:
                subprocess.run(["git", "worktree", "remove", "--force", str(cwd)], capture_output=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if args.compare:
        summary = {label: _medians(rs) for label, rs in results.items()}
        head, base = summary["this checkout"], summary[args.compare]
        print(f"\nmedians over {args.rounds} alternating runs (this checkout vs {args.compare}):")
        for key in head:
            ratio = head[key] / base[key] if base[key] else float("nan")
            print(f"  {key:<28}{head[key]:8.3f}{base[key]:10.3f}   ratio {ratio:.2f}")


def _medians(results: list) -> dict:
    keys = ["startup", "wall_per_step", *[f"timing/{p.split('/')[-1]}" for p in PARTS]]
    values = defaultdict(list)
    for r in results:
        values["startup"].append(r["startup"])
        values["wall_per_step"].append(r["wall_per_step"])
        values["cpu_sum_per_step"].append(sum(r["cpu"].values()))
        for part, v in r["timing"].items():
            values[f"timing/{part.split('/')[-1]}"].append(v)
    return {k: statistics.median(values[k]) for k in [*keys, "cpu_sum_per_step"] if values[k]}


if __name__ == "__main__":
    main()
