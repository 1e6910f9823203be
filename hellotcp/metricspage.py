# -*- test-case-name: tests.test_metrics -*-
"""
The ``/metrics`` page: Prometheus text format, served with Twisted's web
server and ``prometheus_client``'s own Twisted resource.

The page's listener has limits of its own, so that it cannot take the
descriptors that greetings need: at most `MAX_CONNECTIONS` connections at
once (any more are closed as soon as they are accepted), each closed after
`IDLE_TIMEOUT` seconds without a request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.interfaces import IAddress
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.web.resource import Resource
from twisted.web.server import Site

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

MAX_CONNECTIONS = 16
"""Connections to the ``/metrics`` listener at once; a few scrapers need a
few."""

IDLE_TIMEOUT = 10.0
"""Seconds a connection to the ``/metrics`` listener may stay idle (before
its first request, or between two) before it is closed."""


class MetricsSite(Site):
    """
    The site of the ``/metrics`` page, which does not log every scrape.
    """

    noisy = False

    def log(self, request: object) -> None:
        """
        Log nothing.
        """


class LimitedConnections(WrappingFactory):
    """
    Serve a factory's protocols on at most ``limit`` connections at once:
    another connection is closed as soon as it is accepted, without a log
    line (a flood would otherwise be one line per connection).
    """

    noisy = False

    def __init__(self, wrappedFactory: Site, limit: int) -> None:
        super().__init__(wrappedFactory)  # type: ignore[no-untyped-call]
        self.limit = limit

    def buildProtocol(  # type: ignore[override]
        self, addr: IAddress | None
    ) -> ProtocolWrapper | None:
        """
        Build the wrapped protocol, unless ``limit`` connections are open.
        """
        if len(self.protocols) >= self.limit:
            return None
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
