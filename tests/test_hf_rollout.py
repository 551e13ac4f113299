"""The ``hf`` rollout backend: registration and the server's generate/weight-sync contract.
Its end-to-end runs inside verl's trainer are in test_e2e_kit.py."""

import asyncio

import pytest
import torch
from verl.plugin.platform import platform_manager as pm
from verl.workers.rollout import base as rollout_base
from verl.workers.rollout.replica import TokenOutput, get_rollout_replica_class

from maspo_verl.cpu_platform import register_cpu_platform
from maspo_verl.rollout import register_hf_rollout
from maspo_verl.rollout.hf_server import HFRolloutServer, resolve_gen_params

# ---------------------------------------------------------------- registration


def test_register_hf_rollout_is_idempotent_and_resolvable():
    assert register_hf_rollout() == "hf" and register_hf_rollout() == "hf"
    from maspo_verl.rollout.hf_adapter import HFServerAdapter
    from maspo_verl.rollout.hf_replica import HFReplica

    assert rollout_base.get_rollout_class("hf", "async") is HFServerAdapter
    assert get_rollout_replica_class("hf") is HFReplica


def test_register_hf_rollout_never_replaces_a_foreign_hf(monkeypatch):
    monkeypatch.setitem(rollout_base._ROLLOUT_REGISTRY, ("hf", "async"), "someone.else.Adapter")
    with pytest.warns(UserWarning, match="already has a rollout named 'hf'"):
        assert register_hf_rollout() is None
    assert rollout_base._ROLLOUT_REGISTRY[("hf", "async")] == "someone.else.Adapter"


# ---------------------------------------------------------------- sampling params


class _Cfg:
    prompt_length, response_length, repetition_penalty, ignore_eos = 16, 8, 1.0, False


def test_sampling_params_follow_the_vllm_server():
    p = resolve_gen_params({"temperature": 0.0, "top_p": 1.0, "top_k": -1}, prompt_len=10, config=_Cfg)
    assert (p.max_new_tokens, p.do_sample, p.top_k) == (8, False, 0)
    p = resolve_gen_params({"temperature": 0.7, "top_k": 5, "max_tokens": 3, "logprobs": True}, 10, _Cfg)
    assert (p.max_new_tokens, p.do_sample, p.temperature, p.top_k, p.logprobs) == (3, True, 0.7, 5, True)
    # response budget: prompt_length + response_length - len(prompt), at least 1
    assert resolve_gen_params({}, prompt_len=20, config=_Cfg).max_new_tokens == 4
    assert resolve_gen_params({}, prompt_len=40, config=_Cfg).max_new_tokens == 1


# ---------------------------------------------------------------- the server, in-process on CPU


@pytest.fixture
def server(tiny_model_dir, monkeypatch):
    """An ``HFRolloutServer`` (not a Ray actor) on verl's cpu platform."""
    from verl.workers.config import HFModelConfig, RolloutConfig

    monkeypatch.setattr(pm, "_current_platform", register_cpu_platform()())
    config = RolloutConfig(
        name="hf", prompt_length=16, response_length=8, tensor_model_parallel_size=1,
        dtype="float32", load_format="auto",
    )  # fmt: skip
    srv = HFRolloutServer(config, HFModelConfig(path=str(tiny_model_dir)), None, [], 0, 0, 1, 1, "")
    asyncio.run(srv.launch_server())
    return srv


def _prompt(server, text="3+4="):
    tok = server.model_config.tokenizer
    return tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True)[
        "input_ids"
    ]


def _generate(server, prompts, **params):
    async def run():
        return await asyncio.gather(
            *[server.generate(p, dict(params), request_id=str(i)) for i, p in enumerate(prompts)]
        )

    return asyncio.run(run())


def test_generate_returns_token_output_with_logprobs(server):
    prompts = [_prompt(server, f"{a}+{a}=") for a in range(6)]
    outs = _generate(server, prompts, temperature=1.0, top_p=1.0, top_k=-1, logprobs=True)
    for out in outs:
        assert isinstance(out, TokenOutput) and 1 <= len(out.token_ids) <= 8
        assert len(out.log_probs) == len(out.token_ids) and all(lp <= 0 for lp in out.log_probs)


