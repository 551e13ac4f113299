"""The report: paper-style table from eval summaries, training curves from verl's logs
(file-logger JSONL and TensorBoard), for fixtures of two methods x two seeds."""

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

from maspo_verl.report.__main__ import main as report_main
from maspo_verl.report.logs import read_run
from maspo_verl.report.paper import BENCHMARKS, PAPER, benchmark_column, infer_model_size, paper_method

FIXTURES = Path(__file__).parent / "fixtures" / "report"
LOGS = {(m, s): FIXTURES / "logs" / f"{m}_seed{s}.jsonl" for m in ("grpo", "maspo") for s in (0, 1)}
PAPER_DOC = Path(__file__).resolve().parents[2] / "shared" / "docs" / "paper-tables.md"


def test_paper_numbers_match_the_shared_doc():
    if not PAPER_DOC.is_file():
        pytest.skip(f"{PAPER_DOC} not present")
    sections = re.split(r"^## ", PAPER_DOC.read_text(), flags=re.M)
    for size in ("1.5B", "7B"):
        (section,) = [s for s in sections if s.startswith(size)]
        for line in section.splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) == 8 and "/" in cells[1]:
                expected = [tuple(map(float, c.split("/"))) for c in cells[1:]]
                assert [PAPER[size][cells[0]][c] for c in (*BENCHMARKS, "Avg")] == expected, (size, cells[0])
    assert PAPER["14B"]["MASPO"]["Avg"] == (56.4, 71.1) and PAPER["14B"]["GRPO"]["Avg"] == (53.6, 67.4)


def test_benchmark_names_methods_and_sizes():
    assert [benchmark_column(n) for n in ("aime24", "AIME-2025", "math-ai/amc23", "HuggingFaceH4/MATH-500",
                                          "minerva_math", "OlympiadBench", "maspo_kit/arith")] == [
        "AIME24", "AIME25", "AMC23", "MATH500", "Minerva", "Olympiad", None]  # fmt: skip
    assert benchmark_column("math-ai/minervamath") == "Minerva"
    assert [paper_method(x) for x in ("maspo-seed1", "GRPO", "clip_higher_7b", "mine")] == [
        "MASPO",
        "GRPO",
        "Clip Higher",
        None,
    ]
    assert infer_model_size("/ckpt/DeepSeek-R1-Distill-Qwen-1.5B/step100") == "1.5B"
    assert infer_model_size("Qwen-7B") == "7B" and infer_model_size("kit") is None


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    argv = ["--out", str(out), "--eval", f"grpo={FIXTURES / 'evals' / 'grpo'}",
            "--eval", f"maspo={FIXTURES / 'evals' / 'maspo'}", "--smooth", "3", "--title", "fixture runs"]  # fmt: skip
    for (method, _), path in LOGS.items():
        argv += ["--run", f"{method}={path}"]
    assert report_main(argv) == 0
    return out


def test_table_has_our_rows_the_papers_rows_and_the_differences(report):
    text = (report / "table.md").read_text()
    header = text.splitlines()[0]
    assert header == "| run | AIME24 | AIME25 | AMC23 | MATH500 | Minerva | Olympiad | Avg |"
    summary = json.loads((FIXTURES / "evals" / "maspo" / "summary.json").read_text())
    aime = summary["benchmarks"]["aime24"]
    ours = next(line for line in text.splitlines() if line.startswith("| maspo (ours, @8)"))
    assert f"{100 * aime['avg_at_k']:.1f}/{100 * aime['pass_at_k']['8']:.1f}" == ours.split("|")[2].strip()
    # the model path names the 7B model: the paper's 7B rows, labelled as the paper's
    assert (
        "| MASPO (paper, 7B, @32) | 53.2/82.4 | 42.9/73.2 | 91.4/95.0 | 86.0/94.7 | 39.3/58.6 | 58.0/74.9 | 61.8/79.8 |"
        in text
    )
    diff = next(line for line in text.splitlines() if line.startswith("| maspo minus paper MASPO"))
    assert (
        diff.split("|")[2].strip() == f"{100 * aime['avg_at_k'] - 53.2:+.1f}/{100 * aime['pass_at_k']['8'] - 82.4:+.1f}"
    )
    assert "not comparable" in text  # k=8 here, the paper's 32
    assert "95% confidence intervals" in text and "| grpo (ours, @8)" in text
    table = json.loads((report / "table.json").read_text())
    assert table["model_size"] == "7B" and [r["compared_to"] for r in table["rows"]] == ["GRPO", "MASPO"]
    rows = list(csv.DictReader(open(report / "table.csv")))
    assert {r["kind"] for r in rows} == {"ours", "paper"} and len([r for r in rows if r["kind"] == "paper"]) == 7 * 7


