"""Pure-torch formulas of the algorithms (no verl import): read, test and reuse them alone."""

from .maspo import (
    MASPOParams,
    MASPOTerms,
    maspo_diagnostics,
    maspo_token_loss,
    masked_mean,
    mass_adaptive_sigma,
    risk_factors,
    soft_gate,
    trust_region_sigmas,
)

__all__ = [
    "MASPOParams",
    "MASPOTerms",
    "maspo_diagnostics",
    "maspo_token_loss",
    "masked_mean",
    "mass_adaptive_sigma",
    "risk_factors",
    "soft_gate",
    "trust_region_sigmas",
]
