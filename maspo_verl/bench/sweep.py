"""Plan and run a sweep: presets x seeds (x regimes, or x paper recipes) through verl's real
trainer, one Ray session, resumable, with the instrument's two controls on the kit.

Two kinds of run share everything but how the trained model is measured:
- `KitRun` (the mini benchmark, CPU): the tiny kit, a regime of REGIMES; measured by the probe.
- `RecipeRun` (`--recipe`, GPU users): a paper recipe of configs/recipe/ plus the user's
  overrides; measured by the evaluator (Avg@k, unbiased Pass@k with CIs) on the recipe's own
  validation sets and decoding settings. verl resumes an interrupted recipe run from its last
  checkpoint (`trainer.resume_mode=auto`); a kit run starts again from scratch.

Each run lives in `<out>/<regime or recipe>/<preset>/seed<k>/`:
- `metrics.jsonl`: verl's own per-step metrics (its file logger);
- `checkpoints/global_step_<N>/actor/huggingface`: the final model (verl's Hugging Face export);
- `result.json`, written last: `status` (`done` or `failed`), the error of a failed run, wall time,
  start-up time, and the held-out probe of the model every `probe_every` steps and at the end.
A run with a `result.json` is finished and skipped when the sweep is started again (`--retry-failed`
reruns the failed ones); a run without one (interrupted) is run again from its start.

Held-out accuracy is measured by the probe, not by verl's validation: verl exports the model every
`probe_every` steps and the probe samples it (`PROBE_SAMPLES` responses per held-out prompt at
T=1, and greedy) with the kit's own sampler, about five times faster per sample than verl's
validation loop. The warm start is probed once per sweep (`<out>/warm_start_<task>.json`): it is
step 0 of every curve. Every probe uses the same sampling seed, so two models are compared on the
same random draws (common random numbers), which narrows their paired difference.

Everything but the preset is equal across a seed's runs: the same kit (one warm start), the same
data order and sampling seed (`data.seed`, `actor_rollout_ref.rollout.seed`), the same rollout
budget and number of updates per rollout. What verl 0.9.1's seed keys control:
- `data.seed`: the generator of the training sampler (`create_rl_sampler`, with `data.shuffle`,
  on in the kit), i.e. which prompts each step trains on, in which order;
- `actor_rollout_ref.rollout.seed`: the sampling seed of verl's vLLM server (replica rank + seed),
  and with `rollout.full_determinism` also PYTHONHASHSEED; the kit's `hf` rollout does not read it
  (it samples from its server's torch generator, in batches formed as requests arrive), so two
  runs of one preset and seed sample differently on the kit whatever this key says;
- `actor_rollout_ref.actor.data_loader_seed`: the shuffle of mini-batches within an update, only
  with `actor.shuffle` (off in verl and here); the model's initial weights are the kit's warm
  start, built once (seed 0), whatever the sweep seed.
The replicate control (A/A) is grpo again on each seed with the same data order and warm start and
another sampling seed (`seed + REPLICATE_SEED_OFFSET`): its difference with grpo is the noise of
the instrument itself.
"""

from __future__ import annotations

import json
import shutil
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

from omegaconf import ListConfig

from ..launch import RaySession, RunFailed, session_trains

# task -> the kit preset that trains on it (configs/kit/)
KIT_PRESETS = {"add": "tiny_cpu", "chain": "chain_cpu"}
DEFAULT_TASK = "add"
# the accuracy steps-to-target counts to, per task (the warm start's sampled accuracy is about
# 0.45 on add and 0.24 on chain)
DEFAULT_TARGETS = {"add": 0.65, "chain": 0.3}
PROBE_SAMPLES = 8  # sampled responses per held-out prompt: mean@8 and unbiased pass@k up to 8
PROBE_SEED = 0  # the same draws for every probe (common random numbers)
SESSION_LOGS = "verl_logs"  # under the sweep's folder: verl's per-run metrics of every Ray session

# The default presets: the methods of the MASPO paper's table, and DAPO. verl's other losses (GSPO, CISPO,
# DPPO, GMPO, Clip-Cov, KL-Cov, GPG) and the MASPO ablations are one flag away (`--presets all`).
MAIN_PRESETS = ["grpo", "clip_higher", "dapo", "sapo", "dac", "bapo", "entropy_adv", "maspo"]

