"""Prepare the paper's training and evaluation sets as verl parquet files.

    python -m maspo_verl.data prepare all --out ~/data/maspo_verl              # from the Hugging Face hub
    python -m maspo_verl.data prepare minerva --source test.jsonl --out DIR     # from a local copy
    python -m maspo_verl.data list                                             # names, sources, sizes

Every output row is what verl's RLHFDataset and reward loop read:
  prompt        chat messages: the template filled with the problem (a user message, after a
                system message for templates that have one)
  data_source   one name per set (verl groups validation metrics and picks scorers by it)
  ability       "MATH"
  reward_model  {"style": "rule", "ground_truth": <normalised answer, a string>}
  extra_info    {"index", "problem" (as in the source), "answer" (as in the source), "source",
                 "template" (the prompt template's name)}

Sources are read with `datasets`: from the hub when no `--source` is given, otherwise from a
local parquet / jsonl / json file as the hub or another project ships it (a JSON list of
records, e.g. FlowRL's `rllm/data/test/math/*.json`, works too). Several layouts are accepted
per set (see SETS); an unknown one stops with the file and the columns expected and found.
Rows are deduplicated on the problem text (DAPO-Math-17k ships each of its ~17.4k problems
about 100 times; DCPO-style eval parquets repeat each problem 32 times).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

# One prompt template per model family (templates.py); its name goes into every row's
# extra_info.template, which the trainer's preflight and the evaluator read.
from ..refusal import REFUSALS, debugging, refuse
from .templates import DAPO_PREFIX, DAPO_SUFFIX, DEFAULT_TEMPLATE, R1_SUFFIX, TEMPLATES

# ----------------------------------------------------------------------------- gold-answer quirks


def _answer_text(value) -> str:
    """Any answer cell as text: AMC23's floats (27.0 -> "27"), lists joined by commas."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value
    return ",".join(_answer_text(item) for item in value)


def _strip_math_delimiters(text: str) -> str:
    """`$69$,$84$` -> `69,84`; `$(-\\infty, 0) \\cup\\{1\\}$.` -> `(-\\infty, 0) \\cup\\{1\\}`."""
    text = text.strip()
    text = re.sub(r"(?<!\\)\$\s*,\s*\$", ",", text)
    text = re.sub(r"(?<!\\)\$", "", text).strip()  # `\$` (a currency sign) stays
    return text.rstrip(".").strip()


