"""How every command of this package refuses bad input: the message, nothing else, exit status 2.

A refusal names the setting or file, its value and what is allowed (preflight's checks, a
config class, the evaluator's and the benchmark's input checks). A traceback of the check that
raised it would only bury that message, so the commands (`python -m maspo_verl.main_ppo` and
the shell recipes, `bench`, `eval`, `data`) print `<command>: error: <message>` on stderr and
exit with ``EXIT_REFUSED``. ``HYDRA_FULL_ERROR=1`` (Hydra's own switch) or ``--debug`` shows the
traceback instead, for when the refusal itself looks wrong.

verl builds every config dataclass through Hydra's ``instantiate``, which wraps the ValueError of
a config class (``maspo_verl.config``: a setting out of its range) in an
``InstantiationException``; the refusal is that cause.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager

from hydra.errors import InstantiationException

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


def config_refusal(error: BaseException) -> BaseException | None:
    """The refusal of a config class that Hydra's instantiate wrapped, or None."""
    cause = error.__cause__
    return cause if isinstance(error, InstantiationException) and isinstance(cause, REFUSALS) else None


@contextmanager
def refusals(command: str, kinds: tuple = REFUSALS, debug: bool = False):
    """Turn ``kinds`` raised inside the block, and a config class's refusal, into a refusal: the
    message, then exit status 2."""
    try:
        yield
    except Exception as error:
        refusal = error if isinstance(error, kinds) else config_refusal(error)
        if refusal is None or debugging(debug):
            raise
        raise SystemExit(refuse(command, refusal)) from None
