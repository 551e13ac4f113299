"""The paper recipes in miniature, through the benchmark's recipe sweep and verl's real trainer on
two data-parallel CPU ranks, under the transformers version GPU users get.

Each run composes a paper recipe and a method with ONE overlay, `+kit=recipe_cpu`
(configs/kit/recipe_cpu.yaml), which replaces only what a CPU cannot do: the model and data
(the tiny kit's), the rollout (`hf`), the device, the sizes and token budgets, the attention
(sdpa). docs/recipes-on-cpu.md lists every key it touches, and the first test checks that list
against the composed configs of every recipe, so the list stays exactly what these runs do not prove.

Everything else runs as a GPU user runs it: remove-padding, dynamic micro-batches under a token
budget, gradient checkpointing, the 7B and 14B recipes' offload flags, rollout log-probs, the learning
rate and its warm-up, validation, checkpoints, and verl's own replay buffer (with DAPO's group
filter). The runs add what the recipes leave at verl's defaults: rollout correction's token-level
importance weights (every run) and FSDP2's CPU offload policy (the bapo run).

After the overlay the three recipes differ only in the offload flags of the 7B and 14B recipes (and
the 14B recipe's sequence parallelism, which the overlay must turn off), so the runs use `paper_14b`, and the
other two are checked by composition. They go through `python -m maspo_verl.bench --recipe`, the
command GPU users run: one Ray session, a dry run of every run first, each final checkpoint
through the evaluator, the summary with paired differences and the paper-style table. The same
launches therefore test the recipe sweep end to end; only the GPUs differ.

The runs use the transformers that verl's `vllm` extra pins (scripts/setup_gpu_stack.sh exports
MASPO_GPU_STACK, which the test command sources): every verl process of the sweep imports it, and
a test checks that. The rest of the suite runs the newest transformers. tests/recipe_probe.py
records, inside verl's workers, what each actor micro-batch really was.
"""

import json
import math
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

import pytest
import verl  # noqa: F401  (registers our plugin, the Hydra search path and the kit resolver)
from hydra import compose, initialize_config_module
from recipe_configs import PRESETS, RECIPES, main_ppo

from maspo_verl.bench.summary import read_steps
from maspo_verl.launch import REWARD

TESTS = Path(__file__).resolve().parent
DOC = TESTS.parent / "docs" / "recipes-on-cpu.md"
OVERLAY = "+kit=recipe_cpu"
KEYS_SECTION = "## What the overlay changes, and so what the CPU runs do not prove"
STEPS = 2
RECIPE = "paper_14b"
MISMATCH = "training/rollout_probs_diff_max"
EVICTED = "training/filter_groups/evicted_samples"
IS_MEAN = "rollout_corr/rollout_is_mean"
OFFLOAD_POLICY = (
    "bapo_offload_policy=bapo actor_rollout_ref.actor.fsdp_config.param_offload=false "
    "actor_rollout_ref.actor.fsdp_config.optimizer_offload=false actor_rollout_ref.actor.fsdp_config.offload_policy=true"
)
# the sweep: recipe x these labels x seed 0, with these overrides for every run
# groups of 2 answers agree (all right or all wrong) about half the time on the kit, so DAPO's filter
# evicts a group within 2 steps all but certainly (groups of 4 agree about 1 time in 8); 8 prompts
# per step, 4 per update, keep the other runs' 16 answers per step and 4 per rank per update
DAPO_PAIRS = ("dapo_groups_of_2=dapo actor_rollout_ref.rollout.n=2 data.train_batch_size=8 "
              "actor_rollout_ref.actor.ppo_mini_batch_size=4")  # fmt: skip
# the first-launch mode (configs/launch/first.yaml) of MASPO, the paper's method
FIRST_LAUNCH = "first_launch"
FIRST_LAUNCH_VARIANT = f"{FIRST_LAUNCH}=maspo +launch=first"
# the sweep: recipe x these labels x seed 0, with these overrides for every run
SWEEP = ["--recipe", RECIPE, "--presets", "grpo,sapo", "--variant", DAPO_PAIRS, "--variant", OFFLOAD_POLICY,
         "--variant", FIRST_LAUNCH_VARIANT, "--seeds", "0", "--steps", str(STEPS), "--eval-k", "2", OVERLAY,
         "algorithm.rollout_correction.rollout_is=token"]  # fmt: skip
