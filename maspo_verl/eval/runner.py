"""The evaluator: problems -> k samples each through verl's rollout replicas -> scores -> summary."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from maspo_verl.eval import estimators
from maspo_verl.eval.data import EvalInputError, Problem, benchmark_hashes, load_problems
from maspo_verl.eval.scoring import MATH_SCORER, Scorer
from maspo_verl.eval.store import UNKNOWN, SampleStore, with_unknowns

# The DeepSeek-R1-Distill evaluation convention (DeepSeek's model card).
DEFAULT_TEMPERATURE = 0.6
DEFAULT_TOP_P = 0.95
DEFAULT_K = 32
DEFAULT_MAX_RESPONSE_LENGTH = 32768
SUMMARY_FILE = "summary.json"
SUMMARY_MD = "summary.md"


@dataclass
class EvalConfig:
    model: str
    data: list
    out: str
    k: int = DEFAULT_K
    temperature: float = DEFAULT_TEMPERATURE
    top_p: float = DEFAULT_TOP_P
    top_k: int = -1
    max_response_length: int = DEFAULT_MAX_RESPONSE_LENGTH
    backend: str = "vllm"
    dtype: str | None = None  # bfloat16 on GPU, float32 on CPU
    tensor_parallel_size: int = 1
    num_replicas: int | None = None  # all visible GPUs / tensor_parallel_size; 1 on CPU
    max_num_seqs: int = 256
    gpu_memory_utilization: float = 0.85
    seed: int = 0
    chat_template_kwargs: dict = field(default_factory=dict)
    prompt_key: str = "prompt"
    reward_fn: str | None = None
    merge_cache: str | None = None
    max_new_samples: int | None = None  # stop after this many new samples (chunked jobs; tests)
    confidence: float = 0.95
    n_bootstrap: int = estimators.DEFAULT_BOOTSTRAP
    ray_address: str | None = None
    progress: bool = True


def validate(config: EvalConfig) -> None:
    """Cheap checks on the numbers (files are checked by the loaders)."""
    if not isinstance(config.k, int) or config.k < 1:
        raise EvalInputError(f"k must be an integer >= 1, got {config.k!r}")
    if config.max_response_length < 1:
        raise EvalInputError(f"--max-response-length must be >= 1, got {config.max_response_length}")
    if config.temperature < 0:
        raise EvalInputError(f"--temperature must be >= 0, got {config.temperature}")
    if not 0 < config.top_p <= 1:
        raise EvalInputError(f"--top-p must be in (0, 1], got {config.top_p}")
    if not 0 < config.confidence < 1:
        raise EvalInputError(f"--confidence must be in (0, 1), got {config.confidence}")
    if config.max_new_samples is not None and config.max_new_samples < 0:
        raise EvalInputError(f"--max-new-samples must be >= 0, got {config.max_new_samples}")


def request_seed(seed: int, problem_id: str, sample: int) -> int:
    digest = hashlib.sha256(f"{seed}/{problem_id}/{sample}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def _prompt_ids(tokenizer, messages, chat_template_kwargs) -> list[int]:
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, **chat_template_kwargs)
    if hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return [int(t) for t in ids]


def _eos_ids(model_config) -> set[int]:
    ids: set[int] = set()
    for src in (model_config.generation_config, model_config.hf_config, model_config.tokenizer):
        eos = getattr(src, "eos_token_id", None)
        if eos is not None:
            ids.update([eos] if isinstance(eos, int) else eos)
    return ids


def chat_template_sha256(tokenizer) -> str:
    """Identity of the chat template the prompts go through ("none" when the tokenizer has none)."""
    template = getattr(tokenizer, "chat_template", None)
    if template is None:
        return "none"
    text = template if isinstance(template, str) else json.dumps(template, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def prompt_template(problems: list[Problem], scorer: Scorer) -> str:
    """The prompt template the data was prepared with (``extra_info.template``), after checking
    that each data_source's scorer reads answers written the way it asks; "unknown" when the data
    records none, "<data_source>=<name>, ..." when the files differ."""
    from maspo_verl.data.templates import PROBES, TEMPLATES, reads_any

    first: dict[tuple[str, str], list[Problem]] = {}
    for p in problems:
        name = p.extra_info.get("template")
        if name and len(first.setdefault((p.data_source, name), [])) < PROBES:
            first[(p.data_source, name)].append(p)
    for (data_source, name), members in first.items():
        p = members[0]
        if name not in TEMPLATES:
            raise EvalInputError(f"{p.source_file} was prepared with the prompt template {name!r}, which this "
                                 f"version does not know (known: {sorted(TEMPLATES)})")  # fmt: skip
        rows = [(m.ground_truth, m.extra_info) for m in members]
        problem = reads_any(name, scorer.function(data_source), data_source, rows)
        if problem:
            raise EvalInputError(
                f"{p.source_file} was prepared with the prompt template {name!r}, which asks for "
                f"{TEMPLATES[name].asks_for}, but its scorer {scorer.spec_for(data_source)} cannot read it: it "
                f"{problem}. Pass --reward-fn with a scorer that reads this format (the default, {MATH_SCORER}, "
                "reads \\boxed{} and 'Answer:'), or prepare the data with another --template"
            )
    names = sorted({name for _, name in first})
    if not names:
        return UNKNOWN
    if len(names) == 1:
        return names[0]
    return ", ".join(f"{ds}={name}" for ds, name in sorted(first))


def evaluate(config: EvalConfig, log=print) -> dict:
    """Run (or resume) one evaluation; return the summary (also written to ``<out>/summary.json``)."""
    from maspo_verl.eval.generate import EngineSettings, check_backend, cuda_device_count, engine_version
    from maspo_verl.eval.model import check_model, model_fingerprint, resolve_model

    # ---- everything that can be wrong with the input, before any model is loaded
    validate(config)
    problems = load_problems(config.data, config.prompt_key)
    check_model(config.model)
    num_replicas = check_backend(config.backend, config.tensor_parallel_size, config.num_replicas)
    scorer = Scorer(config.reward_fn)
    scorers = scorer.resolve(p.data_source for p in problems)
    template = prompt_template(problems, scorer)
    engine = engine_version(config.backend)
    dtype = config.dtype or ("bfloat16" if cuda_device_count() else "float32")

    # ---- model (a verl checkpoint is merged once, cached) and prompts
    resolved = resolve_model(config.model, config.merge_cache, log=log)
    from verl.workers.config import HFModelConfig

    model_config = HFModelConfig(path=str(resolved.hf_dir))
    tokenizer = model_config.tokenizer
    prompts = {p.problem_id: _prompt_ids(tokenizer, p.messages, config.chat_template_kwargs) for p in problems}
    eos_ids = _eos_ids(model_config)

    generation = {  # the fingerprint: store.FINGERPRINT_FIELDS
        "model_fingerprint": model_fingerprint(resolved.hf_dir),
        "backend": config.backend,
        "engine_version": engine,
        "dtype": dtype,
        "tensor_parallel_size": config.tensor_parallel_size,
        "temperature": config.temperature,
        "top_p": config.top_p,
        "top_k": config.top_k,
        "max_response_length": config.max_response_length,
        "chat_template_sha256": chat_template_sha256(tokenizer),
        "chat_template_kwargs": config.chat_template_kwargs,
        "prompt_template": template,
        "data_sha256": benchmark_hashes(problems),
        "seed": config.seed,
    }
    record = {
        "model": resolved.describe(),
        "model_source": str(resolved.source),
        "k": config.k,
        "data": [str(Path(p).resolve()) for p in config.data],
        "scorers": scorers,
        "num_replicas": num_replicas,
        "versions": _versions(),
    }
    log("evaluation settings (defaults included):")
    for key, value in {**generation, **record}.items():
        log(f"  {key}: {value}")
    if config.temperature == 0 and config.k > 1:
        log("  warning: temperature 0 (greedy) with k > 1 gives k identical samples per problem")

    store = SampleStore(Path(config.out))
    store.open(generation, extra={"run": record})
    _rescore_if_needed(store, problems, scorer, scorers, log)
    _check_prompts(store, problems)

    by_id = {p.problem_id: p for p in problems}
    todo = [(p.problem_id, s) for p in problems for s in range(config.k) if (p.problem_id, s) not in store.records]
    if config.max_new_samples is not None:
        todo = todo[: config.max_new_samples]
    done_before = sum(1 for p in problems for s in range(config.k) if (p.problem_id, s) in store.records)
    log(f"{len(problems)} problems x k={config.k}: {done_before} samples already done, {len(todo)} to generate")

    if todo:
        settings = EngineSettings(
            backend=config.backend,
            model_dir=str(resolved.hf_dir),
            prompt_length=max(len(ids) for ids in prompts.values()),
            response_length=config.max_response_length,
            dtype=dtype,
            num_replicas=num_replicas,
            tensor_parallel_size=config.tensor_parallel_size,
            max_num_seqs=config.max_num_seqs,
            gpu_memory_utilization=config.gpu_memory_utilization,
            ray_address=config.ray_address,
        )
        sampling = {"temperature": config.temperature, "top_p": config.top_p, "top_k": config.top_k,
                    "max_tokens": config.max_response_length, "logprobs": False}  # fmt: skip
        asyncio.run(
            _generate_all(
                settings, todo, by_id, prompts, sampling, config, store, scorer, tokenizer, eos_ids, done_before
            )
        )
    store.close()

    summary = summarize(store, problems, config, generation, record)
    out = Path(config.out)
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
    (out / SUMMARY_MD).write_text(summary_markdown(summary))
    log(summary_markdown(summary))
    return summary


async def _generate_all(
    settings, todo, by_id, prompts, sampling, config, store, scorer, tokenizer, eos_ids, done_before
):
    from tqdm import tqdm

    from maspo_verl.eval.generate import ReplicaPool

    pool = ReplicaPool(settings)
    started = time.time()
    try:
        await pool.start()
        order = {pid: i for i, pid in enumerate(dict.fromkeys(pid for pid, _ in todo))}

        async def one(problem_id: str, sample: int):
            params = {**sampling, "seed": request_seed(config.seed, problem_id, sample)}
            replica = order[problem_id] % len(pool.replicas)
            request_id = f"eval-{uuid.uuid4().hex[:12]}"
            out = await pool.generate(replica, prompts[problem_id], params, request_id)
            return problem_id, sample, out

        bar = tqdm(total=len(todo), desc="generating", unit="sample", disable=not config.progress,
                   dynamic_ncols=True, file=sys.stderr)  # fmt: skip
        tasks = [asyncio.ensure_future(one(pid, s)) for pid, s in todo]
        try:
            for next_done in asyncio.as_completed(tasks):
                problem_id, sample, out = await next_done
                problem = by_id[problem_id]
                store.append(_record(problem, sample, out, tokenizer, eos_ids, config, scorer))
                bar.update(1)
        finally:
            for task in tasks:
                task.cancel()
            bar.close()
    finally:
        pool.shutdown()
    print(f"generated {len(todo)} samples in {time.time() - started:.1f} s (incl. start-up)", file=sys.stderr)


def _record(problem: Problem, sample: int, out, tokenizer, eos_ids, config: EvalConfig, scorer: Scorer) -> dict:
    token_ids = list(out.token_ids)
    response = tokenizer.decode(token_ids, skip_special_tokens=True)  # as verl's reward managers decode
    truncated = len(token_ids) >= config.max_response_length and (not token_ids or token_ids[-1] not in eos_ids)
    scored = scorer(problem.data_source, response, problem.ground_truth, dict(problem.extra_info))
    return {
        "problem_id": problem.problem_id,
        "data_source": problem.data_source,
        "index": problem.index,
        "sample": sample,
        "prompt_sha": problem.prompt_sha,
        "response": response,
        "response_tokens": len(token_ids),
        "truncated": bool(truncated),
        "stop_reason": out.stop_reason,
        "pred": scored.pred,
        "score": scored.score,
        "acc": scored.acc,
        "correct": scored.correct,
        "ground_truth": problem.ground_truth,
        "scorer": scorer.spec_for(problem.data_source),
    }


def _check_prompts(store: SampleStore, problems: list[Problem]) -> None:
    sha = {p.problem_id: p.prompt_sha for p in problems}
    for (problem_id, _), record in store.records.items():
        if problem_id in sha and record.get("prompt_sha") != sha[problem_id]:
            raise EvalInputError(
                f"{store.samples_path}: problem {problem_id} was generated from another prompt than the data now "
                "gives; refusing to mix them (use another --out directory)"
            )


def _rescore_if_needed(store: SampleStore, problems, scorer: Scorer, scorers: dict, log) -> None:
    """Stored samples scored by another scorer than this run's are re-scored (not regenerated)."""
    by_id = {p.problem_id: p for p in problems}
    stale = [
        key for key, r in store.records.items() if key[0] in by_id and r.get("scorer") != scorers[r["data_source"]]
    ]
    if not stale:
        return
    log(f"re-scoring {len(stale)} stored samples with the current scorer(s) {sorted(set(scorers.values()))}")
    for key in stale:
        record, problem = store.records[key], by_id[key[0]]
        scored = scorer(problem.data_source, record["response"], problem.ground_truth, dict(problem.extra_info))
        record.update(pred=scored.pred, score=scored.score, acc=scored.acc, correct=scored.correct,
                      scorer=scorers[problem.data_source])  # fmt: skip
    store.rewrite()


