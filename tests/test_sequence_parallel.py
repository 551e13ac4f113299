"""Ulysses sequence parallelism: on a (dp=2, sp=2) mesh of 4 gloo ranks, verl's (hooked) ``ppo_loss``
gives the loss and the gradient of the 2 data-parallel ranks alone and of one process; BAPO chooses
the same bounds on sequence-parallel peers and sums its balance statistic over the data-parallel
group only.

What verl 0.9.1 does with ``actor.ulysses_sequence_parallel_size=2`` on 4 ranks, and this test models:

* Mesh (``verl/workers/engine/fsdp/transformer_impl.py``, ``FSDPEngine._init_device_mesh``):
  ``ulysses_device_mesh = init_device_mesh(mesh_shape=(dp_size, sp_size), mesh_dim_names=["dp", "sp"])``
  with ``dp_size = get_data_parallel_size() = world_size // sp_size``; row-major, so rank
  ``r = dp_rank * sp + sp_rank``: the SP pairs are {0, 1} and {2, 3}, the data-parallel groups
  {0, 2} and {1, 3}. The FSDP mesh is separate: ``create_device_mesh(world_size, fsdp_size=-1)``
  (``verl/workers/engine/fsdp/utils.py``) shards over all 4 ranks, so FSDP averages the gradients
  over the whole world. The child builds its groups with these very methods of ``FSDPEngine``.
* Data: ``train_mini_batch`` (``verl/workers/engine_workers.py``) is dispatched by
  ``get_data_parallel_rank()`` (the mesh's ``dp`` coordinate), so both SP peers receive the same
  half of the mini-batch, shuffle it with the same seed (``seed + dp_rank``) and split it into the
  same micro-batches (``prepare_micro_batches``, ``verl/workers/engine/utils.py``).
  ``forward_backward_batch`` tags each micro-batch with ``dp_size = world // sp`` (2, not 4) and
  ``batch_num_tokens`` summed over the data-parallel group; ``global_batch_size`` is the whole
  mini-batch (``verl/trainer/ppo/ray_trainer.py``, ``_update_actor``).
* Forward (``FSDPEngineWithLMHead.prepare_model_inputs``): the packed micro-batch is padded to a
  multiple of sp and each SP rank keeps its slice (``verl/utils/ulysses.py``,
  ``ulysses_pad_and_slice_inputs``); the model computes the log-probs (and entropy) of that slice
  only. ``prepare_model_outputs`` then all-gathers them over the SP group and drops the pad
  (``_gather_and_unpad_packed`` -> ``gather_outputs_and_unpad`` -> ``Gather``), so the loss sees
  the FULL log-probs of the whole micro-batch on every SP peer, not slices. ``Gather``'s backward
  multiplies the gradient by sp (``grad_scaler=True``) and keeps this rank's slice: summed over the
  SP peers and averaged over the 4 FSDP ranks, that is the data-parallel average of the gradient.
* Loss (``FSDPEngineWithLMHead.forward_step``): ``loss_function(model_output, data, dp_group=
  self.get_data_parallel_group())``, which is ``ulysses_device_mesh.get_group("dp")`` under SP
  (the 2-rank data-parallel group, not the world; the world only without SP). So both SP peers
  compute the same loss on the same data, and BAPO's statistic, summed over the group the hook
  hands it, must cover each token once: summing over all 4 ranks would count every token twice.
  (That doubling leaves the chosen bounds unchanged, the share pos / (pos + neg) being scale-free,
  so the test checks the summed statistic itself, against an independent computation.)

The child: 4 processes, each takes its micro-batches of the leaf "parameters" (the mini-batch's
current log-probs), computes its SP slice with verl's ``ulysses_pad_and_slice_inputs``, gathers it
with verl's ``gather_outputs_and_unpad``, calls the hooked ``ppo_loss`` with the mesh's dp group and
backprops; the gradients are then averaged over the world (FSDP). The same processes also run the
data-parallel-only case (2 ranks per dp group, full log-probs, gradients averaged over the dp
group). The single-process references run here with ``dp_size=1``: round i holds both dp ranks'
i-th micro-batches (what BAPO, whose bounds depend on the micro-batch, must match), and, for the
losses without a batch statistic, the whole mini-batch in one call.
"""

import os
from contextlib import contextmanager

import pytest
import torch

from gloo_ranks import print_result, run_ranks

DP, SP = 2, 2
WORLD = DP * SP
CASES = {case: [f"algorithm={case}"] for case in ("grpo", "maspo", "bapo", "entropy_adv")}
MODES = ["token-mean", "seq-mean-token-mean"]
BATCH, PROMPT_LEN, RESP_LEN, MICRO = 8, 4, 7, 2
ROUNDS = [[0, 1, 4, 5], [2, 3, 6, 7]]  # round i: micro-batch i of dp rank 0, then of dp rank 1
TIMEOUT_S = 300
TOL = dict(rtol=1e-5, atol=1e-6)
APPROX = dict(rel=TOL["rtol"], abs=TOL["atol"])


