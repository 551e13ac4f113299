"""MASPO inside the real verl 0.9.1: presets, ActorConfig, verl's own ppo_loss, micro-batching."""

import math

import pytest
import torch
from hydra.errors import InstantiationException
from tensordict import TensorDict
from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY
from verl.utils import tensordict_utils as tu
from verl.workers.utils.losses import ppo_loss
from expected import MASPO_METRICS
from verl_config import build_actor_config, compose_ours, compose_stock

from maspo_verl.algos.maspo import MASPOParams, maspo_token_loss
from maspo_verl.config import MASPOPolicyLossConfig, check_policy_loss_config
from maspo_verl.losses import compute_policy_loss_maspo

DEFAULTS = dict(sigma_base=1.0, alpha=0.3, beta_pos=0.03, beta_neg=0.03, sigma_high=10.0, adv_low=0.1, adv_high=10.0)
METRICS = MASPO_METRICS + ["actor/ppo_kl"]


# ---------------------------------------------------------------- presets and config


@pytest.mark.parametrize("compose", [compose_ours, compose_stock], ids=["maspo_verl.main_ppo", "verl.main_ppo"])
def test_maspo_preset_sets_the_paper_setting(compose):
    extra = [] if compose is compose_ours else ["+algorithm=maspo"]
    config = compose(*extra)
    actor = config.actor_rollout_ref.actor
    assert config.algorithm.adv_estimator == "grpo"
    assert config.algorithm.use_kl_in_reward is False
    assert actor.use_kl_loss is False and actor.entropy_coeff == 0
    assert actor.policy_loss.loss_mode == "maspo"
    assert {k: actor.policy_loss[k] for k in DEFAULTS} == DEFAULTS
    # verl's own groups are still there
    assert "rollout_is" in config.algorithm.rollout_correction


def test_grpo_preset_differs_only_in_the_loss():
    maspo, grpo = compose_ours(), compose_ours("algorithm=grpo")
    assert grpo.actor_rollout_ref.actor.policy_loss.loss_mode == "vanilla"
    assert grpo.actor_rollout_ref.actor.clip_ratio == 0.2
    assert grpo.algorithm == maspo.algorithm
    for key in ["use_kl_loss", "entropy_coeff", "loss_agg_mode"]:
        assert grpo.actor_rollout_ref.actor[key] == maspo.actor_rollout_ref.actor[key]


def test_verl_config_groups_still_work_with_our_entry():
    config = compose_ours("model_engine=megatron")
    assert config.actor_rollout_ref.actor.strategy == "megatron"
    assert config.actor_rollout_ref.actor.policy_loss.loss_mode == "maspo"


@pytest.mark.parametrize("compose", [compose_ours, compose_stock], ids=["ours", "stock"])
def test_hyperparameters_overridable_by_name_and_reach_the_actor_config(compose):
    extra = [] if compose is compose_ours else ["+algorithm=maspo"]
    key = "actor_rollout_ref.actor.policy_loss."
    config = compose(*extra, key + "alpha=0.5", key + "sigma_base=2.0", key + "sigma_high=20", key + "beta_neg=0")
    actor = build_actor_config(config)
    assert isinstance(actor.policy_loss, MASPOPolicyLossConfig)
    assert (actor.policy_loss.alpha, actor.policy_loss.sigma_base) == (0.5, 2.0)
    assert (actor.policy_loss.sigma_high, actor.policy_loss.beta_neg) == (20, 0)


@pytest.mark.parametrize(
    "key, value, allowed",
    [
        ("sigma_base", "0", "> 0"),
        ("sigma_base", "-1", "> 0"),
        ("alpha", "-0.1", ">= 0"),
        ("beta_pos", "-1", ">= 0"),
        ("beta_neg", "-0.5", ">= 0"),
        ("sigma_high", "0.5", ">= sigma_base"),
        ("adv_low", "0", "in (0, 1]"),
        ("adv_low", "1.5", "in (0, 1]"),
        ("adv_high", "0.9", ">= 1"),
        ("alpha", "nan", "finite"),
    ],
)
def test_bad_value_is_refused_when_verl_builds_the_config(key, value, allowed):
    config = compose_ours(f"actor_rollout_ref.actor.policy_loss.{key}={value}")
    with pytest.raises(InstantiationException) as err:
        build_actor_config(config)
    message = str(err.value)
    assert f"actor_rollout_ref.actor.policy_loss.{key}=" in message
    assert allowed in message
    assert str(float(value)) in message or value in message


def test_bad_value_is_refused_by_verls_own_driver_validation_before_ray():
    """Stock verl validates the config on the driver (validate_config) before ray.init."""
    import ray
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    config = compose_stock("+algorithm=maspo", "actor_rollout_ref.actor.policy_loss.adv_high=0.5")
    with pytest.raises(InstantiationException, match=r"policy_loss\.adv_high=0\.5"):
        validate_config(config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))
    assert not ray.is_initialized()


