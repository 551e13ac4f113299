"""The one verl adapter every declared loss goes through (maspo_verl.losses): registration,
input checks, rollout IS weights, metric names, one host sync per call, and compilable math;
and the loss contract, written once and run on every declared loss against its own independent
reference (REFERENCE in tests/test_<loss>_math.py): all tokens masked, empty batches, non-finite
values where masked, half precision, large advantages and log-ratios past the clamp, zero
advantages, settings out of range. Non-finite inputs at valid tokens: tests/test_nonfinite.py."""

import math
import time

import numpy as np
import pytest
import torch
from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY

import test_bapo_math
import test_dac_math
import test_maspo_math
from loss_reference import run_terms
from maspo_verl import config as config_module
from maspo_verl.algos import LOSSES
from maspo_verl.algos.common import prepare_inputs
from maspo_verl.config import CONFIG_CLASSES
from maspo_verl.losses import POLICY_LOSSES, loss_params
from maspo_verl.preflight import check_algorithm_config
from numeric import f32, np_
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
def test_terms_compile_with_inductor_and_match_eager(name):
    """Compile on CPU (inductor); ~5-20 s on a loaded 2-core machine, most of it one-off startup.
    fullgraph: no host sync and no data-dependent Python, the data-parallel sum traced in."""
    reference = REFERENCES[name]
    lp, old, adv, mask = reference.draw(np.random.default_rng(5), (4, 16), 1.0)
    old[0, :3] = [-20.0, -150.0, 0.0]  # rare tokens down to q = e^-150
    inputs = prepare_inputs(*(torch.tensor(x, dtype=torch.float32) for x in (lp, old, adv)), torch.tensor(mask))
    params = SPECS[name].params(**reference.defaults)
    calls = []

    def reduce_sum(tensor):  # traced into the graph: called as often per traced call as per eager call
        calls.append(1)
        return tensor * 1.0

    want = SPECS[name].terms(inputs, params, reduce_sum)
    eager_calls = len(calls)
    torch._dynamo.reset()
    compiled = torch.compile(SPECS[name].terms, fullgraph=True)
    start = time.perf_counter()
    got = compiled(inputs, params, reduce_sum)
    elapsed = time.perf_counter() - start
    assert len(calls) == 2 * eager_calls
    for g, w in zip(got, want):
        if g.dtype == torch.bool:
            assert torch.equal(g, w)
        else:
            torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-7)
    assert elapsed < 120, f"compile took {elapsed:.1f}s"


@pytest.mark.parametrize("name", NAMES)
def test_settings_of_one_loss_with_another_loss_mode_are_refused(name):
    other = "vanilla"  # verl's own, registered whatever we declare
    config = compose_ours(f"algorithm={name}", f"actor_rollout_ref.actor.policy_loss.loss_mode={other}")
    with pytest.raises(ValueError, match=rf"holds the settings of `{name}`, but .*loss_mode='{other}'"):
        check_algorithm_config(config)


def test_unregistered_loss_mode_is_refused_on_the_driver():
    config = compose_ours("algorithm=grpo", "actor_rollout_ref.actor.policy_loss.loss_mode=masp")
    with pytest.raises(
        ValueError, match=r"loss_mode='masp' is not a registered policy loss\. Losses of the installed verl .*maspo"
    ):
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


# ----------------------------------------------------------------------------- the loss contract

REFERENCES = {ref.name: ref for ref in (test_maspo_math.REFERENCE, test_dac_math.REFERENCE, test_bapo_math.REFERENCE)}


def test_every_declared_loss_has_an_independent_reference():
    assert list(REFERENCES) == NAMES
    assert all(REFERENCES[name].spec is SPECS[name] for name in NAMES)


def assert_diagnostics_match(reference, terms, inputs, ref):
    got = {
        key: float(value) for key, value in reference.spec.diagnostics(terms, inputs.advantages, inputs.mask).items()
    }
    want = reference.diagnostics(ref)
    assert set(got) == set(want)
    for key, value in want.items():
        if value is None:  # undefined in the reference (no token of that kind): any finite value
            assert math.isfinite(got[key]), key
        else:
            assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-7), key