# label: (loss mode, clip_ratio_high) of its actor, how the probe's records (written by worker
# processes that know nothing of the run) find their run
CASES = {
    "grpo": ("vanilla", 0.2),
    "sapo": ("sapo", 0.2),
    "dapo_groups_of_2": ("vanilla", 0.28),
    "bapo_offload_policy": ("bapo", 0.2),
    FIRST_LAUNCH: ("maspo", 0.2),
}
# the loss's own metrics (verl's sapo and vanilla log only verl's actor/pg_* ones)
OWN_METRICS = {"bapo": "actor/bapo/", "maspo": "actor/maspo/", "sapo": "actor/pg_clipfrac",
               "vanilla": "actor/pg_clipfrac"}  # fmt: skip

# ----------------------------------------------------------------------------- the overlay, no trainer

ABSENT = "<absent>"


def _compose(*overrides):
    with initialize_config_module(config_module="maspo_verl_configs", version_base=None):
        return compose("maspo_trainer", overrides=list(overrides))


def documented_keys() -> tuple[set[str], dict[str, str]]:
    """docs/recipes-on-cpu.md's tables of what the overlay changes: the keys it sets (first column of
    the four-column table), and {key: the key it follows} of the keys verl derives from those."""
    section = DOC.read_text().split(f"\n{KEYS_SECTION}\n")[1].split("\n## ")[0]
    sets, follows = set(), {}
    for row in (line for line in section.splitlines() if line.startswith("| `")):
        cells = [cell.strip() for cell in row.strip().strip("|").split(" | ")]
        key = cells[0].strip("`")
        if len(cells) == 2:
            follows[key] = cells[1].strip("`")
        else:
            sets.add(key)
    return sets, follows


def touched_keys(recipe: str, method: str) -> dict:
    """{key: (recipe value, overlay value)} for every leaf of the RESOLVED config the overlay changes,
    directly or through one of verl's interpolations."""
    plain, overlaid = main_ppo(recipe, method), main_ppo(recipe, method, OVERLAY)
    return {
        key: (plain.get(key, ABSENT), overlaid.get(key, ABSENT))
        for key in plain.keys() | overlaid.keys()
        if plain.get(key, ABSENT) != overlaid.get(key, ABSENT)
    }


def _documented_as(key: str, documented: set[str]) -> str | None:
    """The documented key that covers `key`: itself, or a documented mapping above it."""
    return next((doc for doc in documented if key == doc or key.startswith(doc + ".")), None)


def test_the_overlay_changes_exactly_the_keys_the_docs_list():
    """Every recipe with every preset, compared resolved, so that what verl derives from a key the
    overlay sets (`rollout.prompt_length` from `data.max_prompt_length`, `ref.strategy` from
    `actor.strategy`, DAPO's `max_resp_len` ...) is seen too; each derived key must equal its source."""
    sets, follows = documented_keys()
    assert len(sets) > 20 and len(follows) > 5, f"no tables of keys found in {DOC}"
    used = set()
    for recipe in RECIPES:
        for method in PRESETS:
            overlaid = main_ppo(recipe, method, OVERLAY)
            for key, (before, after) in touched_keys(recipe, method).items():
                covering = key if key in follows else _documented_as(key, sets)
                assert covering, (f"recipe={recipe} algorithm={method}: {OVERLAY} changes {key} ({before!r} -> "
                                  f"{after!r}), not listed in {DOC.name}")  # fmt: skip
                used.add(covering)
            for key, source in follows.items():
                if key in overlaid:
                    assert overlaid[key] == overlaid[source], (recipe, method, key, source)
    listed = sets | set(follows)
    assert listed == used, f"{DOC.name} lists keys the overlay never changes: {sorted(listed - used)}"


