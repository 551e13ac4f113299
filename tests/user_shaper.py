"""A user's own advantage shaper, registered the documented way (README, "Add your own")."""

from dataclasses import dataclass

from maspo_verl.algos.common import Params
from maspo_verl.shaping import register_advantage_shaper


@dataclass
class ScaleParams(Params):
    factor: float = 3.0
    LABEL = "scale"
    RULES = (("factor", lambda p, v: v > 0, "> 0"),)


@register_advantage_shaper("scale", params=ScaleParams)
def scale(inputs, params):
    return inputs.advantages * params.factor, {}