@pytest.mark.parametrize("name", NAMES)
def test_all_masked_rows_and_batches(name):
    reference = REFERENCES[name]
    p = reference.defaults
    lp, old, adv, _ = reference.draw(np.random.default_rng(3), (5, 9), 1.0)
    adv = np.where(adv == 0, 1.0, adv)
    mask = np.ones((5, 9), bool)
    mask[[0, 3]] = False
    mask &= ~reference.ambiguous(reference.reference(lp, old, adv, mask, p), p)
    terms, lp_t, _ = run_terms(reference.spec, lp, old, adv, mask, p)
    reference.check(terms, lp_t, reference.reference(lp, old, adv, mask, p), p)
    loss, grad = np_(terms.loss_mat), np_(lp_t.grad)
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))
    assert np.all(loss[[0, 3]] == 0) and np.all(grad[[0, 3]] == 0)
    assert np.any(loss[1] != 0)  # the other rows do contribute

    nothing = np.zeros((5, 9), bool)  # the whole batch masked
    terms, lp_t, inputs = run_terms(reference.spec, lp, old, adv, nothing, p)
    assert torch.all(terms.loss_mat == 0) and torch.all(lp_t.grad == 0)
    assert_diagnostics_match(reference, terms, inputs, reference.reference(lp, old, adv, nothing, p))


@pytest.mark.parametrize("shape", [(0, 7), (4, 0), (0, 0)])
@pytest.mark.parametrize("name", NAMES)
def test_empty_batches(name, shape):
    reference = REFERENCES[name]
    zeros, nothing = np.zeros(shape), np.zeros(shape, bool)
    terms, lp_t, inputs = run_terms(reference.spec, zeros, zeros, zeros, nothing, reference.defaults)
    assert terms.loss_mat.shape == shape and lp_t.grad.shape == shape
    assert float(terms.loss_mat.detach().sum()) == 0.0
    ref = reference.reference(zeros, zeros, zeros, nothing, reference.defaults)
    assert_diagnostics_match(reference, terms, inputs, ref)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("where", ["log_prob", "old_log_prob", "advantages", "all"])
@pytest.mark.parametrize("name", NAMES)
def test_non_finite_values_at_masked_positions_are_ignored(name, where, bad):
    reference = REFERENCES[name]
    p = reference.defaults
    lp, old, adv, mask = reference.draw(np.random.default_rng(11), (6, 20), 0.5)
    mask[:, -5:] = False
    mask[2] = False
    ref = reference.reference(lp, old, adv, mask, p)  # from the clean values
    lp, old, adv = lp.copy(), old.copy(), adv.copy()
    for input_name, values in (("log_prob", lp), ("old_log_prob", old), ("advantages", adv)):
        if where in (input_name, "all"):
            values[~mask] = bad
    terms, lp_t, inputs = run_terms(reference.spec, lp, old, adv, mask, p)
    for term in terms:
        assert torch.isfinite(term.detach().float()).all()
    assert np.all(np.isfinite(np_(lp_t.grad)))
    reference.check(terms, lp_t, ref, p)
    diagnostics = reference.spec.diagnostics(terms, inputs.advantages, inputs.mask)
    assert all(math.isfinite(float(value)) for value in diagnostics.values())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", NAMES)
def test_half_precision_inputs_are_upcast(name, dtype):
    """The float32 math on the half-rounded inputs, where half precision itself would overflow."""
    reference = REFERENCES[name]
    p = reference.defaults
    rng = np.random.default_rng(21)
    shape = (8, 64)
    old = np.log(rng.uniform(1e-4, 1.0, size=shape))
    lp = old + 0.5 * rng.standard_normal(shape)
    lp[0, :4] = old[0, :4] + np.array([12.0, 15.0, -12.0, -15.0])  # exp overflows / underflows in fp16
    adv = np.repeat(rng.standard_normal((8, 1)), 64, axis=1)
    adv[0, :4] = [1.0, -1.0, 1.0, -1.0]
    mask = rng.random(shape) < 0.8
    mask[0, :4] = True
    lp, old, adv = (np_(torch.tensor(x).to(dtype)) for x in (lp, old, adv))  # the values the loss sees
    mask &= ~reference.ambiguous(reference.reference(lp, old, adv, mask, p), p)
    terms, lp_h, _ = run_terms(reference.spec, lp, old, adv, mask, p, dtype=dtype)
    ref = reference.reference(lp, old, adv, mask, p)
    assert terms.loss_mat.dtype == torch.float32 and lp_h.grad.dtype == dtype
    assert torch.isfinite(terms.loss_mat).all() and torch.any(lp_h.grad != 0)
    # the gradient comes back in the inputs' precision: finite wherever its value fits there (an
    # unclipped conservative token at rho = e^15 has a gradient of 3e6, past fp16's 65504)
    fits = np.abs(ref["grad"]) <= torch.finfo(dtype).max
    assert np.isfinite(np_(lp_h.grad)[fits]).all()
    reference.check(terms, None, ref, p)
    grad_ref = torch.tensor(ref["grad"]).to(dtype).double().numpy()
    np.testing.assert_allclose(np_(lp_h.grad), grad_ref, rtol=2 * torch.finfo(dtype).eps, atol=1e-6)
    assert float(terms.ratio[0, 1].detach()) > 1e6  # fp16 itself would have overflowed here


