"""A chain of five one-digit additions and subtractions, worked out step by step.

    prompt  "37+5-8+9+4-6="        response  "42,34,43,47,41"        accuracy: the last number is right

The tiny model must carry a running total through five steps, so one slip anywhere makes the
answer wrong; its warm start leaves headroom (held-out accuracy about 0.64 greedy, 0.24 sampled at
T=1) in per-digit arithmetic. RL does not close it at this scale: every method, at every learning
rate tried, drifts or collapses (docs/mini-benchmark.md measures why), so the benchmark trains on
the `add` task and keeps this one as `--task chain`, the harder case. Responses are 10-15 tokens,
about three times the addition task's.

Every running total stays within 0..999: a subtraction is drawn only where it keeps the total
non-negative, so no minus signs appear in responses."""

import random
from dataclasses import dataclass

DATA_SOURCE = "maspo_kit/chain"
ABILITY = "arithmetic"
NUM_OPERANDS = 6
FIRST_OPERANDS = (10, 99)  # the running total starts two-digit...
STEP_OPERANDS = (1, 9)  # ...and moves by one digit per step
TRAIN_SIZE = 16384
MAX_RESPONSE_TOKENS = 20  # 4 totals of up to 3 digits, 3 commas and eos: 16; the rest shows runaway outputs


@dataclass(frozen=True)
class ChainProblem:
    """Operands and the operators between them; the response lists the running totals."""

    operands: tuple[int, ...]
    operators: tuple[str, ...]

    @property
    def question(self) -> str:
        pieces = [str(self.operands[0])]
        for operator, operand in zip(self.operators, self.operands[1:]):
            pieces += [operator, str(operand)]
        return "".join(pieces) + "="

    def totals(self) -> list[int]:
        running, totals = self.operands[0], []
        for operator, operand in zip(self.operators, self.operands[1:]):
            running = running + operand if operator == "+" else running - operand
            totals.append(running)
        return totals

    @property
    def answer(self) -> str:
        """What the reward checks: the worked answer (every total; the last one decides accuracy)."""
        return self.target

    @property
    def target(self) -> str:
        """The response the warm start is taught: every running total, comma separated."""
        return ",".join(str(total) for total in self.totals())

    def wrong_targets(self) -> list[str]:
        """Worked answers with one slip (a total off by one or ten), carried through the later steps."""
        totals = self.totals()
        wrong = []
        for step in range(len(totals)):
            for slip in (-10, -1, 1, 10):
                slipped = totals[:step] + [total + slip for total in totals[step:]]
                if min(slipped) >= 0:
                    wrong.append(",".join(str(total) for total in slipped))
        return wrong


def random_problem(rng: random.Random) -> ChainProblem:
    operands = [rng.randint(*FIRST_OPERANDS)]
    operators, running = [], operands[0]
    for _ in range(NUM_OPERANDS - 1):
        operand = rng.randint(*STEP_OPERANDS)
        operator = "-" if operand <= running and rng.random() < 0.5 else "+"
        running = running + operand if operator == "+" else running - operand
        operands.append(operand)
        operators.append(operator)
    return ChainProblem(tuple(operands), tuple(operators))


def split_problems(seed: int, val_size: int) -> tuple[list[ChainProblem], list[ChainProblem]]:
    """Distinct problems drawn with ``seed``; the first ``val_size`` are held out from SFT and RL."""
    rng = random.Random(seed)
    problems, seen = [], set()
    while len(problems) < TRAIN_SIZE + val_size:
        problem = random_problem(rng)
        if problem.question not in seen:
            seen.add(problem.question)
            problems.append(problem)
    return problems[val_size:], problems[:val_size]
