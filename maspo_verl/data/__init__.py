"""Data preparation for the paper recipes: `python -m maspo_verl.data prepare <name> --out DIR`.

See `maspo_verl/data/math_sets.py`.
"""

from .math_sets import EVAL_SETS, SETS, TEMPLATES, prepare

__all__ = ["EVAL_SETS", "SETS", "TEMPLATES", "prepare"]
