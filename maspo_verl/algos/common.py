"""What every policy loss here shares: validated hyperparameters, the ratio prologue, masked
means, and the declaration that hands a loss to the verl adapter. Torch only, no verl.

A loss module (``maspo.py``, ``dac.py``, ``bapo.py``) provides

* a ``Params`` dataclass whose ``RULES`` say what each value may be (checked on construction,
  with the key, the value and the allowed range in the message);
* a pure ``terms`` function: sanitised float32 inputs in, per-token ``loss_mat`` (and whatever
  else its diagnostics need) out. No host sync and no data-dependent Python branch, so it
  compiles under ``torch.compile`` without graph breaks; input checks and metric syncs happen
  once per call in the adapter (``maspo_verl.losses``);
* a ``diagnostics`` function returning 0-d tensors;
* ``LOSS = LossSpec(...)``, listed in ``maspo_verl.algos.LOSSES``.
"""

from __future__ import annotations

import logging
import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, NamedTuple, Optional

import torch

logger = logging.getLogger(__name__)

# Log-ratios are clamped like verl's own losses do, so that exp() cannot overflow float32.
LOG_RATIO_LIMIT = 20.0
# The clip width a plain PPO/GRPO run would use; only for comparison metrics.
PPO_CLIP_FOR_METRICS = 0.2

# A rule: (field name, predicate(params, value) -> bool, description of what is allowed).
Rule = tuple[str, Callable[[Any, Any], bool], str]


class Params:
    """Mixin for a hyperparameter dataclass: validated on construction.

    Subclasses are dataclasses that set ``RULES`` and ``LABEL`` (the algorithm's name in
    messages); a rule's description may name other values (``"{sigma_base}"``). ``_key_prefix`` lets a config subclass name the key as the user wrote it
    (for example ``actor_rollout_ref.actor.policy_loss.``). Booleans are only accepted by
    rules that ask for them (``is_flag``); every other value must be a finite real number.
    """

    RULES: ClassVar[tuple[Rule, ...]] = ()
    LABEL: ClassVar[str] = ""
    _key_prefix: ClassVar[str] = ""

    def __post_init__(self):
        self.check()

    def check(self) -> None:
        """Raise ValueError on the first setting outside its allowed range."""
        for name, allowed, description in self.RULES:
            value = getattr(self, name)
            if description == FLAG:
                ok = allowed(self, value)
            else:
                is_number = isinstance(value, numbers.Real) and not isinstance(value, bool)
                ok = is_number and math.isfinite(value) and allowed(self, value)
                # a range may name another setting's value, e.g. "{sigma_base}"
                description = "a finite number " + description.format_map(vars(self))
            if not ok:
                raise ValueError(
                    f"{self.LABEL} setting {self._key_prefix}{name}={value!r} is not allowed: it must be {description}."
                )

    @classmethod
    def param_names(cls) -> list[str]:
        return [rule[0] for rule in cls.RULES]


FLAG = "true or false"


def flag_rule(name: str) -> Rule:
    return (name, lambda params, value: isinstance(value, bool), FLAG)


class LossInputs(NamedTuple):
    """Sanitised float32 inputs: zeros at masked positions, no gradient except ``log_prob``."""

    log_prob: torch.Tensor
    old_log_prob: torch.Tensor
    advantages: torch.Tensor
    mask: torch.Tensor  # bool


class Ratio(NamedTuple):
    log_ratio: torch.Tensor  # clamped log(pi_theta / pi_old), with gradient
    ratio: torch.Tensor  # rho, with gradient


@dataclass(frozen=True)
class LossSpec:
    """How the verl adapter serves one loss: ``loss_mode=<name>``, config class, metrics.

    ``terms(inputs, params, reduce_sum)`` returns a NamedTuple with at least ``loss_mat`` and
    ``log_ratio``; ``reduce_sum`` sums a tensor over the data-parallel group (identity on
    one rank) for losses whose statistics span the whole batch.
    ``diagnostics(terms, advantages, mask)`` gets the advantages as the terms saw them (zero
    where masked, ``LossInputs.advantages``) and returns ``{metric name: 0-d tensor}``, logged
    as ``actor/<name>/<metric>``.
    ``actor_keys`` name Params fields that verl already has on the actor (``clip_ratio_c``),
    so a user sets them once, where verl's own losses read them.
    """

    name: str
    params: type
    terms: Callable[..., Any]
    diagnostics: Callable[..., dict]
    config_class_name: str
    summary: str = ""
    # Params fields read from verl's ActorConfig (e.g. clip_ratio_c), not from the policy-loss config.
    actor_keys: tuple[str, ...] = ()


def identity_sum(tensor: torch.Tensor) -> torch.Tensor:
    """``reduce_sum`` on a single rank."""
    return tensor


def prepare_inputs(log_prob, old_log_prob, advantages, response_mask) -> LossInputs:
    """Upcast to float32 and zero the masked positions before any arithmetic.

    Padded positions may hold anything (-inf and NaN included); replaced by zeros they reach
    neither the loss nor the gradient. Half precision would overflow exp(log_ratio) at ~11.
    """
    mask = response_mask.bool()
    zero = torch.zeros((), dtype=torch.float32, device=log_prob.device)  # one fill for the three wheres
    return LossInputs(
        log_prob=torch.where(mask, log_prob.float(), zero),
        old_log_prob=torch.where(mask, old_log_prob.detach().float(), zero),
        advantages=torch.where(mask, advantages.detach().float(), zero),
        mask=mask,
    )