def summarize(store: SampleStore, problems: list[Problem], config: EvalConfig, generation: dict, run: dict) -> dict:
    """Per data_source: Avg@k with CI, Pass@1..k, response length, truncation; plus their mean."""
    import numpy as np

    benchmarks: dict[str, dict] = {}
    groups: dict[str, list[Problem]] = {}
    for p in problems:
        groups.setdefault(p.data_source, []).append(p)
    complete = True
    per_problem_acc: dict[str, np.ndarray] = {}
    for data_source, members in groups.items():
        records = [[store.records.get((p.problem_id, s)) for s in range(config.k)] for p in members]
        have = sum(r is not None for rows in records for r in rows)
        entry = {"data_source": data_source, "num_problems": len(members), "samples": have,
                 "samples_expected": len(members) * config.k}  # fmt: skip
        if have < len(members) * config.k:
            complete = False
            entry["complete"] = False
            benchmarks[data_source] = entry
            continue
        stats = estimators.summarize_correctness(
            [[r["correct"] for r in rows] for rows in records],
            [[r["acc"] for r in rows] for rows in records],
            k=config.k,
            confidence=config.confidence,
            n_boot=config.n_bootstrap,
        )
        flat = [r for rows in records for r in rows]
        entry.update(stats)
        entry.update(
            complete=True,
            mean_score=float(np.mean([r["score"] for r in flat])),
            mean_response_tokens=float(np.mean([r["response_tokens"] for r in flat])),
            truncation_rate=float(np.mean([r["truncated"] for r in flat])),
        )
        per_problem_acc[data_source] = np.array([np.mean([r["acc"] for r in rows]) for rows in records])
        benchmarks[data_source] = entry

    summary = {
        "complete": complete,
        "k": config.k,
        "fingerprint": store.fingerprint,
        "generation": generation,
        "run": run,
        "ci_method": (
            f"percentile bootstrap over problems ({config.n_bootstrap} resamples, seed 0), "
            f"{config.confidence:.0%}; avg_at_k_ci_normal is the normal approximation, for reference"
        ),
        "benchmarks": benchmarks,
    }
    if complete and benchmarks:
        summary["average"] = _average(benchmarks, per_problem_acc, config)
    return summary


