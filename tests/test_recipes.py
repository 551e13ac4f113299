"""Paper recipes: every examples/paper script dry-runs against fixture data; preflight's errors.

The dry runs compose each script's exact override list (run.sh prints it with
MASPO_PRINT_OVERRIDES=1) in-process and run maspo_verl.preflight.dry_run on it: the config of
`python -m maspo_verl.main_ppo`, verl's validate_config, every config dataclass, the data and
batch checks. One script also runs end to end as a user runs it (`DRY_RUN=1 bash ...`).
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import verl  # noqa: F401  (imports our plugin)
from conftest import FAKE_WANDB_KEY
from fixtures import math_sources as fx
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf, open_dict

from maspo_verl.preflight import check_batch_sizes, check_data, dry_run, preflight
from maspo_verl.preflight.presets import leaves

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "examples" / "paper"
SCRIPTS = sorted(PAPER.glob("paper_*.sh"))
SIZES = {"paper_1p5b": "1.5B", "paper_7b": "7B", "paper_14b": "14B"}
TABLE_METHODS = {"grpo", "clip_higher", "dac", "entropy_adv", "bapo", "sapo", "maspo", "dapo"}

# the recipes log to wandb; preflight refuses that on a machine without a key
pytestmark = pytest.mark.usefixtures("wandb_key")


def _script_choice(script: Path) -> tuple[str, str]:
    match = re.search(r"^RECIPE=(\S+) ALGORITHM=(\S+) exec", script.read_text(), re.M)
    assert match, f"{script.name} does not pick RECIPE and ALGORITHM the way run.sh expects"
    return match.group(1), match.group(2)


def _overrides(script: Path, data_dir: Path, **env) -> list[str]:
    environment = {**os.environ, "MASPO_DATA_DIR": str(data_dir), "MASPO_PRINT_OVERRIDES": "1", **env}
    out = subprocess.run(["bash", str(script)], env=environment, capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


def _compose(overrides, resolve=True):
    with initialize_config_module(config_module="maspo_verl_configs", version_base=None):
        config = compose("maspo_trainer", overrides=list(overrides))
    if resolve:
        OmegaConf.resolve(config)
    return config


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper_data")
    return fx.prepare_all(root / "sources", root / "prepared")


def test_one_script_per_model_and_method():
    found = {_script_choice(script) for script in SCRIPTS}
    assert found == {(recipe, method) for recipe in SIZES for method in TABLE_METHODS}
    for script in SCRIPTS:
        text = script.read_text()
        # the header says where values come from, and how to check before paying for GPUs
        assert "P  " in text and "D  " in text and "O  " in text and "DRY_RUN=1" in text, script.name
        assert "Prompt template" in text


@pytest.mark.parametrize("script", SCRIPTS, ids=[script.stem for script in SCRIPTS])
def test_every_recipe_dry_runs(script, data_dir, capsys):
    recipe, algorithm = _script_choice(script)
    if not (REPO / "configs" / "algorithm" / f"{algorithm}.yaml").is_file():
        pytest.skip(f"configs/algorithm/{algorithm}.yaml does not exist yet")
    overrides = _overrides(script, data_dir)
    config = _compose(overrides)
    text = dry_run(config)
    assert "checks passed" in text
    # the values the run uses, and the memory estimate per GPU (of an 80 GiB card: no CUDA here)
    assert "grad clip 1.0 (actor.optim.clip_grad)" in text and re.search(r"max_model_len (10240|22528),", text)
    assert re.search(r"memory +rollout and weight sync: \d+\.\d GiB \(8\d%\)", text), text
    assert "trackers           wandb: key from $WANDB_API_KEY" in text and FAKE_WANDB_KEY not in text
    assert config.data.train_files == f"{data_dir}/dapo_math_17k.parquet"
    assert [Path(path).stem for path in config.data.val_files] == [
        "aime24", "aime25", "amc23", "math500", "minerva", "olympiadbench"
    ]  # fmt: skip
    assert config.actor_rollout_ref.model.path.endswith(f"DeepSeek-R1-Distill-Qwen-{SIZES[recipe]}")
    assert config.data.train_batch_size == 512 and config.actor_rollout_ref.actor.ppo_mini_batch_size == 32
    assert config.actor_rollout_ref.rollout.name == "vllm" and config.actor_rollout_ref.rollout.val_kwargs.n == 32
    assert config.reward.custom_reward_function.path == "pkg://maspo_verl.rewards.math_score"
    assert config.trainer.experiment_name == f"{recipe}_{algorithm}"
    if algorithm.startswith("maspo"):
        assert config.actor_rollout_ref.actor.policy_loss.alpha == (0.5 if recipe == "paper_1p5b" else 0.3)
    if algorithm == "dapo":  # the preset's overlong penalty composes with our scorer
        assert config.reward.reward_manager.name == "dapo"
        assert config.reward.reward_kwargs.max_resp_len == config.data.max_response_length


@pytest.mark.parametrize("recipe", sorted(SIZES))
def test_methods_differ_only_in_the_algorithm(recipe, data_dir):
    lists = {}
    for script in SCRIPTS:
        script_recipe, algorithm = _script_choice(script)
        if script_recipe == recipe:
            lists[algorithm] = [
                item for item in _overrides(script, data_dir)
                if not item.startswith(("algorithm=", "trainer.experiment_name="))
            ]  # fmt: skip
    assert len(lists) == len(TABLE_METHODS)
    assert all(items == lists["grpo"] for items in lists.values())


def test_recipe_and_preset_compose_in_either_order_on_stock_verl(data_dir):
    def stock(*overrides):
        with initialize_config_module(config_module="verl.trainer.config", version_base=None):
            return compose("ppo_trainer", overrides=list(overrides))

    first = stock("+recipe=paper_7b", "+algorithm=clip_higher")
    second = stock("+algorithm=clip_higher", "+recipe=paper_7b")
    assert OmegaConf.to_container(first) == OmegaConf.to_container(second)
    assert first.actor_rollout_ref.actor.clip_ratio_high == 0.28 and first.data.train_batch_size == 512


FIRST_LAUNCH_CHANGES = {
    "trainer.total_training_steps": 2,
    "trainer.val_before_train": False,
    "trainer.test_freq": 2,
    "trainer.resume_mode": "disable",
    "trainer.experiment_name": "paper_7b_maspo_first_launch",
    "trainer.default_local_dir": "checkpoints/${trainer.project_name}/first_launch/${trainer.experiment_name}",
    "data.val_max_samples": 32,
    "actor_rollout_ref.rollout.val_kwargs.n": 2,
}


def test_the_first_launch_is_the_recipe_with_two_steps_and_one_small_validation(data_dir):
    """FIRST_LAUNCH=1 (+launch=first) changes exactly these keys of the recipe, and dry-runs."""
    script = PAPER / "paper_7b_maspo.sh"
    items = _overrides(script, data_dir, FIRST_LAUNCH="1")
    assert "+launch=first" in items
    full = leaves(OmegaConf.to_container(_compose(_overrides(script, data_dir), resolve=False)))
    first = leaves(OmegaConf.to_container(_compose(items, resolve=False)))
    changed = {key: first.get(key) for key in full.keys() | first.keys() if full.get(key) != first.get(key)}
    assert changed == FIRST_LAUNCH_CHANGES
    assert "checks passed" in dry_run(_compose(items))
    elsewhere = _compose(_overrides(script, data_dir, FIRST_LAUNCH="1", CKPT_DIR="/ckpt/run"))
    assert elsewhere.trainer.default_local_dir == "/ckpt/run_first_launch"


def test_env_overrides_and_amc_choice(data_dir):
    script = PAPER / "paper_14b_grpo.sh"
    items = _overrides(script, data_dir, NNODES="4", GPUS_PER_NODE="4", MODEL_PATH="/m", AMC="amc83", LOGGERS="console")
    config = _compose(items)
    assert (config.trainer.nnodes, config.trainer.n_gpus_per_node) == (4, 4)
    assert config.actor_rollout_ref.model.path == "/m" and list(config.trainer.logger) == ["console"]
    assert f"{data_dir}/amc83.parquet" in list(config.data.val_files)
    bad = subprocess.run(["bash", str(script)], env={**os.environ, "AMC": "amc12", "MASPO_PRINT_OVERRIDES": "1"},
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 2 and "AMC=amc12 is not allowed" in bad.stderr


def test_dry_run_from_the_shell_like_a_user(data_dir, tiny_model_dir):
    """`DRY_RUN=1 bash examples/paper/...`: python -m maspo_verl.main_ppo --dry-run, no GPU or Ray."""
    env = {**os.environ, "MASPO_DATA_DIR": str(data_dir), "DRY_RUN": "1", "MODEL_PATH": str(tiny_model_dir),
           "PYTHON": sys.executable, "LOGGERS": "console"}  # fmt: skip
    result = subprocess.run(
        ["bash", str(PAPER / "paper_1p5b_maspo.sh"), "trainer.total_training_steps=7"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "[maspo_verl dry run] config composed, checks passed" in result.stdout
    assert "alpha=0.5" in result.stdout and "steps 7" in result.stdout
    assert re.search(r"built .*\bmodel\b", result.stdout)  # the tokenizer and HF config were loaded
    assert "ray init" not in result.stdout.lower()


# ----------------------------------------------------------------------------- preflight's errors


@pytest.fixture()
def paper_config(data_dir):
    return _compose(_overrides(PAPER / "paper_7b_grpo.sh", data_dir))


def test_missing_train_file_is_named(paper_config, tmp_path):
    with open_dict(paper_config):
        paper_config.data.train_files = str(tmp_path / "nope.parquet")
    with pytest.raises(
        FileNotFoundError, match=r"data.train_files: data file .*nope.parquet does not exist.*maspo_verl.data prepare"
    ):
        preflight(paper_config)


def test_wrong_columns_are_named(paper_config, tmp_path):
    path = tmp_path / "raw.parquet"
    pd.DataFrame({"problem": ["1+1"], "answer": ["2"]}).to_parquet(path)
    with open_dict(paper_config):
        paper_config.data.val_files = [str(path)]
    with pytest.raises(
        ValueError, match=r"data.val_files: .*raw.parquet lacks column\(s\) \['prompt', 'data_source', 'reward_model'\]"
    ):
        check_data(paper_config)
    pd.DataFrame({"prompt": ["1+1"], "data_source": ["x"], "reward_model": [{"ground_truth": "2"}]}).to_parquet(path)
    with pytest.raises(ValueError, match="column 'prompt' has type (large_)?string"):
        check_data(paper_config)


def test_too_few_training_rows(paper_config):
    with open_dict(paper_config):
        paper_config.data.train_batch_size = 1024
        paper_config.actor_rollout_ref.actor.ppo_mini_batch_size = 32
    with pytest.raises(ValueError, match=r"data.train_batch_size=1024 is larger than the training set \(600 rows"):
        check_data(paper_config)


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"trainer.n_gpus_per_node": 6}, r"rollout.*= 2 must divide|must split evenly"),
        ({"trainer.n_gpus_per_node": 7}, r"must split evenly over the 7 data-parallel ranks"),
        (
            {"actor_rollout_ref.actor.ppo_mini_batch_size": 48},
            r"data.train_batch_size=512 must be a multiple of .*ppo_mini_batch_size=48",
        ),
        (
            {"actor_rollout_ref.actor.ppo_mini_batch_size": 1024},
            r"ppo_mini_batch_size=1024 is not allowed: it must be <= data.train_batch_size=512",
        ),
        (
            {"trainer.nnodes": 2, "actor_rollout_ref.rollout.tensor_model_parallel_size": 16},
            r"does not fit on one node of 8 GPUs",
        ),
        ({"actor_rollout_ref.actor.ppo_max_token_len_per_gpu": 4096}, r"ppo_max_token_len_per_gpu=4096 is too small"),
        ({"trainer.nnodes": 0}, r"trainer.nnodes=0 is not allowed: it must be a positive integer"),
        (
            {
                "actor_rollout_ref.actor.use_dynamic_bsz": False,
                "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu": 3,
            },
            r"ppo_micro_batch_size_per_gpu=3 must divide the per-GPU mini-batch \(32 x 16 / 8 = 64",
        ),
        (
            {
                "actor_rollout_ref.actor.use_dynamic_bsz": False,
                "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu": 4,
                "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu": 48,
            },
            r"rollout.log_prob_micro_batch_size_per_gpu=48 must divide the per-GPU batch \(512 x 16 / 8 = 1024",
        ),
    ],
)
def test_batch_size_rules(paper_config, changes, message):
    with open_dict(paper_config):
        for key, value in changes.items():
            OmegaConf.update(paper_config, key, value)
    with pytest.raises(ValueError, match=message):
        check_batch_sizes(paper_config)


def test_bad_reward_function_is_named(paper_config):
    with open_dict(paper_config):
        paper_config.reward.custom_reward_function.name = "no_such_function"
    with pytest.raises(
        ValueError,
        match="reward.custom_reward_function.path=pkg://maspo_verl.rewards.math_score / name=no_such_function",
    ):
        preflight(paper_config)


def test_tiny_kit_passes_preflight(tmp_path):
    """CI runs the kit through main_ppo, which now calls preflight first."""
    from maspo_verl.kit.task import split_problems, write_parquet

    train, val = split_problems(seed=0, val_size=20)
    write_parquet(train, "train", str(tmp_path / "train.parquet"))
    write_parquet(val, "val", str(tmp_path / "val.parquet"))
    config = _compose(["+kit=tiny_cpu", "algorithm=maspo"], resolve=False)
    with open_dict(config):
        config.data.train_files = str(tmp_path / "train.parquet")
        config.data.val_files = str(tmp_path / "val.parquet")
        config.reward.custom_reward_function.path = "pkg://maspo_verl.kit.reward"
        config.actor_rollout_ref.model.path = "unused"
    summary = preflight(config)
    assert summary["n_gpus"] == 1 and summary["updates_per_step"] == 4
