"""Math answer scorer for the paper's training set and its six evaluation sets.

verl's own scorers cover part of the ground: `math_dapo` reads only the `Answer:` line and
compares strings; `math_verify` checks one boxed answer in a process pool. What the evaluation
sets also need, and this module adds:

- answers in `\\boxed{}` (R1-Distill style) or on an `Answer:` line (DAPO style), read from the
  text after the last `</think>` when the model closed its thinking;
- numeric equality with a tolerance (Minerva's golds are rounded physics numbers: a prediction
  counts when it rounds to the gold's significant figures, or lies within 1% of it), with
  fractions, scientific notation, percentages, degrees and trailing units understood;
- several answers (OlympiadBench's "find all" rows, MATH500's "-2,1"): matched as a multiset,
  in any order; tuples and intervals stay one answer each;
- symbolic equivalence (expressions, intervals, sets, tuples) through math-verify, run in a
  worker process with a per-check time limit (the worker is killed past it), because
  math-verify's own time limit uses SIGALRM, which only works in a main thread, and verl scores
  in reward-worker threads;
- a missing or malformed answer (no box, unbalanced braces, an answer longer than
  `MAX_ANSWER_CHARS` or nested deeper than `MAX_BRACE_DEPTH`) scores 0, and nothing raises.

Entry points:
  score_answer(data_source, response, ground_truth, timeout=...) -> {"score", "acc", "pred"}
  compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs)
      verl's custom-reward signature: reward.custom_reward_function.path=pkg://maspo_verl.rewards.math_score
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import math
import os
import queue
import re
import select
import subprocess
import sys
import threading

# Without math-verify every symbolic check would score 0: a quietly wrong reward. Refuse at
# import, which verl's reward loading, maspo_verl.preflight and the evaluator all do up front.
MATH_VERIFY_MISSING = (
    "maspo_verl.rewards needs math-verify for its symbolic checks, and it is not installed: "
    "pip install 'maspo-verl[math]'"
)
if importlib.util.find_spec("math_verify") is None:
    raise ImportError(MATH_VERIFY_MISSING)

# Extracted answers longer than this, or nested deeper, are treated as malformed (score 0):
# the longest gold answer of the six sets has ~250 characters and brace depth < 10.
MAX_ANSWER_CHARS = 1000
MAX_BRACE_DEPTH = 30
# Seconds one symbolic check may take in the worker process before it counts as wrong.
DEFAULT_TIMEOUT_S = 10.0
# Relative tolerance for numbers outside Minerva (27.0 == 27, 0.5 == 1/2, not 0.5001).
EXACT_REL_TOL = 1e-6
MINERVA_REL_TOL = 1e-2
PRED_CHARS_RETURNED = 300


# ----------------------------------------------------------------------------- extraction


def _matching_brace(text: str, open_index: int) -> int | None:
    """Index of the `}` closing the `{` at open_index, or None when unbalanced."""
    depth = 0
    for index in range(open_index, len(text)):
        char = text[index]
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return index
    return None


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (or `\\fbox{...}`, `\\boxed 5`); None if absent or unbalanced."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    rest_index = start + (len("\\boxed") if text.startswith("\\boxed", start) else len("\\fbox"))
    rest = text[rest_index:]
    if rest.startswith("{"):
        close = _matching_brace(text, rest_index)
        return None if close is None else text[rest_index + 1 : close]
    if rest.startswith(" "):  # `\boxed 5`: one token
        token = rest.strip().split()
        return token[0].rstrip(".$") if token else None
    return None


_ANSWER_LINE = re.compile(r"(?i)answer\s*:\s*([^\n]*)")


def extract_answer(response: str) -> str | None:
    """The final answer of a model response: last box, else last `Answer:` line; None if missing.

    When the response closes a thinking block (`</think>`), only the text after it counts.
    """
    if "</think>" in response:
        response = response.rsplit("</think>", 1)[1]
    boxed = last_boxed(response)
    if boxed is not None:
        return boxed.strip()
    if "\\boxed" in response or "\\fbox" in response:
        return None  # a box that never closes is malformed, not an invitation to guess
    matches = _ANSWER_LINE.findall(response)
    if matches:
        answer = matches[-1].strip().rstrip(".").strip().strip("$").strip()
        inner = last_boxed(answer)
        return (inner if inner is not None else answer) or None
    return None


def _brace_depth(text: str) -> int:
    depth = deepest = 0
    for char in text:
        if char in "{([":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "})]":
            depth -= 1
    return deepest


# ----------------------------------------------------------------------------- normalisation

_REMOVE = [
    "\\left", "\\right", "\\displaystyle", "\\!", "\\,", "\\;", "\\:", "~", "\\$", "$",
    "^{\\circ}", "^\\circ", "°", "\\circ", "\\%", "%", "{,}",
]  # fmt: skip
_TEXT_COMMAND = re.compile(r"\\(?:text|textbf|mathrm|mathbf|operatorname|mbox)\s*\{([^{}]*)\}")
_TRAILING_UNIT = re.compile(r"^(.*?[\d}])\s*(?:\\(?:text|mathrm|mbox)\s*\{[^{}]*\}\s*(?:\^\s*\{?\d\}?\s*)?)+$")
# `90\text{ degrees}` is `90^\circ`, whose sign goes (below), in a list too (`90\text{ degrees}, 60\text{ degrees}`)
_DEGREE_WORD = re.compile(r"\\(?:text|mathrm|mbox)\s*\{\s*degrees?\s*\}")
# `\ ` (a blank) goes, but not the second backslash of a matrix row break `\\ `
_ESCAPED_BLANK = re.compile(r"(?<!\\)\\ ")
# `1 \text{ and } 3`, `f(x)=x and f(x)=-x`: two answers, as `1, 3`
_AND = re.compile(r"\s*\\text\s*\{\s*and\s*\}\s*|\s+and\s+")
_THOUSANDS = re.compile(r"^[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
# `28 percent`, `28 percentage`, `28 per cent`: the word for `\%`, which goes too
_PERCENT_WORD = re.compile(r"(?<=[\d}.])\s*(?:percent(?:age)?|per\s+cent)(?![a-zA-Z])", re.IGNORECASE)
# a variable's name: `x`, `k`, `X_{d}`, `a_1`
_NAME = r"[a-zA-Z](?:_\{?\w+\}?)?"
_NAMED = re.compile(rf"({_NAME})=(.+)")
_MEMBER = re.compile(rf"({_NAME})\\in(.+)")
# order matters: the longer command first (`\leq` before `\le`); a compact text has `\lex` for `\le x`
_RELATION = re.compile(r"\\(?:leqslant|geqslant|leq|geq|le|ge|lt|gt)|<=|>=|<|>")
_LESS = ("<", "<=", "\\le", "\\leq", "\\leqslant", "\\lt")
_STRICT = ("<", ">", "\\lt", "\\gt")
_OR = re.compile(r"\\lor|\\vee|(?<![a-zA-Z])or(?![a-zA-Z]{2})")


def is_value(text: str) -> bool:
    """No variable in it: no letter outside a command (`\\frac{\\pi}{4}`, `2\\sqrt{3}`, `-\\infty`)."""
    return not re.search(r"[a-zA-Z]", re.sub(r"\\[a-zA-Z]+", "", text))


def _bounds_of(parts: list[str]) -> str | None:
    """`[A, <, x, <=, B]` -> `(A,B]`; `[x, >=, A]` -> `[A,\\infty)`: one variable between values."""
    values, relations = parts[0::2], parts[1::2]
    names = [index for index, part in enumerate(values) if re.fullmatch(_NAME, part) and not is_value(part)]
    if len(names) != 1 or not all(is_value(v) and v for i, v in enumerate(values) if i != names[0]):
        return None
    less = [relation in _LESS for relation in relations]
    if len(set(less)) != 1:  # `a < x > b` is no interval
        return None
    if not less[0]:  # read `b > x > a` as `a < x < b`
        values, relations = values[::-1], relations[::-1]
        names = [len(values) - 1 - names[0]]
    strict = [relation in _STRICT for relation in relations]
    if len(values) == 3 and names[0] == 1:
        low, high = values[0], values[2]
        return f"{'(' if strict[0] else '['}{low},{high}{')' if strict[1] else ']'}"
    if len(values) == 2:
        if names[0] == 0:  # x < b
            return f"(-\\infty,{values[1]}{')' if strict[0] else ']'}"
        return f"{'(' if strict[0] else '['}{values[0]},\\infty)"  # a < x
    return None


def as_interval(text: str) -> str | None:
    """A compact inequality in one variable as the interval it defines (`-2\\lex\\le7` -> `[-2,7]`,
    `x>3` -> `(3,\\infty)`; joined by `or`: a union), or membership (`x\\in[-2,7]` -> `[-2,7]`); else None.
    Like `x=5` -> `5`, the variable's name goes."""
    member = _MEMBER.fullmatch(text)
    if member:
        return member.group(2)
    pieces = _OR.split(text)
    intervals = []
    for piece in pieces:
        parts = _RELATION.split(piece)
        relations = _RELATION.findall(piece)
        if not 1 <= len(relations) <= 2:
            return None
        interval = _bounds_of([part for pair in zip(parts, relations + [""]) for part in pair][:-1])
        if interval is None:
            return None
        intervals.append(interval)
    return "\\cup".join(intervals)


