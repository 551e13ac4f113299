"""What the docs promise (docs/algorithms.md), written down once for the tests that check it."""

# docs/algorithms.md, MASPO's metrics: logged by the actor workers every step, besides verl's actor/ppo_kl.
MASPO_METRICS = [
    "actor/maspo/gate_mean",
    "actor/maspo/gated_frac_pos",
    "actor/maspo/gated_frac_neg",
    "actor/maspo/gate_below_half_frac",
    "actor/maspo/sigma_pos_mean",
    "actor/maspo/sigma_neg_mean",
    "actor/maspo/clip_frac_ppo",
]
