"""A paper recipe resolves to the same settings however it is launched.

Every recipe x every preset goes through the four entry paths a user has, and the resolved
configs must agree on every key (policy loss, actor, rollout, reference, data, reward, algorithm,
trainer), except the keys an entry path sets on purpose, listed below:

- `python -m maspo_verl.main_ppo recipe=<r> algorithm=<p>` (our entry; the reference);
- stock `python -m verl.trainer.main_ppo +recipe=<r> +algorithm=<p>`, and, for the presets that
  read a recipe's size settings, with the two reversed (stock Hydra composes them in the order
  given; for every other pair the order cannot matter, since no recipe sets a key its preset sets:
  tests/test_preset_checks.py);
- the shell recipes, `RECIPE=<r> ALGORITHM=<p> bash examples/paper/run.sh` (what
  `examples/paper/paper_<size>_<method>.sh` run);
- `python -m maspo_verl.bench --recipe <r> --presets <p>`.

Settings that depend on the model size live in the recipe (`size_settings`, read by the presets:
docs/reproducing.md); MASPO's alpha, written here from the paper, is checked on every path.
"""

import pytest
from recipe_configs import PRESETS, RECIPES, bench, main_ppo, shell, stock_verl

from maspo_verl.preflight.presets import own_settings

# MASPO's mass exponent in the paper (arXiv 2602.17550): 0.5 at 1.5B, 0.3 at 7B and 14B; the
# ablations without the limiter keep 0 at every size
PAPER_ALPHA = {"paper_1p5b": 0.5, "paper_7b": 0.3, "paper_14b": 0.3}
NO_LIMITER = ("maspo_no_mass", "maspo_gate_only")
ALPHA = "actor_rollout_ref.actor.policy_loss.alpha"

# What each entry path sets on purpose, and why; every other key must equal main_ppo's.
RUN_FOLDER = ("trainer.default_local_dir", "trainer.validation_data_dir")  # follow the run's name
OWN_KEYS = {
    "stock verl": (),
    "stock verl, preset first": (),
    # run.sh names each run <recipe>_<method>, which names its checkpoint folder and its traces
    "shell": ("trainer.experiment_name", "actor_rollout_ref.rollout.trace.experiment_name", *RUN_FOLDER),
    # the sweep's seed of the run; its file logger, which replaces the recipe's loggers (the sweep
    # reads verl's metrics back from it; docs/reproducing.md), and the run's folder
    "bench": ("data.seed", "actor_rollout_ref.rollout.seed", "trainer.logger", *RUN_FOLDER),
}


def test_every_recipe_and_preset_is_covered():
    assert set(RECIPES) == set(PAPER_ALPHA)
    assert len(PRESETS) >= 20 and {"maspo", "grpo", "dapo", "dppo_tv", "gpg"} <= set(PRESETS)


def reads_size_settings(preset: str) -> bool:
    return any("size_settings" in str(value) for value in own_settings("algorithm", preset).values())


def entry_paths(recipe: str, preset: str, out) -> dict:
    paths = {"stock verl": stock_verl(f"+recipe={recipe}", f"+algorithm={preset}")}
    if reads_size_settings(preset):
        paths["stock verl, preset first"] = stock_verl(f"+algorithm={preset}", f"+recipe={recipe}")
    return paths | {"shell": shell(recipe, preset), "bench": bench(recipe, preset, out)}


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("recipe", RECIPES)
def test_every_entry_path_resolves_the_recipe_alike(recipe, preset, tmp_path_factory):
    reference = main_ppo(recipe, preset)
    compared = {section: 0 for section in ("actor_rollout_ref.actor.policy_loss.", "actor_rollout_ref.actor.",
                                            "actor_rollout_ref.rollout.", "data.", "reward.")}  # fmt: skip
    for path, resolved in entry_paths(recipe, preset, tmp_path_factory.getbasetemp() / "bench").items():
        keys = (reference.keys() | resolved.keys()) - set(OWN_KEYS[path])
        different = {key: (reference.get(key, "<absent>"), resolved.get(key, "<absent>")) for key in keys
                     if reference.get(key, "<absent>") != resolved.get(key, "<absent>")}  # fmt: skip
        assert not different, f"{path} resolves recipe={recipe} algorithm={preset} otherwise: {different}"
        assert all(key in resolved for key in OWN_KEYS[path]), path
        for section in compared:
            compared[section] += sum(key.startswith(section) for key in keys)
    assert all(count > 0 for count in compared.values()), compared


MASPO_PRESETS = [p for p in PRESETS if p.startswith("maspo")]


@pytest.mark.parametrize("preset", MASPO_PRESETS)
@pytest.mark.parametrize("recipe", RECIPES)
def test_maspo_alpha_is_the_papers_at_each_size_on_every_path(recipe, preset, tmp_path_factory):
    expected = 0.0 if preset in NO_LIMITER else PAPER_ALPHA[recipe]
    assert main_ppo(recipe, preset)[ALPHA] == expected
    paths = entry_paths(recipe, preset, tmp_path_factory.getbasetemp() / "bench")
    assert len(paths) == 4 or preset in NO_LIMITER, sorted(paths)  # both stock orders where alpha is read
    for path, resolved in paths.items():
        assert resolved[ALPHA] == expected, path


def test_an_override_of_the_presets_key_still_wins():
    assert main_ppo("paper_1p5b", "maspo", f"{ALPHA}=0.7")[ALPHA] == 0.7
    assert main_ppo("paper_7b", "maspo", "size_settings.maspo.alpha=0.45")[ALPHA] == 0.45
