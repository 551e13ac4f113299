"""verl's whole worker graph with TWO data-parallel ranks on CPU (`+kit=tiny_cpu_dp2`): two FSDP2
actor workers sharding the model over a gloo group, one hf rollout replica per rank, each
receiving its own rank's weight sync, validation, a checkpoint written by both ranks and
resumed by both, and verl's reference worker feeding a KL loss.

Two trainer launches (about a minute each on 2 cores, sharing nothing but the checkpoint):
`maspo` for two steps with validation and a checkpoint, then its resumption for two more steps
with `bapo` (whose statistic is summed over the data-parallel group) and `use_kl_loss=True`. Every loss's data-parallel invariance is proven in-process by
tests/test_dp_invariance.py; these runs prove that the trainer really runs two ranks.
"""

import asyncio
import math
import re
from types import SimpleNamespace

import pytest
import torch
import verl  # noqa: F401  (registers our plugin, the Hydra search path and the kit resolver)
from test_e2e_kit import run_trainer

from expected import MASPO_METRICS
from maspo_verl.launch import REWARD
from maspo_verl.quickstart import VAL_ACC

KIT = "tiny_cpu_dp2"
STALENESS = "training/off_policy/trajectory_staleness/max"


# ----------------------------------------------------------------------------- no trainer


def test_the_dp2_preset_passes_preflight_with_two_ranks_and_two_replicas():
    """The preset composes over tiny_cpu and satisfies verl's divisibility rules for 2 ranks,
    with and without the reference worker (checked before Ray starts)."""
    from maspo_verl.preflight import check_batch_sizes

    for extra in ([], ["actor_rollout_ref.actor.use_kl_loss=True"]):
        config = compose_kit(f"+kit={KIT}", "algorithm=maspo", *extra)
        assert config.trainer.n_gpus_per_node == 2 and config.ray_kwargs.ray_init.num_gpus == 2
        assert config.actor_rollout_ref.rollout.name == "hf"  # everything else comes from tiny_cpu
        summary = check_batch_sizes(config)
        assert summary["dp"] == 2 and summary["rollout_replicas"] == 2
        # two micro-batches per rank and mini-batch: accumulation and global batch info both matter
        per_rank = config.actor_rollout_ref.actor.ppo_mini_batch_size * config.actor_rollout_ref.rollout.n // 2
        assert per_rank // config.actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu == 2


def compose_kit(*overrides):
    """`python -m maspo_verl.main_ppo <overrides>`'s config as the preset leaves it (unresolved:
    resolving would build the kit), without the test helpers' own batch-size overrides."""
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="maspo_verl_configs", version_base=None):
        return compose("maspo_trainer", overrides=list(overrides))


class _FakeServer:
    """Stands in for one HFRolloutServer actor handle: records what reaches it."""

    def __init__(self):
        self.tensors, self.steps = {}, []

    def _remote(self, fn):
        async def call(*args, **kwargs):
            return fn(*args, **kwargs)

        return SimpleNamespace(remote=call)

    def __getattr__(self, name):
        handlers = {
            "update_weights": lambda bucket: self.tensors.update(bucket) or len(bucket),
            "set_global_steps": self.steps.append,
            "clear_kv_cache": lambda: None,
        }
        return self._remote(handlers[name])


def test_each_ranks_adapter_syncs_weights_to_its_own_replica(monkeypatch):
    """Rank r's adapter finds server `hf_server_r_0` (the replica built from worker r) and
    streams the full tensors there, so every replica generates with the current weights."""
    from maspo_verl.rollout import hf_adapter
    from maspo_verl.rollout.hf_replica import server_actor_name

    servers = {server_actor_name(rank): _FakeServer() for rank in range(2)}
    monkeypatch.setattr(hf_adapter.ray, "get_actor", lambda name: servers[name])
    config = SimpleNamespace(
        checkpoint_engine=SimpleNamespace(update_weights_bucket_megabytes=1), free_cache_engine=False
    )
    weights = {"w": torch.arange(6.0), "b": torch.ones(3)}
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        adapter = hf_adapter.HFServerAdapter(config, SimpleNamespace(), None)
        asyncio.run(adapter.update_weights(iter(weights.items()), global_steps=5 + rank))
    for rank in range(2):
        server = servers[server_actor_name(rank)]
        assert server.steps == [5 + rank]
        assert set(server.tensors) == set(weights)
        torch.testing.assert_close(server.tensors["w"], weights["w"])


@pytest.mark.skipif(torch.accelerator.is_available(), reason="pinning works where there is an accelerator")
def test_the_cpu_platform_lets_fsdp2_offload_without_pinning(monkeypatch):
    """verl wraps the reference policy in CPUOffloadPolicy(pin_memory=True); pinning needs an
    accelerator, so without one the CPU platform turns it off (else use_kl_loss cannot start)."""
    from torch.distributed.fsdp import CPUOffloadPolicy

    from maspo_verl.cpu_platform import register_cpu_platform

    monkeypatch.setenv("VERL_ENGINE_DEVICE", "cuda")
    register_cpu_platform()()
    assert CPUOffloadPolicy(pin_memory=True).pin_memory is False
    assert CPUOffloadPolicy().pin_memory is False


# ----------------------------------------------------------------------------- trainer runs