_ACTOR = "actor_rollout_ref.actor."
# What differs between the regimes; everything else is the kit preset's (configs/kit/).
REGIMES = {
    # 8 prompts x 8 samples per rollout, 2 prompts per mini-batch: 4 updates per rollout. grpo gains
    # about 0.3 held-out accuracy in 30 steps at this rate; 1e-4 begins to cost greedy accuracy. The
    # ratios stay near 1: grpo's clip removes 1% of the gradient weight and no trust region ends level
    # with grpo, so trust-region methods cannot differ here (measured: its harm check fails)
    "standard": [f"{_ACTOR}optim.lr=5e-5", f"{_ACTOR}ppo_mini_batch_size=2"],
    # the same, 4 epochs over each rollout: 16 updates per rollout (the paper's 512-prompt rollouts in
    # 32-prompt mini-batches), the later ones far off-policy, where a trust region decides between
    # learning and collapse (the paper's robustness claim). The default regime.
    "stress": [f"{_ACTOR}optim.lr=5e-5", f"{_ACTOR}ppo_mini_batch_size=2", f"{_ACTOR}ppo_epochs=4"],
}

# The instrument's controls, run beside the presets in every regime (`--no-controls` skips them),
# each on every seed but lr0, which needs one: its probe reproduces the warm start exactly.
CONTROL_SEEDS = {"lr0": 1}
REPLICATE = "replicate"
REPLICATE_SEED_OFFSET = 10_000  # the replicate's sampling seed: seed + this, no other run's seed
CONTROLS = {
    # pipeline check: the whole pipeline with a learning rate of 0 must reproduce the warm start's
    # probe exactly (it cannot fail as a noise control: nothing moves and the probe's draws repeat)
    "lr0": ("grpo", (f"{_ACTOR}optim.lr=0",)),
    # replicate (A/A): grpo again with another sampling seed; its difference with grpo is noise
    REPLICATE: ("grpo", ()),
    # harm control: grpo without its trust region (PPO's clip and dual clip wide open) and nothing
    # else changed, so the regime's own updates per rollout; it must end below grpo by more than
    # the replicate's noise where the trust region acts
    "no_trust_region": (
        "grpo",
        (f"{_ACTOR}clip_ratio_low=0.999", f"{_ACTOR}clip_ratio_high=1000", f"{_ACTOR}clip_ratio_c=1000"),
    ),
}


def run_directory(out: Path, regime: str, preset: str, seed: int) -> Path:
    """Where a run's files live: `<out>/<regime>/<preset>/seed<k>`."""
    return Path(out) / regime / preset / f"seed{seed}"


class BenchInputError(ValueError):
    """A bad sweep setting: the message names it, its value and what is allowed."""


class _Run:
    """What every kind of run has: a name in tables and logs, and a folder."""

    regime: str
    preset: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.regime}/{self.preset}/seed{self.seed}"

    def directory(self, out: Path) -> Path:
        return run_directory(out, self.regime, self.preset, self.seed)


@dataclass(frozen=True)
class KitRun(_Run):
    regime: str
    preset: str  # the label in tables: a preset of configs/algorithm, a control, or a variant's name
    seed: int
    steps: int
    probe_every: int
    task: str = DEFAULT_TASK
    algorithm: str = ""  # the preset a control or variant starts from (empty: `preset` itself)
    extra: tuple = ()  # a control's or variant's own Hydra overrides

    kind = "kit"
    restart = True  # an interrupted run starts again from scratch (runs are minutes)

    @property
    def sampling_seed(self) -> int:
        """The rollout's sampling seed: the run's seed, but another one for the replicate control."""
        return self.seed + REPLICATE_SEED_OFFSET if self.preset == REPLICATE else self.seed

    def probe_steps(self) -> list[int]:
        """The steps whose model the probe measures: every `probe_every` steps and the last."""
        return sorted(set(range(self.probe_every, self.steps + 1, self.probe_every)) | {self.steps})

    def overrides(self) -> list[str]:
        return [
            f"+kit={KIT_PRESETS[self.task]}",
            f"algorithm={self.algorithm or self.preset}",
            *REGIMES[self.regime],
            f"data.seed={self.seed}",
            f"actor_rollout_ref.rollout.seed={self.sampling_seed}",
            f"trainer.total_training_steps={self.steps}",
            # held-out accuracy comes from the probe of the exported models, not verl's validation
            "trainer.val_before_train=False",
            "trainer.test_freq=-1",
            f"trainer.save_freq={self.probe_every}",  # verl also saves at the last step
            f"{_ACTOR}checkpoint.save_contents=[hf_model]",
            "trainer.resume_mode=disable",
            *self.extra,
        ]

    def measure(self, run_dir: Path) -> dict:
        return probe_run(run_dir, self)


