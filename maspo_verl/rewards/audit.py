"""`python -m maspo_verl.rewards audit`: how well math scorers judge labelled answer pairs.

The pairs come from every gold answer of the six evaluation sets (`audit_set.py`: equivalent
rewritings a model writes, and near misses). Three scorers judge them:

- `ours`: `maspo_verl.rewards.compute_score`, what training and `maspo_verl.eval` use, on both
  answer templates (`r1`: a `\\boxed{}` after the thinking; `dapo`: an `Answer:` line);
- `math_dapo`: verl's `verl.utils.reward_score.math_dapo.compute_score` (verl's default for
  `math_dapo` and `aime*` data), on the `dapo` template it is written for;
- `math_verify`: verl's `verl.utils.reward_score.math_verify.compute_score` (math-verify in a
  process pool), on the `r1` template (it reads boxed answers).

Per benchmark and scorer: pairs, agreement with the labels, false-negative rate (equivalent
answers scored 0), false-positive rate (near misses scored 1); false negatives by rewriting rule;
how often each scorer accepts the gold as given in each template (a scorer that cannot read a
template at all shows here, not as false negatives of the rewritings); the slowest calls.
"""

from __future__ import annotations

import argparse
import datetime
import json
import random
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable

from .audit_set import Gold, Pair, generate, rule_docs

# The six evaluation sets and where the project's copies of real files keep them (layout of
# ../shared/data/eval-sources, see its README): one file per set, read by the project's loaders.
SOURCE_FILES = {
    "aime24": "qwen25-math/aime24.jsonl",
    "aime25": "dcpo/aime_2025.parquet",
    "amc23": "qwen25-math/amc23.jsonl",
    "math500": "dcpo/math500.parquet",
    "minerva": "qwen25-math/minerva_math.jsonl",
    "olympiadbench": "qwen25-math/olympiadbench.jsonl",
}
BENCHMARKS = tuple(SOURCE_FILES)
DEFAULT_SOURCES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "eval-sources"
DEFAULT_PER_SET = 40
DEFAULT_SEED = 0
SLOWEST_SHOWN = 10
EXAMPLES_SHOWN = 3
WARM_UP_CALLS = 8
WARM_UP_ROUNDS = 10
WARM_UP_QUICK_S = 1.0


class AuditInputError(ValueError):
    """A missing folder or file, or an unknown set: one message, before any scoring."""


# ----------------------------------------------------------------------------- gold answers


def _prepared_file(name: str, sources: Path | None, prepared: Path | None, workdir: Path) -> Path:
    """The verl parquet of one set: given (--prepared), or prepared now from its source copy."""
    if prepared is not None:
        path = prepared / f"{name}.parquet"
        if not path.is_file():
            raise AuditInputError(
                f"--prepared {prepared}: no {path.name}; write it with `python -m maspo_verl.data prepare {name} --out {prepared}`"
            )
        return path
    from maspo_verl.data.math_sets import prepare

    source = sources / SOURCE_FILES[name]
    if not source.is_file():
        raise AuditInputError(f"--sources {sources}: no {SOURCE_FILES[name]} (the {name} copy)")
    return Path(prepare(name, workdir, source=source, progress=False)["path"])


def load_golds(sets: Iterable[str], sources: Path | None = None, prepared: Path | None = None) -> dict[str, list[Gold]]:
    """Every gold answer of each set, read as the evaluator reads them (prepared verl parquet)."""
    from maspo_verl.eval.data import load_problems

    if prepared is None:
        sources = Path(sources if sources is not None else DEFAULT_SOURCES).expanduser()
        if not sources.is_dir():
            raise AuditInputError(
                f"eval sources folder not found: {sources}. Pass --sources DIR holding the real copies of the six sets "
                f"({', '.join(sorted(set(SOURCE_FILES.values())))}; layout in ../shared/data/eval-sources/README.md), "
                "or --prepared DIR with the files of `python -m maspo_verl.data prepare eval --out DIR`."
            )
    else:
        prepared = Path(prepared).expanduser()
        if not prepared.is_dir():
            raise AuditInputError(f"--prepared folder not found: {prepared}")
    golds = {}
    with tempfile.TemporaryDirectory(prefix="maspo_audit_") as workdir:
        for name in sets:
            path = _prepared_file(name, sources, prepared, Path(workdir))
            golds[name] = [
                Gold(name, problem.problem_id, str(problem.ground_truth), str(problem.extra_info.get("problem", "")))
                for problem in load_problems([path])
            ]
    return golds


