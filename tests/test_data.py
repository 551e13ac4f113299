"""Data preparation (maspo_verl.data): every source layout, the answer quirks, dedup, errors."""

import json
import re
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from fixtures import math_sources as fx

from maspo_verl.data import math_sets as prep

R1_SUFFIX = "Please reason step by step, and put your final answer within \\boxed{}."
REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "eval-sources"


def _prepare(name, source, tmp_path, **kwargs):
    counts = prep.prepare(name, tmp_path / "out", source=source, progress=False, **kwargs)
    return counts, pd.read_parquet(counts["path"])


def _golds(frame):
    return [row["ground_truth"] for row in frame["reward_model"]]


def test_output_schema_is_what_verl_reads(tmp_path):
    counts, _ = _prepare("aime24", fx.hf_aime24(tmp_path), tmp_path)
    schema = pq.read_schema(counts["path"])
    assert schema.names == ["data_source", "prompt", "ability", "reward_model", "extra_info"]
    assert str(schema.field("prompt").type) == "list<element: struct<role: string, content: string>>"
    assert str(schema.field("reward_model").type) == "struct<style: string, ground_truth: string>"
    assert str(schema.field("extra_info").type) == (
        "struct<index: int64, problem: string, answer: string, source: string>"
    )


def test_aime24_both_layouts_and_zero_padded_answers(tmp_path):
    _, qwen = _prepare("aime24", fx.qwen_aime24(tmp_path), tmp_path)
    assert _golds(qwen) == ["204", "25", "73"]  # "025" and "073" lose their padding
    assert set(qwen["data_source"]) == {"aime24"}
    first = qwen.iloc[0]
    assert list(first["prompt"]) == [
        {"role": "user", "content": "Find the number of minutes the walk takes.\n" + R1_SUFFIX}
    ]
    assert first["extra_info"]["problem"] == "Find the number of minutes the walk takes."
    assert first["extra_info"]["answer"] == "204" and first["extra_info"]["index"] == 0
    _, hub = _prepare("aime24", fx.hf_aime24(tmp_path), tmp_path)
    assert _golds(hub) == ["204", "113"]


def test_aime25_degree_quirk(tmp_path):
    _, frame = _prepare("aime25", fx.opencompass_aime25(tmp_path), tmp_path)
    assert _golds(frame) == ["70", "336", "117"]
    assert frame.iloc[1]["extra_info"]["answer"] == "336^\\circ"  # the source's text is kept


def test_amc23_float_answers(tmp_path):
    _, frame = _prepare("amc23", fx.qwen_amc23(tmp_path), tmp_path)
    assert _golds(frame) == ["27", "36", "-1"]
    assert set(frame["data_source"]) == {"amc23"}


def test_amc83_from_a_flowrl_json_list(tmp_path):
    counts, frame = _prepare("amc83", fx.flowrl_amc(tmp_path), tmp_path)
    assert counts["rows_out"] == 5 and _golds(frame) == ["0", "1", "2", "3", "4"]
    assert set(frame["data_source"]) == {"amc83"}  # distinct from amc23's metrics
    assert "usually has 83" in prep.report(counts)  # a 5-problem file is flagged


def test_math500_keeps_latex_answers(tmp_path):
    _, frame = _prepare("math500", fx.hf_math500(tmp_path), tmp_path)
    assert _golds(frame) == ["\\left( 3, \\frac{\\pi}{2} \\right)", "-2,1", "\\frac{5}{6}"]


def test_minerva_gold_is_the_last_box_of_the_solution(tmp_path):
    _, frame = _prepare("minerva", fx.qwen_minerva(tmp_path), tmp_path)
    assert _golds(frame) == ["1.6", "4.5e33", "\\frac{\\hbar^{2}}{2 m a^{2}}"]
    _, hub = _prepare("minerva", fx.hf_minerva(tmp_path), tmp_path)
    assert _golds(hub) == ["1.6"]


def test_olympiadbench_lists_dollars_and_context(tmp_path):
    _, frame = _prepare("olympiadbench", fx.qwen_olympiadbench(tmp_path), tmp_path)
    assert _golds(frame) == [
        "2",
        "69,84",
        "(1,8,19), (2,7,13), (4,5,7)",
        "(-\\infty, 0) \\cup\\{1\\}",
        "45",
        "\\frac{41}{12}",
    ]
    assert frame.iloc[5]["extra_info"]["problem"] == "A sequence is defined by $a_1=1$.\n\nCompute $a_5$."


