"""maspo_verl/preflight/presets.py: a preset, recipe or overlay that would not run as its files say is
refused on the driver, before Ray starts, naming the setting, its value and what is allowed."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import verl
from hydra import initialize_config_dir
from verl.trainer.ppo import core_algos

from maspo_verl.bench.sweep import available_presets, available_recipes
from maspo_verl.launch import compose_config
from maspo_verl.preflight import presets as preset_checks
from maspo_verl.preflight.algorithm import check_algorithm_config
from maspo_verl.preflight.presets import (
    VERL_LOSS_RELEASES,
    check_presets_and_recipes,
    check_recipe_and_preset_disjoint,
    check_rollout_correction_has_log_probs,
    own_settings,
)

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- the loss and the installed verl


@pytest.mark.parametrize(
    "loss,releases",
    [
        ("dppo_tv", "releases 0.7.1 to 0.9.1"),
        ("gpg", "releases 0.5.0 to 0.9.1"),
        ("rollout_correction", "releases 0.6.1 "),
    ],
)
def test_a_preset_whose_loss_the_installed_verl_lacks_is_refused_naming_the_releases(loss, releases, monkeypatch):
    """As with a newer verl that dropped the loss: refused by the driver-side checks main_ppo runs first."""
    monkeypatch.setattr(verl, "__version__", "0.10.0")
    monkeypatch.delitem(core_algos.POLICY_LOSS_REGISTRY, loss, raising=False)
    config = compose_config(["algorithm=dppo_tv", f"actor_rollout_ref.actor.policy_loss.loss_mode={loss}"])
    for check in (check_algorithm_config, check_presets_and_recipes):
        with pytest.raises(ValueError) as error:
            check(config)
        message = str(error.value)
        assert f"actor_rollout_ref.actor.policy_loss.loss_mode={loss!r}" in message
        assert "the installed verl 0.10.0" in message and releases in message and "pip install 'verl==" in message
    assert "(algorithm=dppo_tv)" in message  # the preset is named where the choice is known


def test_our_own_loss_missing_and_an_unknown_loss_are_told_apart(monkeypatch):
    monkeypatch.delitem(core_algos.POLICY_LOSS_REGISTRY, "maspo")
    with pytest.raises(ValueError, match="maspo-verl's own loss, but it is not registered .* registration"):
        preset_checks.check_loss_registered("maspo")
    with pytest.raises(
        ValueError, match=r"'vanila' is not a registered policy loss. Losses of the installed verl .*vanilla"
    ):
        preset_checks.check_loss_registered("vanila")


def test_the_release_table_knows_every_loss_of_the_installed_verl():
    """Every loss verl registers itself is in the table as still present in this release."""
    own = {spec.name for spec in __import__("maspo_verl.algos", fromlist=["LOSSES"]).LOSSES}
    verls = {name for name in core_algos.POLICY_LOSS_REGISTRY if name not in own}
    assert verls <= set(VERL_LOSS_RELEASES), verls - set(VERL_LOSS_RELEASES)
    assert all(VERL_LOSS_RELEASES[name][1] is None for name in verls)
    assert {"dppo_tv", "dppo_kl", "geo_mean", "clip_cov", "kl_cov", "gpg"} <= verls


# ----------------------------------------------------------------------------- a recipe's keys survive its preset


def test_no_recipe_sets_a_key_its_preset_sets():
    """So recipe and preset compose to the same config in either order, on every entry path."""
    for recipe in available_recipes():
        for preset in available_presets():
            check_recipe_and_preset_disjoint(recipe, preset)
    assert "size_settings.maspo.alpha" in own_settings("recipe", "paper_1p5b")


CLASHING_RECIPE = """# @package _global_
defaults:
  - paper_1p5b
  - _self_
actor_rollout_ref:
  actor:
    policy_loss:
      alpha: 0.5
"""


def test_a_recipe_that_sets_a_presets_key_is_refused(tmp_path):
    (tmp_path / "recipe").mkdir()
    (tmp_path / "recipe" / "my_1p5b.yaml").write_text(CLASHING_RECIPE)
    own_settings.cache_clear()
    try:
        with initialize_config_dir(config_dir=str(tmp_path), version_base=None):
            with pytest.raises(ValueError) as error:
                check_recipe_and_preset_disjoint("my_1p5b", "maspo")
            check_recipe_and_preset_disjoint("my_1p5b", "grpo")  # grpo has no alpha: nothing to drop
    finally:
        own_settings.cache_clear()
    message = str(error.value)
    assert "recipe=my_1p5b sets actor_rollout_ref.actor.policy_loss.alpha=0.5" in message
    assert "algorithm=maspo sets it too ('${oc.select:size_settings.maspo.alpha,0.3}')" in message
    assert "size_settings" in message and "dropped" in message


def test_main_ppo_refuses_the_clashing_recipe_before_ray(tmp_path):
    """A user's recipe in a config folder of their own, through the real entry (a dry run: no Ray)."""
    (tmp_path / "recipe").mkdir()
    (tmp_path / "recipe" / "my_1p5b.yaml").write_text(CLASHING_RECIPE)
    result = subprocess.run(
        [sys.executable, "-m", "maspo_verl.main_ppo", "--dry-run", "--config-dir", str(tmp_path),
         "recipe=my_1p5b", "algorithm=maspo"],
        capture_output=True, text=True, timeout=300, cwd=REPO, env=dict(os.environ, HYDRA_FULL_ERROR="1"),
    )  # fmt: skip
    assert result.returncode != 0
    assert "recipe=my_1p5b sets actor_rollout_ref.actor.policy_loss.alpha=0.5" in result.stderr, result.stderr[-3000:]
    assert "ray" not in result.stdout.lower()


# ----------------------------------------------------------------------------- rollout correction


@pytest.mark.parametrize(
    "overrides",
    [["algorithm.rollout_correction.rollout_is=token"], ["algorithm.rollout_correction.rollout_rs=token_k1"],
     ["algorithm.rollout_correction.bypass_mode=True"]],
)  # fmt: skip
def test_rollout_correction_without_the_rollouts_log_probs_is_refused(overrides):
    # verl 0.9.1's rollout.yaml asks for the log-probs by default; a kit or a user may turn them off
    config = compose_config(["algorithm=dppo_tv", *overrides, "actor_rollout_ref.rollout.calculate_log_probs=False"])
    with pytest.raises(
        ValueError, match=r"algorithm.rollout_correction.\w+=.* needs .*calculate_log_probs=False: .*without a word"
    ):
        check_rollout_correction_has_log_probs(config)
    check_rollout_correction_has_log_probs(compose_config(["algorithm=dppo_tv", *overrides,
                                                           "actor_rollout_ref.rollout.calculate_log_probs=True"]))  # fmt: skip


@pytest.mark.parametrize("overlay", ["tis", "icepop"])
def test_the_correction_overlays_pass(overlay):
    check_presets_and_recipes(compose_config(["recipe=paper_7b", "algorithm=grpo", f"+correction={overlay}"]))