@dataclass(frozen=True)
class RecipeRun(_Run):
    regime: str  # the recipe (configs/recipe/<name>.yaml), which plays the regime's part in tables
    preset: str
    seed: int
    steps: int | None = None  # None: the recipe's own trainer.total_training_steps
    algorithm: str = ""
    extra: tuple = ()  # the user's overrides for every run, then a variant's own
    eval_k: int | None = None  # None: the recipe's validation samples per problem

    kind = "recipe"
    restart = False  # verl resumes from the run's last checkpoint

    def overrides(self) -> list[str]:
        steps = [] if self.steps is None else [f"trainer.total_training_steps={self.steps}"]
        return [
            f"recipe={self.regime}",
            f"algorithm={self.algorithm or self.preset}",
            f"data.seed={self.seed}",
            f"actor_rollout_ref.rollout.seed={self.seed}",
            *steps,
            "trainer.resume_mode=auto",
            *self.extra,
        ]

    def measure(self, run_dir: Path) -> dict:
        return evaluate_run(run_dir, self)


def _config_names(group: str) -> list[str]:
    import maspo_verl_configs

    folder = Path(maspo_verl_configs.__file__).parent / group
    return sorted(path.stem for path in folder.glob("*.yaml") if not path.stem.startswith("_"))


def available_presets() -> list[str]:
    """Every preset of configs/algorithm."""
    return _config_names("algorithm")


def available_recipes() -> list[str]:
    """Every paper recipe of configs/recipe."""
    return _config_names("recipe")


def parse_variant(text: str) -> tuple[str, str, tuple]:
    """`--variant "NAME=PRESET OVERRIDE ..."` -> (name, preset, overrides): a preset with overrides of
    its own, compared under its own name (for example `maspo_tau2=maspo <key>=2`)."""
    head, _, rest = text.strip().partition(" ")
    name, _, preset = head.partition("=")
    if not name or not preset:
        raise BenchInputError(f"--variant {text!r}: expected 'NAME=PRESET [OVERRIDE ...]'")
    if preset not in available_presets():
        raise BenchInputError(
            f"--variant {text!r}: {preset!r} is not a preset; choose from {', '.join(available_presets())}"
        )
    return name, preset, tuple(rest.split())


def _labels(presets: list[str], variants: list[str], controls: dict) -> dict:
    """label -> (preset, overrides): the presets, the controls and the variants, checked."""
    known = available_presets()
    unknown = [preset for preset in presets if preset not in known]
    if unknown:
        raise BenchInputError(f"--presets {','.join(unknown)}: no such preset; choose from {', '.join(known)}")
    labels = {preset: (preset, ()) for preset in presets} | controls
    parsed = {name: (preset, extra) for name, preset, extra in map(parse_variant, variants)}
    clashes = sorted(set(parsed) & set(labels))
    if clashes:
        raise BenchInputError(
            f"--variant {', '.join(clashes)}: the name of a variant must not be a preset or control of the sweep"
        )
    return labels | parsed


def _check_seeds(seeds: list[int]) -> None:
    if not seeds or len(set(seeds)) != len(seeds):
        raise BenchInputError(f"--seeds {seeds}: give at least one seed, none repeated")


