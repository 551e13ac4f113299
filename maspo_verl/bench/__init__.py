"""The benchmark: presets x seeds through verl's real trainer, on the tiny kit's tasks on CPU (`add` by
default, `chain`) or on a paper recipe's GPUs (`--recipe`).

`python -m maspo_verl.bench` (or `maspo-verl-bench`); see docs/mini-benchmark.md and docs/benchmarks.md.
`sweep.py` lists the runs (`plan_kit`, `plan_recipes`) and runs them (one Ray session, resumable,
failures reported), `plan.py` estimates a recipe sweep's cost (`--plan`) and preflights every run
(`--dry-run`), `summary.py` and `stats.py` turn runs into the figures people compare, `plots.py`
draws them.
"""
