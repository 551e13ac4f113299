"""What our losses do with non-finite inputs (maspo_verl.losses, docs/algorithms.md).

A valid token with a NaN or inf in log_prob, old_log_prob, advantages or rollout_is_weights is
treated like padding: the loss and gradient of the other tokens are those of a batch without
it, it is counted in the metrics and a warning, and the run goes on until
`actor_rollout_ref.actor.policy_loss.max_consecutive_nonfinite_calls` loss calls in a row have
had such tokens; the next one raises, naming the setting.
"""

import functools
import logging
import math
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from maspo_verl.algos import LOSSES
from maspo_verl.algos.common import DEFAULT_MAX_CONSECUTIVE_NONFINITE_CALLS, NONFINITE_SETTING
from maspo_verl.config import CONFIG_CLASSES, BasePolicyLossConfig
from maspo_verl.losses import POLICY_LOSSES
from verl_batch import make_batch
from verl_config import build_actor_config, compose_ours

NAMES = [spec.name for spec in LOSSES]
KEY = f"actor_rollout_ref.actor.policy_loss.{NONFINITE_SETTING}"
FIELDS = ["log_prob", "old_log_prob", "advantages", "rollout_is_weights"]
# valid positions of make_batch(seed=41) that get a bad value (row 0 is a full-length response)
BAD = [(0, 0), (0, 3), (1, 0)]


@pytest.fixture(autouse=True)
def fresh_streaks():
    """The streak is per process: every test starts from a clean one and leaves one behind."""
    for fn in POLICY_LOSSES.values():
        fn.nonfinite_streak.reset()
    yield
    for fn in POLICY_LOSSES.values():
        fn.nonfinite_streak.reset()


@functools.lru_cache(maxsize=None)
def actor_config(name, *overrides):
    """Composed once per argument list (the losses only read it)."""
    return build_actor_config(compose_ours(f"algorithm={name}", *overrides))


def batch(seed=41):
    data, log_prob = make_batch(seed=seed, scale=0.8)
    weights = torch.rand(log_prob.shape, generator=torch.Generator().manual_seed(seed)) + 0.5
    return dict(
        log_prob=log_prob.detach(),
        old_log_prob=data["old_log_probs"],
        advantages=data["advantages"],
        rollout_is_weights=weights,
        response_mask=data["response_mask"].bool(),
    )


def call(name, config, inputs, loss_agg_mode="token-mean"):
    """(loss, d loss / d log_prob, metrics) of one loss call."""
    log_prob = inputs["log_prob"].clone().requires_grad_(True)
    others = {key: value for key, value in inputs.items() if key != "log_prob"}
    loss, metrics = POLICY_LOSSES[name](log_prob=log_prob, loss_agg_mode=loss_agg_mode, config=config, **others)
    loss.backward()
    return loss.detach(), log_prob.grad, metrics


def with_bad_values(inputs, field, value=float("nan")):
    bad = dict(inputs, **{field: inputs[field].clone()})
    for position in BAD:
        bad[field][position] = value
    return bad


def without_bad_tokens(inputs):
    mask = inputs["response_mask"].clone()
    for position in BAD:
        mask[position] = False
    return dict(inputs, response_mask=mask)