def _average(benchmarks: dict, per_problem_acc: dict, config: EvalConfig) -> dict:
    """Unweighted mean over benchmarks (the paper's Avg column), with a bootstrap CI that
    resamples the problems of every benchmark independently."""
    import numpy as np

    names = sorted(benchmarks)
    rng = np.random.default_rng(0)
    boot = np.zeros(config.n_bootstrap)
    for name in names:
        values = per_problem_acc[name]
        idx = rng.integers(0, values.size, size=(config.n_bootstrap, values.size))
        boot += values[idx].mean(axis=1)
    boot /= len(names)
    tail = (1 - config.confidence) / 2
    ladder = benchmarks[names[0]]["pass_at_k"].keys()
    return {
        "benchmarks": names,
        "avg_at_k": float(np.mean([benchmarks[n]["avg_at_k"] for n in names])),
        "avg_at_k_ci": [float(x) for x in np.quantile(boot, [tail, 1 - tail])],
        "pass_at_k": {j: float(np.mean([benchmarks[n]["pass_at_k"][j] for n in names])) for j in ladder},
        "mean_response_tokens": float(np.mean([benchmarks[n]["mean_response_tokens"] for n in names])),
        "truncation_rate": float(np.mean([benchmarks[n]["truncation_rate"] for n in names])),
    }