def drop_name(text: str) -> str:
    """`y=2x+1` -> `2x+1`: an equation with a one-letter left side, as the expression it names."""
    named = _NAMED.fullmatch(text)
    return named.group(2) if named and text.count("=") == 1 else text


def normalize(answer: str) -> str:
    """Canonical text of one answer: no spacing commands, `$`, degrees, percent or units; a value
    named by a variable (`x=5`, `x \\in [-2,7]`) without the name; an inequality in one variable as
    its interval. An equation between variables (`y=2x+1`) stays an equation."""
    text = _PERCENT_WORD.sub("", _DEGREE_WORD.sub("", answer.strip()))
    unit = _TRAILING_UNIT.match(text)
    if unit:  # `1.6 \mathrm{~cm}`, `15\mbox{ cm}^2`, `\frac{270}{7}\text{ days}` -> the number
        text = unit.group(1)
    text = _AND.sub(",", _ESCAPED_BLANK.sub("", text))
    for token in _REMOVE:
        text = text.replace(token, "")
    text = text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    text = _TEXT_COMMAND.sub(r"\1", text)
    text = re.sub(r"\s+", "", text)
    text = text.rstrip(".")
    if _THOUSANDS.match(text):
        text = text.replace(",", "")
    # `x=5` -> `5` (a short name on the left, a value on the right); an equation such as `y=2x+1`
    # keeps its left side: it is compared as an equation (_answers_match)
    if text.count("=") == 1 and is_value(drop_name(text)):
        text = drop_name(text)
    return as_interval(text) or text