def test_curves_are_drawn_per_metric_with_seeds_as_mean_and_spread(report):
    pngs = {p.name for p in (report / "curves").glob("*.png")}
    expected = {"critic_score_mean.png", "val_core_aime24_acc_mean_4.png", "val_core_math500_acc_mean_4.png",
                "actor_entropy.png", "response_length_mean.png", "actor_pg_clipfrac.png",
                "actor_maspo_gate_mean.png", "actor_maspo_gated_frac_pos.png", "overview.png",
                "training_rollout_probs_diff_mean.png", "training_rollout_probs_diff_max.png",
                "training_rollout_actor_probs_pearson_corr.png"}  # fmt: skip
    assert expected <= pngs
    from PIL import Image

    for name in pngs:
        with Image.open(report / "curves" / name) as image:
            assert image.size[0] >= 600 and image.size[1] >= 400
            assert len(set(image.convert("L").getdata())) > 20  # something was drawn
    agg = json.loads((report / "curves.json").read_text())["curves"]
    assert set(agg) == {"grpo", "maspo"} and "actor/maspo/gate_mean" not in agg["grpo"]
    val = agg["maspo"]["val-core/aime24/acc/mean@4"]
    seeds = [read_run(LOGS[("maspo", s)])["val-core/aime24/acc/mean@4"] for s in (0, 1)]
    at = val["step"].index(10)
    assert val["mean"][at] == pytest.approx(np.mean([s[10] for s in seeds]))
    assert (val["min"][at], val["max"][at]) == (min(s[10] for s in seeds), max(s[10] for s in seeds))
    long_rows = list(csv.DictReader(open(report / "curves_long.csv")))
    assert {(r["label"], r["seed"]) for r in long_rows} == {
        ("grpo", "0"),
        ("grpo", "1"),
        ("maspo", "0"),
        ("maspo", "1"),
    }
    assert "![overview](curves/overview.png)" in (report / "report.md").read_text()


def test_tensorboard_logs_give_the_same_curves(tmp_path):
    """verl's tensorboard logger writes one scalar per metric and step; read back, they equal the JSONL."""
    from torch.utils.tensorboard import SummaryWriter

    argv = ["--out", str(tmp_path / "tb_report")]
    for (method, seed), path in LOGS.items():
        tb_dir = tmp_path / "tensorboard_log" / "proj" / f"{method}_seed{seed}"
        writer = SummaryWriter(str(tb_dir))
        for line in path.read_text().splitlines():
            record = json.loads(line)
            for key, value in record["data"].items():
                writer.add_scalar(key, value, record["step"])
        writer.close()
        from_tb, from_jsonl = read_run(tb_dir), read_run(path)
        assert from_tb.keys() == from_jsonl.keys()
        for key in from_jsonl:
            assert from_tb[key] == pytest.approx(from_jsonl[key], rel=1e-6)
        argv += ["--run", f"{method}={tb_dir}"]
    assert report_main(argv) == 0
    assert (tmp_path / "tb_report" / "curves" / "overview.png").is_file()


def test_bad_report_input_is_one_clear_message(tmp_path, capsys):
    assert report_main(["--out", str(tmp_path), "--run", str(tmp_path / "missing.jsonl")]) == 2
    assert "training log not found" in capsys.readouterr().err
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "summary.json").write_text(json.dumps({"complete": False}))
    assert report_main(["--out", str(tmp_path), "--eval", str(unfinished)]) == 2
    assert "unfinished evaluation" in capsys.readouterr().err
    assert report_main(["--out", str(tmp_path)]) == 2
    assert "nothing to report" in capsys.readouterr().err


# ---------------------------------------------------------------- fingerprints in the table

V0 = Path(__file__).parent / "fixtures" / "eval" / "v0_record"  # the evaluator's format before the fingerprint grew
TODAY = {"backend": "vllm", "engine_version": "vllm 0.24.0", "dtype": "bfloat16", "tensor_parallel_size": 2,
         "chat_template_sha256": "5f0e3c2a9b1d7e44", "prompt_template": "r1"}  # fmt: skip


def _summary(directory: Path, data_source: str, file_hash: str = "a" * 64, **changes) -> Path:
    """A summary in today's format: the v0 record's numbers as ``data_source``, with every fingerprint field."""
    summary = json.loads((V0 / "summary.json").read_text())
    summary["benchmarks"] = {data_source: {**summary["benchmarks"]["aime24"], "data_source": data_source}}
    summary["generation"] = {**summary["generation"], **TODAY, "data_sha256": {data_source: file_hash}, **changes}
    directory.mkdir(parents=True)
    (directory / "summary.json").write_text(json.dumps(summary))
    return directory


def test_an_old_record_is_read_with_its_missing_fields_unknown(tmp_path):
    assert report_main(["--out", str(tmp_path / "r"), "--eval", f"v0={V0}"]) == 0
    (row,) = json.loads((tmp_path / "r" / "table.json").read_text())["rows"]
    for field in ("engine_version", "tensor_parallel_size", "chat_template_sha256", "prompt_template"):
        assert row["settings"][field] == "unknown", field
    assert row["settings"]["temperature"] == 0.6 and row["cells"]["AIME24"]["data_sha256"] == "unknown"
    text = (tmp_path / "r" / "table.md").read_text()
    assert "engine_version unknown" in text and "temperature 0.6" in text