@pytest.mark.parametrize("recipe", RECIPES)
def test_the_overlay_keeps_what_the_gpu_runs_rely_on(recipe):
    """What the issue's GPU risks are about stays the recipe's (and verl's built-in replay buffer)."""
    config = _compose(f"recipe={recipe}", "algorithm=dapo", OVERLAY)
    model, actor, rollout = (
        config.actor_rollout_ref.model,
        config.actor_rollout_ref.actor,
        config.actor_rollout_ref.rollout,
    )
    assert model.use_remove_padding and model.enable_gradient_checkpointing
    assert actor.use_dynamic_bsz and rollout.calculate_log_probs
    assert actor.optim.lr == 1e-6 and actor.optim.lr_warmup_steps == 10
    assert config.trainer.v1.sampler.custom_sampler.path is None  # verl's own ReplayBuffer
    assert config.algorithm.filter_groups.enable
    offload = recipe != "paper_1p5b"  # the 7B recipe's from its memory estimate, the 14B recipe's from DAPO's
    assert actor.fsdp_config.param_offload is offload and actor.fsdp_config.optimizer_offload is offload


# ----------------------------------------------------------------------------- the runs


class Case(NamedTuple):
    result: dict  # the sweep's result.json of the run
    folder: Path
    micro_batches: list  # the probe's records of its actor's micro-batches, per process in call order
    checkpointing: list  # the probe's gradient_checkpointing records from the same processes


@pytest.fixture(scope="module")
def recipe_sweep(tmp_path_factory):
    """The sweep, after its dry run, in one subprocess: ({label: Case}, every probe record, the sweep
    folder, the sweep's output)."""
    root = tmp_path_factory.mktemp("recipes_cpu")
    out, probe = root / "sweep", root / "probe"
    probe.mkdir()
    paths = [os.environ.get("MASPO_GPU_STACK"), str(TESTS), os.environ.get("PYTHONPATH")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, paths)), MASPO_RECIPE_PROBE_DIR=str(probe),
               VERL_USE_EXTERNAL_MODULES=",".join(filter(None, [os.environ.get("VERL_USE_EXTERNAL_MODULES"),
                                                                "recipe_probe"])))  # fmt: skip
    command = [sys.executable, "-m", "maspo_verl.bench", *SWEEP, "--out", str(out)]
    dry = subprocess.run([*command, "--dry-run"], env=env, capture_output=True, text=True, timeout=600)
    assert dry.returncode == 0, dry.stdout[-3000:] + dry.stderr[-3000:]
    assert f"dry run: {len(CASES)} of {len(CASES)} runs pass" in dry.stdout
    sweep = subprocess.run(command, env=env, capture_output=True, text=True, timeout=2400)
    log = sweep.stdout + sweep.stderr
    assert sweep.returncode == 0, log[-6000:]
    records = [json.loads(line) for path in sorted(probe.glob("*.jsonl")) for line in path.read_text().splitlines()]
    cases = {}
    for label, (loss_mode, clip_high) in CASES.items():
        folder = out / RECIPE / label / "seed0"
        micro = [r for r in records if r["event"] == "micro_batch" and r["loss_mode"] == loss_mode
                 and r["clip_ratio_high"] == pytest.approx(clip_high)]  # fmt: skip
        pids = {r["pid"] for r in micro}
        checkpointing = [r for r in records if r["event"] == "gradient_checkpointing" and r["pid"] in pids]
        cases[label] = Case(json.loads((folder / "result.json").read_text()), folder, micro, checkpointing)
    return cases, records, out, log


def case_steps(recipe_sweep, label) -> dict:
    case = recipe_sweep[0][label]
    assert case.result["status"] == "done", case.result.get("error")
    return read_steps(case.folder / "metrics.jsonl")


@pytest.mark.e2e
@pytest.mark.parametrize("label", CASES)
def test_each_run_trains_validates_and_checkpoints(recipe_sweep, label):
    steps = case_steps(recipe_sweep, label)
    # 0: validation before training, which the first launch skips
    assert sorted(steps) == list(range(label == FIRST_LAUNCH, STEPS + 1)), sorted(steps)
    for step in range(1, STEPS + 1):
        data = steps[step]
        assert (
            0 <= data[REWARD] <= 1 and math.isfinite(data["actor/pg_loss"]) and math.isfinite(data["actor/grad_norm"])
        )
        prefix = OWN_METRICS[CASES[label][0]]
        assert any(key.startswith(prefix) for key in data), (prefix, sorted(data))
    # the recipe validates and saves every 25 steps, and always at the last one
    assert any(key.startswith("val-core/") for key in steps[STEPS])
    checkpoints = recipe_sweep[0][label].folder / "checkpoints"
    assert (checkpoints / "latest_checkpointed_iteration.txt").read_text().strip() == str(STEPS)


