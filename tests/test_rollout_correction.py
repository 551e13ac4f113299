"""verl's rollout correction as an overlay any preset takes (`+correction=tis`, `+correction=icepop`).

The weights come from verl's own trainer-side function (`compute_rollout_correction_and_add_to_batch`,
which the v1 trainer calls on every batch that carries the rollout's log-probs) with the overlay's
config, and go into verl's own `ppo_loss` as the actor receives them. On CPU the actor and the `hf`
rollout both compute in fp32, so the weights are 1 up to rounding and cannot show that they act:
here the rollout's log-probs are perturbed, and the loss must move with the weights. The recipes in
miniature (tests/test_recipes_cpu.py) check in verl's real workers that the weights reach every
micro-batch of a two-rank run.
"""

import functools
import math

import pytest
import torch
from test_presets import CHANGES, LENGTH, PL, PRESETS
from verl import DataProto
from verl.trainer.config.algorithm import RolloutCorrectionConfig
from verl.trainer.ppo.rollout_corr_helper import compute_rollout_correction_and_add_to_batch
from verl.utils.config import omega_conf_to_dataclass

from verl_batch import make_batch, run_ppo_loss
from verl_config import build_actor_config, compose_ours, compose_stock

# overlay -> verl's own preset of the same correction, and the weight each ratio gets (written
# from verl's docs, docs/algo/rollout_corr.md: TIS clamps at 2, IcePop zeroes outside [0.5, 5])
OVERLAYS = {
    "tis": (RolloutCorrectionConfig.decoupled_token_is(), lambda ratio: ratio.clamp(max=2.0)),
    "icepop": (
        RolloutCorrectionConfig.decoupled_token_icepop(),
        lambda ratio: torch.where((ratio >= 0.5) & (ratio <= 5.0), ratio, torch.zeros_like(ratio)),
    ),
}
# Every loss multiplies each token's term by its token's weight, after anything else it decides
# (clip_cov's and kl_cov's choice of tokens, BAPO's bounds, GSPO's sequence ratio do not read the
# weights), so each token's gradient is its weight times the unweighted one; except verl's
# geo_mean, which multiplies each response's term by the geometric mean of its tokens' weights.
SEQUENCE_WEIGHTED = {"geo_mean"}


def per_token_factor(loss: str, weights: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """What the weights multiply each token's gradient by (verl's geo_mean: log(w + 1e-10) averaged
    over the response, as rollout_corr docs and its code say)."""
    if loss not in SEQUENCE_WEIGHTED:
        return weights
    mean_log = (torch.log(weights + 1e-10) * mask).sum(-1) / mask.sum(-1)
    return torch.exp(mean_log)[:, None] * mask


def loss_mode(preset: str) -> str:
    return CHANGES[preset].get(PL + "loss_mode", "vanilla")


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("compose", [compose_ours, compose_stock], ids=["maspo_verl.main_ppo", "verl.main_ppo"])
def test_the_overlay_is_verls_own_preset_with_rollout_log_probs(overlay, compose):
    plus = "" if compose is compose_ours else "+"
    config = compose(f"{plus}algorithm=dppo_tv", f"+correction={overlay}", LENGTH)
    built = omega_conf_to_dataclass(config.algorithm.rollout_correction, dataclass_type=RolloutCorrectionConfig)
    assert built == OVERLAYS[overlay][0]
    assert config.actor_rollout_ref.rollout.calculate_log_probs is True
    assert config.actor_rollout_ref.actor.policy_loss.loss_mode == "dppo_tv"  # the preset is untouched


@functools.cache
def overlay_config(overlay: str):
    """`algorithm.rollout_correction` as the overlay composes it (the trainer reads it as a DictConfig)."""
    return compose_ours("algorithm=grpo", f"+correction={overlay}", LENGTH).algorithm.rollout_correction


@functools.cache
def actor_config(preset: str):
    return build_actor_config(compose_ours(f"algorithm={preset}", LENGTH))


def correction_weights(overlay: str, data, shift: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """The weights verl's trainer computes for this batch when the rollout's log-probs are the
    old ones minus `shift` (pi_old / pi_rollout = exp(shift))."""
    batch = DataProto.from_dict(
        tensors={
            "old_log_probs": data["old_log_probs"],
            "rollout_log_probs": data["old_log_probs"] - shift,
            "response_mask": data["response_mask"],
        }
    )
    batch, metrics = compute_rollout_correction_and_add_to_batch(batch, overlay_config(overlay))
    return batch.batch["rollout_is_weights"], metrics


def shifts(data, seed: int = 3) -> torch.Tensor:
    """Log-ratio shifts in [-2, 2]: ratios from e^-2 to e^2, on both sides of every bound."""
    generator = torch.Generator().manual_seed(seed)
    return (4 * torch.rand(data["old_log_probs"].shape, generator=generator) - 2) * data["response_mask"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_verls_trainer_computes_the_documented_weights(overlay):
    data, _ = make_batch(seed=21, scale=0.5, padding=0.0)
    mask = data["response_mask"].bool()
    unit, metrics = correction_weights(overlay, data, torch.zeros_like(data["old_log_probs"]))
    assert (unit[mask] == 1).all() and (unit[~mask] == 0).all()
    assert metrics["rollout_corr/rollout_is_mean"] == pytest.approx(1.0)
    shift = shifts(data)
    weights, _ = correction_weights(overlay, data, shift)
    expected = OVERLAYS[overlay][1](torch.exp(shift)) * mask
    torch.testing.assert_close(weights, expected)
    assert 0 < (weights[mask] != torch.exp(shift)[mask]).sum() < mask.sum()  # some, not all, are cut


def run_with_weights(preset: str, weights=None, seed: int = 22):
    """verl's ppo_loss for the preset on one batch; `weights` (or none) as the actor receives them.
    clip_cov's random choice of tokens is drawn from the same seed every time."""
    config = actor_config(preset)
    data, log_prob = make_batch(seed=seed, scale=0.5, padding=0.0)
    if weights is not None:
        data["rollout_is_weights"] = weights
    torch.manual_seed(0)
    loss, _ = run_ppo_loss(config, data, log_prob, micro_batch_size=6)
    return loss, log_prob.grad.clone(), data


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("preset", PRESETS)
def test_the_weights_reach_every_loss(preset, overlay):
    """Unit weights (an fp32 rollout) leave the loss as it is without them; perturbed weights move it,
    and each token's gradient is the unweighted one times its weight (geo_mean: its response's
    geometric-mean weight); a token IcePop masks gets none."""
    plain_loss, plain_grad, data = run_with_weights(preset)
    unit, _ = correction_weights(overlay, data, torch.zeros_like(data["old_log_probs"]))
    unit_loss, unit_grad, _ = run_with_weights(preset, unit)
    assert unit_loss == pytest.approx(plain_loss, rel=1e-6, abs=1e-9)
    torch.testing.assert_close(unit_grad, plain_grad)

    weights, _ = correction_weights(overlay, data, shifts(data))
    loss, grad, _ = run_with_weights(preset, weights)
    assert math.isfinite(loss) and abs(loss - plain_loss) > 1e-4 * max(1.0, abs(plain_loss))
    mask = data["response_mask"].float()
    torch.testing.assert_close(grad, per_token_factor(loss_mode(preset), weights, mask) * plain_grad,
                               rtol=1e-5, atol=1e-7)  # fmt: skip
    if overlay == "icepop" and loss_mode(preset) not in SEQUENCE_WEIGHTED:
        assert (grad[mask.bool() & (weights == 0)] == 0).all()
