"""
What the command lines of ``twist hellotcp``, ``hellotcp-client`` and
``hellotcp-certs`` share: one-line errors, checked numbers and checked host
names.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar, TypeVar

import idna
from twisted.python import usage

from .tls import CA, CERTIFICATE, CLIENT_CA, PRIVATE_KEY, TLSFileError

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
    return repr(cut(value))


def cut(value: str, length: int = _SHOWN) -> str:
    """
    ``value``, or its first ``length`` characters and ``...`` if it is
    longer: how a long mistake is named in a one-line error.
    """
    return value if len(value) <= length else value[:length] + "..."


_MISSING = re.compile(
    r"missing \d+ required (?:positional|keyword-only) arguments?: (.*)$"
)
_UNEXPECTED = re.compile(r"got an unexpected keyword argument '([^']*)'")


def describeEndpointError(error: BaseException) -> str:
    """
    Why Twisted could not make an endpoint from a description, in words a
    user of the command line reads: a parser's `TypeError` names Python
    arguments (``_parseTCP() missing 1 required positional argument:
    'port'``), which become the description's parts (``the port is
    missing``, ``no parameter bogus=``).
    """
    text = str(error)
    if isinstance(error, TypeError):
        missing = _MISSING.search(text)
        if missing:
            names = re.findall(r"'([^']*)'", missing.group(1))
            verb = "is" if len(names) == 1 else "are"
            return f"the {' and '.join(names)} {verb} missing"
        unexpected = _UNEXPECTED.search(text)
        if unexpected:
            return f"no parameter {cut(unexpected.group(1))}= for this kind of endpoint"
    return text


def number(
    kind: Callable[[str], _Number],
    name: str,
    value: str,
    zeroAllowed: bool = False,
    maximum: _Number | None = None,
    label: str | None = None,
) -> _Number:
    """
    Read the value of option ``--name`` as a finite number greater than 0 (or
    at least 0 where ``zeroAllowed``), and at most ``maximum``.

    :param maximum: The largest value accepted; by default `MAX_SECONDS`
        for a ``float`` and `MAX_COUNT` for an ``int``.  However many digits
        ``value`` has, it is refused here rather than overflowing later.
    :param label: What the error calls the value instead of ``--name``
        (``tcp:...:timeout=`` for a parameter of an endpoint, say).
    :raises usage.UsageError: With a sentence naming the option.
    """
    limit: float | int = (
        maximum if maximum is not None else MAX_COUNT if kind is int else MAX_SECONDS
    )
    named = label if label is not None else f"--{name}"
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
            f"{named} must be {what} {bound} and at most {shownLimit}, "
            f"not {_shown(value)}"
        )
    if parsed is None:
        raise usage.UsageError(f"{named} must be {what} {bound}, not {_shown(value)}")
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


def hostName(name: str, shownAtMost: int | None = None) -> str:
    """
    Check a host name or IP address for a certificate, and give it as a
    certificate names it: an IP address as it is, a host name in lower case
    with each internationalised label as its IDNA A-label (``bücher.example``
    becomes ``xn--bcher-kva.example``), without a final dot.  Wildcards are
    not made.

    ``hellotcp-certs --hostname`` and the TLS names of ``hellotcp-client``
    are checked with it, so that a name too long or not a host name is a
    one-line mistake on the command line, not a traceback from ``idna``.

    :param shownAtMost: How much of a long ``name`` the error shows (all of
        it by default, as ``hellotcp-certs`` does).
    :raises ValueError: With a sentence saying what is wrong with ``name``.
    """
    shown = repr(name if shownAtMost is None else cut(name, shownAtMost))
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        pass
    bare = name.removesuffix(".")
    if not bare:
        raise ValueError(f"{shown} is not a host name: it is empty")
    try:
        encoded: str = idna.encode(bare, uts46=True).decode("ascii")
    except idna.IDNAError as error:
        raise ValueError(f"{shown} is not a valid host name: {error}") from None
    return encoded


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
        except BrokenPipeError:
            # --help piped into a reader that stopped early (| head): the
            # reader has what it wanted.  Python would complain again when
            # it flushes stdout at exit, so stdout goes nowhere from now on.
            quietStdout()
            raise SystemExit(0) from None


def quietStdout() -> None:
    """
    Send whatever is still written to stdout nowhere: its reader is gone.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


TLS_FILE_OPTIONS = {
    CERTIFICATE: "--certificate",
    PRIVATE_KEY: "--private-key",
    CA: "--ca",
    CLIENT_CA: "--client-ca",
}
"""How the commands name TLS files in their errors: by the option that gave
each (``--ca ca.pem: No such file or directory``)."""


def describeTLSFileError(error: TLSFileError) -> str:
    """
    A TLS file's problem in one line, the file named by its option.
    """
    return error.describe(TLS_FILE_OPTIONS)