def finite_positions(mask: torch.Tensor, *tensors: Optional[torch.Tensor]) -> torch.Tensor:
    """``mask`` where every given tensor is finite (no sync; 2 + len(tensors) elementwise ops).

    The tensors are added up in float32 and the sum tested once, x - x == 0 (false for NaN and
    +-inf): cheaper than testing each input, and a NaN or inf in any of them makes the sum
    non-finite. A token whose finite inputs add up past float32's range (~3.4e38) counts as
    non-finite too; no log-probability, advantage or importance weight is that large.
    """
    present = [tensor.detach() for tensor in tensors if tensor is not None]
    total = present[0].float()
    for tensor in present[1:]:
        total = total + tensor
    return mask & (total - total == 0)


def importance_ratio(inputs: LossInputs) -> Ratio:
    """rho = exp(clamp(log_prob - old_log_prob, -20, 20)), with gradient through log_prob."""
    log_ratio = (inputs.log_prob - inputs.old_log_prob).clamp(-LOG_RATIO_LIMIT, LOG_RATIO_LIMIT)
    return Ratio(log_ratio, torch.exp(log_ratio))


def check_shapes(mask: torch.Tensor, label: str, **tensors: Optional[torch.Tensor]) -> None:
    """Shapes are static: checking them costs no device sync."""
    for name, tensor in tensors.items():
        if tensor is not None and tensor.shape != mask.shape:
            raise ValueError(f"{label} loss: {name} has shape {tuple(tensor.shape)}, response_mask {tuple(mask.shape)}")


def count_nonfinite(mask: torch.Tensor, **tensors: Optional[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Non-finite values at valid positions, per input, as 0-d tensors (no sync)."""
    return {
        name: (~torch.isfinite(tensor.detach()) & mask).sum() for name, tensor in tensors.items() if tensor is not None
    }


# The policy for non-finite inputs in the verl adapter (maspo_verl.losses): tokens with one are
# masked and counted; NONFINITE_KEY loss calls in a row with such tokens are tolerated, the next
# one stops the run. POLICY_LOSS_KEY is maspo_verl.config's too; it lives here so that the
# adapter names the setting without importing the config module (which imports verl's configs).
POLICY_LOSS_KEY = "actor_rollout_ref.actor.policy_loss"
NONFINITE_SETTING = "max_consecutive_nonfinite_calls"
NONFINITE_KEY = f"{POLICY_LOSS_KEY}.{NONFINITE_SETTING}"
DEFAULT_MAX_CONSECUTIVE_NONFINITE_CALLS = 16


def check_nonfinite_limit(value: Any, key: str = NONFINITE_KEY) -> int:
    """The limit as an int, or ValueError naming the setting, its value and what is allowed."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(
            f"{key}={value!r} is not allowed: it must be an integer >= 0, the number of loss calls in a row "
            "whose non-finite inputs are masked and logged before the run stops (0 stops at the first)."
        )
    return int(value)


class NonfiniteStreak:
    """Consecutive loss calls with non-finite inputs, per process (one data-parallel rank).

    ``update`` is called once per loss call with the number of valid tokens it masked; a clean
    call resets the streak. A streak longer than the limit raises ValueError naming the
    setting; a shorter one is logged as a warning, so a bad micro-batch is never silent.
    """

    def __init__(self, label: str, key: str = NONFINITE_KEY):
        self.label = label
        self.key = key
        self.calls = 0

    def update(self, bad_tokens: int, limit: int, detail: Callable[[], str]) -> None:
        if not bad_tokens:
            self.calls = 0
            return
        self.calls += 1
        message = (
            f"{self.label} loss: {int(bad_tokens)} valid token(s) with non-finite inputs ({detail()}), "
            f"{self.calls} loss call(s) in a row with such tokens"
        )
        if self.calls > limit:
            self.calls = 0
            raise ValueError(
                f"{message}; {self.key}={limit} allows at most {limit}. Bad data: check the rewards, the "
                "advantages and the old and current log-probs; raise the setting to ride out a longer streak."
            )
        logger.warning(
            "%s: masked (loss and gradient 0 there); the run stops after more than %s=%d such calls in a row.",
            message, self.key, limit,
        )  # fmt: skip

    def reset(self) -> None:
        self.calls = 0


def raise_on_nonfinite(label: str, counts: dict[str, int]) -> None:
    """Bad data must not turn into a silent NaN loss."""
    for name, count in counts.items():
        if count:
            raise ValueError(f"{label} loss: {name} has {int(count)} non-finite value(s) at valid (unmasked) positions")


def check_finite_where_valid(mask: torch.Tensor, label: str, **tensors: Optional[torch.Tensor]) -> None:
    """Shapes and finiteness for direct callers of a loss module (one sync per input)."""
    check_shapes(mask, label, **tensors)
    raise_on_nonfinite(label, {name: int(count) for name, count in count_nonfinite(mask.bool(), **tensors).items()})


def count_true(flags: torch.Tensor) -> torch.Tensor:
    """How many entries hold, as a 0-d int32 tensor (no sync).

    int32, not sum()'s default int64: on CPU a sum of bools into int64 first copies the whole
    tensor to int64 (4x slower at 1M tokens). A micro-batch holds far fewer than 2^31 tokens.
    """
    return flags.sum(dtype=torch.int32)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, empty: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean of `values` where `mask` holds; `empty` (default 0) when it holds nowhere."""
    count = count_true(mask)
    total = torch.where(mask, values.detach(), 0.0).sum(dtype=torch.float32)
    if empty is None:  # the total is 0 when the mask holds nowhere
        return total / count.clamp_min(1)
    return torch.where(count > 0, total / count.clamp_min(1), empty)


def share(flags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Share of valid tokens where `flags` holds (boolean sums: no float copies of big masks)."""
    return count_true(flags & mask) / count_true(mask).clamp_min(1)