def sample(golds: list[Gold], per_set: int | None, seed: int) -> list[Gold]:
    """A seeded random sample of one set's golds, in the set's order; all of them when per_set is None."""
    if per_set is None or per_set >= len(golds):
        return list(golds)
    chosen = set(random.Random(seed).sample(range(len(golds)), per_set))
    return [gold for index, gold in enumerate(golds) if index in chosen]


# ----------------------------------------------------------------------------- scorers


@dataclass(frozen=True)
class Scorer:
    name: str
    reads: tuple[str, ...]  # the templates it is written for (scored in the main table)
    accepts: Callable[[str, str, str], bool]  # (benchmark, response, gold) -> scored correct
    source: str


def _ours(benchmark: str, response: str, gold: str) -> bool:
    from maspo_verl.rewards.math_score import compute_score

    return bool(compute_score(benchmark, response, gold)["acc"])


def _verl_math_dapo(benchmark: str, response: str, gold: str) -> bool:
    # verl's public reward function for `math_dapo` / `aime*` data (default_compute_score's route)
    from verl.utils.reward_score import math_dapo

    return bool(math_dapo.compute_score(response, gold)["acc"])


def _verl_math_verify(benchmark: str, response: str, gold: str) -> bool:
    # verl's math-verify wrapper: a spawned process pool, 30 s per call; returns 1.0 or 0.0
    from verl.utils.reward_score import math_verify

    return math_verify.compute_score(response, gold) >= 1.0


SCORERS = {
    "ours": Scorer("ours", ("r1", "dapo"), _ours, "maspo_verl.rewards.compute_score"),
    "math_dapo": Scorer("math_dapo", ("dapo",), _verl_math_dapo, "verl.utils.reward_score.math_dapo.compute_score"),
    "math_verify": Scorer(
        "math_verify", ("r1",), _verl_math_verify, "verl.utils.reward_score.math_verify.compute_score"
    ),
}
TEMPLATE_PROBE_RULE = "as_given"  # the pairs that show whether a scorer reads a template at all


@dataclass
class Outcome:
    pair: Pair
    scorer: str
    accepted: bool
    seconds: float
    native: bool  # the template is one the scorer is written for

    @property
    def agrees(self) -> bool:
        return self.accepted == self.pair.label


def _warm_up(scorer: Scorer) -> None:
    """Bursts of calls at once before timing, until a burst is quick: every worker process (ours: 2,
    verl's math_verify pool: 4, which import math-verify on their first task) has started and
    imported, so no measured call pays for it (under load that took 20-30 s, past verl's time limit)."""
    from concurrent.futures import ThreadPoolExecutor

    def one_call(_) -> bool:
        return scorer.accepts("math500", "\\boxed{\\frac{\\sqrt{3}}{2}}", "\\frac{\\sqrt3}{2}")

    for _ in range(WARM_UP_ROUNDS):
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=WARM_UP_CALLS) as pool:
            list(pool.map(one_call, range(WARM_UP_CALLS)))
        if time.perf_counter() - start < WARM_UP_QUICK_S:
            return


def run(pairs: list[Pair], scorers: list[Scorer], progress: bool = True) -> list[Outcome]:
    """Every scorer on the pairs of its templates, and on the as-given pairs of the other templates."""
    from tqdm import tqdm

    for scorer in scorers:
        _warm_up(scorer)
    jobs = [
        (pair, scorer, pair.template in scorer.reads)
        for pair in pairs
        for scorer in scorers
        if pair.template in scorer.reads or pair.rule == TEMPLATE_PROBE_RULE
    ]
    outcomes = []
    for pair, scorer, native in tqdm(jobs, desc="scoring", unit="call", disable=not progress, mininterval=1):
        start = time.perf_counter()
        accepted = scorer.accepts(pair.benchmark, pair.response, pair.gold)
        outcomes.append(Outcome(pair, scorer.name, accepted, time.perf_counter() - start, native))
    return outcomes


# ----------------------------------------------------------------------------- measures


def rates(outcomes: Iterable[Outcome]) -> dict:
    """n, agreement, false-negative rate (of label-1 pairs) and false-positive rate (of label-0 pairs)."""
    positives = negatives = false_negatives = false_positives = 0
    for outcome in outcomes:
        if outcome.pair.label:
            positives += 1
            false_negatives += not outcome.accepted
        else:
            negatives += 1
            false_positives += outcome.accepted
    n = positives + negatives
    return {
        "n": n,
        "positives": positives,
        "negatives": negatives,
        "false_negatives": false_negatives,
        "false_positives": false_positives,
        "agreement": (n - false_negatives - false_positives) / n if n else None,
        "fn_rate": false_negatives / positives if positives else None,
        "fp_rate": false_positives / negatives if negatives else None,
    }


