"""The evaluator's estimators, inputs, scorer choice and sample store (CPU, no Ray, no model).
End-to-end runs through verl's rollout replicas are in test_eval_e2e.py."""

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from maspo_verl.eval import estimators
from maspo_verl.eval.__main__ import main as eval_main
from maspo_verl.eval.data import EvalInputError, Problem, load_problems
from maspo_verl.eval.model import check_model
from maspo_verl.eval.scoring import KIT_SCORERS, MATH_SCORER, Scorer
from maspo_verl.eval.store import SampleStore

FIXTURES = Path(__file__).parent / "fixtures" / "eval"

# ---------------------------------------------------------------- Pass@k / Avg@k


@pytest.mark.parametrize(
    "n, c, k, expected",
    [
        (5, 2, 1, 0.4),  # = c / n
        (5, 2, 2, 1 - 3 / 10),  # 1 - C(3,2)/C(5,2)
        (5, 2, 3, 1 - 1 / 10),  # 1 - C(3,3)/C(5,3)
        (5, 2, 4, 1.0),  # n - c < k: some correct sample is always drawn
        (4, 0, 2, 0.0),
        (4, 4, 1, 1.0),
        (32, 1, 32, 1.0),
        (32, 1, 1, 1 / 32),
        (10, 3, 5, 1 - 21 / 252),  # 1 - C(7,5)/C(10,5)
    ],
)
def test_pass_at_k_hand_computed(n, c, k, expected):
    assert estimators.pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)
    assert estimators.pass_at_k_exact(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_equals_brute_force_over_subsets():
    """Probability that a uniformly drawn k-subset of the n samples holds a correct one."""
    for n in range(1, 8):
        for c in range(n + 1):
            outcomes = [1] * c + [0] * (n - c)
            for k in range(1, n + 1):
                subsets = list(itertools.combinations(range(n), k))
                brute = sum(any(outcomes[i] for i in s) for s in subsets) / len(subsets)
                assert estimators.pass_at_k(n, c, k) == pytest.approx(brute, abs=1e-12), (n, c, k)


def test_pass_at_k_is_stable_for_large_n():
    assert estimators.pass_at_k(1024, 3, 512) == pytest.approx(estimators.pass_at_k_exact(1024, 3, 512), rel=1e-9)


def test_pass_at_k_rejects_impossible_arguments():
    for n, c, k in [(4, 5, 1), (4, 2, 0), (4, 2, 5)]:
        with pytest.raises(ValueError):
            estimators.pass_at_k(n, c, k)


def test_k_ladder():
    assert estimators.k_ladder(32) == [1, 2, 4, 8, 16, 32]
    assert estimators.k_ladder(5) == [1, 2, 4, 5]
    assert estimators.k_ladder(1) == [1]


def test_avg_at_k_matches_verls_mean_at_n_on_the_same_samples():
    """Avg@k is verl's validation `mean@N` of `acc` (process_validation_metrics), per data_source."""
    from verl.trainer.ppo.metric_utils import process_validation_metrics

    rng = np.random.default_rng(0)
    k = 8
    data_sources, uids, acc, per_source = [], [], [], {}
    for source, problems in (("aime24", 7), ("math500", 11)):
        rows = []
        for p in range(problems):
            outcome = (rng.random(k) < rng.random()).astype(float).tolist()
            rows.append(outcome)
            for value in outcome:
                data_sources.append(source)
                uids.append(f"{source}-{p}")
                acc.append(value)
        per_source[source] = rows
    verl = process_validation_metrics(data_sources, uids, {"acc": acc})
    for source, rows in per_source.items():
        ours = estimators.summarize_correctness([[bool(x) for x in r] for r in rows], rows, k=k, n_boot=200)
        assert ours["avg_at_k"] == pytest.approx(verl[source]["acc"][f"mean@{k}"], abs=1e-12)
        assert ours["avg_at_k"] == pytest.approx(estimators.avg_at_k(rows))
        assert ours["pass_at_k"]["1"] == pytest.approx(ours["avg_at_k"])  # Pass@1 is Avg@n
        ladder = [ours["pass_at_k"][str(j)] for j in estimators.k_ladder(k)]
        assert ladder == sorted(ladder)  # more tries never hurt


def test_summary_uses_only_the_first_k_samples():
    correct = [[True, False, True, True], [False, False, False, True]]
    s = estimators.summarize_correctness(correct, k=2, n_boot=100)
    assert s["avg_at_k"] == pytest.approx((0.5 + 0.0) / 2)
    assert s["pass_at_k"] == {"1": pytest.approx(0.25), "2": pytest.approx(0.5)}
    with pytest.raises(ValueError, match="at least k=5"):
        estimators.summarize_correctness(correct, k=5)


def test_bootstrap_ci_brackets_the_mean_and_narrows_with_more_problems():
    rng = np.random.default_rng(1)
    small, large = rng.random(20), rng.random(2000)
    for values in (small, large):
        low, high = estimators.bootstrap_ci(values, n_boot=2000)
        assert low < values.mean() < high
        n_low, n_high = estimators.normal_ci(values)
        assert abs((high - low) - (n_high - n_low)) < 0.3 * (n_high - n_low)  # both ~ 2 * 1.96 * SE
    assert np.diff(estimators.bootstrap_ci(large, n_boot=2000)) < np.diff(estimators.bootstrap_ci(small, n_boot=2000))
    assert estimators.bootstrap_ci(small, seed=3) == estimators.bootstrap_ci(small, seed=3)  # reproducible


# ---------------------------------------------------------------- bad input: one message, no model loaded


@pytest.fixture
def no_model_loading(monkeypatch):
    """Fail the test if the evaluator gets as far as merging, loading or starting a model."""

    def refuse(*args, **kwargs):
        raise AssertionError("the evaluator went past input validation")

    monkeypatch.setattr("maspo_verl.eval.model.resolve_model", refuse)
    monkeypatch.setattr("maspo_verl.eval.generate.ReplicaPool.start", refuse)


def _kit_parquet(tmp_path: Path, rows: int = 3) -> Path:
    path = tmp_path / "kit.parquet"
    pd.DataFrame(
        [
            {
                "data_source": "maspo_kit/arith",
                "prompt": [{"role": "user", "content": f"1{i}+10="}],
                "reward_model": {"style": "rule", "ground_truth": str(20 + i)},
                "extra_info": {"index": i},
            }
            for i in range(rows)
        ]
    ).to_parquet(path)
    return path


def _run_expecting_error(capsys, *argv) -> str:
    assert eval_main(list(argv)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("maspo_verl.eval: error: "), err
    return err[0]


def test_missing_data_file(tmp_path, capsys, no_model_loading, tiny_model_dir):
    msg = _run_expecting_error(capsys, "--model", str(tiny_model_dir), "--data", str(tmp_path / "nope.parquet"),
                               "--out", str(tmp_path / "o"), "--backend", "hf")  # fmt: skip
    assert "eval data file not found" in msg and "nope.parquet" in msg
    with pytest.raises(EvalInputError, match="eval data file not found"):  # --debug: the traceback instead
        eval_main(["--model", str(tiny_model_dir), "--data", str(tmp_path / "nope.parquet"), "--out",
                   str(tmp_path / "o"), "--backend", "hf", "--debug"])  # fmt: skip


def test_parquet_without_the_needed_columns(tmp_path, capsys, no_model_loading, tiny_model_dir):
    bad = tmp_path / "bad.parquet"
    pd.DataFrame({"question": ["1+1"], "answer": ["2"]}).to_parquet(bad)
    msg = _run_expecting_error(capsys, "--model", str(tiny_model_dir), "--data", str(bad), "--out",
                               str(tmp_path / "o"), "--backend", "hf")  # fmt: skip
    assert "lacks the column(s) ['prompt', 'data_source', 'reward_model']" in msg


@pytest.mark.parametrize("k", ["0", "-3"])
def test_k_below_one(tmp_path, capsys, no_model_loading, tiny_model_dir, k):
    msg = _run_expecting_error(capsys, "--model", str(tiny_model_dir), "--data", str(_kit_parquet(tmp_path)),
                               "--out", str(tmp_path / "o"), "-k", k, "--backend", "hf")  # fmt: skip
    assert f"k must be an integer >= 1, got {k}" in msg


def test_missing_model(tmp_path, capsys, no_model_loading):
    msg = _run_expecting_error(capsys, "--model", str(tmp_path / "nomodel"), "--data", str(_kit_parquet(tmp_path)),
                               "--out", str(tmp_path / "o"), "--backend", "hf")  # fmt: skip
    assert "model path not found" in msg


def test_checkpoint_without_weights(tmp_path, capsys, no_model_loading):
    # a verl checkpoint whose actor dir has the HF config but no model shards
    actor = tmp_path / "ckpt" / "global_step_5" / "actor"
    (actor / "huggingface").mkdir(parents=True)
    (actor / "huggingface" / "config.json").write_text("{}")
    (actor / "fsdp_config.json").write_text("{}")
    (tmp_path / "ckpt" / "latest_checkpointed_iteration.txt").write_text("5")
    msg = _run_expecting_error(capsys, "--model", str(tmp_path / "ckpt"), "--data", str(_kit_parquet(tmp_path)),
                               "--out", str(tmp_path / "o"), "--backend", "hf")  # fmt: skip
    assert "has no model weights" in msg
    # and an HF-looking directory with a config but no weights (e.g. the checkpoint's huggingface/)
    msg = _run_expecting_error(capsys, "--model", str(actor / "huggingface"), "--data",
                               str(_kit_parquet(tmp_path)), "--out", str(tmp_path / "o"), "--backend", "hf")  # fmt: skip
    assert "has a config.json but no weights" in msg


def test_vllm_backend_without_vllm_says_so(tmp_path, capsys, no_model_loading, tiny_model_dir):
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    msg = _run_expecting_error(capsys, "--model", str(tiny_model_dir), "--data", str(_kit_parquet(tmp_path)),
                               "--out", str(tmp_path / "o"), "--backend", "vllm")  # fmt: skip
    assert "needs vLLM" in msg and "--backend hf" in msg


def test_checkpoint_layouts_are_recognised(tmp_path):
    actor = tmp_path / "ckpt" / "global_step_2" / "actor"
    (actor / "huggingface").mkdir(parents=True)
    (actor / "huggingface" / "config.json").write_text("{}")
    for rank in range(2):
        (actor / f"model_world_size_2_rank_{rank}.pt").write_bytes(b"x")
    (tmp_path / "ckpt" / "latest_checkpointed_iteration.txt").write_text("2")
    for given in (tmp_path / "ckpt", actor.parent, actor):
        assert check_model(given)[1:] == (actor.resolve(), "fsdp")
    (actor / "model_world_size_2_rank_1.pt").unlink()
    with pytest.raises(EvalInputError, match="incomplete"):
        check_model(actor)


# ---------------------------------------------------------------- data and scoring


def test_load_problems_reads_verl_parquet(tmp_path):
    problems = load_problems([_kit_parquet(tmp_path, rows=4)])
    assert [p.problem_id for p in problems] == [f"maspo_kit/arith/{i}" for i in range(4)]
    assert problems[1].messages == [{"role": "user", "content": "11+10="}] and problems[1].ground_truth == "21"


def test_duplicate_problem_ids_are_refused(tmp_path):
    path = _kit_parquet(tmp_path)
    with pytest.raises(EvalInputError, match="duplicate problem id"):
        load_problems([path, path])


def test_scorer_is_chosen_by_data_source(tmp_path):
    scorer = Scorer()
    assert scorer.resolve(["maspo_kit/arith", "maspo_kit/chain"]) == KIT_SCORERS
    right, wrong = scorer("maspo_kit/arith", "42", "42", {}), scorer("maspo_kit/arith", "~42", "42", {})
    assert (right.score, right.correct, right.pred) == (1.0, True, "42")
    assert (wrong.score, wrong.correct, wrong.pred) == (0.0, False, None)
    # the chain task: accuracy is the last total, the score the share of leading totals right
    slip = scorer("maspo_kit/chain", "42,35,44,48,41", "42,34,43,47,41", {})
    assert (slip.score, slip.acc, slip.correct) == (0.2, 1.0, True)
    import importlib.util

    if importlib.util.find_spec("maspo_verl.rewards") is None:
        with pytest.raises(EvalInputError, match="needs the project's math scorer"):
            scorer.resolve(["aime24"])
    else:  # the project's math scorer (issue 7) for the six benchmarks
        assert scorer.resolve(["aime24", "math500"]) == {"aime24": MATH_SCORER, "math500": MATH_SCORER}
        good, bad = scorer("aime24", "so \\boxed{42}", "42", {}), scorer("aime24", "so \\boxed{41}", "42", {})
        assert (good.correct, good.pred, bad.correct) == (True, "42", False)


def test_reward_fn_override(tmp_path):
    reward = tmp_path / "my_reward.py"
    reward.write_text(
        "def score(data_source, solution_str, ground_truth, extra_info=None, **kw):\n"
        "    return {'score': 2.0 if solution_str == ground_truth else -1.0, 'acc': solution_str == ground_truth,"
        " 'pred': solution_str}\n"
    )
    scorer = Scorer(f"{reward}:score")
    assert scorer.resolve(["aime24", "maspo_kit/arith"]) == {
        "aime24": f"{reward}:score",
        "maspo_kit/arith": f"{reward}:score",
    }
    result = scorer("aime24", "7", "7", {})
    assert (result.score, result.acc, result.correct, result.pred) == (2.0, 1.0, True, "7")
    with pytest.raises(EvalInputError, match="no function 'nope'"):
        Scorer(f"{reward}:nope").resolve(["x"])


# ---------------------------------------------------------------- sample store


def _record(problem_id, sample, **extra):
    return {"problem_id": problem_id, "sample": sample, "response": "r", **extra}


def test_store_resumes_and_drops_a_cut_off_line(tmp_path):
    settings = {"temperature": 0.6, "top_p": 0.95}
    store = SampleStore(tmp_path)
    store.open(settings)
    store.append(_record("a/0", 0))
    store.append(_record("a/0", 1))
    store.close()
    with open(store.samples_path, "a") as f:
        f.write('{"problem_id": "a/1", "sam')  # killed mid-write
    again = SampleStore(tmp_path)
    again.open(settings)
    assert sorted(again.records) == [("a/0", 0), ("a/0", 1)]
    assert store.samples_path.read_text().endswith("}\n")


def test_store_refuses_other_settings(tmp_path):
    SampleStore(tmp_path).open({"temperature": 0.6, "top_p": 0.95})
    with pytest.raises(EvalInputError, match=r"different settings .*temperature: stored 0.6, now 1.0"):
        SampleStore(tmp_path).open({"temperature": 1.0, "top_p": 0.95})
    # a line from another run pasted into the file is caught too
    other = SampleStore(tmp_path / "other")
    other.open({"temperature": 1.0, "top_p": 0.95})
    other.append(_record("a/0", 0))
    other.close()
    (tmp_path / "samples.jsonl").write_text(other.samples_path.read_text())
    with pytest.raises(EvalInputError, match="generated under other settings"):
        SampleStore(tmp_path).open({"temperature": 0.6, "top_p": 0.95})


def test_summary_of_a_fixture_store_matches_the_estimators(tmp_path):
    """The summary (per data_source, plus the unweighted average) from a stored sample file."""
    from maspo_verl.eval.runner import EvalConfig, summarize, summary_markdown

    lines = (FIXTURES / "samples.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    store = SampleStore(tmp_path)
    store.records = {(r["problem_id"], r["sample"]): r for r in records}
    problems = [
        Problem(pid, pid.split("/")[0], int(pid.split("/")[1]), [], "")
        for pid in dict.fromkeys(r["problem_id"] for r in records)
    ]
    config = EvalConfig(model="m", data=[], out=str(tmp_path), k=4, n_bootstrap=500)
    summary = summarize(store, problems, config, {"backend": "hf", "temperature": 0.6, "top_p": 0.95, "top_k": -1,
                                                  "max_response_length": 16}, {})  # fmt: skip
    assert summary["complete"] and set(summary["benchmarks"]) == {"aime24", "math500"}
    for name, bench in summary["benchmarks"].items():
        rows = [[r["correct"] for r in records if r["data_source"] == name and r["problem_id"] == pid]
                for pid in dict.fromkeys(r["problem_id"] for r in records if r["data_source"] == name)]  # fmt: skip
        assert bench["avg_at_k"] == pytest.approx(np.mean([np.mean(r) for r in rows]))
        assert bench["pass_at_k"]["4"] == pytest.approx(np.mean([any(r) for r in rows]))
        mine = [r for r in records if r["data_source"] == name]
        assert bench["truncation_rate"] == pytest.approx(np.mean([r["truncated"] for r in mine]))
        assert bench["mean_response_tokens"] == pytest.approx(np.mean([r["response_tokens"] for r in mine]))
        assert bench["avg_at_k_ci"][0] <= bench["avg_at_k"] <= bench["avg_at_k_ci"][1]
    avg = summary["average"]
    assert avg["avg_at_k"] == pytest.approx(np.mean([b["avg_at_k"] for b in summary["benchmarks"].values()]))
    text = summary_markdown(summary)
    assert "| aime24 |" in text and "Pass@4" in text and "**Avg** (unweighted)" in text
    # with a sample missing the summary says it is incomplete instead of scoring
    del store.records[(records[0]["problem_id"], 3)]
    partial = summarize(store, problems, config, {}, {})
    assert not partial["complete"] and "Incomplete" in summary_markdown(partial)


# ---------------------------------------------------------------- the fingerprint

V0_RECORD = FIXTURES / "v0_record"  # written by the evaluator before the fingerprint grew (see its script)


def _prepared(tmp_path: Path, template: str) -> Path:
    from fixtures import math_sources as fx

    from maspo_verl.data.math_sets import prepare

    return Path(prepare("aime24", tmp_path / template, source=fx.qwen_aime24(tmp_path), template=template,
                        progress=False)["path"])  # fmt: skip


def _sha256sum(path: Path) -> str:
    import subprocess

    return subprocess.run(["sha256sum", str(path)], capture_output=True, text=True, check=True).stdout.split()[0]


def test_the_fingerprint_holds_engine_parallelism_templates_and_file_hashes(tmp_path, tiny_model_dir):
    """The real evaluate() up to generation (no sample asked for, so no Ray): settings.json."""
    import hashlib
    from importlib.metadata import version

    from maspo_verl.eval.runner import EvalConfig, evaluate
    from maspo_verl.eval.store import FINGERPRINT_FIELDS, fingerprint
    from tiny_qwen import CHAT_TEMPLATE

    data = _prepared(tmp_path, "r1")
    config = EvalConfig(model=str(tiny_model_dir), data=[str(data)], out=str(tmp_path / "out"), k=2, backend="hf",
                        max_new_samples=0, progress=False, n_bootstrap=100)  # fmt: skip
    summary = evaluate(config, log=lambda m: None)
    stored = json.loads((tmp_path / "out" / "settings.json").read_text())
    generation = stored["generation"]
    assert list(generation) == list(FINGERPRINT_FIELDS)
    assert generation["backend"] == "hf" and generation["tensor_parallel_size"] == 1
    assert generation["dtype"] == "float32"
    assert generation["engine_version"] == f"transformers {version('transformers')} / torch {version('torch')}"
    assert generation["chat_template_sha256"] == hashlib.sha256(CHAT_TEMPLATE.encode()).hexdigest()[:16]
    assert generation["prompt_template"] == "r1"
    assert generation["data_sha256"] == {"aime24": _sha256sum(data)}
    assert stored["fingerprint"] == fingerprint(generation) == summary["fingerprint"]

    # the same problems prepared with another template: another file, another prompt: refused
    config.data = [str(_prepared(tmp_path, "qwen_math"))]
    with pytest.raises(EvalInputError) as error:
        evaluate(config, log=lambda m: None)
    assert "prompt_template: stored 'r1', now 'qwen_math'" in str(error.value)
    assert f"data_sha256.aime24: stored '{_sha256sum(data)}'" in str(error.value)


def test_a_record_of_the_old_format_reads_its_missing_fields_as_unknown(tmp_path):
    import shutil

    from maspo_verl.eval.store import FINGERPRINT_FIELDS, UNKNOWN, with_unknowns

    stored = json.loads((V0_RECORD / "settings.json").read_text())
    old = with_unknowns(stored["generation"])
    added = {"engine_version", "tensor_parallel_size", "chat_template_sha256", "prompt_template", "data_sha256"}
    assert set(old) == set(FINGERPRINT_FIELDS) and {k for k, v in old.items() if v == UNKNOWN} == added
    assert old["temperature"] == 0.6 and old["backend"] == "hf"  # what it did record is kept
    # resuming it under today's settings is refused, naming what the old record does not know
    shutil.copytree(V0_RECORD, tmp_path / "v0")
    now = {**old, "engine_version": "transformers 5.10.4 / torch 2.13.0+cpu", "tensor_parallel_size": 1,
           "chat_template_sha256": "0123456789abcdef", "prompt_template": "r1", "data_sha256": {"aime24": "ab"}}  # fmt: skip
    with pytest.raises(EvalInputError) as error:
        SampleStore(tmp_path / "v0").open(now)
    message = str(error.value)
    for field in added:
        assert f"{field}: stored 'unknown', now " in message, field
    assert "temperature" not in message  # unchanged fields are not listed


def test_data_whose_template_the_scorer_cannot_read_is_refused_before_the_model_loads(
    tmp_path, capsys, no_model_loading, tiny_model_dir
):
    boxed_only = tmp_path / "boxed_only.py"
    boxed_only.write_text(
        "import re\n"
        "def score(data_source, solution_str, ground_truth, extra_info=None, **kw):\n"
        "    found = re.findall(r'\\\\boxed\\{([^}]*)\\}', solution_str)\n"
        "    return float(bool(found) and found[-1] == ground_truth)\n"
    )
    data, boxed_data = _prepared(tmp_path, "dapo"), _prepared(tmp_path, "qwen_math")
    capsys.readouterr()  # the preparation's progress output
    msg = _run_expecting_error(capsys, "--model", str(tiny_model_dir), "--data", str(data), "--out",
                               str(tmp_path / "o"), "--backend", "hf", "--reward-fn", f"{boxed_only}:score")  # fmt: skip
    assert f"{data} was prepared with the prompt template 'dapo', which asks for a last line 'Answer: ...'" in msg
    assert f"its scorer {boxed_only}:score cannot read it" in msg and "--reward-fn" in msg
    # the same scorer reads the boxed templates: the run gets past the check (to the model, refused here)
    with pytest.raises(AssertionError, match="went past input validation"):
        eval_main(["--model", str(tiny_model_dir), "--data", str(boxed_data), "--out",
                   str(tmp_path / "o2"), "--backend", "hf", "--reward-fn", f"{boxed_only}:score"])  # fmt: skip
