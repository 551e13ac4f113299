"""The agent loop: what the small-run manager (``maspo_verl.rollout.local_agent_loop``) can serve,
and the reward workers verl needs without it.

- ``LocalAgentLoopManager`` routes every request straight to the one rollout server, which only
  verl's synchronous trainer allows (the asynchronous trainers read the load balancer's in-flight
  counts); and it scores rule-based rewards in the agent loop, so a reward model is refused;
- ``reward.num_workers: 0`` (no reward process) needs that manager: verl's own agent loop sends
  every sample to one of ``reward.num_workers`` reward workers and would fail, inside Ray, on an
  empty list.
"""

from __future__ import annotations

LOCAL_MANAGER = "maspo_verl.rollout.local_agent_loop.LocalAgentLoopManager"
MANAGER_KEY = "actor_rollout_ref.rollout.agent.agent_loop_manager_class"


def check_agent_loop(config) -> None:
    manager = config.actor_rollout_ref.rollout.get("agent", {}).get("agent_loop_manager_class")
    reward_workers = config.reward.get("num_workers")
    if manager == LOCAL_MANAGER:
        mode = config.trainer.get("v1", {}).get("trainer_mode", "sync")
        if mode != "sync":
            raise ValueError(
                f"{MANAGER_KEY}={manager} with trainer.v1.trainer_mode={mode} is not allowed: the small-run manager "
                "sends requests straight to the rollout server, and verl's asynchronous trainers read the load "
                "balancer's in-flight counts. Allowed: trainer.v1.trainer_mode=sync, or drop the manager "
                f"({MANAGER_KEY}=null, and reward.num_workers >= 1)."
            )
        if config.reward.reward_model.get("enable", False):
            raise ValueError(
                f"{MANAGER_KEY}={manager} with reward.reward_model.enable=True is not allowed: the small-run manager "
                "scores rule-based rewards in the agent loop, not a reward model. Allowed: a custom reward function "
                f"(reward.custom_reward_function.path), or drop the manager ({MANAGER_KEY}=null)."
            )
    elif reward_workers is not None and int(reward_workers) < 1:
        raise ValueError(
            f"reward.num_workers={reward_workers} is not allowed with {MANAGER_KEY}={manager}: verl's agent loop sends "
            f"every sample to one of reward.num_workers reward workers. Allowed: reward.num_workers >= 1, or "
            f"{MANAGER_KEY}={LOCAL_MANAGER}, which scores each sample in the agent loop and needs none."
        )


def agent_loop_step(config, found: dict, dry_run: bool) -> dict:
    check_agent_loop(config)
    return {}