def split_answers(text: str) -> list[str]:
    """Split at top-level commas: `1,3,5` -> 3 answers; `(1,2)` and `[0,1)` stay one each."""
    items, depth, current = [], 0, []
    index = 0
    while index < len(text):
        char = text[index]
        if text.startswith("\\{", index) or text.startswith("\\}", index):
            depth += 1 if char == "\\" and text[index + 1] == "{" else -1
            current.append(text[index : index + 2])
            index += 2
            continue
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        if char == "," and depth == 0:
            items.append("".join(current))
            current = []
        else:
            current.append(char)
        index += 1
    items.append("".join(current))
    return [item for item in (part.strip() for part in items) if item]


def _strip_set_braces(text: str) -> str:
    r"""`\{1,3,5\}` -> `1,3,5`, so a set written as a set matches a comma list."""
    if text.startswith("\\{") and text.endswith("\\}"):
        return text[2:-2]
    return text


# ----------------------------------------------------------------------------- numbers

_NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)"
_PLAIN = re.compile(rf"^({_NUMBER})(?:[eE]([+-]?\d+))?$")
_TIMES_TEN = re.compile(rf"^({_NUMBER})(?:\\times|\\cdot|\*|x)10\^\{{?([+-]?\d+)\}}?$")
_TEN_POWER = re.compile(r"^([+-]?)10\^\{?([+-]?\d+)\}?$")
_FRAC = re.compile(rf"^([+-]?)\\frac\{{({_NUMBER})\}}\{{({_NUMBER})\}}$")
_SLASH = re.compile(rf"^({_NUMBER})/({_NUMBER})$")


def to_number(text: str) -> float | None:
    """The value of a normalised numeric answer (27, 2.5e-3, 4.5\\times10^{33}, \\frac{1}{2}), else None."""
    try:
        match = _PLAIN.match(text)
        if match:
            mantissa, exponent = match.groups()
            return float(mantissa) * (10.0 ** int(exponent) if exponent else 1.0)
        match = _TIMES_TEN.match(text)
        if match:
            return float(match.group(1)) * 10.0 ** int(match.group(2))
        match = _TEN_POWER.match(text)
        if match:
            return (-1.0 if match.group(1) == "-" else 1.0) * 10.0 ** int(match.group(2))
        match = _FRAC.match(text)
        if match:
            sign, numerator, denominator = match.groups()
            return (-1.0 if sign == "-" else 1.0) * float(numerator) / float(denominator)
        match = _SLASH.match(text)
        if match:
            return float(match.group(1)) / float(match.group(2))
    except (OverflowError, ZeroDivisionError, ValueError):
        return None
    return None