def test_misspelt_key_is_refused_by_hydra_and_by_our_check():
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="sigma_bse"):
        compose_ours("actor_rollout_ref.actor.policy_loss.sigma_bse=2")
    # Added with '+', Hydra lets it through; our driver-side check names it and suggests the fix.
    config = compose_ours("+actor_rollout_ref.actor.policy_loss.sigma_bse=2")
    with pytest.raises(ValueError, match=r"policy_loss\.sigma_bse=2.*Did you mean 'sigma_base'"):
        check_policy_loss_config(config)
    check_policy_loss_config(compose_ours())  # the preset itself passes


# ---------------------------------------------------------------- registration


def test_registered_under_its_name_with_verl():
    assert POLICY_LOSS_REGISTRY["maspo"] is compute_policy_loss_maspo


def test_registration_is_idempotent_and_never_replaces_verls_names(monkeypatch):
    from maspo_verl import losses, plugin

    vanilla = POLICY_LOSS_REGISTRY["vanilla"]
    assert plugin.register_policy_losses() == ["maspo"]
    assert plugin.register_policy_losses() == ["maspo"]
    monkeypatch.setitem(losses.POLICY_LOSSES, "vanilla", compute_policy_loss_maspo)
    with pytest.warns(UserWarning, match="already has a policy loss named 'vanilla'"):
        assert plugin.register_policy_losses() == ["maspo"]
    assert POLICY_LOSS_REGISTRY["vanilla"] is vanilla


# ---------------------------------------------------------------- verl's ppo_loss


def make_batch(bsz=6, prompt_len=5, resp_len=9, seed=0, scale=0.7):
    """A padded rollout batch as verl's actor sees it, plus the response log-probs (a leaf)."""
    g = torch.Generator().manual_seed(seed)
    resp_lens = torch.randint(1, resp_len + 1, (bsz,), generator=g)
    resp_lens[0] = resp_len  # at least one full-length response
    response_mask = torch.arange(resp_len)[None, :] < resp_lens[:, None]
    prompt_mask = torch.ones(bsz, prompt_len, dtype=torch.bool)
    old_log_prob = torch.log(torch.rand(bsz, resp_len, generator=g).clamp_min(1e-4))
    # -inf at padded positions: what a careless producer might leave there
    old_log_prob = old_log_prob.masked_fill(~response_mask, -math.inf)
    log_prob = (old_log_prob + scale * torch.randn(bsz, resp_len, generator=g)).masked_fill(~response_mask, 0.0)
    scores = torch.randn(bsz, generator=g)
    advantages = (scores[:, None] * response_mask).float()
    data = TensorDict(
        {
            "prompts": torch.ones(bsz, prompt_len, dtype=torch.long),
            "responses": torch.ones(bsz, resp_len, dtype=torch.long),
            "attention_mask": torch.cat([prompt_mask, response_mask], dim=1).long(),
            "response_mask": response_mask.long(),
            "old_log_probs": old_log_prob,
            "advantages": advantages,
        },
        batch_size=[bsz],
    )
    return data, log_prob.requires_grad_(True)


def flat_model_output(data, log_prob):
    """The actor's unpadded log-prob output that verl's ppo_loss re-pads (left-shifted by one)."""
    attention = data["attention_mask"].bool()
    prompt_len = data["prompts"].shape[1]
    seq_lens = attention.sum(1)
    offsets = seq_lens.cumsum(0)
    resp_lens = attention[:, prompt_len:].sum(1)
    pieces = []
    for i in range(len(seq_lens)):
        start = offsets[i] - seq_lens[i]
        prompt_part = log_prob.new_zeros(int(seq_lens[i] - resp_lens[i] - 1))
        pieces += [prompt_part, log_prob[i, : resp_lens[i]], log_prob.new_zeros(1)]
        assert start + len(prompt_part) + resp_lens[i] + 1 == offsets[i]
    return {"log_probs": torch.cat(pieces)}


def run_ppo_loss(actor_config, data, log_prob, micro_batch_size):
    """verl's ppo_loss over micro-batches, summed as the engine does (backward per micro-batch)."""
    bsz = data.batch_size[0]
    batch_num_tokens = int(data["response_mask"].sum())
    total_loss, metrics = 0.0, []
    for start in range(0, bsz, micro_batch_size):
        micro = data[start : start + micro_batch_size].clone()
        tu.assign_non_tensor(micro, dp_size=1, batch_num_tokens=batch_num_tokens, global_batch_size=bsz)
        loss, micro_metrics = ppo_loss(actor_config, flat_model_output(micro, log_prob[start : start + micro_batch_size]), micro)
        loss.backward()
        total_loss += loss.item()
        metrics.append(micro_metrics)
    return total_loss, metrics


@pytest.fixture(scope="module")
def maspo_actor_config():
    return build_actor_config(compose_ours())