def test_dapo_math_17k_is_deduplicated_and_retemplated(tmp_path):
    counts, frame = _prepare("dapo_math_17k", fx.dapo_math_17k(tmp_path, unique=50, copies=3), tmp_path)
    assert (counts["rows_in"], counts["rows_out"], counts["duplicates"]) == (150, 50, 100)
    assert "150 rows in, 50 rows out" in prep.report(counts)
    assert set(frame["data_source"]) == {"math_dapo"}
    first = frame.iloc[0]
    assert first["extra_info"]["problem"] == "Let $n = 0$. What is $n + 7$?"  # the DAPO template stripped
    assert first["prompt"][0]["content"].endswith(R1_SUFFIX)
    _, dapo = _prepare("dapo_math_17k", fx.dapo_math_17k(tmp_path, unique=5, copies=2), tmp_path, template="dapo")
    assert dapo.iloc[0]["prompt"][0]["content"] == fx.DAPO_PREFIX + "Let $n = 0$. What is $n + 7$?" + fx.DAPO_SUFFIX


def test_dcpo_style_verl_parquet_repeated_rows(tmp_path):
    source = fx.dcpo_parquet(tmp_path, "aime_2025", [("Find $a$.", "70"), ("Find $b$.", "336")], copies=32)
    counts, frame = _prepare("aime25", source, tmp_path)
    assert (counts["rows_in"], counts["rows_out"]) == (64, 2)
    assert _golds(frame) == ["70", "336"]
    assert [m["role"] for m in frame.iloc[0]["prompt"]] == ["user"]  # the source's system prompt is not kept


def test_unknown_layout_names_file_and_columns(tmp_path):
    path = tmp_path / "odd.jsonl"
    path.write_text(json.dumps({"text": "x", "label": 1}) + "\n")
    with pytest.raises(prep.LayoutError) as error:
        prep.prepare("minerva", tmp_path / "out", source=path, progress=False)
    message = str(error.value)
    assert (
        str(path) in message and "['label', 'text']" in message and "'question'" in message and "'solution'" in message
    )


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.jsonl"):
        prep.prepare("aime24", tmp_path, source=tmp_path / "nowhere.jsonl", progress=False)
    with pytest.raises(ValueError, match="unknown set 'aime23'"):
        prep.prepare("aime23", tmp_path, progress=False)
    (tmp_path / "a.csv").write_text("problem,answer\n")
    with pytest.raises(ValueError, match="allowed: .parquet, .jsonl, .json"):
        prep.prepare("aime24", tmp_path, source=tmp_path / "a.csv", progress=False)
    with pytest.raises(ValueError, match="no hub copy"):
        prep.prepare("amc83", tmp_path, progress=False)


def test_command_line(tmp_path, capsys):
    source = fx.qwen_amc23(tmp_path)
    assert prep.main(["prepare", "amc23", "--source", str(source), "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    assert "amc23: 3 rows in, 3 rows out" in capsys.readouterr().out
    assert (tmp_path / "o" / "amc23.parquet").is_file()
    with pytest.raises(SystemExit, match="exactly one set"):
        prep.main(["prepare", "eval", "--source", str(source), "--out", str(tmp_path)])
    assert prep.main(["list"]) == 0
    assert "olympiadbench" in capsys.readouterr().out


# ----------------------------------------------------------------------------- real copies (optional)

REAL_CASES = [
    ("aime24", "qwen25-math/aime24.jsonl", 30, 30),
    ("amc23", "qwen25-math/amc23.jsonl", 40, 40),
    ("minerva", "qwen25-math/minerva_math.jsonl", 272, 272),
    ("olympiadbench", "qwen25-math/olympiadbench.jsonl", 675, 675),
    ("aime24", "dcpo/aime_2024.parquet", 960, 30),
    ("aime25", "dcpo/aime_2025.parquet", 960, 30),
    ("amc23", "dcpo/amc2023.parquet", 1280, 40),
    ("math500", "dcpo/math500.parquet", 500, 500),
    ("aime24", "dapo/aime-2024.parquet", 960, 30),
]


@pytest.mark.skipif(not REAL.is_dir(), reason="real eval-set copies (../shared/data/eval-sources) not present")
@pytest.mark.parametrize("name,relative,rows_in,rows_out", REAL_CASES, ids=[case[1] for case in REAL_CASES])
def test_real_sources(name, relative, rows_in, rows_out, tmp_path):
    counts, frame = _prepare(name, REAL / relative, tmp_path)
    assert (counts["rows_in"], counts["rows_out"]) == (rows_in, rows_out)
    golds = _golds(frame)
    assert all(golds) and not any(re.search(r"(?<!\\)\$", gold) for gold in golds)
    if name in ("aime24", "aime25", "amc23"):
        assert all(gold.lstrip("-").isdigit() and not gold.startswith("0") for gold in golds), golds
