"""
Tests for `hellotcp.metrics`: what the factory counts, and ``/metrics`` as
Prometheus scrapes it from a real ``twist hellotcp``, read with
``prometheus_client``'s own parser.
"""

from __future__ import annotations

from collections.abc import Callable

from OpenSSL import SSL
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock, deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import Agent, readBody

from hellotcp.certs import Issued, issue, writeIssued
from hellotcp.metrics import PrometheusMetrics
from hellotcp.protocol import HelloServerFactory, ServerSettings

from .support import (
    TIMEOUT,
    CommandTestCase,
    classicClient,
    command,
    freePort,
    inThread,
)
from .test_protocol import PEER, HalfCloseableTransport, ServerHarness
from .test_tls_interop import pki, tlsListen

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    """
    Every sample of a Prometheus text page, by name and sorted labels.
    """
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def expires(issued: Issued) -> float:
    """
    When a certificate expires, as the metric shows it.
    """
    return issued.certificate.not_valid_after_utc.timestamp()


async def scrape(port: int) -> Samples:
    """
    GET ``/metrics`` from 127.0.0.1:``port``, as Prometheus does, and parse it.
    """
    agent = Agent(reactor)
    response = await agent.request(
        b"GET", f"http://127.0.0.1:{port}/metrics".encode()
    ).addTimeout(TIMEOUT, reactor)
    body = await readBody(response)
    return samples(body.decode())


async def scrapeUntil(port: int, condition: Callable[[Samples], bool]) -> Samples:
    """
    Scrape until ``condition`` holds of the figures (5 s at most), since a
    server counts an exchange when the client has closed, a moment after the
    client has its answer; the last figures are returned either way.
    """
    for _ in range(100):
        figures = await scrape(port)
        if condition(figures):
            break
        await deferLater(reactor, 0.05)
    return figures


class CountingTests(SynchronousTestCase):
    """
    `PrometheusMetrics` counts each thing a `HelloServerFactory` does.
    """

    def setUp(self) -> None:
        self.registry = CollectorRegistry()
        self.metrics = PrometheusMetrics(self.registry)

    def value(self, name: str, **labels: str) -> float | None:
        """
        One sample now.
        """
        return self.registry.get_sample_value(name, labels)

    def test_exchanges(self) -> None:
        """
        Accepted, open, by outcome, bytes both ways and durations.
        """
        greeted = ServerHarness(self, metrics=self.metrics)
        self.assertEqual(self.value("hellotcp_connections_active"), 1)
        greeted.send(b"hi\n")
        greeted.clock.advance(0.25)
        greeted.close()
        tooLong = ServerHarness(
            self, ServerSettings(maxMessageBytes=4), metrics=self.metrics
        )
        tooLong.send(b"much too long")
        tooLong.close()
        silent = ServerHarness(self, metrics=self.metrics)
        silent.clock.advance(10)
        silent.close()
        reset = ServerHarness(self, metrics=self.metrics)
        reset.send(b"par")
        reset.close(Failure(ConnectionLost()))
        self.assertEqual(self.value("hellotcp_connections_accepted_total"), 4)
        self.assertEqual(self.value("hellotcp_connections_active"), 0)
        for outcome in ("greeted", "too-long", "timeout", "lost"):
            self.assertEqual(
                self.value("hellotcp_exchanges_total", outcome=outcome), 1, outcome
            )
        self.assertEqual(self.value("hellotcp_received_bytes_total"), 3 + 13 + 3)
        self.assertEqual(self.value("hellotcp_sent_bytes_total"), 2 * 14)
        self.assertEqual(self.value("hellotcp_exchange_duration_seconds_count"), 4)
        self.assertEqual(
            self.value("hellotcp_exchange_duration_seconds_bucket", le="0.1"), 2
        )
        self.assertEqual(
            self.value("hellotcp_exchange_duration_seconds_bucket", le="0.25"), 3
        )

    def test_refusals(self) -> None:
        """
        Refusals are counted by the limit that refused them, and while
        stopping.
        """
        factory = HelloServerFactory(
            ServerSettings(maxConnections=2, maxConnectionsPerPeer=1),
            Clock(),
            metrics=self.metrics,
        )
        connected = []
        for host in ("10.0.0.1", "10.0.0.1", "10.0.0.2", "10.0.0.3"):
            address = IPv4Address("TCP", host, 5000)
            protocol = factory.buildProtocol(address)
            if protocol is not None:
                protocol.makeConnection(HalfCloseableTransport(peerAddress=address))
                connected.append(protocol)
        factory.stopGracefully(1)
        self.assertIsNone(factory.buildProtocol(PEER))
        self.assertEqual(
            self.value(
                "hellotcp_connections_refused_total", reason="max-connections-per-peer"
            ),
            1,
        )
        self.assertEqual(
            self.value("hellotcp_connections_refused_total", reason="max-connections"),
            1,
        )
        self.assertEqual(
            self.value("hellotcp_connections_refused_total", reason="shutdown"), 1
        )
        self.assertEqual(self.value("hellotcp_connections_accepted_total"), 2)
        self.assertEqual(self.value("hellotcp_connections_active"), 2)

    def test_tlsFailure(self) -> None:
        """
        A failed TLS handshake is an exchange outcome and a failure counted
        by OpenSSL's reason.
        """
        harness = ServerHarness(self, metrics=self.metrics)
        reason = [("SSL routines", "", "wrong version number")]
        harness.close(Failure(SSL.Error(reason)))
        self.assertEqual(
            self.value("hellotcp_exchanges_total", outcome="tls-failed"), 1
        )
        self.assertEqual(
            self.value(
                "hellotcp_tls_handshake_failures_total", reason="wrong version number"
            ),
            1,
        )

    def test_certificateExpiry(self) -> None:
        """
        The expiry gauge appears with a certificate, and follows it.
        """
        self.assertIsNone(
            self.value("hellotcp_tls_certificate_expiry_timestamp_seconds")
        )
        self.metrics.certificateExpires(1.5e9)
        self.metrics.certificateExpires(2e9)
        self.assertEqual(
            self.value("hellotcp_tls_certificate_expiry_timestamp_seconds"), 2e9
        )