@pytest.mark.e2e
@pytest.mark.parametrize("label", CASES)
def test_the_actor_and_the_rollout_agree_on_every_token(recipe_sweep, label):
    """fp32 actor and fp32 hf rollout, with remove-padding on: |p_actor - p_rollout| per token stays at
    float rounding. Remove-padding packs sequences into one row; attention that crossed their
    boundaries would show here."""
    steps = case_steps(recipe_sweep, label)
    for step in range(1, STEPS + 1):
        assert steps[step][MISMATCH] < 1e-4, (label, step, steps[step][MISMATCH])


@pytest.mark.e2e
@pytest.mark.parametrize("label", CASES)
def test_micro_batches_are_dynamic_packed_and_uneven_on_both_ranks(recipe_sweep, label):
    """Inside the actor: remove-padding and dynamic batch size were on in every micro-batch, each
    held at most the token budget, every rank's mini-batch took several micro-batches, and their
    token loads differed (within a rank and between the ranks)."""
    case_steps(recipe_sweep, label)
    micro = recipe_sweep[0][label].micro_batches
    assert micro, f"{label}: the probe recorded no actor micro-batch"
    assert all(r["use_remove_padding"] and r["use_dynamic_bsz"] for r in micro)
    assert all(r["tokens"] <= r["max_token_len_per_gpu"] == 40 for r in micro)
    assert {r["rank"] for r in micro} == {0, 1}
    updates = []  # one process's consecutive calls with the same mini-batch token total: one update
    for record in micro:
        key = (record["pid"], record["mini_batch_tokens"])
        if not updates or updates[-1][0] != key:
            updates.append((key, []))
        updates[-1][1].append(record["tokens"])
    assert all(len(loads) >= 2 for _, loads in updates), updates
    assert any(len(set(loads)) > 1 for _, loads in updates), updates


@pytest.mark.e2e
def test_the_ranks_micro_batch_loads_differ(recipe_sweep):
    """Between the ranks: verl balances each step's sequences over the ranks, so one run's two ranks
    can take the same loads (the dapo run's did once); across the sweep's runs some must differ."""
    differing = []
    for label in CASES:
        by_rank = defaultdict(list)
        for record in recipe_sweep[0][label].micro_batches:
            by_rank[record["rank"]].append(record["tokens"])
        differing.append(by_rank[0] != by_rank[1])
    assert any(differing), dict(zip(CASES, differing))


@pytest.mark.e2e
def test_the_first_launch_validates_a_few_problems_twice_at_its_last_step_only(recipe_sweep):
    """+launch=first: no validation before training, one at step 2 of 32 problems x 2 samples (the
    recipe's other runs validate 16 x 2, the CPU overlay's val_max_samples, before and after)."""
    generations = {label: recipe_sweep[0][label].folder / "checkpoints" / "validation_generations"
                   for label in ("grpo", FIRST_LAUNCH)}  # fmt: skip
    assert sorted(path.name for path in generations["grpo"].glob("*.jsonl")) == ["0.jsonl", f"{STEPS}.jsonl"]
    assert sorted(path.name for path in generations[FIRST_LAUNCH].glob("*.jsonl")) == [f"{STEPS}.jsonl"]
    rows = [json.loads(line) for line in (generations[FIRST_LAUNCH] / f"{STEPS}.jsonl").read_text().splitlines()]
    assert len(rows) == 32 * 2 and len({row["input"] for row in rows}) == 32
    assert any(key.endswith("/acc/mean@2") for key in case_steps(recipe_sweep, FIRST_LAUNCH)[STEPS])


