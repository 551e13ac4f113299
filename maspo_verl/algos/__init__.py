"""Pure-torch formulas of the algorithms (no verl import): read, test and reuse them alone.

``LOSSES`` is the one list of policy losses this package serves; each entry is a module's
``LOSS`` declaration (see ``common.LossSpec``). Adding a loss: a module here, a line in this
list, a preset in configs/algorithm/.
"""

from . import bapo, dac, maspo
from .common import LossSpec
from .maspo import (
    MASPOParams,
    MASPOTerms,
    maspo_diagnostics,
    maspo_terms,
    maspo_token_loss,
    mass_adaptive_sigma,
    risk_factor,
    soft_gate,
    trust_region_sigma,
)

LOSSES: list[LossSpec] = [maspo.LOSS, dac.LOSS, bapo.LOSS]

__all__ = [
    "LOSSES",
    "LossSpec",
    "MASPOParams",
    "MASPOTerms",
    "maspo_diagnostics",
    "maspo_terms",
    "maspo_token_loss",
    "mass_adaptive_sigma",
    "risk_factor",
    "soft_gate",
    "trust_region_sigma",
]
