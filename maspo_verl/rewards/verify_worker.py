"""A math-verify worker process: `python -m maspo_verl.rewards.verify_worker`.

Started by `maspo_verl.rewards.math_score`. Reads one JSON request per line on stdin and writes
one JSON answer per line on stdout:

  {"op": "match", "gold": [answers], "pred": [answers]}  ->  {"result": true | false}
  {"op": "ping", "delay": seconds}                       ->  {"result": "pong"}   (health check)

math-verify's own time limits (SIGALRM) work here, in the main thread of its own process; the
parent also kills a worker that overruns the per-check limit.
"""

import json
import re
import sys
import time

# A capital E that names something (`E_{1}`, an energy): math-verify reads it as Euler's number or
# drops it (`\frac{1}{3}E_{1}+\frac{2}{3}E_{2}` and `\frac{2}{3}E_{1}+\frac{2}{3}E_{2}` both parsed to
# 2/3), so it goes in as `\mathcal{E}`. Not an exponent (`4.5E3`), nor part of a command or word.
_NAMED_E = re.compile(r"(?<![\\a-zA-Z])E(?![a-zA-Z])(?!\s*[+-]?\d)")


# A subscript that is one command (`m_{\\max}`, `L_{\\odot}`) is a label, but math-verify cannot parse it
# and falls back to comparing strings (so `n^{2}-n-1=m_{\\max}` did not equal `m_{\\max}=n^{2}-n-1`): it
# goes in as the command's name, `m_{max}`, one symbol.
_COMMAND_SUBSCRIPT = re.compile(r"_\{\s*\\([a-zA-Z]+)\s*\}")


# A Leibniz derivative (`\\frac{dy}{dt}`, `\\frac{d^{2} v_{o}}{d t^{2}}`) is read as the derivative of a
# plain symbol, which sympy evaluates to 0: `\\frac{dy}{dt}=-ky` and `\\frac{dy}{dt}=ky` both became
# `0 = ky` and compared equal. It goes in as one symbol, `D_{<order><function><variable>}`.
_LEIBNIZ = re.compile(
    r"\\[dt]?frac\{\s*d\s*(?:\^\s*\{?\s*(\d)\s*\}?)?\s*([a-zA-Z](?:_\{?\w+\}?)?)\s*\}"
    r"\{\s*d\s*([a-zA-Z])\s*(?:\^\s*\{?\s*\d\s*\}?)?\s*\}"
)


def _derivative_symbol(match: re.Match) -> str:
    order, function, variable = match.group(1) or "1", re.sub(r"[_{}]", "", match.group(2)), match.group(3)
    return f"D_{{{order}{function}{variable}}}"


def _for_math_verify(answer: str) -> str:
    answer = _LEIBNIZ.sub(_derivative_symbol, _COMMAND_SUBSCRIPT.sub(r"_{\1}", answer))
    return "\\boxed{" + _NAMED_E.sub(r"\\mathcal{E}", answer) + "}"


def _same(gold: str, pred: str, parse, verify) -> bool:
    try:
        gold_parsed = parse(_for_math_verify(gold), parsing_timeout=5)
        pred_parsed = parse(_for_math_verify(pred), parsing_timeout=5)
        return bool(gold_parsed and pred_parsed and verify(gold_parsed, pred_parsed, timeout_seconds=5))
    except Exception:
        return False


def match(gold_items: list, pred_items: list, parse, verify) -> bool:
    """Equal as one answer; or, for several answers, each gold matched by a distinct prediction."""
    if _same(",".join(gold_items), ",".join(pred_items), parse, verify):
        return True
    if len(gold_items) < 2 or len(gold_items) != len(pred_items):
        return False
    unmatched = list(pred_items)
    for gold in gold_items:
        hit = next((pred for pred in unmatched if _same(gold, pred, parse, verify)), None)
        if hit is None:
            return False
        unmatched.remove(hit)
    return True


def main() -> None:
    out = sys.stdout
    sys.stdout = sys.stderr  # anything a library prints must not corrupt the answer channel
    from math_verify import parse, verify

    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    for line in sys.stdin:
        try:
            request = json.loads(line)
            if request.get("op") == "ping":
                time.sleep(float(request.get("delay", 0)))
                result = "pong"
            else:
                result = match(list(request["gold"]), list(request["pred"]), parse, verify)
        except Exception:
            result = False
        out.write(json.dumps({"result": result}) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