def summary_markdown(summary: dict) -> str:
    k = summary["k"]
    lines = []
    if not summary["complete"]:
        lines.append(
            f"Incomplete: not every problem has k={k} samples yet (run again with the same settings to finish)."
        )
        for name, b in summary["benchmarks"].items():
            lines.append(f"- {name}: {b['samples']}/{b['samples_expected']} samples")
        return "\n".join(lines) + "\n"
    ladder = list(next(iter(summary["benchmarks"].values()))["pass_at_k"])
    head = ["benchmark", "problems", f"Avg@{k} (%)", "95% CI", *[f"Pass@{j}" for j in ladder], "mean len", "trunc %"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))

    def row(name, b, n):
        ci = b["avg_at_k_ci"]
        return (
            f"| {name} | {n} | {100 * b['avg_at_k']:.1f} | [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}] | "
            + " | ".join(f"{100 * b['pass_at_k'][j]:.1f}" for j in ladder)
            + f" | {b['mean_response_tokens']:.0f} | {100 * b['truncation_rate']:.1f} |"
        )

    for name, b in summary["benchmarks"].items():
        lines.append(row(name, b, b["num_problems"]))
    if len(summary["benchmarks"]) > 1 and "average" in summary:
        total = sum(b["num_problems"] for b in summary["benchmarks"].values())
        lines.append(row("**Avg** (unweighted)", summary["average"], total))
    g = with_unknowns(summary["generation"])
    lines.append("")
    lines.append(
        f"k={k}, {g['backend']} ({g['engine_version']}), {g['dtype']}, tensor parallel {g['tensor_parallel_size']}, "
        f"temperature {g['temperature']}, top_p {g['top_p']}, top_k {g['top_k']}, max response "
        f"{g['max_response_length']} tokens, prompt template {g['prompt_template']}, chat template "
        f"{g['chat_template_sha256']}. CI: {summary['ci_method']}."
    )
    return "\n".join(lines) + "\n"


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("maspo-verl", "verl", "torch", "transformers", "vllm"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


__all__ = ["EvalConfig", "evaluate", "summarize", "summary_markdown", "asdict"]
