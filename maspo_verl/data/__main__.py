"""`python -m maspo_verl.data prepare <name>... --out DIR` (console script: maspo-verl-data)."""

import sys

from .math_sets import main

if __name__ == "__main__":
    sys.exit(main())
