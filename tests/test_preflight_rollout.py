"""The vLLM server's context length (maspo_verl/preflight/rollout.py).

vLLM does not run on CPU, and verl's vLLM server module does not import without it, so the test
runs verl's own `_validate_configs` lifted from its source (the function as verl ships it, with
its two module-level helpers stubbed) on a RolloutConfig verl builds: the settings preflight
refuses are the ones that kill the server there, and the others pass it.
"""

import ast
import dataclasses
import functools
import logging
from types import SimpleNamespace

import pytest
import verl  # noqa: F401
import verl_reads
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf, open_dict

from maspo_verl.preflight.rollout import check_rollout_lengths

RECIPES = {"paper_1p5b": 10240, "paper_7b": 10240, "paper_14b": 22528}
ROLLOUT = "actor_rollout_ref.rollout"


@functools.cache
def _composed(*overrides):
    with initialize_config_module(config_module="maspo_verl_configs", version_base=None):
        return compose("maspo_trainer", overrides=list(overrides))


def _config(recipe="paper_7b", **rollout):
    config = OmegaConf.create(OmegaConf.to_container(_composed(f"recipe={recipe}", "algorithm=grpo")))
    with open_dict(config):
        for key, value in rollout.items():
            OmegaConf.update(config, f"{ROLLOUT}.{key}", value, force_add=True)
    return config


@functools.cache
def _verls_validate_configs():
    """verl's vLLMHttpServer._validate_configs, compiled from its source."""
    path = verl_reads.ROOT / "workers" / "rollout" / "vllm_rollout" / "vllm_async_server.py"
    tree = ast.parse(path.read_text())
    function = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "_validate_configs")
    namespace = {"get_max_position_embeddings": lambda hf_config: hf_config.max_position_embeddings,
                 "logger": logging.getLogger("verl_vllm_server")}  # fmt: skip
    exec(compile(ast.Module(body=[function], type_ignores=[]), str(path), "exec"), namespace)
    return namespace["_validate_configs"]


def _start_verls_server(config):
    """What verl's vLLM server does with the config at start: builds the RolloutConfig and validates
    it against the model (the recipes' models: 131,072 positions). Returns the max_model_len it uses."""
    from verl.utils.config import omega_conf_to_dataclass

    resolved = OmegaConf.to_container(config, resolve=True)
    rollout = omega_conf_to_dataclass(OmegaConf.create(resolved["actor_rollout_ref"]["rollout"]))
    server = SimpleNamespace(config=rollout, model_config=SimpleNamespace(hf_config=SimpleNamespace(max_position_embeddings=131072)))  # fmt: skip
    _verls_validate_configs()(server)
    return rollout.max_model_len


@pytest.mark.parametrize("recipe,length", RECIPES.items())
def test_every_recipe_sets_max_model_len_to_prompt_plus_response(recipe, length):
    config = _config(recipe)
    assert config.actor_rollout_ref.rollout.max_model_len == length
    assert length == config.data.max_prompt_length + config.data.max_response_length
    check_rollout_lengths(config)
    assert _start_verls_server(config) == length  # not the model's 131,072


@pytest.mark.parametrize(
    "rollout,message",
    [
        ({"max_model_len": 8192}, r"rollout\.max_model_len=8192 is below .* = 10240: .*Set .*max_model_len=10240"),
        (
            {"enable_chunked_prefill": False, "max_model_len": None},
            r"enable_chunked_prefill=False with .*max_model_len unset is not allowed.*max_model_len=10240",
        ),
        (
            {"enable_chunked_prefill": False, "max_num_batched_tokens": 8192},
            r"max_num_batched_tokens=8192 below .*max_model_len=10240 is not allowed.*>= 10240",
        ),
    ],
)
def test_a_context_the_server_dies_on_or_cuts_with_is_refused(rollout, message):
    config = _config(**rollout)
    with pytest.raises(ValueError, match=message):
        check_rollout_lengths(config)


@pytest.mark.parametrize(
    "rollout",
    [
        {"enable_chunked_prefill": False, "max_model_len": None},
        {"enable_chunked_prefill": False, "max_num_batched_tokens": 8192},
    ],
)
def test_verls_server_dies_on_what_preflight_refuses(rollout):
    with pytest.raises(dataclasses.FrozenInstanceError, match="max_num_batched_tokens"):
        _start_verls_server(_config(**rollout))


@pytest.mark.parametrize(
    "rollout",
    [{}, {"enable_chunked_prefill": False, "max_num_batched_tokens": 10240}, {"max_model_len": 16384}],
)
def test_verls_server_starts_with_what_preflight_lets_through(rollout):
    config = _config(**rollout)
    check_rollout_lengths(config)
    _start_verls_server(config)


def test_only_the_vllm_rollout_is_checked():
    check_rollout_lengths(_config(name="hf", max_model_len=16))
