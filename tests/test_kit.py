"""Tests for the tiny-model kit (maspo_verl.kit): CPU only, about a minute in all.

One full kit is built per session into a temporary folder (~30 s on two
cores); determinism is checked on two extra short builds.
"""

import hashlib
import os

import pandas as pd
import pytest
import torch

from maspo_verl.kit import KitSettings, WarmStartRecipe, build_kit
from maspo_verl.kit.build import MARKER_NAME, read_marker
from maspo_verl.kit.reward import compute_score
from maspo_verl.kit.task import DATA_SOURCE
from maspo_verl.kit.tokenizer import build_tokenizer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

VERL_COLUMNS = ["data_source", "prompt", "ability", "reward_model", "extra_info"]


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    return build_kit(root=tmp_path_factory.mktemp("kit"), seed=0, log=lambda message: None)


@pytest.fixture(scope="module")
def tokenizer(kit):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(kit.model_dir)


def file_digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_tokenizer_round_trips_text_and_keeps_digits_apart(tokenizer):
    text = "12+34=46\nuser assistant ~ é"
    assert tokenizer.decode(tokenizer(text).input_ids) == text
    digit_ids = tokenizer("9081", add_special_tokens=False).input_ids
    assert len(digit_ids) == 4


def test_autotokenizer_matches_the_built_tokenizer(tokenizer):
    """transformers 5 reloads a qwen2 dir as Qwen2Tokenizer; it must tokenize identically."""
    built = build_tokenizer()
    for text in ["37+45=", "<|im_start|>user\n37+45=<|im_end|>\n", "hello world 123"]:
        assert tokenizer(text).input_ids == built(text).input_ids
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.bos_token_id is not None


def test_chat_template_in_every_form_verl_uses(tokenizer):
    messages = [{"role": "user", "content": "37+45="}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == "<|im_start|>user\n37+45=<|im_end|>\n<|im_start|>assistant\n"
    expected_ids = tokenizer(text, add_special_tokens=False).input_ids
    assert len(expected_ids) <= 16

    from verl.utils.tokenizer import normalize_token_ids
    from verl.utils.tokenizer.chat_template import apply_chat_template

    plain = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    as_list = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    as_dict = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    assert normalize_token_ids(plain) == expected_ids
    assert list(as_list) == expected_ids
    assert as_dict["input_ids"][0].tolist() == expected_ids
    assert normalize_token_ids(apply_chat_template(tokenizer, messages)) == expected_ids
    parts = [{"role": "user", "content": [{"type": "text", "text": "37+45="}]}]
    assert normalize_token_ids(apply_chat_template(tokenizer, parts)) == expected_ids


def test_verl_rollout_token_builder_accepts_the_tokenizer(tokenizer):
    """verl picks the Qwen builder from model_type 'qwen2'; it needs <|im_end|>."""
    from verl.utils.tokenizer.continuous_token_wiring import create_continuous_token_builder

    builder = create_continuous_token_builder(tokenizer, hf_model_type="qwen2")
    messages = [{"role": "user", "content": "37+45="}]
    expected = tokenizer(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)).input_ids
    assert builder.build_initial_tokens(messages) == expected