def _significant_figures(text: str) -> int | None:
    """Significant figures of a rounded decimal gold (`1.6`, `0.0350`, `4.5e33`); None for integers."""
    match = _PLAIN.match(text) or _TIMES_TEN.match(text)
    if not match or "." not in match.group(1) and match.group(0) == match.group(1):
        return None  # `2` may be exact: only the 1% tolerance applies
    digits = match.group(1).lstrip("+-").replace(".", "").lstrip("0")
    return max(len(digits), 1)


def numbers_equal(pred: float, gold: float, gold_text: str, tolerant: bool) -> bool:
    """Exact sets: equal up to float noise (`0.5` = `1/2`), and integers exactly (3986730 is not
    3986729). Minerva: within 1%, or equal at the gold's significant figures. Never an absolute
    tolerance: Minerva's golds go down to 1e-27 (`7.4e-12` is not `8.4e-12`, nor `-7.4e-12`)."""
    if not (math.isfinite(pred) and math.isfinite(gold)):
        return False
    if pred == gold:
        return True
    if not tolerant:
        if pred.is_integer() and gold.is_integer():
            return False
        return math.isclose(pred, gold, rel_tol=EXACT_REL_TOL)
    if math.isclose(pred, gold, rel_tol=MINERVA_REL_TOL):
        return True
    figures = _significant_figures(gold_text)
    if figures is None or pred == 0 or gold == 0:
        return False
    rounded = float(f"{pred:.{figures - 1}e}")
    return math.isclose(rounded, gold, rel_tol=1e-9)


def _fast_equal(pred: str, gold: str, tolerant: bool) -> bool | None:
    """True/False when text or numbers decide; None when only a symbolic check can."""
    if pred == gold:
        return True
    pred_value, gold_value = to_number(pred), to_number(gold)
    if pred_value is not None and gold_value is not None:
        return numbers_equal(pred_value, gold_value, gold, tolerant)
    return None


# ----------------------------------------------------------------------------- math-verify, bounded
# Symbolic checks run in worker processes (`python -m maspo_verl.rewards.verify_worker`), one
# JSON line per request. A worker that overruns its time limit is killed and replaced. Plain
# subprocesses rather than a multiprocessing pool: no pickling, no re-import of the caller's
# main module (which multiprocessing's spawn does), and a stuck check can really be stopped.

_idle_workers: "queue.SimpleQueue[_Worker]" = queue.SimpleQueue()
_worker_slots = threading.BoundedSemaphore(max(1, int(os.environ.get("MASPO_VERL_SCORER_WORKERS", "2"))))
_live_workers: "set[_Worker]" = set()
_warned: set = set()
START_TIMEOUT_S = 120.0


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        print(f"[maspo_verl.rewards] WARNING: {message}", flush=True)


class _Worker:
    def __init__(self):
        package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "maspo_verl.rewards.verify_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        _live_workers.add(self)
        if self._read(START_TIMEOUT_S) != {"ready": True}:
            raise RuntimeError("the math-verify worker did not start (is `math-verify` installed?)")

    def _read(self, timeout: float):
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError
        line = self.process.stdout.readline()
        if not line:
            raise EOFError("the math-verify worker exited")
        return json.loads(line)

    def ask(self, request: dict, timeout: float):
        self.process.stdin.write((json.dumps(request) + "\n").encode())
        self.process.stdin.flush()
        return self._read(timeout)

    def kill(self) -> None:
        _live_workers.discard(self)
        try:
            self.process.kill()
            self.process.wait(timeout=5)
        except Exception:
            pass


@atexit.register
def _kill_all_workers() -> None:
    for worker in list(_live_workers):
        worker.kill()


def ask_worker(request: dict, timeout: float = DEFAULT_TIMEOUT_S):
    """Send one request to an idle worker; its answer, or None past `timeout` s or on failure."""
    with _worker_slots:  # at most MASPO_VERL_SCORER_WORKERS checks at a time
        try:
            worker = _idle_workers.get_nowait()
        except queue.Empty:
            try:
                worker = _Worker()
            except Exception as error:
                _warn_once(f"no math-verify worker ({error!r}); symbolic checks score 0")
                return None
        try:
            answer = worker.ask(request, timeout)
        except Exception:  # overran its time (or died): stop it, a fresh one replaces it
            worker.kill()
            return None
        _idle_workers.put(worker)
        return answer.get("result")


