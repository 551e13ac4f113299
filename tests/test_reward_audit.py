"""The scorer audit (`python -m maspo_verl.rewards audit`): the labelled pairs it generates, the
arithmetic of its rates, its command line, and the scorer fixes it led to."""

import json
import re
import shutil
import time
from fractions import Fraction
from pathlib import Path

import pytest
from fixtures import math_sources as fx

from maspo_verl.rewards import audit, compute_score
from maspo_verl.rewards.__main__ import main as rewards_main
from maspo_verl.rewards.audit_set import Gold, LabelConflict, Pair, answers_for, generate, pairs_for

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "eval-sources"


def _answers(gold: Gold) -> dict[str, tuple[str, bool]]:
    return {answer: (rule, label) for rule, answer, label in answers_for(gold)}


# ----------------------------------------------------------------------------- the generator's labels


@pytest.mark.parametrize(
    "gold, expected",
    [
        (Gold("math500", "m/1", "\\frac{3}{4}"), {
            "\\frac{3}{4}": ("as_given", True), "\\dfrac{3}{4}": ("dfrac", True), "3/4": ("fraction_as_slash", True),
            "0.75": ("fraction_as_decimal", True), "\\frac{4}{4}": ("changed_number", False),
            "-\\frac{3}{4}": ("wrong_sign", False), "\\frac{4}{3}": ("reciprocal", False)}),
        (Gold("math500", "m/2", "\\frac{1}{3}"), {
            "\\frac{1}{3}": ("as_given", True), "\\dfrac{1}{3}": ("dfrac", True), "1/3": ("fraction_as_slash", True),
            "\\frac{2}{3}": ("changed_number", False), "-\\frac{1}{3}": ("wrong_sign", False),
            "0.3333": ("rounded_decimal", False)}),  # no exact decimal, and the rounded one is wrong
        (Gold("math500", "m/3", "(3,4]"), {
            "(3,4]": ("as_given", True), "(3, 4]": ("latex_spacing", True), "(4,4]": ("changed_number", False),
            "[3,4]": ("swapped_bracket", False), "3 < x \\le 4": ("interval_as_inequality", True),
            "3 \\le x \\le 4": ("inequality_strictness", False)}),
        (Gold("math500", "m/4", "90^\\circ"), {
            "90^\\circ": ("as_given", True), "90": ("degrees", True), "90°": ("degrees", True),
            "90^{\\circ}": ("degrees", True), "90\\text{ degrees}": ("degrees", True),
            "91^\\circ": ("changed_number", False)}),
        (Gold("aime24", "a/1", "25"), {
            "25": ("as_given", True), "025": ("zero_padded", True), "26": ("changed_number", False),
            "-25": ("wrong_sign", False)}),
        (Gold("minerva", "v/1", "1.6"), {  # tolerant set: near misses far outside any rounding
            "1.6": ("as_given", True), "\\frac{8}{5}": ("decimal_as_fraction", True), "1.60": ("decimal_form", True),
            "2.6": ("changed_number", False), "16": ("power_of_ten", False), "-1.6": ("wrong_sign", False)}),
        (Gold("minerva", "v/2", "4.5e33"), {
            "4.5e33": ("as_given", True), "4.5 \\times 10^{33}": ("scientific_notation", True),
            "4.5\\cdot10^{33}": ("scientific_notation", True), "5.5e33": ("changed_number", False),
            "4.5e34": ("power_of_ten", False), "-4.5e33": ("wrong_sign", False)}),
        (Gold("olympiadbench", "o/1", "1,3", problem="Find all integers n."), {
            "1,3": ("as_given", True), "1, 3": ("latex_spacing", True), "3, 1": ("reordered_list", True),
            "\\{1, 3\\}": ("set_braces", True), "1 \\text{ and } 3": ("list_with_and", True),
            "2,3": ("changed_number", False), "1": ("dropped_item", False)}),
        (Gold("olympiadbench", "o/2", "5,1", problem="What are the minimum and maximum values of f?"), {
            "5,1": ("as_given", True), "5, 1": ("latex_spacing", True),  # ordered: no reordering
            "6,1": ("changed_number", False), "5": ("dropped_item", False)}),
        (Gold("math500", "m/5", "\\text{(B)}"), {
            "\\text{(B)}": ("as_given", True), "(B)": ("text_answer", True), "\\textbf{(B)}": ("text_answer", True),
            "B": ("text_answer", True), "\\text{(C)}": ("other_choice", False)}),
        (Gold("math500", "m/6", "p - q"), {
            "p - q": ("as_given", True), "p-q": ("latex_spacing", True), "-q+p": ("reordered_sum", True),
            "-(p - q)": ("wrong_sign", False)}),
        (Gold("olympiadbench", "o/3", "28\\%"), {
            "28\\%": ("as_given", True), "28": ("percent", True), "28 percent": ("percent_word", True),
            "28 percentage": ("percent_word", True), "29\\%": ("changed_number", False),
            "29 percent": ("percent_word_changed", False)}),
        (Gold("math500", "m/7", "y = 2x + 1"), {
            "y = 2x + 1": ("as_given", True), "y=2x+1": ("latex_spacing", True), "2x+1 = y": ("equation_rearranged", True),
            "2x+1-y=0": ("equation_rearranged", True), "y = 3x + 1": ("changed_number", False),
            "y=2x-1": ("equation_shifted", False), "2x-1-y=0": ("equation_shifted", False)}),
        (Gold("math500", "m/8", "2x + 4y - 3 = 0"), {
            "2x + 4y - 3 = 0": ("as_given", True), "2x+4y-3=0": ("latex_spacing", True),
            "0 = 2x+4y-3": ("equation_rearranged", True), "-2x-4y+3=0": ("equation_rearranged", True),
            "3x + 4y - 3 = 0": ("changed_number", False), "2x+4y+3=0": ("equation_shifted", False)}),
        (Gold("math500", "m/9", "x \\in [-2,7]"), {
            "x \\in [-2,7]": ("as_given", True), "x\\in[-2,7]": ("latex_spacing", True),
            "x\\in[-2, 7]": ("latex_spacing", True), "[-2,7]": ("without_variable", True),
            "-2 \\le x \\le 7": ("interval_as_inequality", True), "x \\in [-3,7]": ("changed_number", False),
            "x \\in (-2,7]": ("swapped_bracket", False), "-2 < x \\le 7": ("inequality_strictness", False)}),
        (Gold("math500", "m/10", "(-\\infty, 2) \\cup (3, \\infty)"), {
            "(-\\infty, 2) \\cup (3, \\infty)": ("as_given", True), "(-\\infty,2)\\cup(3,\\infty)": ("latex_spacing", True),
            "(-\\infty, 2)\\cup(3, \\infty)": ("latex_spacing", True), "(3,\\infty) \\cup (-\\infty,2)": ("reordered_list", True),
            "x < 2 \\text{ or } x > 3": ("interval_as_inequality", True), "(-\\infty, 3) \\cup (3, \\infty)": ("changed_number", False),
            "(-\\infty,2)": ("dropped_item", False), "(-\\infty,2] \\cup (3,\\infty)": ("swapped_bracket", False),
            "x \\le 2 \\text{ or } x > 3": ("inequality_strictness", False)}),
    ],
)  # fmt: skip
def test_hand_checked_pairs(gold, expected):
    assert _answers(gold) == expected