def _group(outcomes: Iterable[Outcome], key: Callable[[Outcome], tuple]) -> dict[tuple, list[Outcome]]:
    groups: dict[tuple, list[Outcome]] = defaultdict(list)
    for outcome in outcomes:
        groups[key(outcome)].append(outcome)
    return groups


def summarize(outcomes: list[Outcome], scorer_names: list[str], benchmarks: list[str]) -> dict:
    native = [outcome for outcome in outcomes if outcome.native]
    by_set = _group(native, lambda o: (o.pair.benchmark, o.scorer))
    by_scorer = _group(native, lambda o: (o.scorer,))
    table = [
        {"benchmark": benchmark, "scorer": name, **rates(by_set[(benchmark, name)])}
        for benchmark in benchmarks
        for name in scorer_names
    ] + [{"benchmark": "all", "scorer": name, **rates(by_scorer[(name,)])} for name in scorer_names]
    by_rule = [
        {"rule": rule, "label": int(label), "scorer": name, **rates(group)}
        for (rule, label, name), group in sorted(
            _group(native, lambda o: (o.pair.rule, o.pair.label, o.scorer)).items()
        )
    ]
    probes = _group([o for o in outcomes if o.pair.rule == TEMPLATE_PROBE_RULE], lambda o: (o.scorer, o.pair.template))
    templates = [
        {
            "scorer": name,
            "template": template,
            "native": group[0].native,
            "n": len(group),
            "accepted": sum(o.accepted for o in group) / len(group),
        }
        for (name, template), group in sorted(probes.items())
    ]
    slowest = sorted(outcomes, key=lambda o: o.seconds, reverse=True)[:SLOWEST_SHOWN]
    seconds = _group(outcomes, lambda o: (o.scorer,))
    timing = {
        name: {
            "calls": len(seconds[(name,)]),
            "mean_ms": 1000 * sum(o.seconds for o in seconds[(name,)]) / max(1, len(seconds[(name,)])),
            "max_s": max((o.seconds for o in seconds[(name,)]), default=0.0),
        }
        for name in scorer_names
    }
    return {
        "table": table,
        "by_rule": by_rule,
        "templates": templates,
        "timing": timing,
        "slowest": [_case(o) for o in slowest],
        "mistakes": _examples([o for o in native if not o.agrees]),
    }


def _case(outcome: Outcome) -> dict:
    pair = outcome.pair
    return {
        "scorer": outcome.scorer,
        "benchmark": pair.benchmark,
        "problem_id": pair.problem_id,
        "rule": pair.rule,
        "template": pair.template,
        "label": int(pair.label),
        "accepted": outcome.accepted,
        "seconds": round(outcome.seconds, 4),
        "gold": pair.gold,
        "answer": pair.answer,
    }


def _examples(mistakes: list[Outcome]) -> list[dict]:
    """A few mistakes of each (scorer, rule), for reading what went wrong."""
    out = []
    for _, group in sorted(_group(mistakes, lambda o: (o.scorer, o.pair.rule)).items()):
        out.extend(_case(o) for o in group[:EXAMPLES_SHOWN])
    return out


