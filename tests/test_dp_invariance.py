"""Data-parallel invariance of every loss: the same mini-batch split over two gloo ranks gives the
loss and the gradient that one rank holding the whole batch gives, through verl's own (hooked)
``ppo_loss`` and ``agg_loss``, for every ``loss_agg_mode``.

Every preset in configs/algorithm/ is a case (our ``maspo``, ``dac``, ``bapo`` and the ablations;
verl's ``vanilla`` under grpo / clip_higher / dapo / entropy_adv, ``sapo``, ``gspo``, ``cispo``,
``dppo_tv``, ``dppo_kl``, ``gpg``), except verl's per-call losses (``PER_CALL_LOSSES``, below),
plus ``maspo`` with verl's KL loss and entropy bonus switched on (``ppo_loss`` aggregates those
with the same global batch info). Two ranks each take half of the mini-batch in two
micro-batches, tag them as verl's engine does (``dp_size=2``, the mini-batch's token count and
size) and backprop each micro-batch loss; the gradients are then averaged over the group, as
FSDP's reduce-scatter does. The references run in this process with ``dp_size=1``:

* ``one_call``: the whole mini-batch in one call, where local and global batch information are
  the same thing, so this reference is right even if a loss ignored the global information;
* ``rounds``: micro-batch i holds both ranks' i-th micro-batches (what BAPO, whose bounds depend
  on the micro-batch, must match; it must choose the same bounds on 1 and 2 ranks). This one
  shares the code under test, so BAPO also runs with its search pinned to the start bounds,
  where the one-call reference applies.

A negative control runs ``maspo`` with the global batch information dropped from its
``agg_loss`` call (the mistake this test exists to catch) and requires the comparison to fail
for every mode. The ranks are subprocesses of this file; they print one JSON line each.
"""

import os
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from gloo_ranks import print_result, run_ranks

TESTS_DIR = Path(__file__).resolve().parent
# verl 0.9.1's geo_mean takes a plain mean over its call's responses, and its clip_cov and kl_cov pick
# their share of tokens within each call (clip_cov at random): none of the three is a sum over the
# mini-batch, so neither reference applies (tests/test_presets.py measures what each does instead;
# docs/algorithms.md says so).
PER_CALL_LOSSES = ("geo_mean", "clip_cov", "kl_cov")
PRESETS = sorted(
    p.stem
    for p in (TESTS_DIR.parent / "configs" / "algorithm").glob("*.yaml")
    if p.stem[0] != "_" and p.stem not in PER_CALL_LOSSES
)
MODES = ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "token-sum", "seq-mean-token-sum-norm"]
KL_CASE = "maspo+kl+entropy"
# BAPO with the search pinned to its start bounds: then the bounds do not depend on the
# micro-batch and its aggregation can be held against the one-call reference as well
BAPO_PINNED = "bapo[pinned-bounds]"
BROKEN_CASE = "maspo[global-info-dropped]"  # negative control
CASES = {
    **{preset: [f"algorithm={preset}"] for preset in PRESETS},
    KL_CASE: [
        "algorithm=maspo",
        "actor_rollout_ref.actor.use_kl_loss=True",
        "actor_rollout_ref.actor.kl_loss_coef=0.5",
        "actor_rollout_ref.actor.entropy_coeff=0.01",
    ],  # fmt: skip
    BAPO_PINNED: [
        "algorithm=bapo",
        "actor_rollout_ref.actor.policy_loss.c_low_max=0.6",
        "actor_rollout_ref.actor.policy_loss.c_high_max=1.2",
    ],  # fmt: skip
    BROKEN_CASE: ["algorithm=maspo"],
}
BATCH, PROMPT_LEN, RESP_LEN = 8, 4, 7
# rank -> its micro-batches (row ranges of the mini-batch): rows 0-3 on rank 0, 4-7 on rank 1
RANK_SLICES = {0: [(0, 2), (2, 4)], 1: [(4, 6), (6, 8)]}
ROUNDS = [[0, 1, 4, 5], [2, 3, 6, 7]]
TIMEOUT_S = 180
TOL = dict(rtol=1e-5, atol=1e-6)


