"""CLI: ``python -m maspo_verl.kit [--out DIR] [--seed N]`` builds or reuses the kit and prints its paths."""

import argparse
import json

from .build import build_kit


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m maspo_verl.kit", description=__doc__)
    parser.add_argument(
        "--out", default=None, help="kit directory (default: $MASPO_VERL_KIT_DIR or ~/.cache/maspo_verl/kit-<hash>)"
    )
    parser.add_argument("--task", default="add", help="add (the quickstart's) or chain (the benchmark's)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the split, the init and the warm start")
    parser.add_argument("--rebuild", action="store_true", help="build again even if a complete kit is there")
    parser.add_argument("--overrides", action="store_true", help="also print the Hydra overrides for main_ppo")
    args = parser.parse_args(argv)
    kit = build_kit(root=args.out, seed=args.seed, rebuild=args.rebuild, task=args.task)
    for name in ("root", "model_dir", "train_parquet", "val_parquet", "reward_path"):
        print(f"{name}: {getattr(kit, name)}")
    accuracy = {key: kit.info[key] for key in ("val_accuracy_greedy", "val_accuracy_sampled")}
    print(f"held-out accuracy: {json.dumps(accuracy)}")
    if args.overrides:
        print(" ".join(kit.verl_overrides()))


if __name__ == "__main__":
    main()