def _symbolic_match(gold_items: list[str], pred_items: list[str], timeout: float) -> bool:
    answer = ask_worker({"op": "match", "gold": gold_items, "pred": pred_items}, timeout=timeout)
    return bool(answer)


# ----------------------------------------------------------------------------- scoring


def _answers_match(pred: str, gold: str, tolerant: bool, timeout: float) -> bool:
    pred_norm, gold_norm = normalize(pred), normalize(gold)
    if not pred_norm or not gold_norm:
        return False
    # two equations are equal when they define the same points (math-verify's check of `Eq`s);
    # an equation `y=2x+1` against a bare expression compares the expression it names
    if ("=" in pred_norm) != ("=" in gold_norm):
        pred_norm, gold_norm = drop_name(pred_norm), drop_name(gold_norm)
    decided = _fast_equal(pred_norm, gold_norm, tolerant)
    if decided is not None:
        return decided
    gold_items = split_answers(_strip_set_braces(gold_norm))
    pred_items = split_answers(_strip_set_braces(pred_norm))
    if len(gold_items) > 1 and len(gold_items) == len(pred_items):
        # several answers: decide by text and numbers when every item can be
        unmatched, undecided = list(pred_items), False
        for gold_item in gold_items:
            hit = next((p for p in unmatched if _fast_equal(p, gold_item, tolerant)), None)
            if hit is None:
                undecided = True
                break
            unmatched.remove(hit)
        if not undecided:
            return True
    if (
        gold_items
        and all(to_number(item) is not None for item in gold_items)
        and all(to_number(item) is not None for item in pred_items)
    ):
        return False  # plain numbers that did not match: nothing symbolic left to find
    return _symbolic_match(gold_items, pred_items, timeout)


def _ground_truth_text(ground_truth) -> str:
    if isinstance(ground_truth, str):
        return ground_truth
    if isinstance(ground_truth, float) and ground_truth.is_integer():
        return str(int(ground_truth))
    if isinstance(ground_truth, (int, float)):
        return repr(ground_truth)
    try:  # a list of answers (OlympiadBench's final_answer), numpy arrays included
        return ",".join(str(item).strip().strip("$") for item in ground_truth)
    except TypeError:
        return str(ground_truth)


def score_answer(data_source, response, ground_truth, timeout: float = DEFAULT_TIMEOUT_S) -> dict:
    """Score one response against one gold answer; never raises.

    Returns {"score": 1.0 or 0.0, "acc": bool, "pred": the extracted answer ("" if none)}.
    Minerva (any data_source containing "minerva") compares numbers with a tolerance.
    """
    pred = ""
    try:
        if not isinstance(response, str) or ground_truth is None:
            return {"score": 0.0, "acc": False, "pred": pred}
        extracted = extract_answer(response)
        if extracted is None:
            return {"score": 0.0, "acc": False, "pred": pred}
        pred = extracted[:PRED_CHARS_RETURNED]
        if len(extracted) > MAX_ANSWER_CHARS or _brace_depth(extracted) > MAX_BRACE_DEPTH:
            return {"score": 0.0, "acc": False, "pred": pred}
        tolerant = "minerva" in str(data_source).lower()
        correct = _answers_match(extracted, _ground_truth_text(ground_truth), tolerant, timeout)
        return {"score": 1.0 if correct else 0.0, "acc": bool(correct), "pred": pred}
    except Exception:  # a scorer that raises would stop a whole training run
        return {"score": 0.0, "acc": False, "pred": pred}


def compute_score(
    data_source,
    solution_str,
    ground_truth,
    extra_info=None,
    timeout: float = DEFAULT_TIMEOUT_S,
    incorrect_score: float = 0.0,
    **kwargs,
) -> dict:
    """verl custom reward: `reward.custom_reward_function.path=pkg://maspo_verl.rewards.math_score`.

    Options through `reward.custom_reward_function.reward_kwargs`: `timeout` (seconds per
    symbolic check) and `incorrect_score` (reward of a wrong or missing answer, default 0;
    DAPO's own scorer uses -1). Works with verl's `naive` and `dapo` reward managers.
    """
    result = score_answer(data_source, solution_str, ground_truth, timeout=timeout)
    if not result["acc"]:
        result["score"] = float(incorrect_score)
    return result
