from pathlib import Path

import pytest
import torch

PRESETS = sorted(
    p.stem for p in (Path(__file__).parents[1] / "configs" / "algorithm").glob("*.yaml") if p.stem[0] != "_"
)
# one trainer step each in one shared Ray session (maspo and dapo have runs of their own)
ONE_STEP_PRESETS = [p for p in PRESETS if p not in ("maspo", "dapo")]


def pytest_collection_modifyitems(config, items):
    """GPU tests are skipped cleanly, with a reason, on machines without CUDA (CI)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A random 2-layer Qwen2 with a byte-level tokenizer and chat template (tests/tiny_qwen.py)."""
    from tiny_qwen import save_tiny_qwen

    return save_tiny_qwen(tmp_path_factory.mktemp("tiny_qwen"))


@pytest.fixture(scope="module")
def maspo_actor_config():
    """verl's ActorConfig for `algorithm=maspo`, built as verl's engine worker builds it."""
    from verl_config import build_actor_config, compose_ours

    return build_actor_config(compose_ours())


@pytest.fixture(scope="session")
def one_step_runs(tmp_path_factory):
    """One step of each preset of ONE_STEP_PRESETS on the tiny kit, all in ONE Ray session (start-up
    paid once; maspo_verl.launch): {preset: RunResult or RunFailed}, each run's files under
    `<root>/<preset>`. The grpo run also saves its checkpoint (tests/test_eval_e2e.py evaluates it)."""
    from maspo_verl.launch import run_session_process

    root = tmp_path_factory.mktemp("one_step")
    runs = []
    for preset in ONE_STEP_PRESETS:
        save = ["trainer.save_freq=1"] if preset == "grpo" else []
        overrides = ["+kit=tiny_cpu", f"algorithm={preset}", "trainer.total_training_steps=1",
                     "trainer.val_before_train=False", "trainer.test_freq=-1", *save]  # fmt: skip
        runs.append((overrides, root / preset))
    outcomes = run_session_process(runs, root, timeout=1800)
    return {preset: (outcome, root / preset) for preset, outcome in zip(ONE_STEP_PRESETS, outcomes)}
