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
                "actor_maspo_gate_mean.png", "actor_maspo_gated_frac_pos.png", "overview.png"}  # fmt: skip
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