def test_units_and_digit_groups_only_where_the_set_writes_them():
    assert "13,535" in _answers(Gold("math500", "m/1", "13535"))
    assert "13,535" not in _answers(Gold("olympiadbench", "o/1", "13535"))  # a comma separates answers there
    assert "13{,}535" in _answers(Gold("olympiadbench", "o/1", "13535"))
    plain = _answers(Gold("math500", "m/2", "90"))
    assert not any("circ" in answer or "degrees" in answer for answer in plain)  # no unit the gold lacks
    assert _answers(Gold("math500", "m/3", "5.4 \\text{ cents}"))["5.4"] == ("units", True)
    assert _answers(Gold("math500", "m/4", "58,500"))["58500"] == ("thousands_separator", True)
    assert "58, 500" not in _answers(Gold("math500", "m/4", "58,500"))  # would read as two answers


def test_prose_golds_keep_their_blanks_and_commas():
    gold = Gold("olympiadbench", "o/1", "f(x)=a x+b, where b is an arbitrary integer", problem="Find all f.")
    rules = {rule for rule, _, _ in answers_for(gold)}
    assert rules <= {"as_given", "changed_number"}


def _value(text: str) -> Fraction | None:
    """An independent reading of plain numeric answers: integers, decimals, a/b, \\frac, x 10^n, groups."""
    text = text.replace("{,}", "").replace("\\dfrac", "\\frac").replace(" ", "")
    text = re.sub(r",\\!|,(?=\d{3}\b)", "", text)
    sign = -1 if text.startswith("-") else 1
    text = text.lstrip("-")
    if re.fullmatch(r"\d*\.?\d+(e-?\d+)?", text):
        return sign * Fraction(text)
    if m := re.fullmatch(r"(\d+)/(\d+)", text):
        return sign * Fraction(int(m[1]), int(m[2]))
    if m := re.fullmatch(r"(\d*)\\frac\{?(\d+)\}?\{?(\d+)\}?", text):  # `1\frac{4}{5}` is a mixed number
        return sign * (int(m[1] or 0) + Fraction(int(m[2]), int(m[3])))
    if m := re.fullmatch(r"([\d.]+)(?:\\times|\\cdot)10\^\{(-?\d+)\}", text):
        return sign * Fraction(m[1]) * Fraction(10) ** int(m[2])
    return None


