"""BAPO's batch statistic over two data-parallel ranks (a gloo group of 2 processes on CPU):
through verl's own ppo_loss (hooked), the bounds and the loss match one process holding the
whole batch; ranks with different numbers of micro-batches never hang; only the data-parallel
group that verl hands its loss function is used.

Each rank runs this file as a script and prints JSON; the test fails (instead of hanging) when
a rank does not finish in time.
"""

import os
import sys
from pathlib import Path

import pytest
import torch

from gloo_ranks import print_result, run_ranks

TESTS_DIR = Path(__file__).resolve().parent
BATCH, PROMPT_LEN, RESP_LEN = 8, 4, 7
TIMEOUT_S = 90

# rank -> the row slices of its micro-batches (rows 0-3 on rank 0, 4-7 on rank 1)
EQUAL = {0: [(0, 2), (2, 4)], 1: [(4, 6), (6, 8)]}
UNEQUAL = {0: [(0, 2), (2, 3), (3, 4)], 1: [(4, 6), (6, 8)]}  # 3 calls on rank 0, 2 on rank 1


def batch(seed=0):
    from verl_batch import make_batch

    data, log_prob = make_batch(bsz=BATCH, prompt_len=PROMPT_LEN, resp_len=RESP_LEN, seed=seed, scale=0.6, padding=0.0)
    # a strong signal of both signs, so the search has to move the bounds
    data["advantages"] = data["advantages"] * 3
    return data, log_prob


def actor_config():
    from verl_config import build_actor_config, compose_ours

    # a low start and a target that needs moves: the choice depends on the whole micro-batch
    return build_actor_config(
        compose_ours("algorithm=bapo", "actor_rollout_ref.actor.policy_loss.rho0=0.6",
                     "actor_rollout_ref.actor.policy_loss.c_high_start=1.05")
    )  # fmt: skip


def run_calls(config, data, log_prob, slices, dp_size, dp_group):
    """verl's hooked ppo_loss over this rank's micro-batches; returns per-call bounds, losses, grad."""
    from verl.utils import tensordict_utils as tu
    from verl.workers.utils.losses import ppo_loss

    from verl_batch import flat_model_output

    tokens = int(data["response_mask"].sum())
    results = []
    for start, stop in slices:
        micro = data[start:stop].clone()
        tu.assign_non_tensor(micro, dp_size=dp_size, batch_num_tokens=tokens, global_batch_size=BATCH)
        loss, metrics = ppo_loss(config, flat_model_output(micro, log_prob[start:stop]), micro, dp_group)
        loss.backward()
        results.append(bounds(loss, metrics))
    return results


def bounds(loss, metrics) -> dict:
    """The loss and the bounds BAPO chose, from verl's Metric objects."""
    value = lambda key: float(metrics[key].aggregate())  # noqa: E731
    return {"loss": loss.item(), "c_low": value("actor/bapo/c_low"), "c_high": value("actor/bapo/c_high")}


def child(case: str) -> None:
    """One rank: gloo group from the environment, a data-parallel subgroup, the calls of `case`."""
    sys.path.insert(0, str(TESTS_DIR))
    import torch.distributed as dist
    import verl  # noqa: F401

    rank = int(os.environ["RANK"])
    dist.init_process_group("gloo", rank=rank, world_size=2)
    dp_group = dist.new_group([0, 1])
    seen_groups = []
    original = dist.all_reduce

    def recording_all_reduce(tensor, *args, group=None, **kwargs):
        seen_groups.append(group is dp_group)
        return original(tensor, *args, group=group, **kwargs)

    dist.all_reduce = recording_all_reduce
    data, log_prob = batch()
    slices = {"equal": EQUAL, "unequal": UNEQUAL}[case][rank]
    calls = run_calls(actor_config(), data, log_prob, slices, dp_size=2, dp_group=dp_group)
    grad = log_prob.grad
    dist.all_reduce(grad, group=dp_group)  # what FSDP/DDP do with the gradients (then / dp_size)
    print_result({"calls": calls, "grad": (grad / 2).tolist(), "only_dp_group": bool(seen_groups) and all(seen_groups)})
    dist.destroy_process_group()


def run_two_ranks(case: str) -> list[dict]:
    return run_ranks(__file__, case, timeout=TIMEOUT_S, what=f"the data-parallel sum hung ({case})")


@pytest.fixture(scope="module")
def single_process_reference():
    """One process, dp_size 1: micro-batch i holds rank 0's and rank 1's i-th micro-batches."""
    sys.path.insert(0, str(TESTS_DIR))
    data, log_prob = batch()
    config = actor_config()
    from verl.utils import tensordict_utils as tu
    from verl.workers.utils.losses import ppo_loss

    from verl_batch import flat_model_output

    tokens = int(data["response_mask"].sum())
    calls = []
    for rows in ([0, 1, 4, 5], [2, 3, 6, 7]):
        index = torch.tensor(rows)
        micro = data[index].clone()
        tu.assign_non_tensor(micro, dp_size=1, batch_num_tokens=tokens, global_batch_size=BATCH)
        loss, metrics = ppo_loss(config, flat_model_output(micro, log_prob[index]), micro)
        loss.backward()
        calls.append(bounds(loss, metrics))
    return calls, log_prob.grad


def test_two_ranks_choose_the_bounds_one_process_chooses_and_add_up_to_its_loss(single_process_reference):
    reference, reference_grad = single_process_reference
    ranks = run_two_ranks("equal")
    assert any(call["c_high"] > 1.05 + 1e-6 for call in reference), "the search should have moved"
    for i, expected in enumerate(reference):
        for rank in ranks:
            assert rank["calls"][i]["c_low"] == pytest.approx(expected["c_low"])
            assert rank["calls"][i]["c_high"] == pytest.approx(expected["c_high"])
        # token-mean with dp_size 2: each rank's loss carries dp_size, the gradients are averaged
        assert sum(rank["calls"][i]["loss"] for rank in ranks) / 2 == pytest.approx(expected["loss"], rel=1e-5)
    torch.testing.assert_close(torch.tensor(ranks[0]["grad"]), reference_grad, rtol=1e-5, atol=1e-7)
    assert all(rank["only_dp_group"] for rank in ranks)


def test_ranks_with_different_numbers_of_micro_batches_do_not_hang():
    ranks = run_two_ranks("unequal")
    assert [len(rank["calls"]) for rank in ranks] == [3, 2]
    # the first round joins both ranks' first micro-batches: both ranks see the same bounds
    assert ranks[0]["calls"][0]["c_high"] == pytest.approx(ranks[1]["calls"][0]["c_high"])
    assert all(rank["only_dp_group"] for rank in ranks)


def test_a_batch_statistic_without_the_hook_fails_loudly():
    """dp_size 2 but no data-parallel group reached the loss: refuse instead of a per-rank choice."""
    sys.path.insert(0, str(TESTS_DIR))
    from maspo_verl.losses import POLICY_LOSSES

    data, log_prob = batch()
    config = actor_config()
    config.global_batch_info.update(dp_size=2, batch_num_tokens=10, global_batch_size=BATCH)
    mask = data["response_mask"].bool()
    with pytest.raises(RuntimeError, match="dp_size=2 but no data-parallel group reached the loss"):
        POLICY_LOSSES["bapo"](old_log_prob=data["old_log_probs"], log_prob=log_prob, advantages=data["advantages"],
                              response_mask=mask, config=config)  # fmt: skip


if __name__ == "__main__":
    child(sys.argv[1])
