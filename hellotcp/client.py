# -*- test-case-name: tests.test_client -*-
"""
The C{hellotcp-client} program (also C{python -m hellotcp.client}): send one
message to a greeting server and print its answer.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import NoReturn

from twisted.internet import defer, error
from twisted.internet.endpoints import clientFromString
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import react
from twisted.python.failure import Failure

from ._escape import escape
from ._options import OneLineErrorOptions, number
from .protocol import (
    DEFAULT_MESSAGE,
    NoGreetingError,
    ResponseTooLongError,
    greet,
)

DEFAULT_CONNECT = "tcp:localhost:5000"
"""Where the client connects unless told otherwise: the classic server."""

_PROGRAM = "hellotcp-client"


class ClientOptions(OneLineErrorOptions):
    """
    Options of C{hellotcp-client}.
    """

    program = _PROGRAM

    synopsis = "[--connect ENDPOINT] [--message TEXT] [--timeout SECONDS]"
    longdesc = (
        "Send one message to a greeting server and print its answer. "
        "Exit status: 0 when answered, 1 when the exchange failed, "
        "2 for a mistake on the command line."
    )

    optParameters = [
        [
            "connect",
            "c",
            DEFAULT_CONNECT,
            "Twisted client endpoint to connect to, e.g. tcp:HOST:PORT, "
            "unix:PATH, tls:HOST:PORT.",
        ],
        ["message", "m", DEFAULT_MESSAGE.decode(), "The message to send."],
        ["timeout", "t", "10", "Seconds for the whole exchange."],
    ]

    def postOptions(self) -> None:
        """
        Check the timeout.
        """
        self["timeout"] = number(float, "timeout", self["timeout"])


def describeFailure(failure: Failure, options: ClientOptions) -> str:
    """
    Say in one line why an exchange failed.
    """
    where = options["connect"]
    reason = failure.value
    if isinstance(reason, error.ConnectionRefusedError):
        return f"connection refused by {where}"
    if isinstance(reason, (defer.TimeoutError, error.TimeoutError)):
        return f"no answer from {where} within {options['timeout']:g} seconds"
    if isinstance(reason, error.DNSLookupError):
        return f"cannot resolve the host of {where}"
    if isinstance(reason, (NoGreetingError, ResponseTooLongError)):
        return f"{where}: {reason}"
    if isinstance(reason, error.ConnectionLost):
        return f"{where}: the connection was lost before the answer was complete"
    if isinstance(reason, error.ConnectError):
        return f"cannot connect to {where}: {reason}"
    return f"{where}: {str(reason) or type(reason).__name__}"


def _fail(message: str, status: int) -> NoReturn:
    sys.stderr.write(f"{_PROGRAM}: error: {message}\n")
    raise SystemExit(status)


async def _exchange(reactor: IReactorTime, options: ClientOptions) -> None:
    try:
        endpoint = clientFromString(reactor, options["connect"])
    except Exception as problem:
        _fail(f"--connect {options['connect']}: {problem}", 2)
    try:
        answer = await greet(reactor, endpoint, options["message"], options["timeout"])
    except Exception:
        _fail(describeFailure(Failure(), options), 1)
    sys.stdout.write(escape(answer) + "\n")


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """
    Run C{hellotcp-client} with C{argv} (the process's arguments by default).
    """
    options = ClientOptions()
    options.parseOptions(sys.argv[1:] if argv is None else argv)
    react(lambda reactor: defer.Deferred.fromCoroutine(_exchange(reactor, options)))


if __name__ == "__main__":
    main()
