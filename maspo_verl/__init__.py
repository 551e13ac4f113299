"""maspo-verl: MASPO (arXiv 2602.17550) and its baselines as a plugin for stock verl.

Importing this package does not import verl. Registration with verl happens through the
`verl.plugins` entry point (`maspo_verl.verl_plugin`) or by calling `maspo_verl.register()`.
"""

import sys

__version__ = "0.1.0"


def register() -> None:
    """Register every maspo-verl extension with verl (idempotent)."""
    from .registration import register as _register

    _register()


# `VERL_USE_EXTERNAL_MODULES=maspo_verl` and `actor_rollout_ref.model.external_lib=maspo_verl`
# import this package from inside verl: register then. Without verl loaded, stay verl-free.
if "verl" in sys.modules:
    register()