NUMERIC_GOLDS = [
    ("math500", "\\frac{3}{4}"), ("math500", "\\frac{1}{3}"), ("math500", "-\\frac{35}{9}"), ("math500", "\\frac 59"),
    ("math500", "\\frac9{19}"), ("math500", "1\\frac{4}{5}"), ("math500", "0.15"), ("math500", ".0000672"),
    ("math500", "1.25"), ("math500", "13535"), ("math500", "10,\\!080"), ("aime24", "25"), ("amc23", "-7"),
    ("minerva", "4.5e33"), ("minerva", "1e-5"), ("minerva", "0.006"), ("minerva", "6630"), ("math500", "\\dfrac{17}{50}"),
]  # fmt: skip


@pytest.mark.parametrize("benchmark, text", NUMERIC_GOLDS)
def test_numeric_labels_agree_with_exact_arithmetic(benchmark, text):
    """Every generated answer that is a plain number: label 1 exactly when its value is the gold's."""
    gold_value = _value(text)
    assert gold_value is not None
    checked = 0
    for rule, answer, label in answers_for(Gold(benchmark, "x/1", text)):
        value = _value(answer)
        if value is None:
            continue
        checked += 1
        assert label == (value == gold_value), (rule, answer, label, value, gold_value)
        if not label and benchmark == "minerva":  # far outside Minerva's rounding: at least 10% away
            assert abs(value - gold_value) >= abs(gold_value) / 10, (rule, answer)
    assert checked >= 3


def test_pairs_are_whole_responses_in_both_templates():
    gold = Gold("math500", "m/1", "\\frac{3}{4}")
    pairs = list(pairs_for(gold))
    for pair in pairs:
        assert pair.gold == gold.text and pair.benchmark == "math500"
    given = {pair.template: pair.response for pair in pairs if pair.rule == "as_given"}
    assert given["r1"].startswith("<think>") and "</think>" in given["r1"]
    assert given["r1"].rstrip(".").endswith("\\boxed{\\frac{3}{4}}$")
    assert given["dapo"].splitlines()[-1] == "Answer: \\frac{3}{4}"
    changed = [pair for pair in pairs if pair.rule == "changed_mind"]
    assert {pair.template for pair in changed} == {"r1", "dapo"} and not any(pair.label for pair in changed)
    for pair in changed:  # the right answer first, a near miss last
        assert pair.response.index("\\frac{3}{4}") < pair.response.index("\\frac{4}{4}")
    revised = [pair for pair in pairs if pair.rule == "revised_answer"]
    assert revised and all(pair.label for pair in revised)


