"""Where maspo-verl relies on verl internals that verl does not promise as an API.

Each function names what it depends on; each raises a RuntimeError naming the broken
assumption as soon as an installed verl differs, instead of failing later or silently.

* ``install_ppo_loss_hook``: verl 0.9.1's actor loss is ``verl.workers.utils.losses.ppo_loss``
  with signature ``(config, model_output, data, dp_group=None)``, bound by name in
  ``verl.workers.engine_workers`` (``partial(ppo_loss, config=...)`` in ``init_model``) and in
  ``verl.trainer.distillation.losses``. We replace that name in those modules with
  ``wrap(ppo_loss)`` (registration passes ``maspo_verl.hook.hooked_ppo_loss``); the engine
  workers build their loss function after our plugin ran (``import verl`` loads it), so they
  bind the wrapper. ``ppo_loss`` finds the policy loss through ``get_policy_loss_fn``, bound by
  name in its module; we bind ``measure(get_policy_loss_fn)`` there (registration passes
  ``maspo_verl.hook.measured_lookup``), so that every policy loss (verl's and ours) is measured
  the same way (``maspo_verl.loss_metrics``).
* ``aggregation_weights``: how much ``agg_loss`` weighs each token, for the loss-side metrics;
  it knows which of verl 0.9.1's losses ignore the actor's ``loss_agg_mode`` (``sapo`` always
  aggregates seq-mean-token-mean; ``geo_mean`` takes the plain mean of each sequence's token
  mean over the micro-batch, without the global batch sizes).
* ``padded_response`` / ``to_data_layout``: verl's padding helpers for the engine's
  no-padding (jagged) micro-batches.
* ``verl_metric``: verl's ``Metric``, aggregated over micro-batches and ranks.
* ``rollout_adapter_registry`` / ``replica_loader``: verl 0.9.1 has two rollout registries. The
  worker-side one, ``verl.workers.rollout.base._ROLLOUT_REGISTRY``, is a private dict keyed by
  ``(name, mode)`` with the adapter's dotted path as value (no public API); the trainer-side
  ``RolloutReplicaRegistry`` has a public ``register`` but its storage ``_registry`` is private
  (we read it to tell our loader from a foreign one).
* ``register_hydra_plugin``: Hydra finds search-path plugins by scanning the ``hydra_plugins``
  namespace package, which an editable install hides; ``Plugins.instance().register`` is
  Hydra's internal way in.
* ``run_verl_main`` / ``release_placement_groups``: verl's ``main_ppo.main`` reuses an initialised
  Ray session, and leaves the placement groups its workers reserved (Ray removes them only when
  the job ends); several runs in one session release them in between. ``ray_init_with_env``:
  verl's ``run_ppo`` prints its ``ray.init`` arguments, then calls ``ray.init`` through the
  ``ray`` module, where variables that must not be printed (a tracker's key) join them.
* ``verl_default_config`` and the tables beside it (``UNREAD_CONFIG_FIELDS``,
  ``UNREAD_TRAINER_KEYS``, ``TRAINER_KEYS_BEYOND_YAML``, ``REF_RENAMED_KEYS``): what verl 0.9.1
  reads of its config (``maspo_verl/preflight/keys.py`` refuses what it does not);
  ``tests/test_preflight_keys.py`` derives them from verl's source and fails when a release changes them.

Elsewhere, and checked by ``tests/test_compat.py`` (each check names its assumption):
the ``hf`` rollout server answers the calls verl's replica and LLM server manager make on
vLLM's server (``maspo_verl/rollout/hf_server.py``); ``HFReplica`` reads attributes that verl's
``RolloutReplica.__init__`` sets; the CPU platform implements verl's ``PlatformBase`` and relies
on the FSDP engine being looked up by ``VERL_ENGINE_DEVICE``; the kit's replay buffer passes
keyword arguments to verl's v1 ``ReplayBuffer`` and is selected by the v1 trainer's
``custom_sampler``; the kit presets set TransferQueue's ``SimpleStorage`` unit count.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
from pathlib import Path

import torch

PPO_LOSS_HOME = "verl.workers.utils.losses"
PPO_LOSS_USERS = ("verl.workers.engine_workers", "verl.trainer.distillation.losses")
PPO_LOSS_PARAMETERS = ["config", "model_output", "data", "dp_group"]
POLICY_LOSS_LOOKUP = "get_policy_loss_fn"  # how PPO_LOSS_HOME's ppo_loss finds the policy loss


def install_ppo_loss_hook(wrap, measure) -> None:
    """Put ``wrap(ppo_loss)`` in place of verl's ``ppo_loss`` wherever verl binds it, and
    ``measure(get_policy_loss_fn)`` where that ppo_loss looks its policy loss up (idempotent).

    Both return functions marked ``_maspo_verl_hook = True``; ``wrap``'s keeps verl's original as
    ``_maspo_verl_wrapped`` (``maspo_verl.hook.hooked_ppo_loss`` and ``measured_lookup`` do). Taking
    them as arguments keeps this module below the hook, which uses compat's padding helpers.
    """
    home = importlib.import_module(PPO_LOSS_HOME)
    original = getattr(home, "ppo_loss", None)
    if original is None:
        raise RuntimeError(f"maspo-verl: {PPO_LOSS_HOME}.ppo_loss is gone; advantage shapers and BAPO need it")
    original = getattr(original, "_maspo_verl_wrapped", original)
    parameters = list(inspect.signature(original).parameters)
    if parameters != PPO_LOSS_PARAMETERS:
        raise RuntimeError(
            f"maspo-verl: {PPO_LOSS_HOME}.ppo_loss takes {parameters}, not {PPO_LOSS_PARAMETERS} as in verl 0.9.1"
        )
    wrapper = wrap(original)
    for name in (PPO_LOSS_HOME, *PPO_LOSS_USERS):
        module = importlib.import_module(name)
        bound = getattr(module, "ppo_loss", None)
        if bound is None:
            raise RuntimeError(f"maspo-verl: {name} no longer binds ppo_loss by name; the loss hook cannot reach it")
        if getattr(bound, "_maspo_verl_hook", False):
            continue
        if bound is not original:
            raise RuntimeError(
                f"maspo-verl: {name}.ppo_loss is not verl's {PPO_LOSS_HOME}.ppo_loss; refusing to wrap it"
            )
        module.ppo_loss = wrapper
    _install_measured_lookup(home, measure)


def _install_measured_lookup(home, measure) -> None:
    """Bind ``measure(get_policy_loss_fn)`` where verl's ppo_loss looks its policy loss up."""
    from verl.trainer.ppo import core_algos

    bound = getattr(home, POLICY_LOSS_LOOKUP, None)
    if getattr(bound, "_maspo_verl_hook", False):
        return
    if bound is not core_algos.get_policy_loss_fn:
        raise RuntimeError(
            f"maspo-verl: {PPO_LOSS_HOME} no longer binds verl's core_algos.{POLICY_LOSS_LOOKUP} by name; the "
            "loss-side metrics (actor/pg_weight/*, actor/ratio/*) cannot see the policy loss"
        )
    setattr(home, POLICY_LOSS_LOOKUP, measure(bound))