def mini_batch():
    """A padded mini-batch (verl's zero padding), its current log-probs and token entropy."""
    from verl_batch import make_batch, token_entropy

    data, log_prob = make_batch(bsz=BATCH, prompt_len=PROMPT_LEN, resp_len=RESP_LEN, seed=3, scale=0.6, padding=0.0)
    data["advantages"] = data["advantages"] * 3  # a strong signal of both signs: BAPO's search has to move
    return data, log_prob.detach(), token_entropy(data)


def micro_batch_rows(dp_rank: int) -> list[list[int]]:
    """The rows of this data-parallel rank's micro-batches: its half of the mini-batch, in order."""
    per_rank = BATCH // DP
    start = dp_rank * per_rank
    return [list(range(first, first + MICRO)) for first in range(start, start + per_rank, MICRO)]


def bapo_bounds(metrics) -> list[float]:
    """BAPO's chosen [c_low, c_high] from verl's Metric objects; [] for the other losses."""
    keys = ("actor/bapo/c_low", "actor/bapo/c_high")
    return [float(metrics[key].aggregate()) for key in keys if key in metrics]


# ------------------------------------------------------------------------------- the ranks


class VerlMesh:
    """verl's own mesh code of ``FSDPEngine`` on a stand-in engine that holds only its config."""

    def __init__(self, sp_size: int):
        from types import SimpleNamespace

        from verl.workers.engine.fsdp.transformer_impl import FSDPEngine

        for name in ("_init_device_mesh", "get_data_parallel_size", "get_data_parallel_rank",
                     "get_data_parallel_group"):  # fmt: skip
            setattr(self, name, getattr(FSDPEngine, name).__get__(self))
        self.engine_config = SimpleNamespace(fsdp_size=-1, ulysses_sequence_parallel_size=sp_size)
        self._init_device_mesh()


def gathered_output(micro, log_prob, entropy, sequence_parallel: bool) -> tuple[dict, int]:
    """The model output the loss receives, and the SP pad of the packed micro-batch.

    Under SP this rank computes its slice of the packed sequence only (verl slices the inputs the
    same way) and verl all-gathers the slices; without SP the rank computes everything.
    """
    from verl.utils.ulysses import gather_outputs_and_unpad, ulysses_pad_and_slice_inputs

    from verl_batch import flat_model_output

    full = flat_model_output(micro, log_prob, entropy)
    if not sequence_parallel:
        return full, 0
    output = {}
    for key, packed in full.items():
        local, _, pad = ulysses_pad_and_slice_inputs(packed.unsqueeze(0), sp_size=SP)
        output[key] = gather_outputs_and_unpad(local.squeeze(0), gather_dim=0, unpad_dim=0, padding_size=pad)
    return output, pad


@contextmanager
def recorded_all_reduces(records: list):
    """Record every all_reduce (the ranks of its group, the reduced values) while in the block."""
    import torch.distributed as dist

    original = dist.all_reduce

    def recording(tensor, *args, group=None, **kwargs):
        work = original(tensor, *args, group=group, **kwargs)
        records.append({"ranks": dist.get_process_group_ranks(group or dist.group.WORLD), "values": tensor.tolist()})
        return work

    dist.all_reduce = recording
    try:
        yield
    finally:
        dist.all_reduce = original


def run_loss_calls(config, rows_per_call, dp_group, dp_size: int, sequence_parallel: bool) -> dict:
    """verl's hooked ppo_loss over this rank's micro-batches, one backward each, as the engine runs
    them; per call: the loss, BAPO's bounds and the all_reduces made inside the loss."""
    from verl.utils import tensordict_utils as tu
    from verl.workers.utils.losses import ppo_loss

    assert getattr(ppo_loss, "_maspo_verl_hook", False), "maspo-verl's hook is not installed around verl's ppo_loss"
    data, log_prob, entropy = mini_batch()
    log_prob.requires_grad_(True)
    tokens = int(data["response_mask"].sum())
    calls = []
    for rows in rows_per_call:
        index = torch.tensor(rows)
        micro = data[index].clone()
        tu.assign_non_tensor(micro, dp_size=dp_size, batch_num_tokens=tokens, global_batch_size=BATCH)
        output, pad = gathered_output(micro, log_prob[index], entropy[index], sequence_parallel)
        collectives = []
        with recorded_all_reduces(collectives):
            loss, metrics = ppo_loss(config, output, micro, dp_group)
        loss.backward()
        calls.append({"loss": loss.item(), "bounds": bapo_bounds(metrics), "collectives": collectives, "sp_pad": pad})
    return {"calls": calls, "grad": log_prob.grad}


