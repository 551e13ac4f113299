"""Prompt templates, the answer format each asks for, and the check that a reward can read it.

One template per model family. `prepare` writes the template's name into every row
(`extra_info.template`), so the trainer's preflight and the evaluator can check, before any
model loads, that the reward scores a right answer written the way the template asks as right.

- `r1`: DeepSeek's advice for DeepSeek-R1-Distill-Qwen math: no system prompt, the instruction
  after the problem, answer in `\\boxed{}`
  (https://huggingface.co/deepseek-ai/DeepSeek-R1-Distill-Qwen-7B#usage-recommendations).
- `dapo`: DAPO-Math-17k's own template, answer on a last line `Answer: ...`.
- `qwen_math`: Qwen2.5-Math's chain-of-thought format: the system prompt "Please reason step by
  step, and put your final answer within \\boxed{}." and the bare problem as the user message.
  Source: the Qwen2.5-Math README, Quick Start, "CoT" messages
  (https://github.com/QwenLM/Qwen2.5-Math#-hugging-face-transformers), which is the
  `qwen25-math-cot` prompt type of its evaluation code (evaluation/utils.py). The same template
  serves the base models (Qwen2.5-Math-1.5B/7B): Qwen documents base models only with few-shot
  prompts, whose exemplars its repository does not publish, and verl feeds every model chat
  messages through its tokenizer's chat template; zero-RL recipes on the base models use this
  template (Dr. GRPO's `qwen_math`, https://github.com/sail-sg/understand-r1-zero).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

BOXED = "boxed"
ANSWER_LINE = "answer_line"
R1_SUFFIX = "Please reason step by step, and put your final answer within \\boxed{}."
DAPO_PREFIX = (
    "Solve the following math problem step by step. The last line of your response should be of the "
    "form Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n"
)
DAPO_SUFFIX = '\n\nRemember to put your answer on its own line after "Answer:".'
QWEN_MATH_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."


@dataclass(frozen=True)
class Template:
    name: str
    answer_format: str  # BOXED or ANSWER_LINE: where the template asks the model to put its answer
    prefix: str = ""
    suffix: str = ""
    system: str | None = None

    def messages(self, problem: str) -> list[dict]:
        user = {"role": "user", "content": f"{self.prefix}{problem}{self.suffix}"}
        return ([{"role": "system", "content": self.system}] if self.system else []) + [user]

    def example_response(self, answer: str) -> str:
        """A short response that follows the template, ending in ``answer``."""
        if self.answer_format == BOXED:
            return f"Working through the problem step by step.\nThe final answer is \\boxed{{{answer}}}."
        return f"Working through the problem step by step.\nAnswer: {answer}"

    @property
    def asks_for(self) -> str:
        return "the final answer in \\boxed{}" if self.answer_format == BOXED else "a last line 'Answer: ...'"


TEMPLATES = {
    t.name: t
    for t in (
        Template("r1", BOXED, suffix=f"\n{R1_SUFFIX}"),
        Template("dapo", ANSWER_LINE, prefix=DAPO_PREFIX, suffix=DAPO_SUFFIX),
        Template("qwen_math", BOXED, system=QWEN_MATH_SYSTEM),
    )
}
DEFAULT_TEMPLATE = "r1"


@dataclass
class Scored:
    """What a reward function (verl's custom-reward signature) said of one response."""

    score: float
    acc: float
    pred: Any

    @property
    def correct(self) -> bool:
        """A sample counts as correct for Pass@k when its acc is at least 0.5 (acc is 0/1 for our scorers)."""
        return self.acc >= 0.5

    @classmethod
    def of(cls, result) -> "Scored":
        """A reward function's return value: a number, or a dict with ``score`` (``acc``, ``pred`` optional)."""
        if isinstance(result, dict):
            score = float(result["score"])
            return cls(score=score, acc=float(result.get("acc", score)), pred=result.get("pred"))
        return cls(score=float(result), acc=float(result), pred=None)


def reward_reads(template: str, score, data_source: str, ground_truth, extra_info: dict | None = None) -> str | None:
    """None when ``score`` (verl's custom-reward signature) judges the right answer, written the
    way ``template`` asks, as correct; otherwise what it did instead."""
    response = TEMPLATES[template].example_response(str(ground_truth))
    try:
        result = score(data_source=data_source, solution_str=response, ground_truth=ground_truth,
                       extra_info=dict(extra_info or {}))  # fmt: skip
        if hasattr(result, "__await__"):  # verl accepts async reward functions
            import asyncio

            result = asyncio.run(result)
        scored = Scored.of(result)
    except Exception as error:  # any failure means it cannot read this format
        return f"raised {error!r} on {response!r}"
    if scored.correct:
        return None
    return f"scored {response!r} (ground truth {ground_truth!r}) as wrong ({result!r})"


PROBES = 5  # rows tried per (template, data_source): one odd ground truth does not refuse a run


def reads_any(template: str, score, data_source: str, rows: list[tuple[object, dict]]) -> str | None:
    """None when ``score`` reads the answer of at least one of ``rows`` ((ground truth, extra_info))
    written the way ``template`` asks; otherwise what it did with the first."""
    problems = [reward_reads(template, score, data_source, truth, extra) for truth, extra in rows]
    return None if any(p is None for p in problems) else problems[0]


# ----------------------------------------------------------------------------- preflight


def _template_probes(path: str, reward_fn_key: str) -> dict[tuple[str, str], list[tuple[object, dict]]]:
    """{(template, data_source): the first PROBES rows' (ground truth, extra_info)} of a prepared
    parquet file; empty when the file records no template (not made by `prepare`)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pq.read_schema(path)
    if "extra_info" not in schema.names:
        return {}
    extra_type = schema.field("extra_info").type
    if not pa.types.is_struct(extra_type) or extra_type.get_field_index("template") < 0:
        return {}
    rows = pq.read_table(path, columns=[reward_fn_key, "reward_model", "extra_info"]).to_pylist()
    probes: dict[tuple[str, str], list] = {}
    for row in rows:
        extra = row["extra_info"] or {}
        key = (extra.get("template"), row[reward_fn_key])
        if key[0] and len(probes.setdefault(key, [])) < PROBES:
            probes[key].append(((row["reward_model"] or {}).get("ground_truth"), extra))
    return probes


def configured_reward(config):
    """(the function verl's reward manager will score with, a description naming the setting)."""
    from verl.trainer.ppo.reward import get_custom_reward_fn
    from verl.utils.reward_score import get_default_compute_score

    function = config.reward.get("custom_reward_function") or {}
    custom = get_custom_reward_fn(config)
    if custom is not None:
        return custom, f"reward.custom_reward_function.path={function.get('path')} (name={function.get('name')})"
    manager = config.reward.reward_manager.get("name")
    return get_default_compute_score(manager), "verl's default_compute_score (reward.custom_reward_function.path unset)"


def check_data_templates(config) -> dict:
    """Refuse, before Ray starts, a data file whose prompt template asks for answers in a format
    the configured reward cannot read. Returns {file: [templates found]}."""
    from maspo_verl.preflight import REMOTE_PREFIXES, _as_list

    if (config.reward.get("reward_model") or {}).get("enable"):
        return {}  # a reward model reads free text; there is no answer format to check
    reward_fn_key = config.data.get("reward_fn_key", "data_source")
    files = [(f"data.{s}", p) for s in ("train_files", "val_files") for p in _as_list(config.data.get(s))]
    score, reward_name = None, None
    found = {}
    for setting, path in files:
        if path.startswith(REMOTE_PREFIXES):
            continue
        probes = _template_probes(os.path.expanduser(path), reward_fn_key)
        found[path] = sorted({template for template, _ in probes})
        for (template, data_source), rows in probes.items():
            if template not in TEMPLATES:
                raise ValueError(
                    f"{setting}: {path} was prepared with the prompt template {template!r}, which this version does "
                    f"not know (known: {sorted(TEMPLATES)}); prepare it again with `python -m maspo_verl.data prepare`."
                )
            if score is None:
                score, reward_name = configured_reward(config)
            problem = reads_any(template, score, data_source, rows)
            if problem:
                readable = [name for name in TEMPLATES if not reads_any(name, score, data_source, rows)]
                raise ValueError(
                    f"{setting}: {path} was prepared with the prompt template {template!r}, which asks for "
                    f"{TEMPLATES[template].asks_for}, but the reward {reward_name} cannot read it: for data_source "
                    f"{data_source!r} it {problem}. Templates this reward reads: {readable or 'none'}. Fix: prepare "
                    f"the data with one of those (`python -m maspo_verl.data prepare ... --template NAME`), or score "
                    "with reward.custom_reward_function.path=pkg://maspo_verl.rewards.math_score, which reads both "
                    "\\boxed{} and 'Answer:'."
                )
    return found
