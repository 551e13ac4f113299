"""The vLLM server's context length, checked before Ray starts.

verl 0.9.1's vLLM server (`vllm_async_server.py`, `_validate_configs` and `generate`):

* with `rollout.max_model_len` unset, sets it to the model's `max_position_embeddings` (131,072
  for the paper recipes' models);
* with `enable_chunked_prefill=false` and `max_num_batched_tokens < max_model_len`, writes
  `max_num_batched_tokens = max_model_len` into the RolloutConfig, where that field is frozen:
  the server dies at start (FrozenInstanceError), after Ray and the models are up;
* caps each response at `max_model_len - prompt length` tokens, so a `max_model_len` below
  `data.max_prompt_length + data.max_response_length` cuts long responses short without an error.

The paper recipes set `max_model_len` to prompt + response; this module refuses the settings
above, naming the keys and the value that works.
"""

from __future__ import annotations

ROLLOUT = "actor_rollout_ref.rollout"


def check_rollout_lengths(config) -> None:
    """Refuse a vLLM context length the server would die on or that would cut responses short."""
    rollout = config.actor_rollout_ref.rollout
    if rollout.get("name") != "vllm":
        return
    longest = config.data.max_prompt_length + config.data.max_response_length
    lengths = (
        f"data.max_prompt_length + data.max_response_length = {config.data.max_prompt_length} + "
        f"{config.data.max_response_length} = {longest}"
    )
    max_model_len, batched = rollout.get("max_model_len"), rollout.get("max_num_batched_tokens")
    if max_model_len is not None and max_model_len < longest:
        raise ValueError(
            f"{ROLLOUT}.max_model_len={max_model_len} is below {lengths}: verl's vLLM server caps each response "
            f"at max_model_len minus its prompt, so long responses would be cut short without an error. "
            f"Set {ROLLOUT}.max_model_len={longest}."
        )
    if rollout.get("enable_chunked_prefill", True):
        return
    if max_model_len is None:
        raise ValueError(
            f"{ROLLOUT}.enable_chunked_prefill=False with {ROLLOUT}.max_model_len unset is not allowed: verl's vLLM "
            "server then sets max_model_len to the model's max_position_embeddings and, to prefill whole prompts, "
            "raises max_num_batched_tokens to it, a frozen field of its RolloutConfig, so the server dies at start. "
            f"Set {ROLLOUT}.max_model_len={longest} ({lengths}) and {ROLLOUT}.max_num_batched_tokens to at least "
            f"that, or {ROLLOUT}.enable_chunked_prefill=True."
        )
    if batched < max_model_len:
        raise ValueError(
            f"{ROLLOUT}.enable_chunked_prefill=False with {ROLLOUT}.max_num_batched_tokens={batched} below "
            f"{ROLLOUT}.max_model_len={max_model_len} is not allowed: without chunked prefill a whole prompt must fit "
            "in one batch, and verl's vLLM server's attempt to raise max_num_batched_tokens to max_model_len hits a "
            f"frozen field of its RolloutConfig, so the server dies at start. Allowed: {ROLLOUT}."
            f"max_num_batched_tokens >= {max_model_len}, or {ROLLOUT}.enable_chunked_prefill=True."
        )


def rollout_lengths_step(config, found: dict, dry_run: bool) -> dict:
    check_rollout_lengths(config)
    return {}