def test_a_rule_that_contradicts_another_is_caught(monkeypatch):
    from maspo_verl.rewards import audit_set

    bad = audit_set.Rule("bad", False, lambda gold: [gold.text], "labels the gold itself a near miss")
    monkeypatch.setattr(audit_set, "ANSWER_RULES", [*audit_set.ANSWER_RULES, bad])
    with pytest.raises(LabelConflict, match="as_given"):
        answers_for(Gold("aime24", "a/1", "25"))


# ----------------------------------------------------------------------------- the audit's arithmetic


def _pair(benchmark, response, label, rule="r", template="r1"):
    return Pair(benchmark, f"{benchmark}/0", "1", "1", response, template, rule, label)


def test_rates_against_a_scorer_with_known_mistakes():
    pairs = [
        _pair("A", "p1", True, "as_given"), _pair("A", "p2", True, "dfrac"), _pair("A", "p3", True, "dfrac"),
        _pair("A", "p4", True, "dfrac"), _pair("A", "n1", False, "wrong_sign"), _pair("A", "n2", False, "wrong_sign"),
        _pair("B", "p5", True, "as_given"), _pair("B", "p6", True, "dfrac"),
        _pair("A", "d1", True, "as_given", template="dapo"),  # a template the scorer is not written for
        _pair("A", "d2", True, "dfrac", template="dapo"),  # ... and not the as-given probe: never scored
    ]  # fmt: skip
    accepted = {"p1", "p2", "p3", "n2", "p5", "p6", "d1"}  # misses p4 (a FN), takes n2 (a FP)
    calls = []

    def accepts(benchmark, response, gold):
        calls.append(response)
        if response == "p6":
            time.sleep(0.05)  # the slowest call
        return response in accepted

    scorer = audit.Scorer("fake", ("r1",), accepts, "test")
    outcomes = audit.run(pairs, [scorer], progress=False)
    assert "d2" not in calls and sum(call == "d1" for call in calls) == 1
    summary = audit.summarize(outcomes, ["fake"], ["A", "B"])
    rows = {row["benchmark"]: row for row in summary["table"]}
    a, b, both = rows["A"], rows["B"], rows["all"]
    assert (a["n"], a["false_negatives"], a["positives"], a["false_positives"], a["negatives"]) == (6, 1, 4, 1, 2)
    assert a["fn_rate"] == pytest.approx(1 / 4) and a["fp_rate"] == pytest.approx(1 / 2)
    assert a["agreement"] == pytest.approx(4 / 6)
    assert b["fn_rate"] == 0 and b["fp_rate"] is None and b["agreement"] == 1
    assert both["n"] == 8 and both["agreement"] == pytest.approx(6 / 8) and both["fn_rate"] == pytest.approx(1 / 6)
    by_rule = {(row["rule"], row["scorer"]): row for row in summary["by_rule"]}
    assert by_rule[("dfrac", "fake")]["false_negatives"] == 1 and by_rule[("dfrac", "fake")]["positives"] == 4
    assert by_rule[("wrong_sign", "fake")]["fp_rate"] == pytest.approx(1 / 2)
    templates = {row["template"]: row for row in summary["templates"]}
    assert templates["dapo"]["native"] is False and templates["dapo"]["accepted"] == 1.0
    assert templates["r1"]["n"] == 2  # p1 and p5
    assert summary["slowest"][0]["answer"] == "1" and summary["slowest"][0]["seconds"] >= 0.05
    assert {case["rule"] for case in summary["mistakes"]} == {"dfrac", "wrong_sign"}
    table = audit.markdown(summary, ["fake"])
    assert "| A | fake | 6 | 66.7% | 25.0% (1/4) | 50.0% (1/2) |" in table
    assert "| B | fake | 2 | 100.0% | 0.0% (0/2) | - (0/0) |" in table


# ----------------------------------------------------------------------------- command line


