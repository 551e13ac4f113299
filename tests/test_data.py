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
        "struct<index: int64, problem: string, answer: string, source: string, template: string>"
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
    assert first["extra_info"]["template"] == "r1"  # the default template, recorded for the preflight
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
    assert prep.main(["prepare", "eval", "--source", str(source), "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        "maspo_verl.data: error: --source names one file, so give exactly one set (got ['aime24', 'aime25', "
        "'amc23', 'math500', 'minerva', 'olympiadbench'])\n"
    )
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


# ----------------------------------------------------------------------------- prompt templates

QWEN_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."  # Qwen2.5-Math README


def test_qwen_math_template_is_qwen25_maths_cot_messages(tmp_path):
    """System prompt + the bare problem: rendered by a Qwen chat template, Qwen2.5-Math's
    `qwen25-math-cot` prompt (evaluation/utils.py), written out here independently."""
    _, frame = _prepare("aime24", fx.qwen_aime24(tmp_path), tmp_path, template="qwen_math")
    first = frame.iloc[0]
    assert [dict(m) for m in first["prompt"]] == [
        {"role": "system", "content": QWEN_SYSTEM},
        {"role": "user", "content": "Find the number of minutes the walk takes."},
    ]
    assert set(row["template"] for row in frame["extra_info"]) == {"qwen_math"}
    from transformers import PreTrainedTokenizerFast

    chatml = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    from tiny_qwen import build_tokenizer

    tokenizer: PreTrainedTokenizerFast = build_tokenizer()
    tokenizer.chat_template = chatml
    text = tokenizer.apply_chat_template([dict(m) for m in first["prompt"]], tokenize=False, add_generation_prompt=True)
    problem = "Find the number of minutes the walk takes."
    assert text == (
        f"<|im_start|>system\n{QWEN_SYSTEM}<|im_end|>\n<|im_start|>user\n{problem}<|im_end|>\n<|im_start|>assistant\n"
    )
    # re-preparing a prepared file keeps the bare problem (the system message is not part of it)
    _, again = _prepare(
        "aime24", Path(_prepare("aime24", fx.qwen_aime24(tmp_path), tmp_path)[0]["path"]), tmp_path / "b"
    )
    assert again.iloc[0]["extra_info"]["problem"] == problem


@pytest.mark.parametrize("template", sorted(prep.TEMPLATES))
def test_the_project_reward_and_the_evaluator_read_every_template(template):
    from maspo_verl.data.templates import TEMPLATES, reward_reads
    from maspo_verl.eval.scoring import Scorer
    from maspo_verl.rewards import compute_score

    assert reward_reads(template, compute_score, "aime24", "25") is None
    scorer = Scorer()
    scorer.resolve(["aime24"])
    response = TEMPLATES[template].example_response("25")
    assert scorer("aime24", response, "25", {}).correct and not scorer("aime24", response, "26", {}).correct


BOXED_ONLY = """
import re
def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    found = re.findall(r"\\\\boxed\\{([^}]*)\\}", solution_str)
    return 1.0 if found and found[-1] == ground_truth else 0.0
"""
ANSWER_LINE_ONLY = """
import re
def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    found = re.findall(r"Answer: *(.+)", solution_str)
    return {"score": 1.0 if found and found[-1].strip() == ground_truth else -1.0}
"""


@pytest.fixture(scope="module")
def template_config(tmp_path_factory):
    """The paper recipe on a DAPO-template training set and an r1-template validation set."""
    from hydra import compose, initialize_config_module

    root = tmp_path_factory.mktemp("templates")
    prep.prepare("dapo_math_17k", root, source=fx.dapo_math_17k(root), template="dapo", progress=False)
    prep.prepare("aime24", root, source=fx.qwen_aime24(root), template="r1", progress=False)
    for name, text in (("boxed_only", BOXED_ONLY), ("answer_line_only", ANSWER_LINE_ONLY)):
        (root / f"{name}.py").write_text(text)
    overrides = ["recipe=paper_7b", "algorithm=grpo", f"data.train_files={root / 'dapo_math_17k.parquet'}",
                 f"data.val_files=[{root / 'aime24.parquet'}]"]  # fmt: skip
    with initialize_config_module(config_module="maspo_verl_configs", version_base=None):
        config = compose("maspo_trainer", overrides=overrides)
    return config, root


def _with_reward(config, path):
    from omegaconf import OmegaConf, open_dict

    config = OmegaConf.create(OmegaConf.to_container(config))
    with open_dict(config):
        config.reward.custom_reward_function.path = str(path) if path else None
    return config


def test_the_recipes_reward_reads_both_templates(template_config):
    from maspo_verl.preflight import check_data_templates

    config, root = template_config
    assert config.reward.custom_reward_function.path == "pkg://maspo_verl.rewards.math_score"
    assert check_data_templates(config) == {
        str(root / "dapo_math_17k.parquet"): ["dapo"],
        str(root / "aime24.parquet"): ["r1"],
    }


def test_a_dapo_template_set_scored_by_a_boxed_only_reward_is_refused_before_ray(template_config):
    from maspo_verl.preflight import preflight

    config, root = template_config
    config = _with_reward(config, root / "boxed_only.py")
    with pytest.raises(ValueError) as error:
        preflight(config)  # the trainer's own entry: refused before Ray starts
    message = str(error.value)
    assert message.startswith(f"data.train_files: {root / 'dapo_math_17k.parquet'} was prepared with the prompt "
                              "template 'dapo', which asks for a last line 'Answer: ...'")  # fmt: skip
    assert f"reward.custom_reward_function.path={root / 'boxed_only.py'}" in message
    assert "Templates this reward reads: ['r1', 'qwen_math']" in message and "--template NAME" in message


def test_an_r1_template_set_scored_by_an_answer_line_reward_is_refused(template_config):
    from maspo_verl.preflight import check_data_templates

    config, root = template_config
    config = _with_reward(config, root / "answer_line_only.py")
    with pytest.raises(ValueError) as error:
        check_data_templates(config)
    message = str(error.value)
    assert f"data.val_files: {root / 'aime24.parquet'} was prepared with the prompt template 'r1'" in message
    assert "asks for the final answer in \\boxed{}" in message and "Templates this reward reads: ['dapo']" in message


def test_verls_default_reward_is_probed_too(template_config, tmp_path):
    """Without a custom reward verl scores by data_source; it has no scorer for `amc23`."""
    from maspo_verl.preflight import check_data_templates

    config, root = template_config
    config = _with_reward(config, None)
    assert check_data_templates(config)  # math_dapo and aime*: verl's math_dapo reads both formats
    prep.prepare("amc23", tmp_path, source=fx.qwen_amc23(tmp_path), progress=False)
    config.data.val_files = [str(tmp_path / "amc23.parquet")]
    with pytest.raises(ValueError, match=r"verl's default_compute_score .* raised NotImplementedError"):
        check_data_templates(config)


def test_files_without_a_recorded_template_are_not_probed(template_config, tmp_path):
    from maspo_verl.preflight import check_data_templates

    config, root = template_config
    old = tmp_path / "old.parquet"
    frame = pd.read_parquet(root / "aime24.parquet")
    frame["extra_info"] = [{k: v for k, v in e.items() if k != "template"} for e in frame["extra_info"]]
    frame.to_parquet(old)
    config = _with_reward(config, root / "answer_line_only.py")
    config.data.train_files, config.data.val_files = str(old), [str(old)]
    assert check_data_templates(config) == {str(old): []}


def test_one_odd_ground_truth_does_not_refuse_a_run():
    """The check asks whether the reward reads the format, so one readable row of a set suffices."""
    from maspo_verl.data.templates import reads_any

    def integers_only(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
        return float(ground_truth.isdigit() and solution_str.endswith(f"\\boxed{{{ground_truth}}}."))

    assert reads_any("r1", integers_only, "aime24", [("x^2", {}), ("25", {})]) is None
    assert reads_any("r1", integers_only, "aime24", [("x^2", {}), ("y", {})]).startswith("scored ")
    assert reads_any("dapo", integers_only, "aime24", [("25", {})]) is not None