def last_boxed_content(text: str) -> str | None:
    """Content of the last `\\boxed{...}` of a worked solution (Minerva's gold answer)."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth = 0
    for index in range(start + len("\\boxed"), len(text)):
        if text[index] == "{":
            depth += 1
        elif text[index] == "}":
            depth -= 1
            if depth == 0:
                return text[start + len("\\boxed{") : index].strip()
    return None


def normalize_integer(answer: str) -> str:
    """AIME answers: `025` -> `25`, `336^\\circ` -> `336`, `27.0` -> `27`."""
    text = _strip_math_delimiters(answer)
    text = re.sub(r"\^\s*\{?\\circ\}?", "", text).replace("°", "").strip()
    if re.fullmatch(r"[+-]?\d+(\.0+)?", text):
        return str(int(float(text)))
    return text


def normalize_plain(answer: str) -> str:
    """MATH500, Minerva: the answer as given (a `\\$` currency sign or `^\\circ` are part of it)."""
    return answer.strip()


def normalize_dollars(answer: str) -> str:
    """OlympiadBench (`$69$,$84$` -> `69,84`) and Minerva (a box spanning `+$ $`): math-mode `$` go."""
    return _strip_math_delimiters(answer)


# ----------------------------------------------------------------------------- the sets


@dataclass(frozen=True)
class Layout:
    """One way a source ships a set: where the problem and the answer are."""

    problem: str  # column name, or "prompt" for verl parquet (the user message)
    answer: str  # column name; "reward_model" for verl parquet; "solution" = last \boxed{}
    name: str

    def columns(self) -> set[str]:
        return {self.problem, self.answer}


VERL = Layout("prompt", "reward_model", "verl parquet (prompt, reward_model.ground_truth)")


@dataclass(frozen=True)
class EvalSet:
    name: str  # CLI name, output file stem and data_source
    hub_id: str | None
    hub_configs: tuple = (None,)
    split: str = "test"
    rows: int | None = None  # unique problems expected after deduplication
    layouts: tuple = ()
    normalize: object = normalize_plain
    note: str = ""


SETS = {
    "dapo_math_17k": EvalSet(
        "dapo_math_17k", "BytedTsinghua-SIA/DAPO-Math-17k", split="train", rows=17398,
        layouts=(VERL, Layout("prompt", "solution", "DAPO-Math-17k processed (prompt, solution)")),
        normalize=normalize_integer,
        note="training set; ~1.79M rows holding ~17.4k problems repeated (deduplicated here)",
    ),
    "aime24": EvalSet(
        "aime24", "HuggingFaceH4/aime_2024", split="train", rows=30,
        layouts=(Layout("problem", "answer", "problem/answer"), Layout("question", "answer", "question/answer"), VERL),
        normalize=normalize_integer,
    ),
    "aime25": EvalSet(
        "aime25", "opencompass/AIME2025", hub_configs=("AIME2025-I", "AIME2025-II"), rows=30,
        layouts=(Layout("question", "answer", "question/answer"), Layout("problem", "answer", "problem/answer"), VERL),
        normalize=normalize_integer, note="opencompass stores one answer as `336^\\circ`",
    ),
    "amc23": EvalSet(
        "amc23", "math-ai/amc23", rows=40,
        layouts=(Layout("question", "answer", "question/answer"), Layout("problem", "answer", "problem/answer"), VERL),
        normalize=normalize_integer, note="AMC 2023, 40 problems; answers stored as floats (27.0)",
    ),
    "amc83": EvalSet(
        "amc83", None, rows=83,
        layouts=(Layout("problem", "answer", "problem/answer"), Layout("question", "answer", "question/answer"), VERL),
        normalize=normalize_integer,
        note="FlowRL's AMC 2022+2023 (83 problems; rllm/data/test/math/amc.json): local file only",
    ),
    "math500": EvalSet(
        "math500", "HuggingFaceH4/MATH-500", rows=500,
        layouts=(Layout("problem", "answer", "problem/answer"), VERL),
    ),
    "minerva": EvalSet(
        "minerva", "math-ai/minervamath", rows=272,
        layouts=(
            Layout("question", "answer", "question/answer"),
            Layout("problem", "answer", "problem/answer"),
            Layout("problem", "solution", "problem/solution (gold = last \\boxed{} of the solution)"),
            VERL,
        ),
        normalize=normalize_dollars,
        note="Qwen2.5-Math's copy has no answer column: the gold is the last \\boxed{} of `solution`",
    ),
    "olympiadbench": EvalSet(
        "olympiadbench", "math-ai/olympiadbench", rows=675,
        layouts=(
            Layout("question", "final_answer", "question/final_answer (list)"),
            Layout("problem", "answer", "problem/answer"),
            Layout("question", "answer", "question/answer"),
            VERL,
        ),
        normalize=normalize_dollars,
        note="final_answer is a list; answers wrapped in $...$; 94 rows hold several answers",
    ),
}  # fmt: skip
EVAL_SETS = ("aime24", "aime25", "amc23", "math500", "minerva", "olympiadbench")
GROUPS = {"all": ("dapo_math_17k",) + EVAL_SETS, "eval": EVAL_SETS}


class LayoutError(ValueError):
    pass


# ----------------------------------------------------------------------------- loading


def _local_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return "parquet"
    if suffix in (".jsonl", ".json"):
        return "json"
    raise ValueError(f"--source {path}: unknown file type {suffix!r}; allowed: .parquet, .jsonl, .json")


def _load_local(path: Path):
    """A local file as a `datasets.Dataset`; a JSON list of records included."""
    import datasets

    if not path.is_file():
        raise FileNotFoundError(f"--source {path}: no such file")
    kind = _local_format(path)
    if kind == "json" and path.read_bytes()[:1].strip() in (b"[",):
        records = json.loads(path.read_text(encoding="utf-8"))
        return datasets.Dataset.from_list(records)
    return datasets.load_dataset(kind, data_files=str(path), split="train")


def _load_hub(spec: EvalSet):
    import datasets

    if spec.hub_id is None:
        raise ValueError(f"{spec.name} has no hub copy: give the local file with --source ({spec.note})")
    parts = [datasets.load_dataset(spec.hub_id, name=config, split=spec.split) for config in spec.hub_configs]
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)


def pick_layout(spec: EvalSet, columns, where: str) -> Layout:
    for layout in spec.layouts:
        if layout.columns() <= set(columns):
            return layout
    expected = "; ".join(f"{layout.name}: columns {sorted(layout.columns())}" for layout in spec.layouts)
    raise LayoutError(
        f"{where}: unknown layout for {spec.name}. Expected one of [{expected}]; found columns {sorted(columns)}."
    )


def _user_message(prompt) -> str:
    messages = list(prompt) if not isinstance(prompt, str) else [{"role": "user", "content": prompt}]
    users = [message["content"] for message in messages if message.get("role") == "user"]
    return users[-1] if users else ""


def _problem_of_verl_row(row: dict) -> str:
    """The bare problem of a verl-parquet row: extra_info's copy, else the template stripped."""
    extra = row.get("extra_info") or {}
    for key in ("raw_problem", "problem", "question"):
        if isinstance(extra, dict) and extra.get(key):
            return extra[key]
    text = _user_message(row["prompt"])
    if text.startswith(DAPO_PREFIX) and text.endswith(DAPO_SUFFIX):
        return text[len(DAPO_PREFIX) : -len(DAPO_SUFFIX)]
    if text.endswith(R1_SUFFIX):
        return text[: -len(R1_SUFFIX)].rstrip()
    return text


