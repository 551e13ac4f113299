"""`python -m maspo_verl.rewards audit [...]`: audit the math scorers on labelled answer pairs.

Subcommands: `audit` (see `maspo_verl/rewards/audit.py` and docs/evaluation.md).
"""

import sys

COMMANDS = {"audit": "maspo_verl.rewards.audit"}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m maspo_verl.rewards {{{','.join(COMMANDS)}}} [options]", file=sys.stderr)
        return 2
    import importlib

    return importlib.import_module(COMMANDS[argv[0]]).main(argv[1:])


# verl's math_verify scorer starts its worker pool with `spawn`, which re-imports this module:
# the guard keeps the workers from running the command again.
if __name__ == "__main__":
    sys.exit(main())