@pytest.mark.e2e
def test_sapo_aggregates_seq_mean_token_mean(recipe_sweep):
    case_steps(recipe_sweep, "sapo")
    micro = recipe_sweep[0]["sapo"].micro_batches
    assert micro and {r["loss_agg_mode"] for r in micro} == {"seq-mean-token-mean"}


@pytest.mark.e2e
@pytest.mark.parametrize("label", CASES)
def test_gradient_checkpointing_is_enabled_on_both_actor_ranks(recipe_sweep, label):
    case_steps(recipe_sweep, label)
    checkpointing = recipe_sweep[0][label].checkpointing
    assert len(checkpointing) == 2 and {r["model"] for r in checkpointing} == {"Qwen2ForCausalLM"}, checkpointing


@pytest.mark.e2e
def test_dapo_filters_groups_through_verls_replay_buffer(recipe_sweep):
    steps = case_steps(recipe_sweep, "dapo_groups_of_2")
    config = _compose(f"recipe={RECIPE}", "algorithm=dapo", OVERLAY)
    assert config.trainer.v1.sampler.custom_sampler.path is None  # verl builds its own ReplayBuffer
    evicted = [steps[step].get(EVICTED, 0) for step in range(1, STEPS + 1)]
    assert max(evicted) > 0, evicted


@pytest.mark.e2e
@pytest.mark.parametrize("label", CASES)
def test_rollout_is_weights_reach_every_loss(recipe_sweep, label):
    steps = case_steps(recipe_sweep, label)
    assert {r["rollout_is_weights"] for r in recipe_sweep[0][label].micro_batches} == {True}
    # fp32 on both sides: the weights are 1 up to rounding
    assert all(abs(steps[step][IS_MEAN] - 1) < 1e-4 for step in range(1, STEPS + 1))


@pytest.mark.e2e
def test_every_verl_process_ran_the_transformers_gpu_users_get(recipe_sweep):
    expected = os.environ.get("MASPO_GPU_STACK_TRANSFORMERS")
    if not os.environ.get("MASPO_GPU_STACK") or not expected:
        pytest.skip("MASPO_GPU_STACK is not set: source scripts/setup_gpu_stack.sh (the test command does)")
    records = recipe_sweep[1]
    assert {r["transformers"] for r in records} == {expected}
    # the sweep's driver and, per run, at least its two actor workers (and the rollout servers...)
    assert len({r["pid"] for r in records if r["event"] == "process"}) > 2 * len(CASES)


@pytest.mark.e2e
def test_the_recipe_sweep_evaluates_each_final_checkpoint_and_compares_with_grpo(recipe_sweep):
    """What `python -m maspo_verl.bench --recipe` gives a GPU user: each final checkpoint through the
    evaluator (a complete, fingerprinted record), the summary with the paired differences against
    grpo and the minimal detectable difference, the paper-style table, a plot."""
    cases, _, out, log = recipe_sweep
    for label, case in cases.items():
        result = case.result
        assert result["eval_k"] == 2 and 0 <= result["avg_at_k"] <= 1, label
        assert set(result["pass_at_k"]) == {"1", "2"} and result["pass_at_k"]["1"] == pytest.approx(result["avg_at_k"])
        record = json.loads((Path(result["eval_dir"]) / "summary.json").read_text())
        assert record["complete"] and record["generation"]["backend"] == "hf"
        assert record["generation"]["max_response_length"] == 8 and record["generation"]["tensor_parallel_size"] == 1
    summary = json.loads((out / "summary.json").read_text())
    block = summary["regimes"][RECIPE]
    assert summary["kind"] == "recipe" and sorted(block["presets"]) == sorted(CASES)
    assert sorted(block["paired"]) == sorted(set(CASES) - {"grpo"})
    assert block["paired"]["sapo"]["seeds"] == [0] and block["power"]["figure"] == "avg_at_k"
    text = (out / "summary.md").read_text()
    assert f"### Recipe `{RECIPE}`" in text and "### The paper's table: recipe `paper_14b`" in text
    assert "(paper, 14B, @32)" in text  # the paper's own rows beside ours
    assert (out / f"{RECIPE}.png").stat().st_size > 20_000
    assert "sweep: 100%" in log  # the progress bar, with its ETA while it ran