def plan_kit(presets: list[str], seeds: list[int], regimes: list[str], steps: int, probe_every: int,
             variants: list[str] = (), controls: bool = True, task: str = DEFAULT_TASK) -> list[KitRun]:  # fmt: skip
    """The kit runs of a sweep, seed-major so that a cut-short sweep has every preset on the first seeds."""
    if task not in KIT_PRESETS:
        raise BenchInputError(f"--task {task}: choose from {', '.join(KIT_PRESETS)}")
    bad_regimes = [regime for regime in regimes if regime not in REGIMES]
    if bad_regimes:
        raise BenchInputError(f"--regimes {','.join(bad_regimes)}: choose from {', '.join(REGIMES)}")
    if steps < 1 or probe_every < 1:
        raise BenchInputError(f"--steps {steps}, --probe-every {probe_every}: each must be at least 1")
    _check_seeds(seeds)
    labels = _labels(presets, variants, CONTROLS if controls else {})
    return [
        KitRun(regime, label, seed, steps, probe_every, task, algorithm, extra)
        for regime in regimes
        for index, seed in enumerate(seeds)
        for label, (algorithm, extra) in labels.items()
        if index < CONTROL_SEEDS.get(label, len(seeds))
    ]


def plan_recipes(recipes: list[str], presets: list[str], seeds: list[int], steps: int | None = None,
                 overrides: list[str] = (), variants: list[str] = (), eval_k: int | None = None) -> list[RecipeRun]:  # fmt: skip
    """The recipe runs of a sweep (recipe-, then seed-major), each with the user's `overrides`."""
    unknown = [recipe for recipe in recipes if recipe not in available_recipes()]
    if not recipes or unknown:
        raise BenchInputError(f"--recipe {','.join(unknown) or '(none)'}: choose from {', '.join(available_recipes())}")
    if steps is not None and steps < 1:
        raise BenchInputError(f"--steps {steps}: must be at least 1")
    if eval_k is not None and eval_k < 1:
        raise BenchInputError(f"--eval-k {eval_k}: must be at least 1")
    _check_seeds(seeds)
    labels = _labels(presets, variants, {})
    return [
        RecipeRun(recipe, label, seed, steps, algorithm, (*overrides, *extra), eval_k)
        for recipe in recipes
        for seed in seeds
        for label, (algorithm, extra) in labels.items()
    ]


