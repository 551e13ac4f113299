"""How every command of this package refuses bad input: the message, nothing else, exit status 2.

A refusal names the setting or file, its value and what is allowed (preflight's checks, a
config class, the evaluator's and the benchmark's input checks). A traceback of the check that
raised it would only bury that message, so the commands (`python -m maspo_verl.main_ppo` and
the shell recipes, `bench`, `eval`, `data`) print `<command>: error: <message>` on stderr and
exit with ``EXIT_REFUSED``. ``HYDRA_FULL_ERROR=1`` (Hydra's own switch) or ``--debug`` shows the
traceback instead, for when the refusal itself looks wrong.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager

EXIT_REFUSED = 2
DEBUG_ENV = "HYDRA_FULL_ERROR"  # set to 1 (or pass --debug): tracebacks instead of bare refusals
# what our checks raise for bad input (a missing data file is a FileNotFoundError)
REFUSALS = (ValueError, FileNotFoundError)


def debugging(debug: bool = False) -> bool:
    return debug or os.environ.get(DEBUG_ENV) == "1"


def refuse(command: str, error: BaseException) -> int:
    """Print the refusal as every command does; returns the exit status."""
    print(f"{command}: error: {error}", file=sys.stderr, flush=True)
    return EXIT_REFUSED


@contextmanager
def refusals(command: str, kinds: tuple = REFUSALS, debug: bool = False):
    """Turn ``kinds`` raised inside the block into a refusal: the message, then exit status 2."""
    try:
        yield
    except kinds as error:
        if debugging(debug):
            raise
        raise SystemExit(refuse(command, error)) from None
