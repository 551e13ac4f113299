"""The evaluator end to end on CPU: verl's rollout replica (our `hf` backend, started standalone
as the vllm one is), the kit's model and reward, resume, and a real verl checkpoint merged with
verl's model merger. The evaluations share one local Ray cluster (the evaluator joins a running
one and removes only its own actors); `python -m maspo_verl.eval` starts its own."""

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from maspo_verl.eval.runner import EvalConfig, evaluate
from maspo_verl.eval.store import SAMPLES_FILE

pytestmark = pytest.mark.e2e
PROBLEMS = 12


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    import ray

    from maspo_verl.cpu_platform import cpu_trainer_env

    env = cpu_trainer_env()
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    ray.init(num_cpus=4, num_gpus=4, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
    yield
    ray.shutdown()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def kit():
    from maspo_verl.kit import build_kit

    return build_kit(log=lambda message: None)


@pytest.fixture(scope="module")
def held_out(kit, tmp_path_factory):
    """The first problems of the kit's held-out split (a small prepared eval file)."""
    path = tmp_path_factory.mktemp("data") / "heldout.parquet"
    pd.read_parquet(kit.val_parquet).head(PROBLEMS).to_parquet(path)
    return path


def _config(model, data, out, **kw):
    defaults = dict(k=4, max_response_length=8, backend="hf", progress=False, n_bootstrap=500)
    return EvalConfig(model=str(model), data=[str(data)], out=str(out), **{**defaults, **kw})


def _samples(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / SAMPLES_FILE).read_text().splitlines()]


def test_k_samples_per_problem_scores_jsonl_and_summary(kit, held_out, tmp_path):
    out = tmp_path / "eval"
    summary = evaluate(_config(kit.model_dir, held_out, out), log=lambda m: None)
    records = _samples(out)
    keys = {(r["problem_id"], r["sample"]) for r in records}
    assert len(records) == len(keys) == PROBLEMS * 4
    for r in records:
        assert {"problem_id", "sample", "response", "pred", "score", "acc", "correct", "truncated"} <= set(r)
        assert r["scorer"] == "maspo_verl.kit.reward:compute_score" and 1 <= r["response_tokens"] <= 8
    bench = summary["benchmarks"]["maspo_kit/arith"]
    assert summary["complete"] and bench["num_problems"] == PROBLEMS and bench["k"] == 4
    assert bench["avg_at_k"] == pytest.approx(sum(r["acc"] for r in records) / len(records))
    assert set(bench["pass_at_k"]) == {"1", "2", "4"} and bench["pass_at_k"]["4"] >= bench["avg_at_k"]
    assert 0 < bench["avg_at_k"] < 1  # the warm-started kit model is good, not perfect
    assert bench["truncation_rate"] == 0.0  # answers are <= 4 tokens with eos
    # defaults are stored with the results (the DeepSeek-R1-Distill convention)
    settings = json.loads((out / "settings.json").read_text())["generation"]
    assert (settings["temperature"], settings["top_p"], settings["backend"]) == (0.6, 0.95, "hf")
    assert settings["prompt_template"] == "unknown" and set(settings["data_sha256"]) == {"maspo_kit/arith"}
    assert (
        json.loads((out / "summary.json").read_text())["benchmarks"]["maspo_kit/arith"]["avg_at_k"] == bench["avg_at_k"]
    )
    # same numbers as verl's own validation metric on these samples
    from verl.trainer.ppo.metric_utils import process_validation_metrics

    verl = process_validation_metrics([r["data_source"] for r in records], [r["problem_id"] for r in records],
                                      {"acc": [r["acc"] for r in records]})  # fmt: skip
    assert bench["avg_at_k"] == pytest.approx(verl["maspo_kit/arith"]["acc"]["mean@4"])


