"""Rule rewards for the kit's tasks (addition, chain), in the form verl's reward loop calls.

verl 0.9.1 loads this file by path (``custom_reward_function.path=<this file>``,
``custom_reward_function.name=compute_score``) and calls it with keyword
arguments ``data_source, solution_str, ground_truth, extra_info`` (plus extra
keywords in some setups). A float return is logged as both score and ``acc``.
The file imports nothing from the package so it loads standalone.
"""

import re

_INTEGER = re.compile(r"\d+")


def parse_answer(solution_str: str) -> str | None:
    """The answer if the response is just an integer (surrounding blanks allowed), else None."""
    text = solution_str.strip()
    return text if _INTEGER.fullmatch(text) else None


def compute_score(data_source=None, solution_str="", ground_truth="", extra_info=None, **kwargs) -> float:
    """1.0 when the response is exactly the right integer, else 0.0 (malformed counts as wrong)."""
    answer = parse_answer(solution_str)
    if answer is None:
        return 0.0
    return 1.0 if int(answer) == int(ground_truth) else 0.0


_RUNNING_TOTALS = re.compile(r"\d+(,\d+)*")


def compute_chain_score(data_source=None, solution_str="", ground_truth="", extra_info=None, **kwargs) -> dict:
    """The chain task. ``ground_truth`` is the worked answer ("42,34,43,47,41").

    ``acc`` is 1.0 when the response is comma-separated integers whose last one is the right
    answer, else 0.0: what held-out accuracy reports. ``score`` (the training reward) is the share
    of running totals right from the first one on, so a response with one slip late in the chain
    earns more than one wrong from the start: RL learns each step, not only from the rare fully
    right samples. A malformed response scores 0 on both.
    """
    expected = ground_truth.split(",")
    text = solution_str.strip()
    if not _RUNNING_TOTALS.fullmatch(text):
        return {"score": 0.0, "acc": 0.0}
    given = text.split(",")
    leading = 0
    while leading < min(len(given), len(expected)) and int(given[leading]) == int(expected[leading]):
        leading += 1
    final_right = int(given[-1]) == int(expected[-1])
    return {"score": leading / len(expected) if len(given) == len(expected) else 0.0, "acc": float(final_right)}
