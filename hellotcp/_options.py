"""
What the command lines of ``twist hellotcp`` and ``hellotcp-client`` share:
one-line errors and checked numbers.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar, TypeVar

from twisted.python import usage

_Number = TypeVar("_Number", int, float)
_Handler = TypeVar("_Handler", bound=Callable[..., Any])

MAX_SECONDS = 86400.0
"""The most any option counting seconds accepts: a day."""

MAX_COUNT = 1_000_000_000
"""The most a whole-number option accepts unless it names a smaller bound."""

_SHOWN = 40


def _shown(value: str) -> str:
    # A 400-digit mistake is named by its start, so that the error stays one
    # short line.
    text = value if len(value) <= _SHOWN else value[:_SHOWN] + "..."
    return repr(text)


def number(
    kind: Callable[[str], _Number],
    name: str,
    value: str,
    zeroAllowed: bool = False,
    maximum: _Number | None = None,
) -> _Number:
    """
    Read the value of option ``--name`` as a finite number greater than 0 (or
    at least 0 where ``zeroAllowed``), and at most ``maximum``.

    :param maximum: The largest value accepted; by default `MAX_SECONDS`
        for a ``float`` and `MAX_COUNT` for an ``int``.  However many digits
        ``value`` has, it is refused here rather than overflowing later.
    :raises usage.UsageError: With a sentence naming the option.
    """
    limit: float | int = (
        maximum if maximum is not None else MAX_COUNT if kind is int else MAX_SECONDS
    )
    what = "a whole number" if kind is int else "a number"
    bound = "0 or more" if zeroAllowed else "greater than 0"
    parsed: _Number | None = None
    try:
        read = kind(value)
    except ValueError:
        # int() also refuses more than 4300 digits this way.
        tooLarge = value.strip().lstrip("+").isdigit()
    else:
        # Compared as they are: a huge int is never turned into a float.
        tooLarge = read > limit
        if not (
            (isinstance(read, float) and math.isnan(read))
            or read < 0
            or (read == 0 and not zeroAllowed)
        ):
            parsed = read
    if tooLarge:
        shownLimit = f"{limit:g}" if isinstance(limit, float) else str(limit)
        raise usage.UsageError(
            f"--{name} must be {what} {bound} and at most {shownLimit}, "
            f"not {_shown(value)}"
        )
    if parsed is None:
        raise usage.UsageError(f"--{name} must be {what} {bound}, not {_shown(value)}")
    return parsed


@contextmanager
def asUsageError(*kinds: type[Exception]) -> Iterator[None]:
    """
    Turn an error of one of ``kinds`` (a library's own, whose message is one
    line for a user) raised in the block into a usage error with the same
    message, so that the command ends with that line.
    """
    try:
        yield
    except kinds as error:
        raise usage.UsageError(str(error)) from None


def oneLineHelp(handler: _Handler) -> _Handler:
    """
    Make the docstring of an option's ``opt_`` method one line: ``--help``
    shows it as it stands, indentation and line breaks included.
    """
    handler.__doc__ = " ".join((handler.__doc__ or "").split())
    return handler


class OneLineErrorOptions(usage.Options):
    """
    Options whose mistakes end the program with one line on standard error
    and exit status 2, instead of a traceback or the whole usage text (which
    ``--help`` shows).

    :cvar program: The name the error line starts with.
    """

    program: ClassVar[str] = "hellotcp"

    def __init__(self) -> None:
        """
        Set up the options as ``usage.Options`` does.
        """
        # Not redundant: usage.Options.__init__ has no annotations, so under
        # mypy --strict each subclass's super().__init__() would need an
        # ignore; this typed one stands for it.
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
