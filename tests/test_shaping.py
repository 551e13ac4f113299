"""Advantage shapers: the entropy advantage against an independent formula, the registry and its
errors, and the hook that applies a shaper inside verl's own ppo_loss for any loss."""

import importlib
import inspect

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from maspo_verl import compat
from maspo_verl.algos.entropy_adv import EntropyAdvParams, ShaperInputs, entropy_advantage
from maspo_verl.config import BasePolicyLossConfig
from maspo_verl.hook import hooked_ppo_loss, measured_lookup
from maspo_verl.preflight import check_algorithm_config
from maspo_verl.shaping import SHAPERS, register_advantage_shaper
from verl_batch import make_batch, run_ppo_loss, token_entropy
from verl_config import build_actor_config, compose_ours

PL = "actor_rollout_ref.actor.policy_loss."


def reference_entropy_advantage(adv, entropy, mask, alpha, kappa):
    """Cheng et al. (arXiv 2506.14758): A' = A + min(alpha * H, |A| / kappa), float64."""
    shaped = adv + np.minimum(alpha * entropy, np.abs(adv) / kappa)
    return np.where(mask, shaped, adv)


def shaper_inputs(adv, entropy, mask):
    zeros = torch.zeros_like(torch.as_tensor(adv, dtype=torch.float32))
    return ShaperInputs(
        advantages=torch.as_tensor(adv, dtype=torch.float32),
        response_mask=torch.as_tensor(mask),
        old_log_prob=zeros,
        log_prob=zeros,
        entropy=torch.as_tensor(entropy, dtype=torch.float32),
    )


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("alpha, kappa", [(0.4, 2.0), (1.0, 1.5), (0.05, 10.0)])
def test_entropy_advantage_matches_the_formula(seed, alpha, kappa):
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(1, 6)), int(rng.integers(1, 40)))
    adv = rng.normal(size=(shape[0], 1)).repeat(shape[1], 1) * rng.choice([0.1, 1.0, 1e3])
    entropy = rng.uniform(0, 5, size=shape)
    mask = rng.random(shape) < 0.8
    shaped, metrics = entropy_advantage(shaper_inputs(adv, entropy, mask), EntropyAdvParams(alpha=alpha, kappa=kappa))
    expected = reference_entropy_advantage(adv, entropy, mask, alpha, kappa)
    np.testing.assert_allclose(shaped.numpy(), expected, rtol=1e-6, atol=1e-6)
    bonus = (expected - adv)[mask]
    assert metrics["bonus_mean"].item() == pytest.approx(bonus.mean() if bonus.size else 0.0, rel=1e-5, abs=1e-6)
    capped = (alpha * entropy > np.abs(adv) / kappa)[mask]
    assert metrics["capped_frac"].item() == pytest.approx(capped.mean() if capped.size else 0.0)


@settings(max_examples=200, deadline=None)
@given(
    adv=hnp.arrays(np.float32, (3, 7), elements=st.floats(-1e4, 1e4, width=32, allow_subnormal=False)),
    entropy=hnp.arrays(np.float32, (3, 7), elements=st.floats(0, 50, width=32)),
    alpha=st.floats(0, 10),
    kappa=st.floats(1.01, 100),
)
def test_entropy_advantage_never_flips_a_sign(adv, entropy, alpha, kappa):
    mask = np.ones(adv.shape, dtype=bool)
    shaped, _ = entropy_advantage(shaper_inputs(adv, entropy, mask), EntropyAdvParams(alpha=alpha, kappa=kappa))
    adv32 = torch.as_tensor(adv, dtype=torch.float32)
    assert torch.all(torch.sign(shaped) == torch.sign(adv32))
    assert torch.all(shaped >= adv32)  # the bonus is never negative


def test_entropy_advantage_with_alpha_zero_changes_nothing():
    rng = np.random.default_rng(0)
    adv, entropy, mask = rng.normal(size=(4, 9)), rng.uniform(0, 3, (4, 9)), rng.random((4, 9)) < 0.7
    shaped, _ = entropy_advantage(shaper_inputs(adv, entropy, mask), EntropyAdvParams(alpha=0.0))
    torch.testing.assert_close(shaped, torch.as_tensor(adv, dtype=torch.float32))