def test_one_row_refuses_records_with_different_fingerprints_unless_asked(tmp_path, capsys):
    today = _summary(tmp_path / "today_math500", "math500")
    argv = ["--eval", f"mixed={V0}", "--eval", f"mixed={today}"]
    assert report_main(["--out", str(tmp_path / "r"), *argv]) == 2
    err = capsys.readouterr().err
    assert "refusing to put evaluations with different settings in row 'mixed'" in err and "--allow-mixed" in err
    assert f"engine_version: {V0} 'unknown', {today} 'vllm 0.24.0'" in err
    assert f"backend: {V0} 'hf', {today} 'vllm'" in err and "temperature" not in err  # only what differs
    assert "data_sha256" not in err  # a benchmark's file hash belongs to its column, not to the row

    assert report_main(["--out", str(tmp_path / "r"), "--allow-mixed", *argv]) == 0
    captured = capsys.readouterr()
    assert "warning: row 'mixed' mixes settings: " in captured.err and "dtype: " in captured.err
    text = (tmp_path / "r" / "table.md").read_text()
    (row,) = [line for line in text.splitlines() if line.startswith("| mixed (ours")]
    assert row.split("|")[2].strip() != "-" and row.split("|")[5].strip() != "-"  # AIME24 and MATH500, one row
    assert "row mixed mixes evaluations with different settings: " in text and "engine_version: " in text


def test_benchmarks_evaluated_separately_share_a_row_when_their_settings_agree(tmp_path, capsys):
    aime, math = _summary(tmp_path / "aime", "aime24", "b" * 64), _summary(tmp_path / "math", "math500", "c" * 64)
    assert report_main(["--out", str(tmp_path / "r"), "--eval", f"run={aime}", "--eval", f"run={math}"]) == 0
    (row,) = json.loads((tmp_path / "r" / "table.json").read_text())["rows"]
    assert row["cells"]["Avg"]["of"] == 2 and not row["mixed"] and len(row["fingerprints"]) == 2
    assert (row["cells"]["AIME24"]["data_sha256"], row["cells"]["MATH500"]["data_sha256"]) == ("b" * 64, "c" * 64)
    capsys.readouterr()
    # the same benchmark twice in a row is refused, whatever the settings
    again = _summary(tmp_path / "again", "aime24")
    assert report_main(["--out", str(tmp_path / "r"), "--allow-mixed", "--eval", f"run={aime}",
                        "--eval", f"run={again}"]) == 2  # fmt: skip
    assert "benchmark 'aime24' is in two evaluations" in capsys.readouterr().err


def test_rows_that_differ_in_settings_or_benchmark_files_say_so(tmp_path):
    a = _summary(tmp_path / "a", "aime24", "1" * 64)
    b = _summary(tmp_path / "b", "aime24", "2" * 64, temperature=1.0)
    assert report_main(["--out", str(tmp_path / "r"), "--eval", f"a={a}", "--eval", f"b={b}"]) == 0
    text = (tmp_path / "r" / "table.md").read_text()
    assert "- temperature differs: a 0.6, b 1.0" in text
    assert f"- aime24 file differs between rows (sha256): a {'1' * 12}, b {'2' * 12}" in text


# ---------------------------------------------------------------- training-inference mismatch


def test_the_mismatch_panels_draw_the_metrics_verl_logs():
    """The report's metric names are the ones verl's calculate_debug_metrics returns."""
    import torch
    from verl.protocol import DataProto
    from verl.utils.debug.metrics import calculate_debug_metrics

    from maspo_verl.report.curves import MISMATCH

    log_probs = torch.log(torch.tensor([[0.5, 0.25, 0.9], [0.1, 0.6, 0.3]]))
    batch = DataProto.from_dict({"rollout_log_probs": log_probs, "old_log_probs": log_probs + 0.01,
                                 "response_mask": torch.ones(2, 3), "responses": torch.zeros(2, 3)})  # fmt: skip
    logged = calculate_debug_metrics(batch)
    assert {metric for metric, _, _ in MISMATCH} <= set(logged)
    diff = (torch.exp(log_probs + 0.01) - torch.exp(log_probs)).abs()
    assert logged["training/rollout_probs_diff_mean"] == pytest.approx(diff.mean().item())  # |p - p'|, probabilities


def test_the_paper_recipes_log_the_mismatch_and_only_log_it():
    from hydra import compose, initialize_config_module

    for recipe in ("paper_1p5b", "paper_7b", "paper_14b"):
        with initialize_config_module(config_module="maspo_verl_configs", version_base=None):
            config = compose("maspo_trainer", overrides=[f"recipe={recipe}", "algorithm=maspo"])
        assert config.actor_rollout_ref.rollout.calculate_log_probs is True, recipe
        correction = config.algorithm.rollout_correction  # what would turn the log-probs into a loss change
        assert correction.rollout_is is None and correction.rollout_rs is None and not correction.bypass_mode
        assert not config.actor_rollout_ref.actor.get("use_rollout_log_probs", False)