def _fixture_sources(directory: Path) -> Path:
    """The six sets in the folder layout of ../shared/data/eval-sources, from the shared fixtures."""
    scratch = directory / "scratch"
    scratch.mkdir(parents=True)
    files = {
        "qwen25-math/aime24.jsonl": fx.qwen_aime24(scratch),
        "dcpo/aime_2025.parquet": fx.dcpo_parquet(scratch, "aime_2025", [("Find $b$.", "70"), ("Find $k$.", "117")]),
        "qwen25-math/amc23.jsonl": fx.qwen_amc23(scratch),
        "dcpo/math500.parquet": fx.dcpo_parquet(
            scratch, "math500", [("Find all roots.", "-2,1"), ("Find $p$.", "\\frac{5}{6}"), ("Solve.", "(3,4]")]
        ),
        "qwen25-math/minerva_math.jsonl": fx.qwen_minerva(scratch),
        "qwen25-math/olympiadbench.jsonl": fx.qwen_olympiadbench(scratch),
    }
    sources = directory / "eval-sources"
    for relative, path in files.items():
        (sources / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(path, sources / relative)
    return sources


def test_cli_on_fixture_sources(tmp_path, capsys):
    sources = _fixture_sources(tmp_path)
    out = tmp_path / "audit.json"
    argv = ["audit", "--sources", str(sources), "--scorers", "ours", "math_dapo", "--per-set", "2", "--json", str(out)]
    assert rewards_main([*argv, "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "| benchmark | scorer | pairs | agreement | FN rate | FP rate |" in printed
    assert "| olympiadbench | math_dapo |" in printed and "Slowest calls" in printed
    report = json.loads(out.read_text())
    assert report["golds"] == {"aime24": 3, "aime25": 2, "amc23": 3, "math500": 3, "minerva": 3, "olympiadbench": 6}
    assert report["sampled"] == 2 + 2 + 2 + 2 + 2 + 2
    assert {row["benchmark"] for row in report["table"]} == {*audit.BENCHMARKS, "all"}
    ours = next(row for row in report["table"] if row["benchmark"] == "all" and row["scorer"] == "ours")
    assert ours["n"] == sum(1 for o in report["outcomes"] if o["scorer"] == "ours" and o["native"])
    assert all(o["template"] == "dapo" for o in report["outcomes"] if o["scorer"] == "math_dapo" and o["native"])


def test_cli_names_a_missing_sources_folder(tmp_path, capsys):
    missing = tmp_path / "no-such-folder"
    with pytest.raises(SystemExit) as exit_info:
        rewards_main(["audit", "--sources", str(missing), "--no-progress"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert f"eval sources folder not found: {missing}" in error and "--sources" in error


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--sets", "aime24", "gsm8k"], "unknown --sets ['gsm8k']"),
        (["--scorers", "prime"], "unknown --scorers ['prime']"),
        (["--per-set", "0"], "--per-set must be at least 1, got 0"),
    ],
)
def test_cli_refuses_bad_options(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        audit.main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_cli_names_a_missing_set_file(tmp_path, capsys):
    sources = _fixture_sources(tmp_path)
    (sources / "dcpo" / "math500.parquet").unlink()
    with pytest.raises(SystemExit):
        audit.main(["--sources", str(sources), "--no-progress"])
    assert "no dcpo/math500.parquet (the math500 copy)" in capsys.readouterr().err


def test_dispatcher_usage(capsys):
    assert rewards_main([]) == 2 and "audit" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the scorer fixes it led to
# (each case was a false negative of maspo_verl.rewards.compute_score in the audit; see docs/evaluation.md)

FIXED = [
    # a matrix row break `\\ ` lost a backslash in normalisation, so a compact matrix did not match
    ("math500", "\\begin{pmatrix}-1/3\\\\2/3\\\\5/3\\end{pmatrix}", "\\begin{pmatrix} -1/3 \\\\ 2/3 \\\\ 5/3 \\end{pmatrix}", True),
    ("math500", "\\begin{bmatrix} -1/3 \\\\ 2/3 \\\\ 5/3 \\end{bmatrix}", "\\begin{pmatrix} -1/3 \\\\ 2/3 \\\\ 5/3 \\end{pmatrix}", True),
    ("math500", "\\begin{pmatrix} -2/3 \\\\ 2/3 \\\\ 5/3 \\end{pmatrix}", "\\begin{pmatrix} -1/3 \\\\ 2/3 \\\\ 5/3 \\end{pmatrix}", False),
    # a unit with a power (`\\mbox{ cm}^2`) was not recognised as a unit
    ("math500", "864", "864 \\mbox{ inches}^2", True),
    ("math500", "865", "864 \\mbox{ inches}^2", False),
    # an absolute tolerance of 1e-12 made Minerva's tiny golds equal to anything of their size, sign included
    ("minerva", "8.4e-12", "7.4e-12", False),
    ("minerva", "-2.88e-19", "2.88e-19", False),
    ("minerva", "2.88 \\times 10^{-19}", "2.88e-19", True),
    # the relative tolerance 1e-6 made large integers equal to their neighbours
    ("olympiadbench", "3986730", "3986729", False),
    ("olympiadbench", "3986729.0", "3986729", True),
    # two answers joined by "and"
    ("olympiadbench", "f(x)=x \\text{ and } f(x)=2-x", "f(x)=x,f(x)=2-x", True),
    ("olympiadbench", "f(n)=n \\text{ and } g(n)=1", "f(n)=n,g(n)=1", True),
    ("olympiadbench", "f(x)=x \\text{ and } f(x)=3-x", "f(x)=x,f(x)=2-x", False),
    # math-verify reads `\\frac{1}{3}E_{1}+\\frac{2}{3}E_{2}` as 2/3: such a parse decided nothing right
    ("minerva", "\\frac{2}{3} E_{1}+\\frac{2}{3} E_{2}", "\\frac{1}{3} E_{1}+\\frac{2}{3} E_{2}", False),
    ("minerva", "-(\\frac{1}{3} E_{1}+\\frac{2}{3} E_{2})", "\\frac{1}{3} E_{1}+\\frac{2}{3} E_{2}", False),
    ("minerva", "\\frac{1}{3}E_{1} + \\frac{2}{3}E_{2}", "\\frac{1}{3} E_{1}+\\frac{2}{3} E_{2}", True),
    ("olympiadbench", "k \\leq 2", "k \\geqslant 2", False),  # relations still go to math-verify
    # ... and a capital E that names something is read as Euler's number: it goes to math-verify as \\mathcal{E}
    ("minerva", "\\frac{2}{3}E_{2}+\\frac{1}{3}E_{1}", "\\frac{1}{3} E_{1}+\\frac{2}{3} E_{2}", True),
    ("minerva", "-\\frac{E_{0}^{2}e^{2}}{2m\\omega^{2}}+\\hbar\\omega(v+1/2)", "\\hbar \\omega(v+1 / 2)-\\frac{E_{0}^{2} e^{2}}{2 m \\omega^{2}}", True),
    ("minerva", "\\hbar\\omega(v+1/2)+\\frac{E_{0}^{2}e^{2}}{2m\\omega^{2}}", "\\hbar \\omega(v+1 / 2)-\\frac{E_{0}^{2} e^{2}}{2 m \\omega^{2}}", False),
    # units and degree words are stripped by normalisation, not left to math-verify's dropping of words:
    # "degrees" as a word, in a list; a unit after a braced fraction
    ("olympiadbench", "90\\text{ degrees}, 60\\text{ degrees}", "90^{\\circ},60^{\\circ}", True),
    ("olympiadbench", "90\\text{ degrees}, 61\\text{ degrees}", "90^{\\circ},60^{\\circ}", False),
    ("math500", "\\frac{270}{7}\\text{ degrees}", "\\frac{270}7\\text{ degrees}", True),
    ("math500", "\\frac{271}{7}\\text{ degrees}", "\\frac{270}7\\text{ degrees}", False),
    # (issue 22) percent written as a word: the normaliser dropped `\\%`, `%` and `\\text{ percent}`, not the word
    ("olympiadbench", "28 percent", "28\\%", True),
    ("olympiadbench", "28 percentage", "28\\%", True),
    ("olympiadbench", "62.5 Percent", "62.5%", True),
    ("olympiadbench", "29 percent", "28\\%", False),
    ("olympiadbench", "28 percent, 30 percent", "28\\%, 30\\%", True),
    # an equation with a one-letter left side lost that side (`y=2x+1` became `2x+1`): two equations are
    # equal when they define the same points, and a near miss (another line) stays wrong
    ("math500", "2x-y+1=0", "y=2x+1", True),
    ("math500", "y = -\\frac{1}{2}x + \\frac{3}{4}", "2x+4y-3=0", True),
    ("math500", "2x+4y-3=0", "y=-\\frac{1}{2}x+\\frac{3}{4}", True),
    ("math500", "y=2x-1", "y=2x+1", False),
    ("math500", "2x-y-1=0", "y=2x+1", False),
    ("math500", "x=2y+1", "y=2x+1", False),
    ("math500", "2x+1", "y=2x+1", True),  # the expression the equation names, as before
    ("olympiadbench", "k=n+1", "n+1", True),
    ("math500", "x=5", "5", True),
    # an interval against the same set written as an inequality, in both directions
    ("math500", "-2 \\le x \\le 7", "x \\in [-2,7]", True),
    ("math500", "-2 \\leq x \\leq 7", "[-2,7]", True),
    ("math500", "\\frac{3}{5} < x \\le \\frac{8}{3}", "\\left(\\frac{3}{5},\\frac{8}{3}\\right]", True),
    ("math500", "x < 2 \\text{ or } x > 3", "(-\\infty, 2) \\cup (3, \\infty)", True),
    ("math500", "7 \\ge x \\ge -2", "[-2,7]", True),
    ("math500", "x \\in [-2,7]", "-2 \\le x \\le 7", True),
    ("math500", "-2 < x \\le 7", "x \\in [-2,7]", False),
    ("math500", "x \\le 2 \\text{ or } x > 3", "(-\\infty, 2) \\cup (3, \\infty)", False),
    ("math500", "x > 2", "(-\\infty, 2)", False),
    ("math500", "a < b", "(-\\infty, 2)", False),
    # (issue 22, found by the rules above) math-verify cannot parse a subscript that is one command
    # (`m_{\\max}`, `L_{\\odot}`) and compared such equations as strings; it now gets `m_{max}`
    ("olympiadbench", "n^{2}-n-1 = m_{\\max}", "m_{\\max }=n^{2}-n-1", True),
    ("olympiadbench", "m_{\\min}=n^{2}-n-1", "m_{\\max }=n^{2}-n-1", False),
    # ... and read a Leibniz derivative of a plain symbol as 0, so an ODE and its sign flip compared equal
    ("minerva", "\\frac{dy}{dt}=ky", "\\frac{dy}{dt}=-ky", False),
    ("minerva", "\\frac{dy}{dt}+ky=0", "\\frac{dy}{dt}=-ky", True),
    ("minerva", "\\frac{dM}{dt}=-\\frac{10^{5}L_{\\odot}}{0.007c^{2}M_{\\odot}^{6}}M^{6}",
     "\\frac{dM}{dt}=\\frac{10^{5} L_{\\odot}}{0.007 c^{2} M_{\\odot}^{6}} M^{6}", False),
    ("minerva", "\\frac{10^{5}L_{\\odot}}{0.007c^{2}M_{\\odot}^{6}}M^{6}-\\frac{dM}{dt}=0",
     "\\frac{dM}{dt}=\\frac{10^{5} L_{\\odot}}{0.007 c^{2} M_{\\odot}^{6}} M^{6}", True),
]  # fmt: skip


@pytest.mark.parametrize("data_source, answer, gold, expected", FIXED)
def test_scorer_fixes_found_by_the_audit(data_source, answer, gold, expected):
    for response in (f"<think>x</think>\nSo the answer is $\\boxed{{{answer}}}$.", f"Work.\nAnswer: {answer}"):
        assert compute_score(data_source, response, gold)["acc"] is expected, response


# ----------------------------------------------------------------------------- the real golds (optional)


@pytest.mark.skipif(not REAL.is_dir(), reason="real eval-set copies (../shared/data/eval-sources) not present")
def test_every_real_gold_gets_consistent_pairs():
    golds = audit.load_golds(audit.BENCHMARKS, sources=REAL)
    assert {name: len(items) for name, items in golds.items()} == {
        "aime24": 30, "aime25": 30, "amc23": 40, "math500": 500, "minerva": 272, "olympiadbench": 675,
    }  # fmt: skip
    pairs = generate(gold for items in golds.values() for gold in items)  # raises LabelConflict on a bad rule
    for name in audit.BENCHMARKS:
        labels = {pair.label for pair in pairs if pair.benchmark == name}
        assert labels == {True, False}, name