@pytest.mark.parametrize("loss_agg_mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "token-sum"])
def test_verl_ppo_loss_runs_maspo_and_matches_the_formula(loss_agg_mode):
    actor_config = build_actor_config(compose_ours(f"actor_rollout_ref.actor.loss_agg_mode={loss_agg_mode}"))
    data, log_prob = make_batch(seed=1)
    loss, metrics = run_ppo_loss(actor_config, data, log_prob, micro_batch_size=6)

    mask = data["response_mask"].bool()
    terms = maspo_token_loss(
        log_prob.detach(), data["old_log_probs"], data["advantages"], mask, MASPOParams(**DEFAULTS)
    )
    per_token = terms.loss_mat
    per_seq_mean = (per_token * mask).sum(1) / mask.sum(1)
    expected = {
        "token-mean": (per_token * mask).sum() / mask.sum(),
        "seq-mean-token-mean": per_seq_mean.mean(),
        "seq-mean-token-sum": (per_token * mask).sum(1).mean(),
        "token-sum": (per_token * mask).sum(),
    }[loss_agg_mode]
    assert loss == pytest.approx(expected.item(), rel=1e-5, abs=1e-7)
    assert set(METRICS) <= set(metrics[0])
    assert torch.isfinite(log_prob.grad).all()
    assert (log_prob.grad[~mask] == 0).all()


@pytest.mark.parametrize("micro_batch_size", [1, 2, 3])
def test_micro_batches_give_the_same_loss_and_gradient_as_one_batch(maspo_actor_config, micro_batch_size):
    data, log_prob = make_batch(seed=2)
    whole_loss, _ = run_ppo_loss(maspo_actor_config, data, log_prob, micro_batch_size=6)
    whole_grad = log_prob.grad.clone()
    log_prob.grad = None
    split_loss, _ = run_ppo_loss(maspo_actor_config, data, log_prob, micro_batch_size=micro_batch_size)
    assert split_loss == pytest.approx(whole_loss, rel=1e-5, abs=1e-7)
    torch.testing.assert_close(log_prob.grad, whole_grad, rtol=1e-5, atol=1e-7)
    assert whole_grad.abs().sum() > 0


def test_rollout_is_weights_scale_each_token(maspo_actor_config):
    data, log_prob = make_batch(seed=3)
    weights = torch.rand(data["advantages"].shape, generator=torch.Generator().manual_seed(0)) + 0.5
    mask = data["response_mask"].bool()
    plain, _ = compute_policy_loss_maspo(
        old_log_prob=data["old_log_probs"], log_prob=log_prob, advantages=data["advantages"],
        response_mask=mask, loss_agg_mode="token-sum", config=maspo_actor_config,
    )
    weighted, _ = compute_policy_loss_maspo(
        old_log_prob=data["old_log_probs"], log_prob=log_prob, advantages=data["advantages"],
        response_mask=mask, loss_agg_mode="token-sum", config=maspo_actor_config, rollout_is_weights=weights,
    )
    terms = maspo_token_loss(log_prob.detach(), data["old_log_probs"], data["advantages"], mask, MASPOParams())
    assert weighted.item() == pytest.approx((terms.loss_mat * weights * mask).sum().item(), rel=1e-5)
    assert weighted.item() != pytest.approx(plain.item(), rel=1e-3)


def test_hyperparameters_from_the_config_reach_the_loss():
    data, log_prob = make_batch(seed=4, scale=2.0)
    mask = data["response_mask"].bool()
    losses = {}
    for sigma_base in ["0.05", "5.0"]:
        config = build_actor_config(
            compose_ours(f"actor_rollout_ref.actor.policy_loss.sigma_base={sigma_base}",
                         "actor_rollout_ref.actor.policy_loss.sigma_high=50")
        )
        loss, metrics = compute_policy_loss_maspo(
            old_log_prob=data["old_log_probs"], log_prob=log_prob, advantages=data["advantages"],
            response_mask=mask, config=config,
        )
        losses[sigma_base] = (loss.item(), metrics["actor/maspo/gate_mean"])
    # a tight region damps more than a wide one
    assert losses["0.05"][1] < losses["5.0"][1]
    assert losses["0.05"][0] != pytest.approx(losses["5.0"][0])


def test_plain_policy_loss_config_means_the_defaults():
    """loss_mode=maspo with verl's own PolicyLossConfig (no MASPO fields): the defaults apply."""
    config = build_actor_config(
        compose_stock(
            "actor_rollout_ref.actor.policy_loss.loss_mode=maspo", "algorithm.adv_estimator=grpo"
        )
    )
    data, log_prob = make_batch(seed=5)
    mask = data["response_mask"].bool()
    loss, _ = compute_policy_loss_maspo(
        old_log_prob=data["old_log_probs"], log_prob=log_prob, advantages=data["advantages"],
        response_mask=mask, config=config,
    )
    terms = maspo_token_loss(log_prob.detach(), data["old_log_probs"], data["advantages"], mask, MASPOParams())
    assert loss.item() == pytest.approx(((terms.loss_mat * mask).sum() / mask.sum()).item(), rel=1e-6)


def test_readme_documents_every_metric_and_hyperparameter():
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    for name in METRICS:
        assert f"`{name}`" in readme, name
    for name, default in DEFAULTS.items():
        assert f"| `{name}` | {default} |" in readme, name
