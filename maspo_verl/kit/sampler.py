"""verl's sync ReplayBuffer with a short poll interval, for tiny runs.

verl's sync trainer waits for finished rollouts by polling every 2 s (a constructor default no
config reaches). Next to an LLM's generation that is nothing; for the tiny kit on CPU it is
most of a step. The kit presets select this class through verl's custom-sampler hook:

    trainer.v1.sampler.custom_sampler.path=pkg://maspo_verl.kit.sampler
    trainer.v1.sampler.custom_sampler.name=QuickPollReplayBuffer
    trainer.v1.sampler.sampler_kwargs.poll_interval=0.05

verl hands a custom sampler none of DAPO's group-filtering settings (its built-in buffer gets
them from the trainer), so the kit passes them through ``sampler_kwargs``
(``filter_groups: ${algorithm.filter_groups}``, ``train_batch_size: ${data.train_batch_size}``)
and this class sets them up as verl's trainer would for its own buffer: with filtering on,
one prompt is generated at a time and groups whose metric has no spread are evicted and
refilled. ``maspo_verl.preflight.check_algorithm_config`` refuses group filtering with any other
custom sampler, where verl 0.9.1 would silently drop it.
"""

from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer

DEFAULT_POLL_INTERVAL = 0.05


class QuickPollReplayBuffer(ReplayBuffer):
    # check_algorithm_config: this sampler honours algorithm.filter_groups (via sampler_kwargs)
    HONOURS_FILTER_GROUPS = True

    def __init__(self, *, sampler_kwargs, **kwargs):
        poll_interval = float(sampler_kwargs.get("poll_interval", DEFAULT_POLL_INTERVAL))
        filter_groups = sampler_kwargs.get("filter_groups")
        if filter_groups is not None and filter_groups.get("enable", False):
            # what verl's trainer_base._build_replay_buffer passes its own ReplayBuffer
            kwargs.update(
                filter_groups_metric=filter_groups["metric"],
                train_batch_size=int(sampler_kwargs["train_batch_size"]),
                gen_batch_size=1,
                max_inflight_gen_batches=int(filter_groups.get("max_inflight_gen_batches", 1)),
            )
        super().__init__(sampler_kwargs=sampler_kwargs, poll_interval=poll_interval, **kwargs)