# verl 0.9.1's losses that do not aggregate with the actor's loss_agg_mode: (their mode, whether
# they scale by the global batch sizes as agg_loss does). See their code in core_algos.py.
OWN_AGGREGATION = {"sapo": ("seq-mean-token-mean", True), "geo_mean": ("seq-mean-token-mean", False)}


def aggregation_weights(loss_mode: str, loss_agg_mode: str, mask: torch.Tensor, global_batch_info: dict):
    """d(aggregated loss) / d(loss of token t), per token: verl's ``agg_loss`` is linear in the loss
    matrix, so its gradient at zero is each token's weight (1/tokens for token-mean, 1/(sequences x
    length) for seq-mean-token-mean, ... times dp_size), whatever the loss."""
    from verl.trainer.ppo.core_algos import agg_loss

    mode, global_sizes = OWN_AGGREGATION.get(loss_mode, (loss_agg_mode, True))
    with torch.enable_grad():
        matrix = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device, requires_grad=True)
        total = agg_loss(matrix, mask, mode, **(global_batch_info if global_sizes else {}))
        (weights,) = torch.autograd.grad(total, matrix)
    return weights


def padded_response(tensor: torch.Tensor, data) -> torch.Tensor:
    """(batch, response_len) view of a model output (jagged or flat) for this micro-batch."""
    from verl.workers.utils.padding import no_padding_2_padding

    return no_padding_2_padding(tensor, data)


