"""The math scorer (maspo_verl.rewards): canned model outputs per benchmark, in verl's threads."""

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest

from maspo_verl.rewards import compute_score, extract_answer, math_score, score_answer

R1 = "<think>\nLet me work it out... maybe \\boxed{7}? No.\n</think>\n\n"

# (data_source, model output, gold, expected acc)
CASES = {
    "aime24": [
        (R1 + "The answer is $\\boxed{25}$.", "25", True),
        ("Step by step.\nAnswer: 025", "25", True),  # DAPO's "Answer:" format
        (R1 + "So \\boxed{24}.", "25", False),
        (R1 + "I could not finish.", "25", False),  # missing
        ("<think>... \\boxed{25}</think> no final answer after thinking", "25", False),
    ],
    "aime25": [
        (R1 + "\\boxed{336^\\circ}", "336", True),
        (R1 + "\\boxed{336}", "336", True),
        (R1 + "\\boxed{335}", "336", False),
    ],
    "amc23": [(R1 + "\\boxed{27.0}", "27", True), (R1 + "\\boxed{-1}", "-1", True), (R1 + "\\boxed{1}", "-1", False)],
    "math500": [
        (R1 + "\\boxed{\\left(3, \\dfrac{\\pi}{2}\\right)}", "\\left( 3, \\frac{\\pi}{2} \\right)", True),  # tuple
        (R1 + "\\boxed{(3, \\pi)}", "\\left( 3, \\frac{\\pi}{2} \\right)", False),
        (R1 + "\\boxed{1, -2}", "-2,1", True),  # several answers, any order
        (R1 + "\\boxed{x = \\frac{5}{6}}", "\\frac{5}{6}", True),
        (R1 + "\\boxed{0.8333}", "\\frac{5}{6}", False),  # not within the exact tolerance
        (R1 + "\\boxed{(-\\infty, 2) \\cup (3, \\infty)}", "(-\\infty, 2) \\cup (3, \\infty)", True),  # interval
        (R1 + "\\boxed{(-\\infty, 2]}", "(-\\infty, 2)", False),
        (R1 + "\\boxed{\\$18.90}", "\\$18.90", True),
        (R1 + "\\boxed{10{,}000}", "10000", True),
    ],
    "minerva": [
        (R1 + "\\boxed{1.57 \\mathrm{~cm}}", "1.6", True),  # rounds to the gold's 2 significant figures
        (R1 + "\\boxed{4.46 \\times 10^{33}}", "4.5e33", True),  # scientific notation
        (R1 + "\\boxed{4.1 \\times 10^{33}}", "4.5e33", False),
        (R1 + "\\boxed{2.01}", "2", True),  # within 1%
        (R1 + "\\boxed{1.55}", "2", False),  # an integer gold gets no rounding
        (R1 + "\\boxed{\\frac{\\hbar^2}{2ma^2}}", "\\frac{\\hbar^{2}}{2 m a^{2}}", True),
    ],
    "olympiadbench": [
        (R1 + "\\boxed{84, 69}", "69,84", True),
        (R1 + "\\boxed{69}", "69,84", False),  # one of two answers is not enough
        (R1 + "\\boxed{(4,5,7), (1,8,19), (2,7,13)}", "(1,8,19), (2,7,13), (4,5,7)", True),
        (R1 + "\\boxed{(7,5,4), (1,8,19), (2,7,13)}", "(1,8,19), (2,7,13), (4,5,7)", False),  # tuples keep order
        (R1 + "\\boxed{(-\\infty,0)\\cup\\{1\\}}", "(-\\infty, 0) \\cup\\{1\\}", True),
        (R1 + "\\boxed{45 \\text{ minutes}}", "45", True),
        (R1 + "\\boxed{f(x)=x+1, f(x)=-1}", "f(x)=-1,f(x)=x+1", True),
    ],
}
FLAT = [(source, *case) for source, cases in CASES.items() for case in cases]


@pytest.mark.parametrize("data_source,output,gold,expected", FLAT)
def test_canned_outputs(data_source, output, gold, expected):
    result = compute_score(data_source, output, gold, extra_info={"index": 0})
    assert result["acc"] is expected, result
    assert result["score"] == (1.0 if expected else 0.0)
    assert set(result) == {"score", "acc", "pred"} and isinstance(result["pred"], str)


@pytest.mark.parametrize(
    "output",
    [
        "\\boxed{25",  # unbalanced
        "\\boxed{}",  # empty
        "Answer:",  # empty answer line
        "",
        None,
        12345,
        "\\boxed{\\frac{1}{}}",
        "\\boxed{" + "}" * 50,
    ],
)
def test_missing_or_malformed_scores_zero_and_never_raises(output):
    result = compute_score("aime24", output, "25")
    assert result["score"] == 0.0 and result["acc"] is False


def test_odd_ground_truths_do_not_raise():
    assert compute_score("olympiadbench", "\\boxed{3}", ["$3$"])["acc"] is True  # a raw list
    assert compute_score("amc23", "\\boxed{27}", 27.0)["acc"] is True  # a raw float
    assert compute_score("amc23", "\\boxed{27}", None)["acc"] is False