def child() -> None:
    """One rank of the (dp, sp) mesh: every (case, mode) with sequence parallelism, then without."""
    import torch.distributed as dist
    import verl  # noqa: F401  (registers our losses, the hook and the cpu platform)
    from verl.utils.ulysses import set_ulysses_sequence_parallel_group

    from verl_config import actor_configs

    rank = int(os.environ["RANK"])
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    mesh = VerlMesh(sp_size=SP)
    dp_group, dp_rank = mesh.get_data_parallel_group(), mesh.get_data_parallel_rank()
    results = {
        "dp_group": dist.get_process_group_ranks(dp_group),
        "sp_group": dist.get_process_group_ranks(mesh.ulysses_parallel_group),
        "dp_size": mesh.get_data_parallel_size(),
        "dp_rank": dp_rank,
    }
    rows = micro_batch_rows(dp_rank)
    for (case, mode), config in actor_configs(CASES, MODES).items():
        for sequence_parallel, grad_group, grad_ranks in ((True, None, WORLD), (False, dp_group, DP)):
            # what verl's EngineTrainModeCtx sets around the forward passes
            set_ulysses_sequence_parallel_group(mesh.ulysses_parallel_group if sequence_parallel else None)
            out = run_loss_calls(config, rows, dp_group, results["dp_size"], sequence_parallel)
            grad = out["grad"]
            dist.all_reduce(grad, group=grad_group)  # FSDP averages the gradients over its mesh
            out["grad"] = (grad / grad_ranks).tolist()
            results[f"{case}|{mode}|{'sp' if sequence_parallel else 'dp'}"] = out
    set_ulysses_sequence_parallel_group(None)
    dist.destroy_process_group()
    print_result(results)


# ----------------------------------------------------------------------------- the tests


@pytest.fixture(scope="module")
def four_ranks() -> list[dict]:
    from maspo_verl.cpu_platform import cpu_trainer_env

    # the cpu platform: verl's FSDP engine module builds its meshes on get_device_name()
    return run_ranks(__file__, timeout=TIMEOUT_S, world_size=WORLD, env=cpu_trainer_env(), what="(dp=2, sp=2) mesh")


@pytest.fixture(scope="module")
def references() -> dict:
    """(case, mode) -> {"rounds": ..., "one_call": ...}, both in this process with dp_size 1."""
    from verl.utils import tensordict_utils as tu
    from verl.workers.utils.losses import ppo_loss

    from verl_batch import flat_model_output
    from verl_config import actor_configs

    refs = {}
    for (case, mode), config in actor_configs(CASES, MODES).items():
        refs[case, mode] = {}
        for name, rows_per_call in (("rounds", ROUNDS), ("one_call", [list(range(BATCH))])):
            data, log_prob, entropy = mini_batch()
            log_prob.requires_grad_(True)
            tokens = int(data["response_mask"].sum())
            loss_sum, bounds = 0.0, []
            for rows in rows_per_call:
                index = torch.tensor(rows)
                micro = data[index].clone()
                tu.assign_non_tensor(micro, dp_size=1, batch_num_tokens=tokens, global_batch_size=BATCH)
                loss, metrics = ppo_loss(config, flat_model_output(micro, log_prob[index], entropy[index]), micro)
                loss.backward()
                loss_sum += loss.item()
                bounds.append(bapo_bounds(metrics))
            refs[case, mode][name] = {"loss": loss_sum, "grad": log_prob.grad, "bounds": bounds}
    return refs


def expected_groups(rank: int) -> dict:
    """The (dp, sp) mesh in row-major order: rank = dp_rank * SP + sp_rank."""
    dp_rank, sp_rank = divmod(rank, SP)
    return {
        "dp_group": [d * SP + sp_rank for d in range(DP)],
        "sp_group": [dp_rank * SP + s for s in range(SP)],
        "dp_size": DP,
        "dp_rank": dp_rank,
    }


def total_loss(result: dict) -> float:
    return sum(call["loss"] for call in result["calls"])


def test_verl_hands_the_loss_the_data_parallel_group_of_the_mesh(four_ranks):
    for rank, result in enumerate(four_ranks):
        assert {key: result[key] for key in ("dp_group", "sp_group", "dp_size", "dp_rank")} == expected_groups(rank)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", list(CASES))