@pytest.mark.parametrize(
    "name, kwargs, message",
    [
        (
            "entropyadv",
            {},
            r"advantage_shaper='entropyadv' is not a registered advantage shaper\. Known: none, .*entropy_adv",
        ),
        ("entropy_adv", {"kapa": 2}, r"Unknown setting .*advantage_shaper_kwargs\.kapa=2 .*Allowed keys: alpha, kappa"),
        ("entropy_adv", {"kappa": 1.0}, r"advantage_shaper_kwargs\.kappa=1\.0 is not allowed: .*> 1"),
        ("entropy_adv", {"alpha": -0.1}, r"advantage_shaper_kwargs\.alpha=-0\.1 is not allowed: .*>= 0"),
        ("none", {"alpha": 0.4}, r"advantage_shaper_kwargs=\{'alpha': 0\.4\} given, but no advantage_shaper"),
    ],
)
def test_bad_shaper_settings_are_refused_with_the_key(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        BasePolicyLossConfig(advantage_shaper=name, advantage_shaper_kwargs=kwargs)


def test_a_shaper_module_that_does_not_import_is_named():
    with pytest.raises(ValueError, match=r"advantage_shaper_module='no_such_module_xyz' cannot be imported"):
        BasePolicyLossConfig(advantage_shaper="entropy_adv", advantage_shaper_module="no_such_module_xyz")


def test_registry_refuses_a_second_shaper_of_the_same_name_and_the_name_none():
    with pytest.raises(ValueError, match="already registered"):
        register_advantage_shaper("entropy_adv")(lambda inputs, params: (inputs.advantages, {}))
    with pytest.raises(ValueError, match="cannot be named 'none'"):
        register_advantage_shaper("none")
    assert SHAPERS["entropy_adv"].needs_entropy


def test_unknown_shaper_is_refused_when_verl_builds_the_config_on_the_driver():
    from hydra.errors import InstantiationException

    config = compose_ours("algorithm=grpo", PL + "advantage_shaper=nope")
    with pytest.raises(ValueError, match="advantage_shaper='nope'"):
        check_algorithm_config(config)
    with pytest.raises(InstantiationException, match="advantage_shaper='nope'"):
        build_actor_config(config)


def test_a_shaper_that_needs_entropy_requires_verl_to_compute_it():
    config = compose_ours("algorithm=entropy_adv", "actor_rollout_ref.actor.calculate_entropy=false")
    with pytest.raises(ValueError, match=r"needs the current policy's token entropy.*calculate_entropy=False"):
        check_algorithm_config(config)


# ---------------------------------------------------------------- the hook inside verl's ppo_loss


def verl_original_ppo_loss():
    from verl.workers.utils import losses

    return losses.ppo_loss._maspo_verl_wrapped


@pytest.mark.parametrize("preset", ["grpo", "maspo", "clip_higher"])
def test_the_hook_feeds_shaped_advantages_to_any_loss(preset):
    """Through the hooked ppo_loss with entropy_adv = verl's own ppo_loss on advantages shaped by hand."""
    shaped_config = build_actor_config(
        compose_ours(
            f"algorithm={preset}", "actor_rollout_ref.actor.calculate_entropy=true", PL + "advantage_shaper=entropy_adv",
            f"+{PL}advantage_shaper_kwargs.alpha=0.4", f"+{PL}advantage_shaper_kwargs.kappa=2.0",
        )
    )  # fmt: skip
    plain_config = build_actor_config(
        compose_ours(f"algorithm={preset}", "actor_rollout_ref.actor.calculate_entropy=true")
    )
    data, log_prob = make_batch(seed=21, scale=0.6, padding=0.0)
    entropy = token_entropy(data, seed=3)
    loss, metrics = run_ppo_loss(shaped_config, data, log_prob, micro_batch_size=3, entropy=entropy)
    grad = log_prob.grad.clone()

    mask = data["response_mask"].bool()
    by_hand = data.clone()
    by_hand["advantages"] = torch.as_tensor(
        reference_entropy_advantage(data["advantages"].numpy(), entropy.numpy(), mask.numpy(), 0.4, 2.0),
        dtype=torch.float32,
    )
    log_prob.grad = None
    expected, _ = run_ppo_loss(plain_config, by_hand, log_prob, micro_batch_size=3, entropy=entropy)
    assert loss == pytest.approx(expected, rel=1e-5, abs=1e-7)
    torch.testing.assert_close(grad, log_prob.grad, rtol=1e-5, atol=1e-7)
    assert loss != pytest.approx(run_ppo_loss(plain_config, data, log_prob, 3, entropy=entropy)[0], rel=1e-4)
    assert {"actor/shaper/entropy_adv/bonus_mean", "actor/shaper/entropy_adv/entropy_mean"} <= set(metrics[0])


def test_without_a_shaper_the_hook_changes_nothing():
    config = build_actor_config(compose_ours("algorithm=maspo"))
    data, log_prob = make_batch(seed=22, padding=0.0)
    hooked, _ = run_ppo_loss(config, data, log_prob, micro_batch_size=2)
    grad = log_prob.grad.clone()
    log_prob.grad = None
    from verl.utils import tensordict_utils as tu

    from verl_batch import flat_model_output

    total = 0.0
    for start in range(0, 6, 2):
        micro = data[start : start + 2].clone()
        tu.assign_non_tensor(micro, dp_size=1, batch_num_tokens=int(data["response_mask"].sum()), global_batch_size=6)
        loss, _ = verl_original_ppo_loss()(config, flat_model_output(micro, log_prob[start : start + 2]), micro)
        loss.backward()
        total += loss.item()
    assert hooked == pytest.approx(total, rel=1e-6)
    torch.testing.assert_close(grad, log_prob.grad)


def test_missing_entropy_fails_loudly_not_silently():
    config = build_actor_config(compose_ours("algorithm=entropy_adv"))
    data, log_prob = make_batch(seed=23, padding=0.0)
    with pytest.raises(RuntimeError, match="needs the current policy's token entropy.*calculate_entropy=True"):
        _run_without_entropy(config, data, log_prob)


def _run_without_entropy(config, data, log_prob):
    from verl.utils import tensordict_utils as tu
    from verl.workers.utils.losses import ppo_loss

    from verl_batch import flat_model_output

    tu.assign_non_tensor(data, dp_size=1, batch_num_tokens=int(data["response_mask"].sum()), global_batch_size=6)
    ppo_loss(config, flat_model_output(data, log_prob), data)


# ---------------------------------------------------------------- compat: where the hook sits


def test_hook_is_installed_wherever_verl_binds_ppo_loss():
    for name in (compat.PPO_LOSS_HOME, *compat.PPO_LOSS_USERS):
        bound = importlib.import_module(name).ppo_loss
        assert getattr(bound, "_maspo_verl_hook", False), name
    compat.install_ppo_loss_hook(hooked_ppo_loss, measured_lookup)  # idempotent: no double wrapping
    wrapped = importlib.import_module(compat.PPO_LOSS_HOME).ppo_loss
    assert not getattr(wrapped._maspo_verl_wrapped, "_maspo_verl_hook", False)
    assert list(inspect.signature(wrapped._maspo_verl_wrapped).parameters) == compat.PPO_LOSS_PARAMETERS


def test_a_verl_whose_ppo_loss_changed_fails_the_install_by_name(monkeypatch):
    from verl.workers.utils import losses

    def changed(config, model_output, data, dp_group=None, extra=None):
        raise AssertionError("never called")

    monkeypatch.setattr(losses, "ppo_loss", changed)
    with pytest.raises(RuntimeError, match=r"ppo_loss takes \[.*'extra'\], not"):
        compat.install_ppo_loss_hook(hooked_ppo_loss, measured_lookup)


def test_a_verl_that_stopped_binding_ppo_loss_by_name_fails_the_install(monkeypatch):
    import verl.workers.engine_workers as engine_workers

    monkeypatch.delattr(engine_workers, "ppo_loss")
    with pytest.raises(RuntimeError, match="engine_workers no longer binds ppo_loss by name"):
        compat.install_ppo_loss_hook(hooked_ppo_loss, measured_lookup)
