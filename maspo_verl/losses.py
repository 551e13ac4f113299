"""Policy losses registered with verl (`actor.policy_loss.loss_mode=<name>`).

Each function follows verl 0.9.1's policy-loss contract: keyword arguments, padded
(batch, response_len) tensors, returns (loss, metrics). The loss is aggregated with verl's
`agg_loss(..., **config.global_batch_info)` so that micro-batches add up to the mini-batch
loss, whatever `loss_agg_mode` the actor uses.
"""

from typing import Any, Optional

import torch
from verl.trainer.ppo.core_algos import agg_loss

from .algos.maspo import MASPOParams, masked_mean, maspo_diagnostics, maspo_token_loss

METRIC_PREFIX = "actor/maspo/"


def maspo_params(config) -> MASPOParams:
    """MASPO's hyperparameters from the actor config.

    Read defensively: verl's distillation path calls policy losses with another config type,
    and a plain PolicyLossConfig (no MASPO fields) means the defaults.
    """
    policy_loss = getattr(config, "policy_loss", None)
    if isinstance(policy_loss, MASPOParams):
        return policy_loss
    return MASPOParams.from_config(policy_loss) if policy_loss is not None else MASPOParams()


def compute_policy_loss_maspo(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    loss_agg_mode: str = "token-mean",
    config: Optional[Any] = None,
    rollout_is_weights: Optional[torch.Tensor] = None,
    **kwargs,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """MASPO policy loss (arXiv 2602.17550): l = -A * sg(g) * rho, no clip.

    g is the unilateral Gaussian gate exp(-(r - 1)^2 / (2 sigma^2)) on the detached ratio in
    the aggressive quadrants (A > 0, r > 1 with sigma_pos; A < 0, r < 1 with sigma_neg), where
    sigma = clamp(sigma_base / q^alpha, sigma_base, sigma_high) * risk(A). Formulas and
    defaults: maspo_verl.algos.maspo.
    """
    terms = maspo_token_loss(
        log_prob=log_prob,
        old_log_prob=old_log_prob,
        advantages=advantages,
        response_mask=response_mask,
        params=maspo_params(config),
        rollout_is_weights=rollout_is_weights,
    )
    global_batch_info = getattr(config, "global_batch_info", None) or {}
    pg_loss = agg_loss(
        loss_mat=terms.loss_mat, loss_mask=response_mask, loss_agg_mode=loss_agg_mode, **global_batch_info
    )

    mask = response_mask.bool()
    diagnostics = maspo_diagnostics(terms, torch.where(mask, advantages.float(), 0.0), mask)
    names = [METRIC_PREFIX + name for name in diagnostics] + ["actor/ppo_kl"]
    # verl's own trust-region metric, as `vanilla` reports it: the mean of -log(rho).
    values = list(diagnostics.values()) + [masked_mean(-terms.log_ratio, mask)]
    metrics = dict(zip(names, torch.stack(values).tolist()))  # one device sync, not eight
    return pg_loss, metrics


# name -> loss function; registered with verl by maspo_verl.plugin.
POLICY_LOSSES = {
    "maspo": compute_policy_loss_maspo,
}
