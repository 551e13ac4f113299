"""Plan and run a sweep: presets x seeds through verl's real trainer, one Ray session, resumable.

Each run lives in `<out>/<regime>/<preset>/seed<k>/`:
- `metrics.jsonl`: verl's own per-step metrics (its file logger);
- `val/<step>.jsonl`: verl's dump of every held-out generation with its score;
- `result.json`, written last: `status` (`done` or `failed`), the error of a failed run, wall time,
  and the final model's greedy and sampled held-out accuracy (the kit's own probe on the last
  checkpoint, which verl writes in Hugging Face format at the end of the run).
A run with a `result.json` is finished and skipped when the sweep is started again (`--retry-failed`
reruns the failed ones); a run without one (interrupted) is run again from its start.

Everything but the preset is equal across a seed's runs: the same kit (one warm start), the same
data order and sampling seed (`data.seed`, `actor_rollout_ref.rollout.seed`), the same rollout
budget and number of updates per rollout.
"""

from __future__ import annotations

import json
import shutil
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

from ..launch import RaySession, RunFailed

KIT_PRESET = "chain_cpu"
KIT_TASK = "chain"
PROBE_SAMPLES = 8  # sampled responses per held-out prompt for the final accuracy

# What differs between the regimes; everything else is configs/kit/chain_cpu.yaml's.
REGIMES = {
    # 8 prompts x 8 samples per rollout, 2 prompts per mini-batch: 4 updates per rollout, at a
    # learning rate the warm start survives (5e-5 already cost greedy accuracy within 2 steps)
    "standard": ["actor_rollout_ref.actor.optim.lr=1e-5", "actor_rollout_ref.actor.ppo_mini_batch_size=2"],
    # 3x the learning rate and 1 prompt per mini-batch: 8 updates per rollout, the later ones far
    # off-policy, where hard clipping and soft gating should part ways
    "stress": [
        "actor_rollout_ref.actor.optim.lr=3e-5",
        "actor_rollout_ref.actor.ppo_mini_batch_size=1",
        # a mini-batch is now 8 sequences: one micro-batch of 8
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=8",
    ],
}


def run_directory(out: Path, regime: str, preset: str, seed: int) -> Path:
    """Where a run's files live: `<out>/<regime>/<preset>/seed<k>`."""
    return Path(out) / regime / preset / f"seed{seed}"


class BenchInputError(ValueError):
    """A bad sweep setting: the message names it, its value and what is allowed."""


@dataclass(frozen=True)
class RunSpec:
    regime: str
    preset: str  # the label in tables: a preset of configs/algorithm, or a variant's name
    seed: int
    steps: int
    test_freq: int
    val_samples: int
    algorithm: str = ""  # the preset a variant starts from (empty: `preset` itself)
    extra: tuple = ()  # a variant's own Hydra overrides

    @property
    def name(self) -> str:
        return f"{self.regime}/{self.preset}/seed{self.seed}"

    def directory(self, out: Path) -> Path:
        return run_directory(out, self.regime, self.preset, self.seed)

    def overrides(self, out: Path) -> list[str]:
        run_dir = self.directory(out)
        return [
            f"+kit={KIT_PRESET}",
            f"algorithm={self.algorithm or self.preset}",
            *REGIMES[self.regime],
            f"data.seed={self.seed}",
            f"actor_rollout_ref.rollout.seed={self.seed}",
            f"trainer.total_training_steps={self.steps}",
            f"trainer.test_freq={self.test_freq}",
            "trainer.val_before_train=True",
            f"actor_rollout_ref.rollout.val_kwargs.n={self.val_samples}",
            f"trainer.validation_data_dir={run_dir / 'val'}",
            # the final model in Hugging Face format, for the greedy and sampled probe
            f"trainer.save_freq={self.steps}",
            "actor_rollout_ref.actor.checkpoint.save_contents=[hf_model]",
            "trainer.resume_mode=disable",
            *self.extra,
        ]


def available_presets() -> list[str]:
    """Every preset of configs/algorithm (the default set of a sweep)."""
    import maspo_verl_configs

    folder = Path(maspo_verl_configs.__file__).parent / "algorithm"
    return sorted(path.stem for path in folder.glob("*.yaml") if not path.stem.startswith("_"))


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


def plan(presets: list[str], seeds: list[int], regimes: list[str], steps: int, test_freq: int, val_samples: int,
         variants: list[str] = ()):  # fmt: skip
    """The runs of a sweep, seed-major so that a cut-short sweep has every preset on the first seeds."""
    known = available_presets()
    parsed = {name: (preset, extra) for name, preset, extra in map(parse_variant, variants)}
    clashes = sorted(set(parsed) & set(presets))
    if clashes:
        raise BenchInputError(
            f"--variant {', '.join(clashes)}: the name of a variant must not be a preset of the sweep"
        )
    unknown = [preset for preset in presets if preset not in known]
    if unknown:
        raise BenchInputError(f"--presets {','.join(unknown)}: no such preset; choose from {', '.join(known)}")
    bad_regimes = [regime for regime in regimes if regime not in REGIMES]
    if bad_regimes:
        raise BenchInputError(f"--regimes {','.join(bad_regimes)}: choose from {', '.join(REGIMES)}")
    if steps < 1 or test_freq < 1 or val_samples < 1:
        raise BenchInputError(
            f"--steps {steps}, --test-freq {test_freq}, --val-samples {val_samples}: each must be at least 1"
        )
    if len(set(seeds)) != len(seeds):
        raise BenchInputError(f"--seeds {seeds}: a seed is repeated")
    labels = {preset: (preset, ()) for preset in presets} | parsed
    return [
        RunSpec(regime, label, seed, steps, test_freq, val_samples, algorithm, extra)
        for regime in regimes
        for seed in seeds
        for label, (algorithm, extra) in labels.items()
    ]