class ScrapeTests(CommandTestCase):
    """
    ``twist hellotcp --metrics``, scraped over HTTP.
    """

    async def test_scrape(self) -> None:
        """
        A scrape shows the exchanges served, the TLS handshake that failed,
        and the served certificate's expiry; SIGHUP after the certificate
        changes moves the expiry.
        """
        plain, secure, metricsPort = freePort(), freePort(), freePort()
        names = ["localhost", "127.0.0.1"]
        first = issue(pki().authority, "localhost", names, days=90)
        certificate, key = writeIssued(self.folder, "server", first)
        server = await self.startServer(
            [
                command("twist"),
                "hellotcp",
                "--listen",
                f"tcp:{plain}:interface=127.0.0.1",
                *tlsListen(secure, certificate, key),
                "--metrics",
                f"tcp:{metricsPort}:interface=127.0.0.1",
            ],
            plain,
        )
        for _ in range(3):
            answer, _ = await inThread(classicClient, plain)
            self.assertEqual(answer, b"Hello, client!")
        # A plain-text client on the TLS port: a failed handshake.
        await inThread(classicClient, secure)
        figures = await scrapeUntil(
            metricsPort,
            lambda f: f.get(("hellotcp_connections_active", ())) == 0,
        )
        # The readiness probe connected and closed at once: greeted, empty.
        self.assertEqual(
            figures[("hellotcp_exchanges_total", (("outcome", "greeted"),))], 4
        )
        self.assertEqual(
            figures[("hellotcp_exchanges_total", (("outcome", "tls-failed"),))], 1
        )
        failures = [
            labels
            for (name, labels), value in figures.items()
            if name == "hellotcp_tls_handshake_failures_total" and value == 1
        ]
        self.assertEqual(len(failures), 1, figures)
        self.assertEqual(figures[("hellotcp_connections_accepted_total", ())], 5)
        self.assertEqual(figures[("hellotcp_sent_bytes_total", ())], 4 * 14)
        # Message bytes: the plain-text client's never got past TLS.
        self.assertEqual(figures[("hellotcp_received_bytes_total", ())], 3 * 14)
        expiry = "hellotcp_tls_certificate_expiry_timestamp_seconds"
        self.assertEqual(figures[(expiry, ())], expires(first))

        later = issue(pki().authority, "localhost", names, days=30)
        writeIssued(self.folder, "server", later)
        server.transport.signalProcess("HUP")  # type: ignore[union-attr]
        figures = await scrapeUntil(
            metricsPort, lambda f: f[(expiry, ())] != expires(first)
        )
        self.assertEqual(figures[(expiry, ())], expires(later))
        server.transport.signalProcess("TERM")  # type: ignore[union-attr]
        self.assertEqual(await server.ended.addTimeout(TIMEOUT, reactor), 0)
