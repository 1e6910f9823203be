"""
What the command lines of ``twist hellotcp`` and ``hellotcp-client`` share:
one-line errors and checked numbers.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from typing import ClassVar, TypeVar

from twisted.python import usage

_Number = TypeVar("_Number", int, float)


def number(
    kind: Callable[[str], _Number], name: str, value: str, zeroAllowed: bool = False
) -> _Number:
    """
    Read the value of option ``--name`` as a finite number greater than 0 (or
    at least 0 where ``zeroAllowed``).

    :raises usage.UsageError: With a sentence naming the option.
    """
    try:
        parsed: _Number | None = kind(value)
    except ValueError:
        parsed = None
    if (
        parsed is None
        or not math.isfinite(parsed)
        or parsed < 0
        or (parsed == 0 and not zeroAllowed)
    ):
        what = "a whole number" if kind is int else "a number"
        bound = "0 or more" if zeroAllowed else "greater than 0"
        raise usage.UsageError(f"--{name} must be {what} {bound}, not {value!r}")
    return parsed


class OneLineErrorOptions(usage.Options):
    """
    Options whose mistakes end the program with one line on standard error
    and exit status 2, instead of a traceback or the whole usage text (which
    ``--help`` shows).

    :cvar program: The name the error line starts with.
    """

    program: ClassVar[str] = "hellotcp"

    def __init__(self) -> None:
        usage.Options.__init__(self)

    def opt_version(self) -> None:
        """
        Display hellotcp's version and exit.
        """
        from . import __version__

        sys.stdout.write(f"hellotcp {__version__}\n")
        raise SystemExit(0)

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        """
        Parse ``options``; exit with one line on a mistake.
        """
        try:
            usage.Options.parseOptions(self, options)
        except usage.UsageError as error:
            sys.stderr.write(f"{self.program}: error: {error}\n")
            raise SystemExit(2) from None
