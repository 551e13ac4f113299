"""The mini benchmark: presets x seeds through verl's real trainer on the kit's chain task, on CPU.

`python -m maspo_verl.bench` (or `maspo-verl-bench`); see docs/benchmarks.md. `sweep.py` plans and
runs (one Ray session, resumable, failures reported), `summary.py` turns runs into the figures
people compare, `plots.py` draws them.
"""
