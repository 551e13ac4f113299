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
    "actor/maspo/dual_clip_frac",
    "actor/maspo/nonfinite_tokens",
    "actor/maspo/nonfinite_calls",
]

# The authors' defaults (the papers; docs/algorithms.md), for the tests that check code and presets.
MASPO_DEFAULTS = dict(
    sigma_base=1.0, alpha=0.3, beta_pos=0.03, beta_neg=0.03, sigma_high=10.0, adv_low=0.1, adv_high=10.0
)
DAC_DEFAULTS = dict(eps_low=0.16, eps_high=0.2, clip_ratio_c=3.0)
BAPO_DEFAULTS = dict(
    rho0=0.5,
    c_low_start=0.6,
    c_low_max=0.9,
    c_high_start=1.2,
    c_high_max=3.0,
    step_low=0.05,
    step_high=0.05,
    clip_ratio_c=3.0,
)