@pytest.mark.parametrize("name", NAMES)
def test_large_advantages(name):
    reference = REFERENCES[name]
    rng = np.random.default_rng(31)
    shape = (8, 50)
    lp, old, _, drawn = reference.draw(rng, shape, 0.5)
    adv = f32(rng.uniform(-1e3, 1e3, size=shape))
    adv[0, :3] = [1e3, -1e3, 0.0]
    for p in reference.parameter_sets():
        mask = drawn & ~reference.ambiguous(reference.reference(lp, old, adv, drawn, p), p)
        terms, lp_t, _ = run_terms(reference.spec, lp, old, adv, mask, p)
        assert np.all(np.isfinite(np_(terms.loss_mat))) and np.all(np.isfinite(np_(lp_t.grad)))
        reference.check(terms, lp_t, reference.reference(lp, old, adv, mask, p), p)


@pytest.mark.parametrize("name", NAMES)
def test_large_advantages_and_log_ratios_past_the_clamp(name):
    reference = REFERENCES[name]
    lr = np.array([-60.0, -25.0, -20.5, 20.5, 25.0, 60.0, -19.5, 19.5, 0.1, -0.1])
    n = lr.size
    old = np.stack([np.full(n, -1.0), np.full(n, -30.0), np.full(n, 0.0)])
    lp = f32(old + lr)
    adv = np.array([[1e3] * n, [-1e3] * n, [1e3, -1e3] * (n // 2)])
    mask = np.ones(old.shape, bool)
    for p in reference.parameter_sets():
        terms, lp_t, _ = run_terms(reference.spec, lp, old, adv, mask, p)
        reference.check(terms, lp_t, reference.reference(lp, old, adv, mask, p), p)
        assert float(terms.log_ratio.detach().max()) == 20.0 and float(terms.log_ratio.detach().min()) == -20.0
        assert torch.isfinite(terms.loss_mat).all() and torch.isfinite(lp_t.grad).all()
        assert np.all(np_(lp_t.grad)[:, :6] == 0)  # outside the clamp: no gradient


@pytest.mark.parametrize("name", NAMES)
def test_zero_advantages_give_zero_loss_and_gradient(name):
    reference = REFERENCES[name]
    lp, old, _, _ = reference.draw(np.random.default_rng(41), (4, 30), 3.0)
    zeros, everything = np.zeros((4, 30)), np.ones((4, 30), bool)
    terms, lp_t, _ = run_terms(reference.spec, lp, old, zeros, everything, reference.defaults)
    assert torch.all(terms.loss_mat == 0) and torch.all(lp_t.grad == 0)
    assert not reference.acted(terms).any()  # nothing clipped, gated or damped


OUT_OF_RANGE = [(name, *case) for name in NAMES for case in REFERENCES[name].out_of_range]


@pytest.mark.parametrize(
    "name,kwargs,key,allowed",
    OUT_OF_RANGE,
    ids=[f"{name}-{key}={kwargs[key]}" for name, kwargs, key, _ in OUT_OF_RANGE],
)
def test_params_out_of_range_raise(name, kwargs, key, allowed):
    with pytest.raises(ValueError) as refused:
        SPECS[name].params(**kwargs)
    message = str(refused.value)
    assert f"{key}=" in message and repr(kwargs[key]) in message and allowed in message, message


BOUNDARIES = [(name, kwargs) for name in NAMES for kwargs in REFERENCES[name].boundaries]


@pytest.mark.parametrize("name,kwargs", BOUNDARIES)
def test_params_boundary_values_are_allowed(name, kwargs):
    params = SPECS[name].params(**kwargs)
    for key, value in kwargs.items():
        assert getattr(params, key) == value