def mini_batch():
    """A padded mini-batch (responses of different lengths, verl's zero padding), its current
    log-probs and token entropy, and reference-policy log-probs for the KL term."""
    from verl_batch import make_batch, token_entropy

    data, log_prob = make_batch(bsz=BATCH, prompt_len=PROMPT_LEN, resp_len=RESP_LEN, seed=3, scale=0.6, padding=0.0)
    data["advantages"] = data["advantages"] * 3  # a strong signal of both signs: BAPO's search has to move
    g = torch.Generator().manual_seed(4)
    mask = data["response_mask"].bool()
    data["ref_log_prob"] = (data["old_log_probs"] + 0.3 * torch.randn(mask.shape, generator=g)).masked_fill(~mask, 0.0)
    return data, log_prob.detach(), token_entropy(data)


@contextmanager
def global_batch_info_dropped(case: str):
    """For the negative control: our adapter's agg_loss call without **global_batch_info."""
    import maspo_verl.losses as losses

    if case != BROKEN_CASE:
        yield
        return
    original = losses.agg_loss
    losses.agg_loss = lambda loss_mat, loss_mask, loss_agg_mode, **_: original(loss_mat=loss_mat, loss_mask=loss_mask,
                                                                               loss_agg_mode=loss_agg_mode)  # fmt: skip
    try:
        yield
    finally:
        losses.agg_loss = original


def run_micro_batches(config, case, rows_per_call, dp_size, dp_group=None) -> dict:
    """verl's hooked ppo_loss over micro-batches (global row indices), one backward each, as the
    engine runs them; returns the summed loss, the gradient on the log-probs and BAPO's bounds."""
    from verl.utils import tensordict_utils as tu
    from verl.workers.utils.losses import ppo_loss

    from verl_batch import flat_model_output

    assert getattr(ppo_loss, "_maspo_verl_hook", False), "maspo-verl's hook is not installed around verl's ppo_loss"
    data, log_prob, entropy = mini_batch()
    log_prob.requires_grad_(True)
    tokens = int(data["response_mask"].sum())
    loss_sum, bounds = 0.0, []
    with global_batch_info_dropped(case):
        for rows in rows_per_call:
            index = torch.tensor(rows)
            micro = data[index].clone()
            tu.assign_non_tensor(micro, dp_size=dp_size, batch_num_tokens=tokens, global_batch_size=BATCH)
            loss, metrics = ppo_loss(config, flat_model_output(micro, log_prob[index], entropy[index]), micro, dp_group)
            loss.backward()
            loss_sum += loss.item()
            if "actor/bapo/c_low" in metrics:
                bounds.append([float(metrics[f"actor/bapo/{k}"].aggregate()) for k in ("c_low", "c_high")])
    return {"loss": loss_sum, "grad": log_prob.grad, "bounds": bounds}


def child() -> None:
    """One rank: join the gloo group, run every (case, mode) on this rank's half, average the
    gradient and the loss over the data-parallel group, print them."""
    import torch.distributed as dist
    import verl  # noqa: F401  (registers our losses and the hook)

    from verl_config import actor_configs

    rank = int(os.environ["RANK"])
    dist.init_process_group("gloo", rank=rank, world_size=2)
    dp_group = dist.new_group([0, 1])  # a group of its own, as verl hands one to its loss
    results = {}
    for (case, mode), config in actor_configs(CASES, MODES).items():
        rows = [list(range(start, stop)) for start, stop in RANK_SLICES[rank]]
        out = run_micro_batches(config, case, rows, dp_size=2, dp_group=dp_group)
        reduced = torch.cat([out["grad"].reshape(-1), torch.tensor([out["loss"]])])
        dist.all_reduce(reduced, group=dp_group)  # FSDP averages the gradients over the ranks
        reduced /= 2
        results[f"{case}|{mode}"] = {"loss": reduced[-1].item(), "grad": reduced[:-1].tolist(), "bounds": out["bounds"]}
    print_result(results)
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks() -> list[dict]:
    return run_ranks(__file__, timeout=TIMEOUT_S)


