"""Rule reward for the kit's addition task, in the form verl's reward loop calls.

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
