"""maspo-verl's Hydra presets (installed as the data-only package `maspo_verl_configs`)."""
