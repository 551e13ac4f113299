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
