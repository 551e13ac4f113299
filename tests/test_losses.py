"""The one verl adapter every declared loss goes through (maspo_verl.losses): registration,
input checks, rollout IS weights, metric names, one host sync per call, and compilable math.
Non-finite inputs: tests/test_nonfinite.py."""

import pytest
import torch
from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY

from maspo_verl import config as config_module
from maspo_verl.algos import LOSSES
from maspo_verl.algos.common import prepare_inputs
from maspo_verl.config import CONFIG_CLASSES
from maspo_verl.losses import POLICY_LOSSES, loss_params
from maspo_verl.preflight import check_algorithm_config
from verl_batch import make_batch
from verl_config import build_actor_config, compose_ours

NAMES = [spec.name for spec in LOSSES]
SPECS = {spec.name: spec for spec in LOSSES}


def actor_config(name, *overrides):
    return build_actor_config(compose_ours(f"algorithm={name}", *overrides))


def call(name, config, data, log_prob, **extra):
    mask = data["response_mask"].bool()
    return POLICY_LOSSES[name](
        old_log_prob=data["old_log_probs"], log_prob=log_prob, advantages=data["advantages"],
        response_mask=mask, loss_agg_mode="token-sum", config=config, **extra,
    )  # fmt: skip


def test_every_declared_loss_is_registered_with_verl_under_its_name():
    assert NAMES == list(POLICY_LOSSES) == list(CONFIG_CLASSES)
    for name in NAMES:
        assert POLICY_LOSS_REGISTRY[name] is POLICY_LOSSES[name]
        assert CONFIG_CLASSES[name].__name__ == SPECS[name].config_class_name
        assert CONFIG_CLASSES[name]().loss_mode == name
        # assigned by name in maspo_verl.config, where the presets' `_target_` lines find it
        assert getattr(config_module, SPECS[name].config_class_name) is CONFIG_CLASSES[name]


@pytest.mark.parametrize("name", NAMES)
def test_metrics_are_named_after_the_loss_and_finite(name):
    data, log_prob = make_batch(seed=31, scale=1.0)
    _, metrics = call(name, actor_config(name), data, log_prob)
    own = [key for key in metrics if key.startswith(f"actor/{name}/")]
    assert own and set(metrics) == set(own) | {"actor/ppo_kl"}
    assert all(isinstance(value, float) and value == value for value in metrics.values())


@pytest.mark.parametrize("name", NAMES)
def test_one_host_sync_per_call_for_checks_and_metrics(name, monkeypatch):
    data, log_prob = make_batch(seed=32)
    config = actor_config(name)
    counts = {"tolist": 0, "item": 0, "bool": 0}
    for method, key in [("tolist", "tolist"), ("item", "item"), ("__bool__", "bool")]:
        original = getattr(torch.Tensor, method)

        def counted(self, *args, _original=original, _key=key, **kwargs):
            counts[_key] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, method, counted)
    call(name, config, data, log_prob)
    monkeypatch.undo()
    assert counts == {"tolist": 1, "item": 0, "bool": 0}


NUMERIC_SETTINGS = [(spec.name, rule[0]) for spec in LOSSES for rule in spec.params.RULES if rule[2] != "true or false"]


@pytest.mark.parametrize("name, key", NUMERIC_SETTINGS)
@pytest.mark.parametrize("value", [float("nan"), float("inf"), "0.5", True, None])
def test_every_numeric_setting_refuses_a_non_number(name, key, value):
    with pytest.raises(ValueError, match=rf"{key}={value!r} is not allowed: it must be a finite number"):
        SPECS[name].params(**{key: value})


@pytest.mark.parametrize("name", NAMES)
def test_rollout_is_weights_scale_each_token(name):
    data, log_prob = make_batch(seed=34, scale=0.5)
    config = actor_config(name)
    mask = data["response_mask"].bool()
    weights = torch.rand(mask.shape, generator=torch.Generator().manual_seed(1)) + 0.5
    weighted, _ = call(name, config, data, log_prob, rollout_is_weights=weights)
    spec = SPECS[name]
    terms = spec.terms(
        prepare_inputs(log_prob.detach(), data["old_log_probs"], data["advantages"], mask), loss_params(spec, config)
    )
    assert weighted.item() == pytest.approx((terms.loss_mat * weights * mask).sum().item(), rel=1e-5)
    plain, _ = call(name, config, data, log_prob)
    assert weighted.item() != pytest.approx(plain.item(), rel=1e-3)


@pytest.mark.parametrize("name", NAMES)
def test_pure_terms_compile_without_graph_breaks(name):
    spec = SPECS[name]
    data, log_prob = make_batch(seed=35)
    mask = data["response_mask"].bool()
    inputs = prepare_inputs(log_prob.detach(), data["old_log_probs"], data["advantages"], mask)
    params = spec.params()
    torch._dynamo.reset()
    compiled = torch.compile(spec.terms, fullgraph=True, backend="eager")
    eager, fused = spec.terms(inputs, params), compiled(inputs, params)
    torch.testing.assert_close(fused.loss_mat, eager.loss_mat)


@pytest.mark.parametrize("name", NAMES)
def test_settings_of_one_loss_with_another_loss_mode_are_refused(name):
    other = "vanilla"  # verl's own, registered whatever we declare
    config = compose_ours(f"algorithm={name}", f"actor_rollout_ref.actor.policy_loss.loss_mode={other}")
    with pytest.raises(ValueError, match=rf"holds the settings of `{name}`, but .*loss_mode='{other}'"):
        check_algorithm_config(config)


def test_unregistered_loss_mode_is_refused_on_the_driver():
    config = compose_ours("algorithm=grpo", "actor_rollout_ref.actor.policy_loss.loss_mode=masp")
    with pytest.raises(ValueError, match=r"loss_mode='masp' is not a registered policy loss\. Known: .*maspo"):
        check_algorithm_config(config)


def test_docs_list_every_setting_with_its_default_and_every_metric():
    """docs/algorithms.md is the reference users read: it must not drift from the code."""
    from dataclasses import fields
    from pathlib import Path

    from maspo_verl.shaping import SHAPERS

    docs = (Path(__file__).parents[1] / "docs" / "algorithms.md").read_text()
    data, log_prob = make_batch(seed=36)
    for name in NAMES:
        spec = SPECS[name]
        for f in fields(spec.params):
            label = f"`{f.name}` (*actor*)" if f.name in spec.actor_keys else f"`{f.name}`"
            assert f"| {label} | {f.default} |" in docs, (name, f.name)
        _, metrics = call(name, actor_config(name), data, log_prob)
        for metric in metrics:
            assert f"`{metric}`" in docs, metric
    for shaper in SHAPERS.values():
        for f in fields(shaper.params):
            assert f"| `advantage_shaper_kwargs.{f.name}` | {f.default} |" in docs, (shaper.name, f.name)
    from maspo_verl.algos.entropy_adv import EntropyAdvParams, ShaperInputs, entropy_advantage

    mask = data["response_mask"].bool()
    inputs = ShaperInputs(data["advantages"], mask, data["old_log_probs"], log_prob.detach(), torch.ones(mask.shape))
    for metric in entropy_advantage(inputs, EntropyAdvParams())[1]:
        assert f"`actor/shaper/entropy_adv/{metric}`" in docs, metric
