# -*- test-case-name: tests.test_metrics -*-
"""
The ``/metrics`` page: Prometheus text format, served with Twisted's web
server and ``prometheus_client``'s own Twisted resource.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.web.resource import Resource
from twisted.web.server import Site

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry


class MetricsSite(Site):
    """
    The site of the ``/metrics`` page, which does not log every scrape.
    """

    noisy = False

    def log(self, request: object) -> None:
        """
        Log nothing.
        """


def metricsSite(registry: CollectorRegistry) -> Site:
    """
    A web site serving ``registry`` at ``/metrics`` in Prometheus text format
    (``prometheus_client``'s own Twisted resource).
    """
    from prometheus_client.twisted import MetricsResource

    root = Resource()
    root.putChild(b"metrics", MetricsResource(registry))
    site: Site = MetricsSite(root)  # type: ignore[no-untyped-call]
    return site