def test_model_loads_and_answers(kit, tokenizer):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(kit.model_dir)
    assert type(model).__name__ == "Qwen2ForCausalLM"
    assert model.config.vocab_size == len(tokenizer)
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "37+45="}],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
    )
    output = model.generate(**ids, do_sample=False, max_new_tokens=6)
    answer = tokenizer.decode(output[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert answer.isdigit() and abs(int(answer) - 82) <= 10  # greedy is right ~95% of the time


def test_parquet_has_verl_columns_and_disjoint_splits(kit):
    train, val = pd.read_parquet(kit.train_parquet), pd.read_parquet(kit.val_parquet)
    for frame, split in [(train, "train"), (val, "val")]:
        assert list(frame.columns) == VERL_COLUMNS
        row = frame.iloc[0]
        assert row["data_source"] == DATA_SOURCE
        assert list(row["prompt"]) == [{"role": "user", "content": row["prompt"][0]["content"]}]
        assert row["reward_model"]["style"] == "rule"
        assert row["extra_info"]["split"] == split
        assert frame["extra_info"].map(lambda info: info["index"]).tolist() == list(range(len(frame)))
    train_questions = set(train["prompt"].map(lambda prompt: prompt[0]["content"]))
    val_questions = set(val["prompt"].map(lambda prompt: prompt[0]["content"]))
    assert len(val_questions) == len(val) and not train_questions & val_questions


def test_verl_dataset_reads_the_parquet(kit, tokenizer):
    from omegaconf import OmegaConf
    from verl.utils.dataset.rl_dataset import RLHFDataset

    config = OmegaConf.create(
        {"max_prompt_length": 16, "filter_overlong_prompts": True, "cache_dir": str(kit.root / "verl_cache")}
    )
    dataset = RLHFDataset(data_files=[str(kit.val_parquet)], tokenizer=tokenizer, config=config)
    assert len(dataset) == len(pd.read_parquet(kit.val_parquet))  # nothing filtered as too long
    item = dataset[0]
    assert item["raw_prompt"][0]["role"] == "user" and item["index"] == 0


@pytest.mark.parametrize(
    "response, ground_truth, score",
    [
        ("82", "82", 1.0),
        (" 82\n", "82", 1.0),
        ("83", "82", 0.0),
        ("~82", "82", 0.0),
        ("82 82", "82", 0.0),
        ("", "82", 0.0),
        ("8x2", "82", 0.0),
        ("182", "82", 0.0),
    ],
)
def test_reward_scores_right_wrong_and_malformed(response, ground_truth, score):
    assert (
        compute_score(data_source=DATA_SOURCE, solution_str=response, ground_truth=ground_truth, extra_info={}) == score
    )


def test_reward_file_loads_the_way_verl_loads_it(kit):
    from verl.utils.import_utils import load_extern_object

    compute = load_extern_object(module_path=str(kit.reward_path), object_name=kit.reward_name)
    assert compute(data_source=DATA_SOURCE, solution_str="82", ground_truth="82", extra_info={}, unused=1) == 1.0


def test_warm_start_leaves_room_for_rl(kit):
    assert 0.2 < kit.info["val_accuracy_sampled"] < 0.8
    assert kit.info["val_accuracy_sampled"] < kit.info["val_accuracy_greedy"]


def test_complete_build_is_reused_and_marker_guards_half_builds(kit):
    marker = kit.root / MARKER_NAME
    stamp = marker.stat().st_mtime_ns
    again = build_kit(root=kit.root, seed=0, log=lambda message: None)
    assert again.info == kit.info and marker.stat().st_mtime_ns == stamp
    assert read_marker(kit.root / "missing") is None


def test_same_seed_builds_identical_files(tmp_path):
    """Short builds (few SFT steps) so the check is cheap; CPU training is bitwise reproducible here."""
    settings = KitSettings(seed=3, recipe=WarmStartRecipe(steps=20, warmup_steps=5))
    first = build_kit(root=tmp_path / "a", settings=settings, log=lambda message: None)
    second = build_kit(root=tmp_path / "b", settings=settings, log=lambda message: None)
    for name in ["train_parquet", "val_parquet", "reward_path"]:
        assert file_digest(getattr(first, name)) == file_digest(getattr(second, name))
    from safetensors.torch import load_file

    weights_a = load_file(first.model_dir / "model.safetensors")
    weights_b = load_file(second.model_dir / "model.safetensors")
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[key], weights_b[key]) for key in weights_a)


