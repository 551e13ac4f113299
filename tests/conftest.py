import functools
from pathlib import Path

import pytest
import torch

PRESETS = sorted(
    p.stem for p in (Path(__file__).parents[1] / "configs" / "algorithm").glob("*.yaml") if p.stem[0] != "_"
)


@functools.cache
def one_step_presets() -> list[str]:
    """The presets that get one trainer step each in one shared Ray session: grpo (its checkpoint
    feeds tests/test_eval_e2e.py), then the first preset of each of OUR code paths not yet run: each
    of our losses (maspo_verl.algos.LOSSES) and advantage shapers. Presets that differ from one of
    these only in settings (clip_higher, MASPO's ablations) and presets of verl's own losses (gspo,
    cispo, sapo; sapo also runs in tests/test_recipes_cpu.py) go through verl's ppo_loss in
    tests/test_presets.py, which costs no trainer start-up. maspo and dapo have runs of their own
    (tests/test_e2e_kit.py). Composing the presets takes seconds, so it happens on first use, not
    at every pytest start."""
    from maspo_verl.algos import LOSSES
    from verl_config import code_path

    ours = {spec.name for spec in LOSSES}
    chosen, seen = ["grpo"], {code_path(p) for p in ("grpo", "maspo", "dapo")}
    for preset in PRESETS:
        loss_mode, shaper = path = code_path(preset)
        if path not in seen and (loss_mode in ours or shaper != "none"):
            chosen.append(preset)
            seen.add(path)
    return chosen


# in the same session as the one-step runs: grpo long enough to learn (tests/test_e2e_kit.py)
LEARNING_RUN, LEARNING_STEPS = "grpo_learns", 20
# ... and DAPO's group filter and overlong penalty (tests/test_e2e_kit.py says why these settings)
DAPO_RUN = "dapo_filters"
DAPO_OVERRIDES = ["algorithm=dapo", "actor_rollout_ref.rollout.n=2", "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4",
                  "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=16", "trainer.total_training_steps=2",
                  "trainer.val_before_train=False", "reward.reward_kwargs.overlong_buffer_cfg.len=6"]  # fmt: skip


# Test files whose tests share one expensive fixture across files (conftest's one_step_runs: the
# grpo checkpoint that the evaluator's test reads) run on the same pytest-xdist worker.
SHARED_GROUPS = {"test_e2e_kit.py": "kit_session", "test_eval_e2e.py": "kit_session"}

# The groups that launch verl's trainer, in the order xdist hands them out (scripts/test.sh turns
# off its reordering by test count). Seconds of a worker in a clean-clone run of scripts/test.sh,
# 2026-12-07: kit_session 1480, recipes 1180, bench 470, e2e_dp 320, wheel 200, kit 150. Each
# worker starts with two groups (1st and 3rd, 2nd and 4th), then takes the next as it finishes:
# the two longest on different workers, each with a shorter one, so the workers end close together
# instead of one waiting on a launch the other could have run. Every other file keeps its order.
COSTLIEST_FIRST = ["kit_session", "test_recipes_cpu.py", "test_wheel.py", "test_bench.py", "test_e2e_dp.py",
                   "test_kit.py", "test_preflight_keys.py"]  # fmt: skip

# a key of wandb's shape for tests of runs that log to wandb (the paper recipes do); not a real one
FAKE_WANDB_KEY = "fake0wandb0key0for0the0preflight0tests00"


@pytest.fixture()
def wandb_key(monkeypatch):
    """This machine as if `export WANDB_API_KEY=...` had been run (maspo_verl/preflight/trackers.py)."""
    monkeypatch.setenv("WANDB_API_KEY", FAKE_WANDB_KEY)
    return FAKE_WANDB_KEY


def pytest_itemcollected(item):
    """Under pytest-xdist (`-n 2 --dist loadgroup`, scripts/test.sh) every test file is one group,
    so its module fixtures (a trainer run, a kit build) run once, on one worker. Marked as each
    test is collected: xdist reads the groups in its own pytest_collection_modifyitems, which runs
    before a conftest's (tests/test_packaging.py checks the grouping)."""
    if not item.get_closest_marker("xdist_group"):
        item.add_marker(pytest.mark.xdist_group(_group(item)))


def _group(item) -> str:
    name = item.path.name
    return SHARED_GROUPS.get(name, name)


def pytest_collection_modifyitems(config, items):
    """The costliest groups first (COSTLIEST_FIRST); GPU tests are skipped cleanly, with a reason,
    on machines without CUDA (CI)."""
    rank = {group: index for index, group in enumerate(COSTLIEST_FIRST)}
    items.sort(key=lambda item: rank.get(_group(item), len(rank)))  # stable: each file keeps its order
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
    """One step of each preset of one_step_presets() on the tiny kit, then LEARNING_STEPS steps of
    grpo (LEARNING_RUN) and DAPO's filter run (DAPO_RUN), all in ONE Ray session (start-up paid once;
    maspo_verl.launch): {name: (RunResult or RunFailed, its folder)}. The one-step grpo run also saves its checkpoint (tests/test_eval_e2e.py
    evaluates it); the learning run exports its final model for the held-out probe."""
    from maspo_verl.launch import run_session_process

    root = tmp_path_factory.mktemp("one_step")
    runs = []
    for preset in one_step_presets():
        save = ["trainer.save_freq=1"] if preset == "grpo" else []
        overrides = ["+kit=tiny_cpu", f"algorithm={preset}", "trainer.total_training_steps=1",
                     "trainer.val_before_train=False", "trainer.test_freq=-1", *save]  # fmt: skip
        runs.append((overrides, root / preset))
    runs.append(
        (["+kit=tiny_cpu", "algorithm=grpo", f"trainer.total_training_steps={LEARNING_STEPS}",
          "trainer.val_before_train=False", "trainer.test_freq=-1", f"trainer.save_freq={LEARNING_STEPS}",
          "actor_rollout_ref.actor.checkpoint.save_contents=[hf_model]"], root / LEARNING_RUN)
    )  # fmt: skip
    runs.append((["+kit=tiny_cpu", *DAPO_OVERRIDES], root / DAPO_RUN))
    outcomes = run_session_process(runs, root, timeout=1800)
    names = [*one_step_presets(), LEARNING_RUN, DAPO_RUN]
    return {name: (outcome, root / name) for name, outcome in zip(names, outcomes)}