def test_extraction():
    assert extract_answer("a \\boxed{1} b \\boxed{\\frac{1}{2}} c") == "\\frac{1}{2}"
    assert extract_answer("\\fbox{7}") == "7"
    assert extract_answer("so \\boxed 5.") == "5"
    assert extract_answer("x\nAnswer: $\\frac{1}{2}$.\n") == "\\frac{1}{2}"
    assert extract_answer("<think>\\boxed{1}</think>") is None


def test_incorrect_score_and_kwargs_like_verl_passes_them():
    wrong = compute_score("aime24", "\\boxed{1}", "2", extra_info={}, incorrect_score=-1.0, timeout=5.0, unused=1)
    assert wrong["score"] == -1.0 and wrong["acc"] is False
    assert compute_score("aime24", "\\boxed{2}", "2", incorrect_score=-1.0)["score"] == 1.0


@pytest.mark.parametrize(
    "output",
    [
        "\\boxed{" + "1" * 100_000 + "}",  # a 100k-character answer
        "\\boxed{" + "\\frac{" * 300 + "1" + "}{2}" * 300 + "}",  # deeply nested LaTeX
        "x" * 100_000 + "\\boxed{(" * 2000,  # a long unclosed mess
        ("\\sqrt{" * 25 + "2" + "}" * 25 + "+") * 30 + "1",  # long, deep, but inside the limits
    ],
)
def test_pathological_outputs_finish_inside_the_time_bound(output):
    start = time.perf_counter()
    result = score_answer("math500", output, "\\frac{1}{2}", timeout=3.0)
    assert result["acc"] is False
    assert time.perf_counter() - start < 3.0 + 1.0


def test_a_stuck_check_is_killed_at_its_time_limit_and_the_next_works():
    start = time.perf_counter()
    assert math_score.ask_worker({"op": "ping", "delay": 30}, timeout=0.5) is None
    assert time.perf_counter() - start < 3.0
    assert math_score.ask_worker({"op": "ping"}, timeout=30) == "pong"  # a fresh worker took over
    assert score_answer("math500", "\\boxed{\\dfrac{\\sqrt{3}}{2}}", "\\frac{\\sqrt3}{2}")["acc"] is True


def test_scores_in_threads_like_verls_reward_workers():
    jobs = [(source, output, gold, expected) for source, output, gold, expected in FLAT] * 2
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda job: compute_score(job[0], job[1], job[2])["acc"], jobs))
    assert results == [job[3] for job in jobs]


def test_loads_as_verls_custom_reward_function():
    from omegaconf import OmegaConf
    from verl.trainer.ppo.reward import get_custom_reward_fn

    config = OmegaConf.create(
        {"reward": {"custom_reward_function": {"path": "pkg://maspo_verl.rewards.math_score", "name": "compute_score",
                                               "reward_kwargs": {"incorrect_score": -1.0}}}}
    )  # fmt: skip
    function = get_custom_reward_fn(config)
    assert function(data_source="minerva", solution_str="\\boxed{1.6}", ground_truth="1.6", extra_info={})["acc"]
    assert (
        function(data_source="minerva", solution_str="\\boxed{9}", ground_truth="1.6", extra_info={})["score"] == -1.0
    )


REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "eval-sources"


@pytest.mark.skipif(not REAL.is_dir(), reason="real eval-set copies (../shared/data/eval-sources) not present")
def test_real_golds_score_against_themselves_and_not_each_other(tmp_path):
    from maspo_verl.data.math_sets import prepare

    for name, relative in [("olympiadbench", "qwen25-math/olympiadbench.jsonl"), ("minerva", "qwen25-math/minerva_math.jsonl"),
                           ("math500", "dcpo/math500.parquet"), ("amc23", "qwen25-math/amc23.jsonl")]:  # fmt: skip
        frame = pd.read_parquet(prepare(name, tmp_path, source=REAL / relative, progress=False)["path"])
        golds = [row["ground_truth"] for row in frame["reward_model"]][:40]
        failures = [
            gold for gold in golds if not score_answer(name, f"{R1}So the answer is \\boxed{{{gold}}}.", gold)["acc"]
        ]
        assert failures == [], (name, failures[:5])
        shifted = golds[1:] + golds[:1]
        accepted = [
            (g, s)
            for g, s in zip(golds, shifted)
            if normal(g) != normal(s) and score_answer(name, f"\\boxed{{{s}}}", g)["acc"]
        ]
        assert accepted == [], (name, accepted[:5])


def normal(text):
    return math_score.normalize(text)


def test_without_math_verify_the_scorer_refuses_to_load_with_the_install_line():
    """Every symbolic check would silently score 0: refuse at import, where verl, the preflight
    and the evaluator load the scorer, before any long work."""
    import subprocess
    import sys

    code = (
        "import importlib.util\n"
        "real = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda name, *a: None if name == 'math_verify' else real(name, *a)\n"
        "import maspo_verl.rewards\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "needs math-verify" in result.stderr and "pip install 'maspo-verl[math]'" in result.stderr
