# -*- test-case-name: tests.test_service -*-
"""
Listener descriptions as ``twist hellotcp`` takes them (an ``haproxy:``
prefix, a listen queue), and starting listeners with failures reported as
`ListenError`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from twisted.application.service import IService
from twisted.internet.error import CannotListenError

PROXY_PREFIX = "haproxy:"
"""The prefix of a listener description that adds the PROXY protocol (its
header comes first, in clear, then TLS if any)."""

DEFAULT_BACKLOG = 4096
"""Listen queue length unless an endpoint description sets its own."""

# Endpoint types whose listen queue length hellotcp sets when the description
# does not: Twisted's default of 50 overflows under a burst of connections,
# and every dropped SYN costs the client a retransmission of 1 to 7 seconds.
_BACKLOG_TYPES = frozenset({"tcp", "tcp6", "ssl", "unix"})


def splitProxy(description: str) -> tuple[bool, str]:
    """
    Split a listener description into whether it asks for the PROXY
    protocol (an ``haproxy:`` prefix) and the server endpoint beneath.
    """
    endpoint = description.removeprefix(PROXY_PREFIX)
    return endpoint != description, endpoint


def endpointType(description: str) -> str:
    """
    The type of a listener's server endpoint (``tcp``, ``unix``, ...),
    looking through an ``haproxy:`` prefix.
    """
    return splitProxy(description)[1].partition(":")[0]


def withBacklog(description: str, backlog: int) -> str:
    """
    Add ``backlog=N`` to a server endpoint description that lacks one and
    whose type takes one (looking through an ``haproxy:`` prefix).
    """
    if endpointType(description) not in _BACKLOG_TYPES or "backlog=" in description:
        return description
    return f"{description}:backlog={backlog}"


def describeListenError(error: BaseException) -> str:
    """
    The reason, in a few words, that listening failed.
    """
    if isinstance(error, CannotListenError) and isinstance(error.socketError, OSError):
        return error.socketError.strerror or str(error.socketError)
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error)


class ListenError(Exception):
    """
    A listener could not listen: its address is in use, its socket path
    is not writable, its description names no endpoint...

    ``str()`` gives one line: ``cannot listen on <listener>: <reason>``.
    The exception that Twisted raised is its ``__cause__``.

    :ivar listener: The listener, as its description was written.
    :ivar reason: Why, in a few words (``Address already in use``).
    """

    def __init__(self, listener: str, reason: str) -> None:
        super().__init__(listener, reason)
        self.listener = listener
        self.reason = reason

    def __str__(self) -> str:
        return f"cannot listen on {self.listener}: {self.reason}"


def startListeners(services: Iterable[IService], privileged: bool = False) -> None:
    """
    Start each of ``services`` (listeners, named as the user wrote them);
    if one cannot listen, stop those started before it.

    :param privileged: Call ``privilegedStartService`` instead.
    :raises ListenError: When one cannot listen.
    """
    started: list[IService] = []
    for listener in services:
        try:
            if privileged:
                listener.privilegedStartService()
            else:
                listener.startService()
        except Exception as error:
            for running in reversed(started):
                running.stopService()
            raise ListenError(str(listener.name), describeListenError(error)) from error
        started.append(listener)


@contextmanager
def exitingOnListenError(exit: bool = True) -> Iterator[None]:
    """
    Where ``exit`` (a program asked for it), turn a `ListenError` into the
    program's one-line exit: a `SystemExit` whose message ``twist`` and
    ``twistd`` print, with no traceback, before exiting 1.
    """
    try:
        yield
    except ListenError as error:
        if not exit:
            raise
        raise SystemExit(f"hellotcp: error: {error}") from None
