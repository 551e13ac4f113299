"""The kit's tasks, by name: what each writes, how it is scored, how long its responses are.

``add`` (two-digit addition, maspo_verl/kit/task.py) is the quickstart's and the benchmark's: the
warm start nearly solves it greedily, and RL learns to drop a taught habit and sharpen sampling.
``chain`` (maspo_verl/kit/chain.py): five running totals per answer, headroom in per-digit
arithmetic that RL does not close at this model's scale (docs/mini-benchmark.md).
"""

from dataclasses import dataclass
from typing import Callable

from . import chain, task


@dataclass(frozen=True)
class KitTask:
    name: str
    data_source: str  # verl logs held-out accuracy as val-core/<data_source>/acc/mean@<n>
    split_problems: Callable  # (seed, val_size) -> (train problems, held-out problems)
    reward_name: str  # the function of maspo_verl/kit/reward.py that scores it
    max_response_tokens: int  # the warm start's and the probes' generation limit


TASKS = {
    "add": KitTask("add", task.DATA_SOURCE, task.split_problems, "compute_score", 8),
    "chain": KitTask(
        "chain", chain.DATA_SOURCE, chain.split_problems, "compute_chain_score", chain.MAX_RESPONSE_TOKENS
    ),
}


def get_task(name: str) -> KitTask:
    if name not in TASKS:
        raise ValueError(f"kit task {name!r} does not exist; choose one of {sorted(TASKS)}")
    return TASKS[name]