def test_sequence_parallel_gives_the_loss_and_gradient_of_data_parallel_alone(case, mode, four_ranks, references):
    sp_runs = [rank[f"{case}|{mode}|sp"] for rank in four_ranks]
    dp_runs = [rank[f"{case}|{mode}|dp"] for rank in four_ranks]
    assert any(call["sp_pad"] for call in sp_runs[0]["calls"]), "no micro-batch needed the SP pad: pick other lengths"
    for sp_run, dp_run in zip(sp_runs, dp_runs):
        # each rank's loss is its data-parallel rank's loss; SP peers hold the same micro-batches
        assert [c["loss"] for c in sp_run["calls"]] == pytest.approx([c["loss"] for c in dp_run["calls"]], **APPROX)
        torch.testing.assert_close(torch.tensor(sp_run["grad"]), torch.tensor(dp_run["grad"]), **TOL)
    for peer in range(1, SP):
        assert [c["loss"] for c in sp_runs[peer]["calls"]] == [c["loss"] for c in sp_runs[0]["calls"]]
    # the data-parallel mean of the loss and the averaged gradient are one process's
    dp_mean_loss = sum(total_loss(sp_runs[dp_rank * SP]) for dp_rank in range(DP)) / DP
    grad = torch.tensor(sp_runs[0]["grad"])
    ref = references[case, mode]
    assert ref["rounds"]["grad"].abs().sum() > 0
    for target in ["rounds"] if case == "bapo" else ["rounds", "one_call"]:
        assert dp_mean_loss == pytest.approx(ref[target]["loss"], **APPROX), target
        torch.testing.assert_close(grad, ref[target]["grad"], **TOL, msg=lambda m: f"{target}: {m}")  # noqa: B023
    if case != "bapo":  # only a batch statistic may talk to other ranks inside the loss
        assert all(not call["collectives"] for run in sp_runs for call in run["calls"])


@pytest.mark.parametrize("mode", MODES)
def test_bapo_chooses_the_same_bounds_on_sequence_parallel_peers(mode, four_ranks, references):
    expected = references["bapo", mode]["rounds"]["bounds"]
    assert any(high > 1.2 + 1e-6 or low > 0.6 + 1e-6 for low, high in expected), "the search should have moved"
    for rank in four_ranks:
        bounds = [call["bounds"] for call in rank[f"bapo|{mode}|sp"]["calls"]]
        torch.testing.assert_close(torch.tensor(bounds), torch.tensor(expected))
    for sp_peers in ([0, 1], [2, 3]):
        first, second = ([call["bounds"] for call in four_ranks[r][f"bapo|{mode}|sp"]["calls"]] for r in sp_peers)
        assert first == second  # bitwise: the same reduced sums on both peers


def balance_sums(rows: list[int], params) -> torch.Tensor:
    """BAPO's statistic on these rows, independently: [pos(c) on the upper grid, neg(c) on the lower
    grid], pos(c) = sum of |r A| over A > 0 tokens with r <= c, neg(c) over A < 0 tokens with r >= c."""
    data, log_prob, _ = mini_batch()
    index = torch.tensor(rows)
    mask = data["response_mask"][index].bool()
    ratio = torch.exp((log_prob[index] - data["old_log_probs"][index]).double().clamp(-20, 20))
    adv = data["advantages"][index].double()
    weight = (ratio * adv).abs()

    def grid(start, stop, step):  # the presets' steps divide their ranges
        count = round((stop - start) / step)
        assert abs(start + count * step - stop) < 1e-9
        return [start + k * step for k in range(count)] + [stop]

    highs = grid(params.c_high_start, params.c_high_max, params.step_high)
    lows = grid(params.c_low_start, params.c_low_max, params.step_low)
    pos = [weight[mask & (adv > 0) & (ratio <= c)].sum() for c in highs]
    neg = [weight[mask & (adv < 0) & (ratio >= c)].sum() for c in lows]
    return torch.stack(pos + neg).float()


@pytest.mark.parametrize("mode", MODES)
def test_bapo_sums_its_statistic_over_the_data_parallel_group_only(mode, four_ranks):
    """One all_reduce per loss call, over the rank's dp group, and its sum counts every token of
    the round once (summed over the 4 ranks, the SP peers' copies would count it twice)."""
    from verl_config import compose_ours

    params = compose_ours("algorithm=bapo").actor_rollout_ref.actor.policy_loss
    expected = [balance_sums(rows, params) for rows in ROUNDS]
    for rank, result in enumerate(four_ranks):
        for round_sums, call in zip(expected, result[f"bapo|{mode}|sp"]["calls"], strict=True):
            (collective,) = call["collectives"]
            assert collective["ranks"] == expected_groups(rank)["dp_group"]
            reduced = torch.tensor(collective["values"][:-1])  # the last value is JoinedSum's "more to come" flag
            torch.testing.assert_close(reduced, round_sums, rtol=1e-5, atol=1e-6)


if __name__ == "__main__":
    child()