def to_data_layout(padded: torch.Tensor, like: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Back to the layout of ``like``: jagged when the micro-batch is jagged, else padded."""
    if not like.is_nested:
        return padded.to(like.dtype)
    from verl.workers.utils.padding import response_to_nested

    return response_to_nested(padded.to(like.dtype), response_mask)


def verl_metric(value: float, aggregation: str = "mean"):
    """verl's ``Metric``, averaged over micro-batches and ranks (or "max" / "min" over them)."""
    from verl.utils.metric import Metric

    return Metric(value=value, aggregation=aggregation)


ROLLOUT_ADAPTER_REGISTRY = "verl.workers.rollout.base._ROLLOUT_REGISTRY"


def rollout_adapter_registry() -> dict:
    """verl's worker-side rollout registry: ``{(name, mode): "dotted.path.Adapter"}``."""
    from verl.workers.rollout import base

    registry = getattr(base, "_ROLLOUT_REGISTRY", None)
    if not isinstance(registry, dict):
        raise RuntimeError(f"maspo-verl: {ROLLOUT_ADAPTER_REGISTRY} is gone; the hf rollout cannot be registered")
    return registry


def replica_loader(name: str):
    """The loader registered for ``name`` in verl's ``RolloutReplicaRegistry`` (None if none)."""
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    storage = getattr(RolloutReplicaRegistry, "_registry", None)
    if not isinstance(storage, dict):
        raise RuntimeError("maspo-verl: RolloutReplicaRegistry._registry is gone; cannot tell who owns a rollout name")
    return storage.get(name)


def register_hydra_plugin(plugin_class) -> None:
    from hydra.core.plugins import Plugins

    Plugins.instance().register(plugin_class)


def run_verl_main(config, worker_env: dict | None = None) -> None:
    """verl's own `main_ppo.main` on a composed config (a hydra.main function called with a
    config runs on it directly); it reuses a Ray session that is already initialised. When it
    starts Ray, `worker_env` joins the job's runtime env (see ray_init_with_env)."""
    from verl.trainer.main_ppo import main as verl_main

    with ray_init_with_env(worker_env or {}):
        verl_main(config)


@contextlib.contextmanager
def ray_init_with_env(env: dict):
    """Within this block, `ray.init` also sets `env` in the job's runtime env (every worker, every
    node). verl's run_ppo prints its ray.init arguments and then calls `ray.init` through the
    `ray` module; the variables added here, in that call, appear in no printout (a tracker's key)."""
    import ray

    if not env:
        yield
        return
    original = ray.init

    @functools.wraps(original)
    def init(*args, **kwargs):
        runtime_env = dict(kwargs.get("runtime_env") or {})
        runtime_env["env_vars"] = {**(runtime_env.get("env_vars") or {}), **env}
        return original(*args, **{**kwargs, "runtime_env": runtime_env})

    ray.init = init
    try:
        yield
    finally:
        ray.init = original


def release_placement_groups() -> int:
    """Remove every live placement group of this Ray session, as a finished job would.

    verl's workers reserve accelerator slots through placement groups owned by the job, which a
    finished run does not remove; several runs in one session need them gone. Returns how many.
    """
    import ray
    from ray.util.placement_group import PlacementGroup, placement_group_table, remove_placement_group

    if not ray.is_initialized():
        return 0
    from ray._raylet import PlacementGroupID

    live = [pg_id for pg_id, info in placement_group_table().items() if info["state"] in ("CREATED", "PENDING")]
    for pg_id in live:
        remove_placement_group(PlacementGroup(PlacementGroupID.from_hex(pg_id)))
    return len(live)


def agent_loop_classes():
    """verl's v1 agent-loop manager and worker, its LLM-server client and its reward worker, which
    ``maspo_verl.rollout.local_agent_loop`` subclasses or wraps. It relies on: the manager building
    its workers from ``self.agent_loop_workers_class`` (a Ray actor class) with the arguments
    ``(config, llm_client, teacher_client, reward_loop_worker_handles)``; the worker awaiting
    ``handle.compute_score.remote(data)`` on one of ``reward_loop_worker_handles``; the client
    routing through ``_acquire_server`` / ``_release_server`` and ``self._load_balancer``."""
    from verl.experimental.reward_loop.reward_loop import RewardLoopWorker
    from verl.trainer.ppo.v1.agent_loop_tq import AgentLoopManagerTQ, AgentLoopWorkerTQ
    from verl.workers.rollout.llm_server import LLMServerClient

    return AgentLoopManagerTQ, AgentLoopWorkerTQ, LLMServerClient, RewardLoopWorker


AGENT_LOOP_MODULE = "verl.experimental.agent_loop.agent_loop"


class _Facade:
    """A module seen through one replaced attribute; everything else is the module's own."""

    def __init__(self, module, **replaced):
        self._module = module
        self.__dict__.update(replaced)

    def __getattr__(self, name):
        return getattr(self._module, name)


def build_registered_agent_loops_directly() -> None:
    """Build each sample's agent loop without Hydra's instantiate, where that changes nothing.

    verl 0.9.1's ``AgentLoopWorker._run_agent_loop`` builds a new agent loop for every sample with
    ``hydra.utils.instantiate(config=_agent_loop_registry[name], trainer_config=..., ...)``, through
    the name ``hydra`` of ``verl.experimental.agent_loop.agent_loop``. For a loop registered with
    verl's ``@register`` the config is the plain dict ``{"_target_": "<module>.<Class>"}`` and every
    keyword is an object Hydra passes through unchanged (verl wraps its configs in
    ``DictConfigWrap`` for that reason), so the call is ``Class(**kwargs)``: this calls it so, with
    the class imported once. Any other config (``agent_loop_config_path`` entries, positional
    arguments) still goes through Hydra. Hydra's merge of the keywords is most of the agent loop's
    CPU time per sample on the tiny kit (docs/benchmarks.md). Call it in the agent-loop worker's
    process only; idempotent.
    """
    import importlib

    module = importlib.import_module(AGENT_LOOP_MODULE)
    hydra = getattr(module, "hydra", None)
    if hydra is None or not hasattr(hydra, "utils"):
        raise RuntimeError(f"maspo-verl: {AGENT_LOOP_MODULE} no longer reaches Hydra as `hydra`; cannot speed it up")
    if isinstance(hydra, _Facade):
        return
    instantiate = hydra.utils.instantiate
    classes: dict[str, type] = {}

    def build(config, *args, **kwargs):
        target = config.get("_target_") if type(config) is dict and len(config) == 1 else None
        if target is None or args:
            return instantiate(config, *args, **kwargs)
        if target not in classes:
            classes[target] = hydra.utils.get_class(target)
        return classes[target](**kwargs)

    module.hydra = _Facade(hydra, utils=_Facade(hydra.utils, instantiate=build))


# ----------------------------------------------------------------------------- what verl reads of its config

# verl's own composed ppo_trainer.yaml (every group at its default), which verl ships beside its
# config groups; tests/test_preflight_keys.py checks that it equals the composition
VERL_DEFAULT_CONFIG = "trainer/config/_generated_ppo_trainer.yaml"

# Fields of verl's config dataclasses that verl 0.9.1 reads nowhere, by the class that declares
# them, each with the key (relative to the same section) that verl reads instead, where it has one.
UNREAD_CONFIG_FIELDS: dict[str, dict[str, str | None]] = {
    # (the log-prob passes take their micro-batches from rollout/ref.log_prob_micro_batch_size_per_gpu)
    "ActorConfig": {"freeze_vision_tower": None, "ppo_infer_micro_batch_size_per_gpu": None},
    # FSDPEngine.optimizer_step clips with optim.clip_grad
    "FSDPActorConfig": {"grad_clip": "optim.clip_grad", "use_rollout_log_probs": None},
    "McoreActorConfig": {"use_rollout_log_probs": None},
    "RolloutConfig": dict.fromkeys(
        ("custom", "layer_name_map", "multi_stage_wake_up", "over_sample_rate", "sglang_engine_mode")
    ),
    "AgentLoopConfig": {"custom_async_server": None},
    "MultiTurnConfig": {"num_repeat_rollouts": None},
    "McoreEngineConfig": {"dist_checkpointing_prefix": None},
    "EngineRouterReplayConfig": {"record_file": None, "replay_file": None},
}

# trainer.* keys of verl's YAML that its v1 trainer never reads, with what it does instead
UNREAD_TRAINER_KEYS: dict[str, str | None] = {
    "balance_batch": "the v1 trainer balances every batch across the data-parallel ranks (trainer_base._balance_batch)",
    "esi_redundant_time": None,
    "ray_wait_register_center_timeout": None,
}
# trainer.* keys the v1 path reads that verl's YAML does not carry (added with `+`)
TRAINER_KEYS_BEYOND_YAML = ("remove_previous_ckpt_in_save", "wandb_proxy")
# keys of the ref section that verl's engine worker renames to the actor's names before building
# the ref's actor config (engine_workers.py, init_model)
REF_RENAMED_KEYS = {
    "log_prob_micro_batch_size": "ppo_micro_batch_size",
    "log_prob_micro_batch_size_per_gpu": "ppo_micro_batch_size_per_gpu",
    "log_prob_use_dynamic_bsz": "use_dynamic_bsz",
    "log_prob_max_token_len_per_gpu": "ppo_max_token_len_per_gpu",
}


@functools.cache
def verl_default_config():
    """verl's composed default config (read-only), from the file verl ships."""
    import verl
    from omegaconf import OmegaConf

    path = Path(verl.__file__).parent / VERL_DEFAULT_CONFIG
    if not path.is_file():
        raise RuntimeError(f"maspo-verl: verl's composed default config {path} is gone; preflight's key check needs it")
    config = OmegaConf.load(path)
    OmegaConf.set_readonly(config, True)
    return config


def verl_version() -> str:
    from importlib.metadata import version

    return version("verl")
