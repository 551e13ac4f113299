"""The synthetic verifiable task: two-digit addition, written as verl parquet.

Two-digit addition is the sweet spot for a CPU kit: prompts are ~14 tokens with
the chat scaffold, answers at most 3 digits plus eos, a few-hundred-kilobyte
model learns it in seconds, and the answer can be checked exactly.
"""

import random
from dataclasses import dataclass

import pandas as pd

DATA_SOURCE = "maspo_kit/arith"
ABILITY = "arithmetic"
SMALLEST_OPERAND = 10  # both operands truly two-digit: fixed prompt layout, learnt faster
LARGEST_OPERAND = 99


@dataclass(frozen=True)
class Problem:
    """One addition question and its exact answer."""

    left: int
    right: int

    @property
    def question(self) -> str:
        return f"{self.left}+{self.right}="

    @property
    def answer(self) -> str:
        return str(self.left + self.right)

    @property
    def target(self) -> str:
        """The response the warm start is taught: just the sum."""
        return self.answer

    def wrong_targets(self) -> list[str]:
        return plausible_wrong_answers(self)


def all_problems() -> list[Problem]:
    """Every ordered pair of operands, in a fixed order (the split shuffles)."""
    operands = range(SMALLEST_OPERAND, LARGEST_OPERAND + 1)
    return [Problem(left, right) for left in operands for right in operands]


def split_problems(seed: int, val_size: int) -> tuple[list[Problem], list[Problem]]:
    """Shuffle once and cut off a held-out set that neither SFT nor RL ever trains on."""
    problems = all_problems()
    random.Random(seed).shuffle(problems)
    return problems[val_size:], problems[:val_size]


def plausible_wrong_answers(problem: Problem) -> list[str]:
    """Near misses a sloppy adder makes: off by one in the units or the tens digit.

    These are what the warm start is partly taught to say, so that the correct
    answer is likely but not certain and RL has probability mass to move.
    """
    total = problem.left + problem.right
    near_misses = {total - 1, total + 1, total - 10, total + 10}
    return [str(value) for value in sorted(near_misses) if value >= 0]


def to_verl_row(problem, split: str, index: int, data_source: str = DATA_SOURCE) -> dict:
    """One row in the column layout verl's RLHFDataset and reward loop read (any kit task's problem)."""
    return {
        "data_source": data_source,
        "prompt": [{"role": "user", "content": problem.question}],
        "ability": ABILITY,
        "reward_model": {"style": "rule", "ground_truth": problem.answer},
        "extra_info": {"split": split, "index": index},
    }


def write_parquet(problems: list, split: str, path: str, data_source: str = DATA_SOURCE) -> None:
    """Write one split as a verl parquet file."""
    rows = [to_verl_row(problem, split, index, data_source) for index, problem in enumerate(problems)]
    pd.DataFrame(rows).to_parquet(path, index=False)