def assert_every_step_trained_on_current_weights(steps: dict, step_ids) -> None:
    for step in step_ids:
        data = steps[step]
        assert 0 <= data[REWARD] <= 1
        assert data["critic/advantages/max"] > 0 > data["critic/advantages/min"]
        assert math.isfinite(data["actor/pg_loss"]) and math.isfinite(data["actor/grad_norm"])
        # every sample came from a replica holding the weights of the previous update: a replica
        # whose rank never synced it would still report an older version here
        assert data[STALENESS] == 0, (step, data[STALENESS])


@pytest.fixture(scope="module")
def dp2_maspo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("dp2_maspo")
    steps = run_trainer(
        out, "algorithm=maspo", "trainer.total_training_steps=2", "trainer.test_freq=2", "trainer.save_freq=2",
        "trainer.val_before_train=False", kit=KIT,
    )  # fmt: skip
    return out, steps


@pytest.mark.e2e
def test_two_ranks_train_and_validate_with_maspo(dp2_maspo_run):
    out, steps = dp2_maspo_run
    assert sorted(steps) == [1, 2]
    assert_every_step_trained_on_current_weights(steps, (1, 2))
    for step in (1, 2):
        assert all(math.isfinite(steps[step][key]) for key in MASPO_METRICS)
    assert 0 < steps[2][VAL_ACC] < 1
    log = (out / "train.log").read_text()
    # two rollout servers (one per replica), and both actor ranks wrote their checkpoint part
    assert len(set(re.findall(r"\(HFRolloutServer pid=(\d+)\)", log))) == 2
    for rank in range(2):
        assert re.search(rf"\[Rank {rank}\] Saved model to \S*model_world_size_2_rank_{rank}\.pt", log), rank


@pytest.mark.e2e
def test_both_ranks_save_their_own_shard_of_the_model(dp2_maspo_run):
    out, _ = dp2_maspo_run
    actor = out / "checkpoints" / "global_step_2" / "actor"
    assert (out / "checkpoints" / "latest_checkpointed_iteration.txt").read_text().strip() == "2"
    shards = [torch.load(actor / f"model_world_size_2_rank_{rank}.pt", weights_only=False) for rank in range(2)]
    for rank in range(2):
        assert (actor / f"optim_world_size_2_rank_{rank}.pt").is_file()
    assert shards[0].keys() == shards[1].keys()
    for name, tensor in shards[0].items():
        # FSDP2 shards every parameter on dim 0 over the two ranks: two different halves of it
        local = [shard[name].to_local() for shard in shards]
        assert local[0].shape[0] + local[1].shape[0] == tensor.shape[0], name
    total = sum(t.numel() for t in shards[0].values())
    held = [sum(t.to_local().numel() for t in shard.values()) for shard in shards]
    assert all(0.4 * total < count < 0.6 * total for count in held), (held, total)


@pytest.fixture(scope="module")
def dp2_resumed_run(dp2_maspo_run):
    """The maspo run resumed for two more steps, now with `bapo` and a KL loss against the
    reference policy: the checkpoint holds the actor and its optimizer, which do not depend on
    the loss, and the reference worker loads the initial model, not the checkpoint."""
    out, _ = dp2_maspo_run
    steps = run_trainer(
        out, "algorithm=bapo", "actor_rollout_ref.actor.use_kl_loss=True", "trainer.total_training_steps=4",
        "trainer.resume_mode=auto", "trainer.val_before_train=False", "trainer.test_freq=-1", kit=KIT,
    )  # fmt: skip
    return out, steps


@pytest.mark.e2e
def test_both_ranks_resume_from_the_checkpoint(dp2_resumed_run):
    out, resumed = dp2_resumed_run
    assert sorted(resumed) == [3, 4]
    assert_every_step_trained_on_current_weights(resumed, (3, 4))
    log = (out / "train.log").read_text()
    assert re.search(r"Resuming from \S*global_step_2", log)
    for rank in range(2):
        assert re.search(rf"\[Rank {rank}\] Loaded model from \S*model_world_size_2_rank_{rank}\.pt", log), rank
        assert re.search(rf"\[Rank {rank}\] Loaded optimizer from \S*optim_world_size_2_rank_{rank}\.pt", log), rank


@pytest.mark.e2e
def test_reference_worker_feeds_a_kl_loss_and_bapo_sums_over_two_ranks(dp2_resumed_run):
    """use_kl_loss=True: verl builds the reference policy, computes ref_log_prob every step, and
    the actor's KL loss against it is logged, positive from the first resumed step (the actor
    trained for two steps, the reference did not) and moving; BAPO sums its balance statistic
    over the two ranks inside the trainer (a rank-local choice would raise without the group)."""
    _, steps = dp2_resumed_run
    kl = [steps[step]["actor/kl_loss"] for step in (3, 4)]
    assert all(math.isfinite(value) and value > 0 for value in kl) and kl[1] != kl[0], kl
    for step in (3, 4):
        data = steps[step]
        assert data["timing_s/ref"] > 0  # the reference worker's log-prob pass ran
        assert "actor/maspo/gate_mean" not in data  # the resumed run trains with bapo
        assert 0.6 - 1e-6 <= data["actor/bapo/c_low"] <= 0.9 + 1e-6
        assert 1.2 - 1e-6 <= data["actor/bapo/c_high"] <= 3.0 + 1e-6