def problem_and_answer(row: dict, layout: Layout) -> tuple[str, str]:
    """(problem as in the source, answer as in the source) of one row."""
    if layout is VERL or layout.problem == "prompt":
        problem = _problem_of_verl_row(row)
    else:
        problem = row[layout.problem]
        context = row.get("context")
        if isinstance(context, str) and context.strip():  # OlympiadBench's shared preamble
            problem = f"{context.strip()}\n\n{problem}"
    if layout.answer == "reward_model":
        answer = _answer_text((row.get("reward_model") or {}).get("ground_truth"))
    elif layout.answer == "solution" and layout.problem != "prompt":
        answer = last_boxed_content(row["solution"] or "") or ""
    else:
        answer = _answer_text(row[layout.answer])
    return str(problem).strip(), answer


# ----------------------------------------------------------------------------- preparing


def prepare_rows(spec: EvalSet, dataset, template: str, where: str, progress: bool = True) -> tuple[list, dict]:
    """verl rows of one set (deduplicated on the problem), and counts {rows_in, rows_out, ...}."""
    from tqdm import tqdm

    if template not in TEMPLATES:
        raise ValueError(f"template={template!r} is not known; allowed: {sorted(TEMPLATES)}")
    layout = pick_layout(spec, dataset.column_names, where)
    fill = TEMPLATES[template].messages
    seen, rows, empty = set(), [], 0
    iterator = tqdm(dataset, total=len(dataset), desc=f"{spec.name}", unit="row", disable=not progress, mininterval=1)
    for row in iterator:
        problem, raw_answer = problem_and_answer(row, layout)
        if problem in seen:
            continue
        seen.add(problem)
        gold = spec.normalize(raw_answer)
        if not problem or not gold:
            empty += 1
            continue
        rows.append(
            {
                "data_source": "math_dapo" if spec.name == "dapo_math_17k" else spec.name,
                "prompt": fill(problem),
                "ability": "MATH",
                "reward_model": {"style": "rule", "ground_truth": gold},
                "extra_info": {
                    "index": len(rows),
                    "problem": problem,
                    "answer": raw_answer,
                    "source": where,
                    "template": template,
                },
            }
        )
    counts = {
        "rows_in": len(dataset),
        "rows_out": len(rows),
        "duplicates": len(dataset) - len(seen),
        "no_answer": empty,
    }
    return rows, counts