def test_interrupted_and_resumed_equals_one_run(kit, held_out, tmp_path):
    """Greedy decoding makes the samples deterministic, so the two routes must agree exactly."""
    greedy = dict(temperature=0.0, k=2)
    whole = evaluate(_config(kit.model_dir, held_out, tmp_path / "whole", **greedy), log=lambda m: None)

    out = tmp_path / "resumed"
    partial = evaluate(_config(kit.model_dir, held_out, out, max_new_samples=9, **greedy), log=lambda m: None)
    assert not partial["complete"] and len(_samples(out)) == 9
    with open(out / SAMPLES_FILE, "a") as f:  # as if killed while writing the tenth
        f.write('{"problem_id": "maspo_kit/arith/9", "sample"')
    before = (out / SAMPLES_FILE).read_text().splitlines()[:9]
    resumed = evaluate(_config(kit.model_dir, held_out, out, **greedy), log=lambda m: None)

    lines = (out / SAMPLES_FILE).read_text().splitlines()
    assert lines[:9] == before  # nothing finished was regenerated or rewritten
    assert len(lines) == PROBLEMS * 2
    by_key = lambda rs: {(r["problem_id"], r["sample"]): r["response"] for r in rs}  # noqa: E731
    assert by_key(_samples(out)) == by_key(_samples(tmp_path / "whole"))
    for name in ("avg_at_k", "pass_at_k", "avg_at_k_ci", "truncation_rate", "mean_response_tokens"):
        assert resumed["benchmarks"]["maspo_kit/arith"][name] == whole["benchmarks"]["maspo_kit/arith"][name]
    # a finished evaluation run again generates nothing (and starts no Ray)
    logs = []
    evaluate(_config(kit.model_dir, held_out, out, **greedy), log=logs.append)
    assert any("0 to generate" in line for line in logs)


@pytest.fixture(scope="module")
def checkpoint(one_step_runs):
    """A real verl checkpoint: one GRPO step of the kit through maspo_verl.main_ppo, saved
    (conftest.py's shared session of one-step runs)."""
    from maspo_verl.launch import RunFailed

    outcome, out = one_step_runs["grpo"]
    if isinstance(outcome, RunFailed):
        pytest.fail(f"training failed:\n{outcome}")
    return out / "checkpoints"


def test_a_verl_checkpoint_is_merged_cached_and_evaluated(checkpoint, held_out, tmp_path, kit):
    cache = tmp_path / "merged"
    logs = []
    summary = evaluate(_config(checkpoint, held_out, tmp_path / "eval", k=2, merge_cache=str(cache)), log=logs.append)
    assert summary["complete"] and summary["benchmarks"]["maspo_kit/arith"]["num_problems"] == PROBLEMS
    merged = list(cache.iterdir())
    assert len(merged) == 1 and (merged[0] / "maspo_merged_from.json").is_file()
    assert any("merging" in line for line in logs) and "global_step_1/actor" in summary["run"]["model"]
    # the merged weights are the trained ones, not the kit's starting point
    from safetensors.torch import load_file

    trained, start = (
        load_file(next(merged[0].glob("*.safetensors"))),
        load_file(next(kit.model_dir.glob("*.safetensors"))),
    )
    assert trained.keys() == start.keys() and any(not (trained[k] == start[k]).all() for k in trained)
    # a second evaluation (here given the step directory) reuses the merge
    from maspo_verl.eval.model import resolve_model

    logs.clear()
    again = resolve_model(checkpoint / "global_step_1", cache, log=logs.append)
    assert again.hf_dir == merged[0] and any("using the cached merge" in line for line in logs)
    assert len(list(cache.iterdir())) == 1


@pytest.mark.gpu
def test_vllm_backend_on_gpu(kit, held_out, tmp_path):
    """What GPU users run: the same evaluator with verl's vLLM replicas."""
    pytest.importorskip("vllm")
    summary = evaluate(_config(kit.model_dir, held_out, tmp_path / "vllm", backend="vllm", dtype="float32"),
                       log=lambda m: None)  # fmt: skip
    bench = summary["benchmarks"]["maspo_kit/arith"]
    assert summary["complete"] and 0 < bench["avg_at_k"] < 1
