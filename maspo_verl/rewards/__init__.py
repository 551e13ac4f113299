"""Rewards for the paper recipes: a math scorer for DAPO-Math-17k and the six evaluation sets.

`compute_score` has verl's custom-reward signature; `score_answer` is the same check as a plain
function for evaluation code. See `maspo_verl/rewards/math_score.py`.
"""

from .math_score import compute_score, extract_answer, score_answer

__all__ = ["compute_score", "extract_answer", "score_answer"]
