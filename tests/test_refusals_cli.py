"""Every refusal of the first-launch checks as a user meets it: `python -m maspo_verl.main_ppo
--dry-run ...` (the same checks run before a real launch) ends with the message and exit status
2, not a traceback. In-process (the CLI's own `cli()`), with the recipe's data checks stubbed: the
paper data is not on this machine, and these refusals do not depend on it."""

import pytest
import verl  # noqa: F401

from maspo_verl.main_ppo import DRY_RUN_ENV, cli
from maspo_verl.preflight.memory import GPU_MEMORY_ENV

PAPER_7B = ["recipe=paper_7b", "algorithm=grpo"]
NO_OFFLOAD = ["actor_rollout_ref.actor.fsdp_config.param_offload=false",
              "actor_rollout_ref.actor.fsdp_config.optimizer_offload=false"]  # fmt: skip


@pytest.mark.parametrize(
    "arguments,message",
    [
        (["+actor_rollout_ref.actor.clip_grad=0.5"], "actor_rollout_ref.actor.clip_grad=0.5: verl 0.9.1 has no such key"),
        (["actor_rollout_ref.actor.grad_clip=0.5"], "set actor_rollout_ref.actor.optim.clip_grad instead"),
        (["actor_rollout_ref.rollout.max_model_len=4096"], "rollout.max_model_len=4096 is below"),
        (["actor_rollout_ref.rollout.enable_chunked_prefill=false", "actor_rollout_ref.rollout.max_num_batched_tokens=8192"],
         "max_num_batched_tokens=8192 below actor_rollout_ref.rollout.max_model_len=10240 is not allowed"),
        (["--gpu-memory-gb", "40", *NO_OFFLOAD], "112% of the 40.0 GiB card"),
        (["trainer.logger=[console,wandb]"], "this machine has no wandb key"),
    ],
)  # fmt: skip
def test_a_refusal_is_its_message_and_exit_status_2(arguments, message, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr("maspo_verl.preflight.data.check_data", lambda config: {})
    monkeypatch.setattr("maspo_verl.preflight.data.check_data_templates", lambda config: {})
    for name in ("HYDRA_FULL_ERROR", "WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(name, raising=False)
    # cli() turns --dry-run and --gpu-memory-gb into these; set here, they are restored afterwards
    monkeypatch.setenv(DRY_RUN_ENV, "0")
    monkeypatch.setenv(GPU_MEMORY_ENV, "80")
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))  # no wandb login here
    logger = [] if any(item.startswith("trainer.logger") for item in arguments) else ["trainer.logger=[console]"]
    monkeypatch.setattr("sys.argv", ["main_ppo", "--dry-run", *PAPER_7B, *logger, *arguments])
    with pytest.raises(SystemExit) as exit_:
        cli()
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    assert err.startswith("maspo_verl.main_ppo: error:") and message in err
    assert "Traceback" not in err and 'File "' not in err
