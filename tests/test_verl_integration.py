"""MASPO inside the real verl 0.9.1: presets, ActorConfig, verl's own ppo_loss, micro-batching."""

import pytest
import torch
from hydra.errors import InstantiationException
from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY

from expected import MASPO_DEFAULTS as DEFAULTS
from expected import MASPO_METRICS
from maspo_verl.algos.maspo import MASPOParams, maspo_token_loss
from maspo_verl.config import MASPOPolicyLossConfig
from maspo_verl.losses import compute_policy_loss_maspo
from maspo_verl.preflight import check_algorithm_config
from verl_batch import make_batch, run_ppo_loss
from verl_config import build_actor_config, compose_ours, compose_stock

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
        check_algorithm_config(config)
    check_algorithm_config(compose_ours())  # the preset itself passes


# ---------------------------------------------------------------- registration


def test_registered_under_its_name_with_verl():
    assert POLICY_LOSS_REGISTRY["maspo"] is compute_policy_loss_maspo


def test_registration_is_idempotent_and_never_replaces_verls_names(monkeypatch):
    from maspo_verl import losses, registration

    ours = ["maspo", "dac", "bapo"]
    vanilla = POLICY_LOSS_REGISTRY["vanilla"]
    assert registration.register_policy_losses() == ours
    assert registration.register_policy_losses() == ours
    monkeypatch.setitem(losses.POLICY_LOSSES, "vanilla", compute_policy_loss_maspo)
    with pytest.warns(UserWarning, match="already has a policy loss named 'vanilla'"):
        assert registration.register_policy_losses() == ours
    assert POLICY_LOSS_REGISTRY["vanilla"] is vanilla


# ---------------------------------------------------------------- verl's ppo_loss


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
        old_log_prob=data["old_log_probs"],
        log_prob=log_prob,
        advantages=data["advantages"],
        response_mask=mask,
        loss_agg_mode="token-sum",
        config=maspo_actor_config,
    )
    weighted, _ = compute_policy_loss_maspo(
        old_log_prob=data["old_log_probs"],
        log_prob=log_prob,
        advantages=data["advantages"],
        response_mask=mask,
        loss_agg_mode="token-sum",
        config=maspo_actor_config,
        rollout_is_weights=weights,
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
            compose_ours(
                f"actor_rollout_ref.actor.policy_loss.sigma_base={sigma_base}",
                "actor_rollout_ref.actor.policy_loss.sigma_high=50",
            )
        )
        loss, metrics = compute_policy_loss_maspo(
            old_log_prob=data["old_log_probs"],
            log_prob=log_prob,
            advantages=data["advantages"],
            response_mask=mask,
            config=config,
        )
        losses[sigma_base] = (loss.item(), metrics["actor/maspo/gate_mean"])
    # a tight region damps more than a wide one
    assert losses["0.05"][1] < losses["5.0"][1]
    assert losses["0.05"][0] != pytest.approx(losses["5.0"][0])


def test_plain_policy_loss_config_means_the_defaults():
    """loss_mode=maspo with verl's own PolicyLossConfig (no MASPO fields): the defaults apply."""
    config = build_actor_config(
        compose_stock("actor_rollout_ref.actor.policy_loss.loss_mode=maspo", "algorithm.adv_estimator=grpo")
    )
    data, log_prob = make_batch(seed=5)
    mask = data["response_mask"].bool()
    loss, _ = compute_policy_loss_maspo(
        old_log_prob=data["old_log_probs"],
        log_prob=log_prob,
        advantages=data["advantages"],
        response_mask=mask,
        config=config,
    )
    terms = maspo_token_loss(log_prob.detach(), data["old_log_probs"], data["advantages"], mask, MASPOParams())
    assert loss.item() == pytest.approx(((terms.loss_mat * mask).sum() / mask.sum()).item(), rel=1e-6)