def test_logprobs_are_the_models_own(server):
    """At temperature 1 with no top-k/top-p, the returned log-probs are the model's."""
    prompt = _prompt(server)
    (out,) = _generate(server, [prompt], temperature=1.0, top_p=1.0, top_k=-1, logprobs=True)
    ids = torch.tensor([prompt + out.token_ids])
    with torch.no_grad():
        logp = torch.log_softmax(server.model(ids).logits[0, len(prompt) - 1 : -1].float(), dim=-1)
    expected = logp.gather(-1, torch.tensor(out.token_ids)[:, None]).squeeze(-1)
    assert torch.allclose(torch.tensor(out.log_probs), expected, atol=1e-4)


def test_greedy_is_deterministic_and_honours_max_tokens(server):
    prompt = _prompt(server)
    a, b = _generate(server, [prompt, prompt], temperature=0.0, top_p=1.0, top_k=-1)
    assert a.token_ids == b.token_ids and a.log_probs is None
    (short,) = _generate(server, [prompt], temperature=0.0, max_tokens=3)
    assert short.token_ids == a.token_ids[:3]


def test_eos_ends_a_response_and_is_kept(server):
    eos = server._eos_ids[0]
    assert server._trim(torch.tensor([5, eos, 7, 7]), None) == ([5, eos], None)


def test_update_weights_loads_the_actors_tensors_including_tied_names(server):
    emb = server.model.get_input_embeddings().weight
    new = torch.randn_like(emb)
    loaded = asyncio.run(server.update_weights([("lm_head.weight", new)], global_steps=3))
    assert loaded == 1 and torch.equal(emb, new) and server.global_steps == 3
    (out,) = _generate(server, [_prompt(server)], temperature=0.0)
    assert out.extra_fields["global_steps"] == 3


def test_abort_holds_requests_until_resume(server):
    async def run():
        await server.abort_all_requests()
        task = asyncio.ensure_future(server.generate(_prompt(server), {"temperature": 0.0}, request_id="x"))
        await asyncio.sleep(0.05)
        held = not task.done()
        await server.resume_generation()
        return held, await task

    held, out = asyncio.run(run())
    assert held and out.token_ids


def test_drain_waits_for_the_batch_in_flight(server, monkeypatch):
    """The queue empties as soon as a batch is taken; draining must also wait for that batch."""
    import threading

    release = threading.Event()
    generate_batch = server._generate_batch

    def slow_generate_batch(prompts, params):
        release.wait(timeout=10)
        return generate_batch(prompts, params)

    monkeypatch.setattr(server, "_generate_batch", slow_generate_batch)

    async def run():
        task = asyncio.ensure_future(server.generate(_prompt(server), {"temperature": 0.0}, request_id="d"))
        await asyncio.sleep(0.05)  # the batch loop has taken it: the queue is empty
        assert server._queue.empty()
        drain = asyncio.ensure_future(server.wait_for_requests_to_drain())
        await asyncio.sleep(0.1)
        drained_early = drain.done()
        release.set()
        await asyncio.wait_for(drain, timeout=10)
        return drained_early, task.done(), await task

    drained_early, done_when_drained, out = asyncio.run(run())
    assert not drained_early and done_when_drained and out.token_ids


# ---------------------------------------------------------------- gathering requests into one batch


def _batch_sizes(server, monkeypatch):
    sizes = []
    generate_batch = server._generate_batch

    def counting(prompts, params):
        sizes.append(len(prompts))
        return generate_batch(prompts, params)

    monkeypatch.setattr(server, "_generate_batch", counting)
    return sizes


def _trickle(server, count, gap_s):
    """`count` requests sent `gap_s` apart, as verl's agent loop sends a rollout's samples."""

    async def run():
        tasks = []
        for i in range(count):
            tasks.append(
                asyncio.ensure_future(server.generate(_prompt(server), {"temperature": 1.0}, request_id=str(i)))
            )
            await asyncio.sleep(gap_s)
        return await asyncio.gather(*tasks)

    return asyncio.run(run())


def test_requests_that_keep_coming_are_generated_in_one_batch(server, monkeypatch):
    sizes = _batch_sizes(server, monkeypatch)
    outs = _trickle(server, 12, gap_s=0.003)  # well inside the 15 ms gathering interval
    assert sizes == [12] and all(out.token_ids for out in outs)


