"""`python -m maspo_verl.main_ppo algorithm=<preset> <verl overrides>`: verl's own trainer.

The config is verl's ppo_trainer.yaml with our `algorithm` group on top (configs/); the run
itself is verl's `verl.trainer.main_ppo.main`, unchanged. Before handing over, the policy-loss
config is checked here, on the driver, so a misspelt key or bad value stops the run before
Ray or any GPU starts.
"""

import hydra

from .config import check_policy_loss_config


@hydra.main(config_path="pkg://maspo_verl_configs", config_name="maspo_trainer", version_base=None)
def main(config):
    import maspo_verl

    maspo_verl.register()
    check_policy_loss_config(config)

    from verl.trainer.main_ppo import main as verl_main

    # A hydra.main function called with a config runs on it directly.
    verl_main(config)


if __name__ == "__main__":
    main()
