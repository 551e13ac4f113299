"""Where a tiny-kit training step spends its time: generate / old log-prob / update.

Runs `python -m maspo_verl.main_ppo +kit=<kit> algorithm=<algorithm>` and reports the mean of
verl's own `timing_s/*` metrics over the steps after the first (which includes warm-up).

    python benchmarks/kit_step_times.py [--kit tiny_cpu|tiny_gpu] [--algorithm maspo] [--steps 20]
"""

import argparse
import statistics
from pathlib import Path

from maspo_verl.quickstart import run_training, train_overrides

PARTS = [
    "timing_s/gen",
    "timing_s/reward",
    "timing_s/old_log_prob",
    "timing_s/adv",
    "timing_s/update_actor",
    "timing_s/step",
]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kit", default="tiny_cpu")
    parser.add_argument("--algorithm", default="maspo")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("outputs/kit_step_times"))
    args = parser.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    overrides = ["trainer.val_before_train=False", "trainer.test_freq=-1"]
    command = train_overrides(args.algorithm, args.steps, overrides, kit=args.kit)
    records = [r for r in run_training(command, out, args.steps) if r["step"] > 1]
    print(f"kit={args.kit} algorithm={args.algorithm}: mean over steps 2..{args.steps} (seconds)")
    for part in PARTS:
        values = [r["data"][part] for r in records if part in r["data"]]
        if values:
            print(f"  {part.split('/')[-1]:<14}{statistics.mean(values):8.3f}")


if __name__ == "__main__":
    main()
