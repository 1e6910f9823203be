# -*- test-case-name: tests.test_metrics -*-
"""
The ``/metrics`` page: Prometheus text format, served with Twisted's web
server and ``prometheus_client``'s own Twisted resource.

The page's listener has limits of its own, so that it cannot take the
descriptors that greetings need: at most `MAX_CONNECTIONS` connections at
once, each closed after `IDLE_TIMEOUT` seconds without a request and
aborted `DEADLINE` seconds after it was made, whatever it sends (a client
that trickles a request cannot hold a slot).  When the listener is full,
the oldest connection (if at least `EVICTION_AGE` old) is aborted to make
room for the new one, so a scraper always gets in; otherwise the newcomer
is closed as soon as it is accepted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime, ITransport
from twisted.internet.protocol import connectionDone
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Site

__all__ = [
    "DEADLINE",
    "EVICTION_AGE",
    "IDLE_TIMEOUT",
    "MAX_CONNECTIONS",
    "LimitedConnections",
    "MetricsSite",
    "metricsSite",
]

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

MAX_CONNECTIONS = 16
"""Connections to the ``/metrics`` listener at once; a few scrapers need a
few."""

IDLE_TIMEOUT = 10.0
"""Seconds a connection to the ``/metrics`` listener may stay idle (before
its first request, or between two) before it is closed."""


DEADLINE = 30.0
"""Seconds a connection to the ``/metrics`` listener may last in all; a
scrape takes milliseconds."""

EVICTION_AGE = 1.0
"""A connection younger than this is never aborted to make room."""


class MetricsSite(Site):
    """
    The site of the ``/metrics`` page, which does not log every scrape.
    """

    noisy = False

    def log(self, request: object) -> None:
        """
        Log nothing.
        """


class _Deadlined(ProtocolWrapper):
    """
    A connection aborted when its factory's deadline has passed.
    """

    factory: LimitedConnections
    started = 0.0
    # Aborted, and no longer counted, though still open for a reactor turn.
    leaving = False
    _expiry: IDelayedCall | None = None

    def makeConnection(self, transport: ITransport) -> None:
        clock = self.factory.clock()
        self.started = clock.seconds()
        self._expiry = clock.callLater(self.factory.deadline, self.abort)
        super().makeConnection(transport)  # type: ignore[no-untyped-call]

    def abort(self) -> None:
        """
        Abort the connection now (its deadline has passed, or it makes room).
        """
        if self._expiry is not None and self._expiry.active():
            self._expiry.cancel()
        self._expiry = None
        self.leaving = True
        assert self.transport is not None
        self.transport.abortConnection()  # type: ignore[attr-defined]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._expiry is not None and self._expiry.active():
            self._expiry.cancel()
        self._expiry = None
        super().connectionLost(reason)  # type: ignore[no-untyped-call]


class LimitedConnections(WrappingFactory):
    """
    Serve a site on at most ``limit`` connections at once, each for at most
    ``deadline`` seconds.  When full, the oldest connection is aborted to
    make room if it is at least `EVICTION_AGE` old; otherwise the new one is
    closed as soon as it is accepted, without a log line (a flood would
    otherwise be one line per connection).
    """

    noisy = False
    protocol = _Deadlined

    def __init__(
        self, wrappedFactory: Site, limit: int, deadline: float = DEADLINE
    ) -> None:
        """
        :param wrappedFactory: The site to serve.
        :param limit: Connections served at once.
        :param deadline: Seconds a connection may last in all.
        """
        super().__init__(wrappedFactory)  # type: ignore[no-untyped-call]
        self.limit = limit
        self.deadline = deadline

    def clock(self) -> IReactorTime:
        """
        The site's own clock (the reactor, or a test's).
        """
        clock: IReactorTime = self.wrappedFactory.reactor
        return clock

    def buildProtocol(  # type: ignore[override]
        self, addr: IAddress | None
    ) -> ProtocolWrapper | None:
        """
        Build the wrapped protocol, making room if ``limit`` connections are
        open and the oldest is old enough; else refuse.
        """
        staying: list[_Deadlined] = [p for p in self.protocols if not p.leaving]
        if len(staying) >= self.limit:
            oldest = min(staying, key=lambda p: p.started)
            if self.clock().seconds() - oldest.started < EVICTION_AGE:
                return None
            oldest.abort()
        return super().buildProtocol(addr)


def metricsSite(
    registry: CollectorRegistry,
    maxConnections: int = MAX_CONNECTIONS,
    idleTimeout: float = IDLE_TIMEOUT,
) -> LimitedConnections:
    """
    A web site serving ``registry`` at ``/metrics`` in Prometheus text format
    (``prometheus_client``'s own Twisted resource), on at most
    ``maxConnections`` connections at once, each closed after
    ``idleTimeout`` idle seconds.
    """
    from prometheus_client.twisted import MetricsResource

    root = Resource()
    root.putChild(b"metrics", MetricsResource(registry))
    site = MetricsSite(root, timeout=idleTimeout)  # type: ignore[no-untyped-call]
    return LimitedConnections(site, maxConnections)