def read_result(run_dir: Path) -> dict | None:
    try:
        return json.loads((run_dir / "result.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def finished_runs(out: Path, regime: str) -> dict[str, dict[int, Path]]:
    """{preset: {seed: run folder}} of a regime's runs that finished (`done`) in a sweep's folder,
    whatever plan made them: for tools that read a sweep after the fact (benchmarks/)."""
    found: dict = {}
    for run_dir in sorted(path.parent for path in (out / regime).glob("*/seed*/result.json")):
        result = read_result(run_dir)
        if result is not None and result["status"] == "done":
            found.setdefault(run_dir.parent.name, {})[int(run_dir.name.removeprefix("seed"))] = run_dir
    return found


def write_result(run_dir: Path, result: dict) -> None:
    partial = run_dir / "result.json.partial"
    partial.write_text(json.dumps(result, indent=2))
    partial.replace(run_dir / "result.json")  # atomic: a result is there whole or not at all


def model_dir(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"global_step_{step}" / "actor" / "huggingface"


def warm_start_path(out: Path, task: str) -> Path:
    return Path(out) / f"warm_start_{task}.json"


def probe_model(path: Path, task: str) -> dict:
    """The model at `path` on the kit's held-out prompts: greedy accuracy, sampled accuracy
    (mean@PROBE_SAMPLES at T=1), each with its standard error over prompts, and the unbiased pass@k
    (the evaluator's estimator) for k = 1, 2, 4, ... PROBE_SAMPLES."""
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..eval.estimators import k_ladder, pass_at_k
    from ..kit import build_kit, reward
    from ..kit.model import sample_answers
    from ..kit.tasks import get_task

    kit_task = get_task(task)
    kit = build_kit(task=task, log=lambda message: None)
    _, held_out = kit_task.split_problems(kit.info["settings"]["seed"], kit.info["val_size"])
    score = getattr(reward, kit_task.reward_name)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    probe = {"prompts": len(held_out), "samples": PROBE_SAMPLES}
    for label, greedy, samples in (("greedy", True, 1), ("sampled", False, PROBE_SAMPLES)):
        repeated = [problem for problem in held_out for _ in range(samples)]
        texts = sample_answers(model, tokenizer, repeated, greedy, PROBE_SEED, kit_task.max_response_tokens)
        scores = [score(solution_str=text, ground_truth=problem.answer) for text, problem in zip(texts, repeated)]
        correct = np.array([s["acc"] if isinstance(s, dict) else s for s in scores]).reshape(len(held_out), samples)
        per_prompt = correct.mean(axis=1)
        probe[f"{label}_acc"] = float(per_prompt.mean())
        probe[f"{label}_acc_se"] = float(per_prompt.std(ddof=1) / np.sqrt(len(held_out)))
        if not greedy:
            counts = correct.sum(axis=1).astype(int)
            probe["pass_at_k"] = {
                str(k): float(np.mean([pass_at_k(samples, int(c), k) for c in counts])) for k in k_ladder(samples)
            }
    return probe


def warm_start_probe(out: Path, task: str) -> dict:
    """The warm start's probe, measured once per sweep and task (step 0 of every curve)."""
    path = warm_start_path(out, task)
    if path.exists():
        return json.loads(path.read_text())
    from ..kit import build_kit

    probe = probe_model(build_kit(task=task, log=lambda message: None).model_dir, task)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(probe, indent=2))
    return probe


def probe_run(run_dir: Path, spec: KitRun) -> dict:
    """Probe every exported model of a finished run; keep only the final model on disk."""
    probes = {}
    for step in spec.probe_steps():
        probes[str(step)] = probe_model(model_dir(run_dir, step), spec.task)
        if step != spec.steps:
            shutil.rmtree(model_dir(run_dir, step).parents[1])
    final = probes[str(spec.steps)]
    return {"probes": probes, **{f"final_{key}": value for key, value in final.items() if key.endswith(("_acc", "_se"))},
            "final_pass_at_k": final["pass_at_k"]}  # fmt: skip


def final_checkpoint(run_dir: Path) -> Path:
    """The actor checkpoint of the last step verl saved (`latest_checkpointed_iteration.txt`)."""
    checkpoints = run_dir / "checkpoints"
    latest = checkpoints / "latest_checkpointed_iteration.txt"
    if not latest.exists():
        raise FileNotFoundError(f"{checkpoints}: verl saved no checkpoint (trainer.save_freq must be > 0)")
    return checkpoints / f"global_step_{int(latest.read_text().strip())}" / "actor"


def evaluation_config(config, model: Path, out: Path, k: int | None = None):
    """The evaluator's settings for a trained recipe run: the recipe's own validation sets, samples
    per problem, decoding settings, response length, tensor parallelism and reward function."""
    from ..eval.runner import EvalConfig

    val = config.actor_rollout_ref.rollout.val_kwargs
    files = config.data.val_files
    reward = config.reward.get("custom_reward_function") or {}
    return EvalConfig(
        model=str(model),
        data=[str(f) for f in (files if isinstance(files, (list, ListConfig)) else [files])],
        out=str(out),
        k=k or int(val.n),
        temperature=float(val.temperature),
        top_p=float(val.top_p),
        top_k=int(val.top_k),
        max_response_length=int(config.data.max_response_length),
        backend=config.actor_rollout_ref.rollout.name,
        tensor_parallel_size=int(config.actor_rollout_ref.rollout.tensor_model_parallel_size),
        seed=int(config.actor_rollout_ref.rollout.seed),
        prompt_key=config.data.prompt_key,
        reward_fn=f"{reward['path']}:{reward['name']}" if reward.get("path") else None,
        progress=False,
    )


def evaluate_run(run_dir: Path, spec: RecipeRun) -> dict:
    """The final checkpoint of a recipe run through the evaluator: per benchmark and on average,
    Avg@k with its bootstrap CI and the unbiased Pass@k ladder."""
    from omegaconf import OmegaConf

    from ..eval.runner import evaluate
    from ..launch import base_overrides, compose_config

    config = compose_config([*base_overrides(run_dir), *spec.overrides()])
    OmegaConf.resolve(config)
    summary = evaluate(evaluation_config(config, final_checkpoint(run_dir), run_dir / "eval", spec.eval_k),
                       log=lambda message: None)  # fmt: skip
    if not summary.get("complete"):
        raise RuntimeError(f"the evaluation of {run_dir} is incomplete: {run_dir / 'eval'}")
    average = summary["average"]
    return {
        "eval_dir": str(run_dir / "eval"),
        "eval_k": summary["k"],
        "avg_at_k": average["avg_at_k"],
        "avg_at_k_ci": average["avg_at_k_ci"],
        "pass_at_k": average["pass_at_k"],
        "benchmarks": {
            name: {"avg_at_k": row["avg_at_k"], "pass_at_k": row["pass_at_k"]}
            for name, row in summary["benchmarks"].items()
        },  # fmt: skip
    }


class Progress:
    """One line per step and per run: which run, which step, and the ETA of the whole sweep
    (tqdm, from the mean wall time of the runs finished in this session)."""

    def __init__(self, total_runs: int, already_done: int, log=print):
        from tqdm import tqdm

        self.bar = tqdm(total=total_runs, initial=already_done, unit="run", dynamic_ncols=True, desc="sweep")
        self.log = log

    def step(self, spec, record: dict) -> None:
        data = record["data"]
        parts = [f"{spec.name} step {record['step']}/{spec.steps}"]
        if "critic/score/mean" in data:
            parts.append(f"reward {data['critic/score/mean']:.3f}")
        if "training/rollout_probs_diff_max" in data:
            parts.append(f"|p_actor - p_rollout| max {data['training/rollout_probs_diff_max']:.1e}")
        self.bar.write("  ".join(parts))

    def run_finished(self, spec, result: dict) -> None:
        self.bar.update(1)
        if result["status"] == "done" and spec.kind == "kit":
            self.bar.write(f"{spec.name}: done in {result['seconds']:.0f} s, final sampled accuracy "
                           f"{result['final_sampled_acc']:.3f}, greedy {result['final_greedy_acc']:.3f}")  # fmt: skip
        elif result["status"] == "done":
            self.bar.write(f"{spec.name}: done in {result['seconds']:.0f} s, Avg@{result['eval_k']} "
                           f"{result['avg_at_k']:.3f} over {len(result['benchmarks'])} benchmarks")  # fmt: skip
        else:
            self.bar.write(f"{spec.name}: FAILED ({result['error'].splitlines()[0][:200]}); the sweep goes on")

    def close(self) -> None:
        self.bar.close()


def run_one(session: RaySession, spec, out: Path, progress: Progress) -> dict:
    run_dir = spec.directory(out)
    if spec.restart and run_dir.exists():
        shutil.rmtree(run_dir)  # an interrupted kit run starts again from scratch
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    result = {"run": asdict(spec)}
    try:
        run = session.run(spec.overrides(), run_dir, on_step=lambda record: progress.step(spec, record))
        result["startup_seconds"] = None if run.startup_seconds is None else round(run.startup_seconds, 1)
        result.update(spec.measure(run_dir))
        result["status"] = "done"
    except RunFailed as exc:
        result.update(status="failed", error=str(exc))
    except Exception:  # the probe or anything else: reported with the run, the sweep goes on
        result.update(status="failed", error=traceback.format_exc())
    result["seconds"] = round(time.perf_counter() - started, 1)
    write_result(run_dir, result)
    return result


def run_sweep(specs: list, out: Path, retry_failed: bool = False, log=print, workers: int = 1) -> dict:
    """Run every spec without a result (and failed ones if `retry_failed`); returns {name: result}.
    With `workers` > 1 the runs are shared among that many Ray sessions running side by side
    (`run_in_shards`)."""
    out.mkdir(parents=True, exist_ok=True)
    results, todo = {}, []
    for spec in specs:
        result = read_result(spec.directory(out))
        if result is None or (retry_failed and result["status"] == "failed"):
            todo.append(spec)
        else:
            results[spec.name] = result
    log(f"{len(specs)} runs in the sweep: {len(results)} finished before, {len(todo)} to run (results in {out})")
    for task in sorted({spec.task for spec in specs if spec.kind == "kit"}):
        warm = warm_start_probe(out, task)
        log(f"warm start ({task}): held-out accuracy {warm['sampled_acc']:.3f} sampled (mean@{PROBE_SAMPLES}, T=1), "
            f"{warm['greedy_acc']:.3f} greedy")  # fmt: skip
    if not todo:
        return results
    if workers > 1 and len(todo) > 1:
        results.update(run_in_shards(todo, out, min(workers, len(todo)), len(specs), log))
        return results
    progress = Progress(len(specs), len(results), log)
    try:
        with RaySession(out / SESSION_LOGS) as session:
            for spec in todo:
                results[spec.name] = run_one(session, spec, out, progress)
                progress.run_finished(spec, results[spec.name])
    finally:
        progress.close()
    return results


def default_workers(specs: list) -> int:
    """Ray sessions side by side for a sweep: 2 for kit runs on a machine with 2 or more cores (a
    run's start-up keeps one core busy and a kit step about 1.2: two sessions finish a sweep about
    1.7 times sooner on 2 cores, docs/benchmarks.md), 1 for recipe runs (each wants every GPU)."""
    import os

    if any(spec.kind != "kit" for spec in specs):
        return 1
    return 2 if (os.cpu_count() or 1) >= 2 else 1


SHARD_LOG = "shard{index}.log"


def run_in_shards(todo: list, out: Path, workers: int, total: int, log=print) -> dict:
    """The runs of `todo` dealt round-robin to `workers` subprocesses, each one Ray session
    (`python -m maspo_verl.bench.sweep <shard file>`, its output in `<out>/shard<i>.log`); this
    process shows their progress from the runs' `result.json` files and returns their results."""
    import subprocess
    import sys

    from tqdm import tqdm

    processes = []
    for index in range(workers):
        shard_specs = todo[index::workers]
        shard_file = out / f"shard{index}.json"
        shard_file.write_text(
            json.dumps({"out": str(out), "runs": [{"kind": s.kind, **asdict(s)} for s in shard_specs]})
        )
        with open(out / SHARD_LOG.format(index=index), "w") as shard_log:
            processes.append(subprocess.Popen([sys.executable, "-m", "maspo_verl.bench.sweep", str(shard_file)],
                                              stdout=shard_log, stderr=subprocess.STDOUT))  # fmt: skip
        if index < workers - 1:
            _wait_until_training(out, processes[-1])
    log(f"{len(todo)} runs in {workers} Ray sessions side by side; their logs: {out}/shard<i>.log")
    bar = tqdm(total=total, initial=total - len(todo), unit="run", dynamic_ncols=True, desc="sweep")
    results = {}
    try:
        while len(results) < len(todo):
            for spec in todo:
                if spec.name not in results and (result := read_result(spec.directory(out))) is not None:
                    results[spec.name] = result
                    bar.update(1)
                    status = (
                        "done" if result["status"] == "done" else f"FAILED: {result['error'].splitlines()[0][:200]}"
                    )
                    bar.write(f"{spec.name}: {status} in {result['seconds']:.0f} s")
            if len(results) < len(todo) and all(process.poll() is not None for process in processes):
                break  # a shard died before writing its runs' results
            time.sleep(2)
    finally:
        bar.close()
        for process in processes:
            if process.poll() is None:
                process.terminate()
            process.wait()
    missing = [spec.name for spec in todo if spec.name not in results]
    if missing:
        raise RuntimeError(f"{len(missing)} runs ended without a result (first: {missing[0]}); see {out}/shard<i>.log")
    return results


SHARD_START_WAIT_S = 300


def _wait_until_training(out: Path, process) -> None:
    """Wait until a shard's Ray session trains (or the shard ends): Ray starting two clusters at once
    on a busy machine can miss its own fixed 30-second start-up limit ("The current node timed out
    during startup"), so the next shard starts once this one is up."""
    deadline = time.monotonic() + SHARD_START_WAIT_S
    while (
        time.monotonic() < deadline and process.poll() is None and not session_trains(out / SESSION_LOGS, process.pid)
    ):
        time.sleep(1)


def _run_shard(shard_file: Path) -> None:
    shard = json.loads(shard_file.read_text())
    kinds = {"kit": KitRun, "recipe": RecipeRun}
    specs = []
    for run in shard["runs"]:
        fields = {key: tuple(value) if key == "extra" else value for key, value in run.items() if key != "kind"}
        specs.append(kinds[run["kind"]](**fields))
    run_sweep(specs, Path(shard["out"]))


if __name__ == "__main__":
    import sys

    _run_shard(Path(sys.argv[1]))