def test_a_quiet_interval_closes_the_batch(server, monkeypatch):
    server._gather_s = 0.005
    sizes = _batch_sizes(server, monkeypatch)
    _trickle(server, 3, gap_s=0.1)  # each request comes after the previous batch closed
    assert sizes == [1, 1, 1]


def test_gathering_stops_at_the_longest_wait_and_at_max_num_seqs(server, monkeypatch):
    sizes = _batch_sizes(server, monkeypatch)
    server._gather_s, server._max_gather_s = 0.05, 0.05
    _trickle(server, 6, gap_s=0.02)  # would keep the batch open forever without the longest wait
    assert len(sizes) >= 2 and sum(sizes) == 6
    sizes.clear()
    server._gather_s, server._max_gather_s, server._batch_cap = 0.05, 1.0, 4
    _trickle(server, 10, gap_s=0.001)
    assert max(sizes) == 4 and sum(sizes) == 10


def test_a_row_samples_the_same_in_a_batch_as_alone(server):
    """Which requests share a batch does not change a row's distribution: greedy is the same
    token-for-token, and with sampling each row's log-probs are its own prompt's."""
    prompts = [_prompt(server, f"{a}+{a + 3}=") for a in range(8)]
    alone = [_generate(server, [p], temperature=0.0)[0].token_ids for p in prompts]
    together = [out.token_ids for out in _generate(server, prompts, temperature=0.0)]
    assert together == alone


def test_gather_settings_are_read_from_engine_kwargs_and_checked():
    from maspo_verl.rollout.hf_server import GATHER_MS, MAX_GATHER_MS, gather_window

    assert gather_window({}) == (GATHER_MS / 1000, MAX_GATHER_MS / 1000)
    assert gather_window({"vllm": {}, "hf": {"gather_ms": 0, "max_gather_ms": 20}}) == (0.0, 0.02)
    with pytest.raises(ValueError, match=r"engine_kwargs\.hf\.gather_ms=-1 is not allowed"):
        gather_window({"hf": {"gather_ms": -1}})
    with pytest.raises(ValueError, match=r"engine_kwargs\.hf\.max_gather_ms='a lot' is not allowed"):
        gather_window({"hf": {"max_gather_ms": "a lot"}})
    with pytest.raises(ValueError, match=r"engine_kwargs\.hf\.gather_s .*reads gather_ms and max_gather_ms"):
        gather_window({"hf": {"gather_s": 0.1}})


# ---------------------------------------------------------------- the server's own seeded stream


def test_sampling_follows_rollout_seed_and_leaves_the_global_generator_alone(tiny_model_dir, monkeypatch):
    """Like vLLM's engine, the server samples from rollout.seed (+ its replica's rank): the same
    seed and batch give the same tokens, another seed other tokens, and the process's global
    random state is not touched (tests and the agent loop share it)."""
    from verl.workers.config import HFModelConfig, RolloutConfig

    monkeypatch.setattr(pm, "_current_platform", register_cpu_platform()())

    def sampled(seed, replica_rank=0):
        config = RolloutConfig(name="hf", prompt_length=16, response_length=8, tensor_model_parallel_size=1,
                               dtype="float32", load_format="auto", seed=seed)  # fmt: skip
        srv = HFRolloutServer(config, HFModelConfig(path=str(tiny_model_dir)), None, [], replica_rank, 0, 1, 1, "")
        asyncio.run(srv.launch_server())
        prompts = [_prompt(srv, f"{a}+{a}=") for a in range(16)]
        first = [o.token_ids for o in _generate(srv, prompts, temperature=1.0)]
        second = [o.token_ids for o in _generate(srv, prompts, temperature=1.0)]
        return first, second

    torch.manual_seed(123)
    before = torch.get_rng_state()
    a_first, a_second = sampled(seed=7)
    assert torch.equal(torch.get_rng_state(), before), "the global generator was used or reseeded"
    b_first, b_second = sampled(seed=7)
    assert (a_first, a_second) == (b_first, b_second)  # reproducible, and the stream moves on between calls
    assert a_first != a_second
    c_first, _ = sampled(seed=8)
    assert c_first != a_first
    assert sampled(seed=7, replica_rank=1)[0] == c_first  # seed + rank, as verl seeds vLLM's replicas
