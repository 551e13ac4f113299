"""verl's sync ReplayBuffer with a short poll interval, for tiny runs.

verl's sync trainer waits for finished rollouts by polling every 2 s (a constructor default no
config reaches). Next to an LLM's generation that is nothing; for the tiny kit on CPU it is
most of a step. The kit presets select this class through verl's custom-sampler hook:

    trainer.v1.sampler.custom_sampler.path=pkg://maspo_verl.kit.sampler
    trainer.v1.sampler.custom_sampler.name=QuickPollReplayBuffer
    trainer.v1.sampler.sampler_kwargs.poll_interval=0.05

verl hands custom samplers none of DAPO's group-filtering settings, so do not combine it with
`algorithm.filter_groups`.
"""

from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer

DEFAULT_POLL_INTERVAL = 0.05


class QuickPollReplayBuffer(ReplayBuffer):
    def __init__(self, *, sampler_kwargs, **kwargs):
        poll_interval = float(sampler_kwargs.get("poll_interval", DEFAULT_POLL_INTERVAL))
        super().__init__(sampler_kwargs=sampler_kwargs, poll_interval=poll_interval, **kwargs)