def test_the_chain_task_builds_its_own_kit_and_the_resolver_finds_it(tmp_path, monkeypatch):
    """A short chain build: its own folder beside $MASPO_VERL_KIT_DIR, its data source, the
    worked answer as ground truth, and its reward loaded the way verl loads it."""
    from verl.utils.dataset.rl_dataset import RLHFDataset
    from verl.utils.import_utils import load_extern_object

    from maspo_verl.kit import KitSettings
    from maspo_verl.kit.chain import DATA_SOURCE as CHAIN_SOURCE
    from maspo_verl.kit.tasks import get_task

    monkeypatch.setenv("MASPO_VERL_KIT_DIR", str(tmp_path / "kit"))
    settings = KitSettings(seed=0, val_size=64, recipe=WarmStartRecipe(steps=5, warmup_steps=2), task="chain")
    kit = build_kit(settings=settings, log=lambda message: None)
    assert kit.root == tmp_path / "kit-chain" and kit.task == "chain" and kit.reward_name == "compute_chain_score"
    assert settings.fingerprint() != KitSettings(seed=0, val_size=64, recipe=settings.recipe).fingerprint()
    val = pd.read_parquet(kit.val_parquet)
    row = val.iloc[0]
    assert len(val) == 64 and row["data_source"] == CHAIN_SOURCE
    question, truth = row["prompt"][0]["content"], row["reward_model"]["ground_truth"]
    assert int(truth.split(",")[-1]) == eval(question[:-1]) and len(truth.split(",")) == 5
    compute = load_extern_object(module_path=str(kit.reward_path), object_name=kit.reward_name)
    assert compute(data_source=CHAIN_SOURCE, solution_str=truth, ground_truth=truth, extra_info={}) == {
        "score": 1.0,
        "acc": 1.0,
    }
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer

    config = OmegaConf.create({"max_prompt_length": 32, "filter_overlong_prompts": True,
                               "cache_dir": str(tmp_path / "verl_cache")})  # fmt: skip
    dataset = RLHFDataset(data_files=[str(kit.val_parquet)], tokenizer=AutoTokenizer.from_pretrained(kit.model_dir),
                          config=config)  # fmt: skip
    assert len(dataset) == 64  # configs/kit/chain_cpu.yaml's max_prompt_length fits every prompt
    with pytest.raises(ValueError, match="kit task 'mul' does not exist; choose one of \\['add', 'chain'\\]"):
        get_task("mul")


def test_the_warm_start_log_says_when_its_targets_turn_noisy():
    """The loss jumps where the warm start switches to noisy targets (by design); the log says so
    at that step and nowhere else, so a new user does not read the jump as an instability."""
    import dataclasses

    from maspo_verl.kit.model import make_model, warm_start
    from maspo_verl.kit.tasks import get_task

    settings = KitSettings.for_task("add")
    recipe = dataclasses.replace(settings.recipe, steps=8, batch_size=4, clean_steps_fraction=0.5)
    tokenizer = build_tokenizer()
    train, _ = get_task("add").split_problems(0, 16)
    lines = []
    warm_start(make_model(tokenizer, settings.shape), tokenizer, train[:64], recipe, seed=0, log=lines.append)
    noisy = [line for line in lines if "turn noisy" in line]
    assert noisy == [next(line for line in lines if line.startswith("warm start step 4:") and "noisy" in line)]
    clean = dataclasses.replace(recipe, clean_steps_fraction=1.0)
    lines.clear()
    warm_start(make_model(tokenizer, settings.shape), tokenizer, train[:64], clean, seed=0, log=lines.append)
    assert not any("noisy" in line for line in lines)


def _build_small_kit(root, queue):
    from maspo_verl.kit import KitSettings, WarmStartRecipe, build_kit

    settings = KitSettings(recipe=WarmStartRecipe(steps=3, batch_size=4), val_size=8)
    lines = []
    kit = build_kit(root=root, settings=settings, log=lines.append)
    queue.put((any("warm start" in line for line in lines), kit.info["fingerprint"]))


def test_two_processes_asking_for_the_same_kit_build_it_once(tmp_path):
    """Test workers (pytest-xdist) or runs that ask for the kit together: one builds, the other
    waits for it and reads the finished kit."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [context.Process(target=_build_small_kit, args=(tmp_path / "kit", queue)) for _ in range(2)]
    for worker in workers:
        worker.start()
    outcomes = [queue.get(timeout=300) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
    assert sorted(built for built, _ in outcomes) == [False, True]
    assert outcomes[0][1] == outcomes[1][1]
    assert read_marker(tmp_path / "kit") is not None