def write_parquet(rows: list, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    schema = pa.schema(
        [
            ("data_source", pa.string()),
            ("prompt", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
            ("ability", pa.string()),
            ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.string())])),
            (
                "extra_info",
                pa.struct(
                    [
                        ("index", pa.int64()),
                        ("problem", pa.string()),
                        ("answer", pa.string()),
                        ("source", pa.string()),
                        ("template", pa.string()),
                    ]
                ),
            ),
        ]
    )
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def prepare(name: str, out_dir, source=None, template: str = DEFAULT_TEMPLATE, progress: bool = True) -> dict:
    """Prepare one set into `out_dir/<name>.parquet`; returns the counts and the path."""
    if name not in SETS:
        raise ValueError(f"unknown set {name!r}; allowed: {sorted(SETS)} or a group {sorted(GROUPS)}")
    spec = SETS[name]
    if source is not None:
        source = Path(source).expanduser()
        dataset, where = _load_local(source), str(source)
    else:
        dataset, where = _load_hub(spec), f"hf://{spec.hub_id}"
    rows, counts = prepare_rows(spec, dataset, template, where, progress=progress)
    path = Path(out_dir).expanduser() / f"{name}.parquet"
    write_parquet(rows, path)
    counts.update(name=name, path=str(path), expected=spec.rows, template=template)
    return counts


def report(counts: dict) -> str:
    line = (
        f"{counts['name']}: {counts['rows_in']} rows in, {counts['rows_out']} rows out "
        f"({counts['duplicates']} duplicates dropped"
        + (f", {counts['no_answer']} without a problem or answer dropped" if counts["no_answer"] else "")
        + f") -> {counts['path']}"
    )
    if counts["expected"] is not None and counts["rows_out"] != counts["expected"]:
        line += f"\n  WARNING: {counts['name']} usually has {counts['expected']} unique problems; this copy gave {counts['rows_out']}."
    return line


# ----------------------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m maspo_verl.data", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    prep = commands.add_parser("prepare", help="write verl parquet files")
    prep.add_argument("names", nargs="+", help=f"sets {sorted(SETS)} or groups {sorted(GROUPS)}")
    prep.add_argument("--out", required=True, help="output folder (<name>.parquet per set)")
    prep.add_argument("--source", help="local parquet/jsonl/json copy of the set (one name only); default: the hub")
    prep.add_argument(
        "--template",
        default=DEFAULT_TEMPLATE,
        choices=sorted(TEMPLATES),
        help="prompt template: r1 (DeepSeek-R1-Distill, boxed), dapo ('Answer:' line), qwen_math (Qwen2.5-Math, boxed)",
    )
    prep.add_argument("--amc", default="amc23", choices=["amc23", "amc83"], help="the AMC set a group uses")
    prep.add_argument("--no-progress", action="store_true")
    prep.add_argument("--debug", action="store_true", help="a refusal shows its traceback")
    commands.add_parser("list", help="the sets, their hub sources and sizes")
    return parser


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "list":
        for spec in SETS.values():
            print(
                f"{spec.name:15s} {spec.hub_id or '(local file only)':35s} {spec.rows or '?':>6} problems  {spec.note}"
            )
        print(f"groups: all = {' '.join(GROUPS['all'])}; eval = {' '.join(GROUPS['eval'])}")
        return 0
    names = []
    for name in args.names:
        group = GROUPS.get(name, (name,))
        names.extend(args.amc if item == "amc23" else item for item in group if item not in names)
    try:
        if args.source and len(names) != 1:
            raise ValueError(f"--source names one file, so give exactly one set (got {names})")
        for name in names:
            counts = prepare(name, args.out, source=args.source, template=args.template, progress=not args.no_progress)
            print(report(counts), flush=True)
    except REFUSALS as error:
        if debugging(args.debug):
            raise
        return refuse("maspo_verl.data", error)
    return 0


if __name__ == "__main__":
    sys.exit(main())