@pytest.mark.parametrize("loss_agg_mode", ["token-mean", "seq-mean-token-mean"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("name", NAMES)
def test_a_bad_micro_batch_is_masked_and_counted(name, field, value, loss_agg_mode):
    config = actor_config(name)
    inputs = batch()
    assert all(inputs["response_mask"][position] for position in BAD)
    loss, grad, metrics = call(name, config, with_bad_values(inputs, field, value), loss_agg_mode)
    clean_loss, clean_grad, clean_metrics = call(name, config, without_bad_tokens(inputs), loss_agg_mode)

    # the other tokens: the loss, gradient and metrics of a batch without the bad ones
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    torch.testing.assert_close(loss, clean_loss, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(grad, clean_grad, rtol=1e-6, atol=1e-9)
    assert all(grad[position] == 0 for position in BAD)
    assert metrics.pop(f"actor/{name}/nonfinite_tokens") == len(BAD)
    assert metrics.pop(f"actor/{name}/nonfinite_calls") == 1.0
    assert clean_metrics.pop(f"actor/{name}/nonfinite_tokens") == 0
    assert clean_metrics.pop(f"actor/{name}/nonfinite_calls") == 0.0
    assert metrics == pytest.approx(clean_metrics, rel=1e-6, abs=1e-7)
    # ... and the masking mattered: the bad tokens' clean values would change the loss
    full_loss, *_ = call(name, config, inputs, loss_agg_mode)
    assert full_loss.item() != pytest.approx(clean_loss.item(), rel=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_bad_values_at_padded_positions_are_not_counted(name):
    inputs = batch()
    padded = ~inputs["response_mask"]
    assert padded.any()
    for field in FIELDS:
        inputs[field] = inputs[field].masked_fill(padded, float("nan"))
    _, grad, metrics = call(name, actor_config(name), inputs)
    assert metrics[f"actor/{name}/nonfinite_tokens"] == 0 and torch.isfinite(grad).all()


@pytest.mark.parametrize("name", NAMES)
def test_the_run_survives_up_to_the_limit_and_stops_after_it(name, caplog):
    config = actor_config(name, f"{KEY}=2")
    bad, good = with_bad_values(batch(), "advantages"), batch()
    with caplog.at_level(logging.WARNING, logger="maspo_verl.algos.common"):
        call(name, config, bad)
        call(name, config, bad)  # two in a row: still allowed
        call(name, config, good)  # a clean call ends the streak
        call(name, config, bad)
        call(name, config, bad)
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 4, warnings  # every bad call is reported, none silently
    assert all(f"{len(BAD)} valid token(s)" in message and "advantages: 3" in message for message in warnings)
    assert f"{KEY}=2" in warnings[0]
    with pytest.raises(ValueError, match=rf"3 loss call\(s\) in a row .*{re.escape(KEY)}=2 allows at most 2"):
        call(name, config, bad)


@pytest.mark.parametrize("field", FIELDS)
def test_zero_stops_at_the_first_bad_call_and_names_the_input(field):
    config = actor_config("maspo", f"{KEY}=0")
    call("maspo", config, batch())  # clean calls pass
    with pytest.raises(ValueError, match=rf"maspo loss: 3 valid token\(s\) .*\({field}: 3\).*{re.escape(KEY)}=0"):
        call("maspo", config, with_bad_values(batch(), field))


@pytest.mark.parametrize("name", NAMES)
def test_one_host_sync_per_clean_call_and_one_more_to_name_bad_inputs(name, monkeypatch):
    config = actor_config(name)
    syncs = []
    for method in ("tolist", "item", "__bool__"):
        original = getattr(torch.Tensor, method)

        def counted(self, *args, _original=original, _method=method, **kwargs):
            syncs.append(_method)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, method, counted)
    call(name, config, batch())
    assert syncs == ["tolist"]
    syncs.clear()
    call(name, config, with_bad_values(batch(), "old_log_prob"))
    assert syncs == ["tolist", "tolist"]


def test_the_setting_has_its_documented_default_in_every_preset():
    docs = (Path(__file__).parents[1] / "docs" / "algorithms.md").read_text()
    assert f"| `{NONFINITE_SETTING}` | {DEFAULT_MAX_CONSECUTIVE_NONFINITE_CALLS} |" in docs
    for cls in [BasePolicyLossConfig, *CONFIG_CLASSES.values()]:
        assert getattr(cls(), NONFINITE_SETTING) == DEFAULT_MAX_CONSECUTIVE_NONFINITE_CALLS
    for preset in ["grpo", *NAMES]:
        policy_loss = compose_ours(f"algorithm={preset}").actor_rollout_ref.actor.policy_loss
        assert policy_loss[NONFINITE_SETTING] == DEFAULT_MAX_CONSECUTIVE_NONFINITE_CALLS


@pytest.mark.parametrize("value", [-1, 1.5, True, "3", None])
@pytest.mark.parametrize("cls", [BasePolicyLossConfig, *CONFIG_CLASSES.values()])
def test_a_bad_setting_is_refused_by_name(cls, value):
    with pytest.raises(ValueError, match=rf"{re.escape(KEY)}={re.escape(repr(value))} is not allowed: .*integer >= 0"):
        cls(**{NONFINITE_SETTING: value})


@pytest.mark.parametrize("preset", ["grpo", "dac"])
def test_a_bad_setting_stops_the_run_when_verl_builds_the_config(preset):
    from hydra.errors import InstantiationException

    with pytest.raises(InstantiationException, match=rf"{re.escape(KEY)}=-3 is not allowed"):
        build_actor_config(compose_ours(f"algorithm={preset}", f"{KEY}=-3"))


def test_a_config_without_the_setting_gets_the_default():
    """verl's distillation path and plain PolicyLossConfig: no key of ours, the default limit."""
    config = SimpleNamespace(policy_loss=None, global_batch_info={}, clip_ratio_c=3.0)
    bad = with_bad_values(batch(), "advantages")
    for _ in range(DEFAULT_MAX_CONSECUTIVE_NONFINITE_CALLS):
        call("dac", config, bad)
    with pytest.raises(ValueError, match=rf"{re.escape(KEY)}={DEFAULT_MAX_CONSECUTIVE_NONFINITE_CALLS} allows"):
        call("dac", config, bad)


# ------------------------------------------------------- a NaN log-prob from the model itself


def test_masking_a_nan_log_prob_cannot_clean_the_model_gradient_but_verl_skips_that_step():
    """Why the loss alone cannot save a step whose model produced NaN: the loss is finite and
    its gradient at the bad token is 0, yet the model's backward multiplies the NaN logits by
    that 0. verl's FSDP engine then finds a non-finite gradient norm and skips the update."""
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngine

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 11)
    inputs = batch()
    rows, cols = inputs["log_prob"].shape
    hidden = torch.randn(rows, cols, 4)
    hidden[0, 0] = float("nan")  # one position of the forward pass goes bad
    logits = model(hidden)
    tokens = torch.randint(0, 11, (rows, cols))
    log_prob = torch.log_softmax(logits, dim=-1).gather(-1, tokens[..., None])[..., 0]
    others = {key: value for key, value in inputs.items() if key != "log_prob"}
    loss, metrics = POLICY_LOSSES["maspo"](log_prob=log_prob, config=actor_config("maspo"), **others)
    assert torch.isfinite(loss) and metrics["actor/maspo/nonfinite_tokens"] == 1
    loss.backward()
    assert not all(torch.isfinite(p.grad).all() for p in model.parameters())

    # verl 0.9.1's FSDPEngine.optimizer_step (verl/workers/engine/fsdp/transformer_impl.py) on a
    # plain module: a non-finite gradient norm zeroes the gradients and does not step.
    weights = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    engine = SimpleNamespace(
        optimizer_config=SimpleNamespace(clip_grad=1.0), module=model, optimizer=optimizer, _qat_enabled=False
    )
    grad_norm = FSDPEngine.optimizer_step(engine)
    assert not math.isfinite(grad_norm)
    assert all(torch.equal(p, w) for p, w in zip(model.parameters(), weights))
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())
