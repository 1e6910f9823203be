"""
Tests for `hellotcp._proxy`: the PROXY protocol in front of the greeter.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from hellotcp._proxy import ProxyFactory
from hellotcp.metrics import PrometheusMetrics
from hellotcp.protocol import DEFAULT_GREETING, HelloServerFactory, ServerSettings

from .test_protocol import HalfCloseableTransport, captureLogs

BALANCER = IPv4Address("TCP", "127.0.0.1", 40000)


def header(client: str) -> bytes:
    """
    A PROXY v1 header for a connection from ``client``.
    """
    return f"PROXY TCP4 {client} 127.0.0.1 1234 5000\r\n".encode()


class ProxyFactoryTests(SynchronousTestCase):
    """
    `ProxyFactory` wrapping a `HelloServerFactory`.
    """

    def setUp(self) -> None:
        self.events = captureLogs(self)

    def connect(self, proxy: ProxyFactory) -> tuple[object, HalfCloseableTransport]:
        """
        A connection from the balancer.
        """
        protocol = proxy.buildProtocol(BALANCER)
        assert protocol is not None
        transport = HalfCloseableTransport(peerAddress=BALANCER)
        protocol.makeConnection(transport)
        return protocol, transport

    def test_halfCloseReachesGreeter(self) -> None:
        """
        A client's half-close after its message, through the PROXY layer,
        ends the message; the greeting names the real client in the log.
        """
        proxy = ProxyFactory(HelloServerFactory(ServerSettings(), Clock()))
        protocol, transport = self.connect(proxy)
        protocol.dataReceived(header("192.0.2.7") + b"Hello")  # type: ignore[attr-defined]
        protocol.readConnectionLost()  # type: ignore[attr-defined]
        self.assertEqual(transport.value(), DEFAULT_GREETING)
        protocol.connectionLost(Failure(ConnectionDone()))  # type: ignore[attr-defined]
        [event] = [e for e in self.events if "outcome" in e]
        self.assertEqual((event["peer"], event["message"]), ("192.0.2.7:1234", "Hello"))

    def test_refusalStaysRefusal(self) -> None:
        """
        When the greeter refuses (its limit is reached), so does the PROXY
        layer, instead of wrapping nothing.
        """
        proxy = ProxyFactory(
            HelloServerFactory(ServerSettings(maxConnections=1), Clock())
        )
        self.connect(proxy)
        self.assertIsNone(proxy.buildProtocol(BALANCER))

    def test_perPeerCountsRealClients(self) -> None:
        """
        The per-peer limit applies to the clients the headers name: a second
        connection from one client is refused at its first bytes, one from
        another client is served.
        """
        registry = CollectorRegistry()
        factory = HelloServerFactory(
            ServerSettings(maxConnectionsPerPeer=1),
            Clock(),
            metrics=PrometheusMetrics(registry),
        )
        proxy = ProxyFactory(factory)
        for client, served in [
            ("192.0.2.1", True),
            ("192.0.2.1", False),
            ("192.0.2.2", True),
        ]:
            protocol, transport = self.connect(proxy)
            protocol.dataReceived(header(client) + b"Hi\n")  # type: ignore[attr-defined]
            self.assertEqual(transport.value() == DEFAULT_GREETING, served, client)
            self.assertEqual(transport.disconnecting, not served, client)
        self.assertEqual(factory.connections.count("192.0.2.1"), 1)
        self.assertEqual(factory.connections.count("127.0.0.1"), 0)
        [refusal] = [e for e in self.events if e.get("outcome") == "refused"]
        self.assertEqual(refusal["peer"], "192.0.2.1:1234")
        # Admitted at first, then refused: counted once each way, not open.
        for name, labels, value in [
            ("hellotcp_connections_accepted_total", {}, 3),
            ("hellotcp_exchanges_total", {"outcome": "refused"}, 1),
            (
                "hellotcp_connections_refused_total",
                {"reason": "max-connections-per-peer"},
                1,
            ),
            ("hellotcp_connections_active", {}, 2),
        ]:
            self.assertEqual(registry.get_sample_value(name, labels), value, name)