def read_result(run_dir: Path) -> dict | None:
    try:
        return json.loads((run_dir / "result.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_result(run_dir: Path, result: dict) -> None:
    partial = run_dir / "result.json.partial"
    partial.write_text(json.dumps(result, indent=2))
    partial.replace(run_dir / "result.json")  # atomic: a result is there whole or not at all


def final_model_dir(run_dir: Path, steps: int) -> Path:
    return run_dir / "checkpoints" / f"global_step_{steps}" / "actor" / "huggingface"


def probe_final_model(model_dir: Path, seed: int) -> dict:
    """Greedy and sampled (T=1, PROBE_SAMPLES per prompt) accuracy of a model on the kit's held-out
    prompts, with standard errors over prompts."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..kit import build_kit
    from ..kit.model import sample_answers
    from ..kit.reward import compute_chain_score
    from ..kit.tasks import get_task

    task = get_task(KIT_TASK)
    kit = build_kit(task=KIT_TASK, log=lambda message: None)
    _, held_out = task.split_problems(kit.info["settings"]["seed"], kit.info["val_size"])
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    probe = {}
    for label, greedy, samples in (("greedy", True, 1), ("sampled", False, PROBE_SAMPLES)):
        repeated = [problem for problem in held_out for _ in range(samples)]
        texts = sample_answers(model, tokenizer, repeated, greedy, seed, task.max_response_tokens)
        scores = torch.tensor(
            [compute_chain_score(solution_str=t, ground_truth=p.answer)["acc"] for t, p in zip(texts, repeated)]
        )
        per_prompt = scores.view(len(held_out), samples).mean(dim=1)
        probe[f"final_{label}_acc"] = per_prompt.mean().item()
        probe[f"final_{label}_acc_se"] = (per_prompt.std(unbiased=True) / len(held_out) ** 0.5).item()
    probe["probe_samples"] = PROBE_SAMPLES
    probe["probe_prompts"] = len(held_out)
    return probe


class Progress:
    """One line per step and per run: which run, which step, and the ETA of the whole sweep,
    from the mean wall time of the runs finished in this session."""

    def __init__(self, total_runs: int, already_done: int, log=print):
        from tqdm import tqdm

        self.bar = tqdm(total=total_runs, initial=already_done, unit="run", dynamic_ncols=True, desc="sweep")
        self.log = log

    def step(self, spec: RunSpec, record: dict) -> None:
        data = record["data"]
        accuracy = next((v for k, v in data.items() if k.startswith("val-core/") and "/acc/mean@" in k), None)
        parts = [f"{spec.name} step {record['step']}/{spec.steps}"]
        if "critic/score/mean" in data:
            parts.append(f"reward {data['critic/score/mean']:.3f}")
        if accuracy is not None:
            parts.append(f"held-out {accuracy:.3f}")
        self.bar.write("  ".join(parts))

    def run_finished(self, spec: RunSpec, result: dict) -> None:
        self.bar.update(1)
        if result["status"] == "done":
            self.bar.write(f"{spec.name}: done in {result['seconds']:.0f} s, final sampled accuracy "
                           f"{result['final_sampled_acc']:.3f}, greedy {result['final_greedy_acc']:.3f}")  # fmt: skip
        else:
            self.bar.write(f"{spec.name}: FAILED ({result['error'].splitlines()[0][:200]}); the sweep goes on")

    def close(self) -> None:
        self.bar.close()


def run_one(session: RaySession, spec: RunSpec, out: Path, progress: Progress) -> dict:
    run_dir = spec.directory(out)
    if run_dir.exists():
        shutil.rmtree(run_dir)  # an interrupted run starts again from scratch
    run_dir.mkdir(parents=True)
    started = time.perf_counter()
    result = {"run": asdict(spec)}
    try:
        run = session.run(spec.overrides(out), run_dir, on_step=lambda record: progress.step(spec, record))
        result["startup_seconds"] = None if run.startup_seconds is None else round(run.startup_seconds, 1)
        result.update(probe_final_model(final_model_dir(run_dir, spec.steps), spec.seed))
        result["status"] = "done"
    except RunFailed as exc:
        result.update(status="failed", error=str(exc))
    except Exception:  # the probe or anything else: reported with the run, the sweep goes on
        result.update(status="failed", error=traceback.format_exc())
    result["seconds"] = round(time.perf_counter() - started, 1)
    write_result(run_dir, result)
    return result


def run_sweep(specs: list[RunSpec], out: Path, retry_failed: bool = False, log=print) -> dict:
    """Run every spec without a result (and failed ones if `retry_failed`); returns {name: result}."""
    out.mkdir(parents=True, exist_ok=True)
    results, todo = {}, []
    for spec in specs:
        result = read_result(spec.directory(out))
        if result is None or (retry_failed and result["status"] == "failed"):
            todo.append(spec)
        else:
            results[spec.name] = result
    log(f"{len(specs)} runs in the sweep: {len(results)} finished before, {len(todo)} to run (results in {out})")
    if not todo:
        return results
    progress = Progress(len(specs), len(results), log)
    try:
        with RaySession(out / "verl_logs") as session:
            for spec in todo:
                results[spec.name] = run_one(session, spec, out, progress)
                progress.run_finished(spec, results[spec.name])
    finally:
        progress.close()
    return results