# ----------------------------------------------------------------------------- markdown


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def markdown(summary: dict, scorer_names: list[str]) -> str:
    lines = [
        "| benchmark | scorer | pairs | agreement | FN rate | FP rate |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in summary["table"]:
        lines.append(
            f"| {row['benchmark']} | {row['scorer']} | {row['n']} | {_pct(row['agreement'])} | "
            f"{_pct(row['fn_rate'])} ({row['false_negatives']}/{row['positives']}) | "
            f"{_pct(row['fp_rate'])} ({row['false_positives']}/{row['negatives']}) |"
        )
    lines += ["", "Mistakes by rule (FN rate for rewritings, FP rate for near misses), all benchmarks:", ""]
    lines += ["| rule | label | " + " | ".join(scorer_names) + " |", "|---|---:|" + "---:|" * len(scorer_names)]
    cells: dict[tuple, dict] = {(row["rule"], row["label"], row["scorer"]): row for row in summary["by_rule"]}
    for rule, label in sorted({(row["rule"], row["label"]) for row in summary["by_rule"]}, key=lambda k: (-k[1], k[0])):
        row_cells = []
        for name in scorer_names:
            cell = cells.get((rule, label, name))
            if cell is None:
                row_cells.append("-")
            else:
                wrong = cell["false_negatives"] if label else cell["false_positives"]
                total = cell["positives"] if label else cell["negatives"]
                row_cells.append(f"{_pct(wrong / total if total else None)} ({wrong}/{total})")
        lines.append(f"| {rule} | {label} | " + " | ".join(row_cells) + " |")
    lines += [
        "",
        "The gold as given, accepted in each template (templates a scorer is not written for in *italics*):",
        "",
    ]
    lines += ["| scorer | template | accepted |", "|---|---|---:|"]
    for row in summary["templates"]:
        template = row["template"] if row["native"] else f"*{row['template']}*"
        lines.append(f"| {row['scorer']} | {template} | {_pct(row['accepted'])} of {row['n']} |")
    lines += ["", "Time per call:", "", "| scorer | calls | mean | slowest |", "|---|---:|---:|---:|"]
    for name, timing in summary["timing"].items():
        lines.append(f"| {name} | {timing['calls']} | {timing['mean_ms']:.1f} ms | {timing['max_s']:.2f} s |")
    lines += [
        "",
        "Slowest calls:",
        "",
        "| scorer | benchmark | rule | seconds | gold | answer |",
        "|---|---|---|---:|---|---|",
    ]
    for case in summary["slowest"]:
        lines.append(
            f"| {case['scorer']} | {case['benchmark']} | {case['rule']} | {case['seconds']:.2f} | "
            f"`{_short(case['gold'])}` | `{_short(case['answer'])}` |"
        )
    return "\n".join(lines)


def _short(text: str, limit: int = 60) -> str:
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ----------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m maspo_verl.rewards audit",
        description="Audit math scorers on labelled answer pairs built from the eval sets' gold answers.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--sources", default=str(DEFAULT_SOURCES), help="folder of the real eval-set copies")
    parser.add_argument("--prepared", help="instead: folder of prepared <set>.parquet files (maspo_verl.data prepare)")
    parser.add_argument("--sets", nargs="+", default=list(BENCHMARKS), help=f"benchmarks, of {list(BENCHMARKS)}")
    parser.add_argument("--scorers", nargs="+", default=list(SCORERS), help=f"scorers, of {list(SCORERS)}")
    parser.add_argument("--per-set", type=int, default=DEFAULT_PER_SET, help="gold answers sampled per set")
    parser.add_argument("--all", action="store_true", help="every gold answer of every set (no sample)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the sample")
    parser.add_argument("--json", help="write the summary and every pair's outcome to this file")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def _check(values: list[str], allowed, what: str) -> None:
    unknown = [value for value in values if value not in allowed]
    if unknown:
        raise AuditInputError(f"unknown {what} {unknown}; allowed: {list(allowed)}")


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _check(args.sets, BENCHMARKS, "--sets")
        _check(args.scorers, SCORERS, "--scorers")
        if args.per_set < 1:
            raise AuditInputError(f"--per-set must be at least 1, got {args.per_set}")
        golds = load_golds(args.sets, sources=None if args.prepared else args.sources, prepared=args.prepared)
    except AuditInputError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    per_set = None if args.all else args.per_set
    chosen = [gold for name in args.sets for gold in sample(golds[name], per_set, args.seed)]
    pairs = generate(chosen)
    scorers = [SCORERS[name] for name in args.scorers]
    started = time.perf_counter()
    outcomes = run(pairs, scorers, progress=not args.no_progress)
    summary = summarize(outcomes, args.scorers, args.sets)
    command = "python -m maspo_verl.rewards audit " + " ".join(argv if argv is not None else sys.argv[1:])
    header = (
        f"{len(chosen)} gold answers ({'all' if per_set is None else f'up to {per_set} per set, seed {args.seed}'}), "
        f"{len(pairs)} labelled pairs, {len(outcomes)} scorer calls in {time.perf_counter() - started:.0f} s; "
        f"{datetime.date.today().isoformat()}; `{command.strip()}`"
    )
    print(header + "\n\n" + markdown(summary, args.scorers))
    if args.json:
        payload = {
            "command": command.strip(),
            "date": datetime.date.today().isoformat(),
            "golds": {name: len(golds[name]) for name in args.sets},
            "sampled": len(chosen),
            "scorers": {name: SCORERS[name].source for name in args.scorers},
            "rules": rule_docs(),
            **summary,
            "outcomes": [{**asdict(o.pair), "scorer": o.scorer, "accepted": o.accepted, "seconds": o.seconds,
                          "native": o.native} for o in outcomes],
        }  # fmt: skip
        Path(args.json).expanduser().parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).expanduser().write_text(json.dumps(payload, indent=1, ensure_ascii=False), encoding="utf-8")
    return 0
