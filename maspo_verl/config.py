"""The actor's `policy_loss` config for MASPO: verl's PolicyLossConfig plus the seven knobs.

Select it in Hydra with
    actor_rollout_ref.actor.policy_loss._target_=maspo_verl.config.MASPOPolicyLossConfig
(the `maspo` preset does this). verl instantiates it on the driver inside `validate_config`,
before Ray or any GPU is touched, so a bad value stops the run there with a message that
names the key, the value and the allowed range.
"""

from dataclasses import dataclass

from verl.workers.config import PolicyLossConfig

from .algos.maspo import MASPOParams

POLICY_LOSS_KEY = "actor_rollout_ref.actor.policy_loss"


@dataclass
class MASPOPolicyLossConfig(PolicyLossConfig, MASPOParams):
    """verl's PolicyLossConfig with MASPO's hyperparameters (see MASPOParams for defaults)."""

    loss_mode: str = "maspo"
    _key_prefix = POLICY_LOSS_KEY + "."

    def __post_init__(self):
        self.check()


def check_policy_loss_config(config) -> None:
    """Refuse a policy_loss key its config class does not have, suggesting the closest one.

    verl would refuse it too, but later and as a bare `unexpected keyword argument`; values
    are checked when verl instantiates the class (MASPOParams.check).
    """
    import difflib
    from dataclasses import fields, is_dataclass

    from hydra.utils import get_class

    policy_loss = config.actor_rollout_ref.actor.policy_loss
    target = policy_loss.get("_target_")
    if not target:
        return
    config_class = get_class(target)
    if not is_dataclass(config_class):
        return
    known = [f.name for f in fields(config_class)]
    for key in policy_loss:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ValueError(
                f"Unknown setting {POLICY_LOSS_KEY}.{key}={policy_loss[key]!r} for {target}.{hint} "
                f"Allowed keys: {', '.join(sorted(k for k in known if not k.startswith('_')))}."
            )