@pytest.fixture(scope="module")
def references() -> dict:
    """(case, mode) -> {"one_call": ..., "rounds": ...}, both with dp_size 1."""
    from verl_config import actor_configs

    refs = {}
    for (case, mode), config in actor_configs(CASES, MODES).items():
        refs[case, mode] = {
            "one_call": run_micro_batches(config, case, [list(range(BATCH))], dp_size=1),
            "rounds": run_micro_batches(config, case, ROUNDS, dp_size=1),
        }
    return refs


def matches(dp2: dict, reference: dict) -> bool:
    grad = torch.tensor(dp2["grad"]).reshape(reference["grad"].shape)
    return bool(
        torch.allclose(torch.tensor(dp2["loss"]), torch.tensor(reference["loss"]), **TOL)
        and torch.allclose(grad, reference["grad"], **TOL)
    )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", [case for case in CASES if case != BROKEN_CASE])
def test_two_ranks_give_the_loss_and_gradient_of_one(case, mode, two_ranks, references):
    dp2 = two_ranks[0][f"{case}|{mode}"]
    assert two_ranks[1][f"{case}|{mode}"]["grad"] == dp2["grad"]  # both ranks hold the same averaged gradient
    ref = references[case, mode]
    assert ref["rounds"]["grad"].abs().sum() > 0
    grad = torch.tensor(dp2["grad"]).reshape(ref["rounds"]["grad"].shape)
    # BAPO's bounds depend on the micro-batch, so it matches the same rounds on one rank
    targets = ["rounds"] if case == "bapo" else ["rounds", "one_call"]
    for target in targets:
        expected = ref[target]
        assert dp2["loss"] == pytest.approx(expected["loss"], rel=TOL["rtol"], abs=TOL["atol"]), target
        torch.testing.assert_close(grad, expected["grad"], **TOL, msg=lambda m: f"{target}: {m}")  # noqa: B023


@pytest.mark.parametrize("mode", MODES)
def test_bapo_chooses_the_same_bounds_on_one_and_two_ranks(mode, two_ranks, references):
    expected = references["bapo", mode]["rounds"]["bounds"]
    assert len(expected) == len(ROUNDS)
    for rank in two_ranks:
        assert flat(rank[f"bapo|{mode}"]["bounds"]) == pytest.approx(flat(expected))
    # and the choice needs both halves: rank 0 deciding from its own half would choose otherwise
    from verl_config import build_actor_config, compose_ours

    config = build_actor_config(compose_ours("algorithm=bapo", f"actor_rollout_ref.actor.loss_agg_mode={mode}"))
    own_half = run_micro_batches(config, "bapo", [list(range(a, b)) for a, b in RANK_SLICES[0]], dp_size=1)
    assert flat(own_half["bounds"]) != pytest.approx(flat(expected))


def flat(bounds: list) -> list:
    return [value for pair in bounds for value in pair]


@pytest.mark.parametrize("mode", MODES)
def test_dropping_the_global_batch_info_breaks_the_invariance(mode, two_ranks, references):
    """The negative control: without **global_batch_info in agg_loss the comparison above fails."""
    broken = two_ranks[0][f"{BROKEN_CASE}|{mode}"]
    assert not matches(broken, references[BROKEN_CASE, mode]["one_call"])
    # the same loss with the information kept does match
    assert matches(two_ranks[0][f"maspo|{mode}"], references["maspo", mode]["one_call"])


if __name__ == "__main__":
    child()
