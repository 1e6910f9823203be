"""
Tests for `hellotcp._proxy`: the PROXY protocol in front of the greeter.
"""

from __future__ import annotations

import os
import struct
from typing import Any

from prometheus_client import CollectorRegistry
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.internet.task import Clock
from twisted.logger import formatEvent
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import alsoProvides, implementer
from zope.interface.verify import verifyObject

from hellotcp._proxy import ProxyFactory
from hellotcp._refusals import halfCloseable
from hellotcp.metrics import PrometheusMetrics
from hellotcp.protocol import (
    DEFAULT_GREETING,
    HelloServerFactory,
    IConnectionReport,
    ServerSettings,
)
from hellotcp.tls import (
    CertificateFiles,
    HalfCloseableTLS,
    ReloadableServerTLS,
    ServerTLSFiles,
    TLSServerFactory,
)

from .pki import PKI
from .support import HalfCloseableTransport, captureLogs, oneLine

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


def v2Header(family: int, addresses: bytes, command: int = 0x21) -> bytes:
    """
    A PROXY v2 header: ``family`` is the family-and-protocol byte.
    """
    return (
        b"\r\n\r\n\x00\r\nQUIT\n"
        + bytes([command, family])
        + struct.pack("!H", len(addresses))
        + addresses
    )


V2_TCP4 = v2Header(0x11, bytes([192, 0, 2, 9, 127, 0, 0, 1]) + struct.pack("!HH", 4, 5))


class HeaderRulesTests(SynchronousTestCase):
    """
    Which PROXY headers are accepted; every other is refused, logged once as
    ``bad-proxy-header``, and never greeted.
    """

    def setUp(self) -> None:
        self.events = captureLogs(self)
        self.seen = 0

    def serve(
        self, data: bytes, halfClose: bool = False, pieces: int = 1
    ) -> tuple[HalfCloseableTransport, dict[str, Any]]:
        """
        Send ``data`` (in ``pieces`` chunks), maybe half-close, then close.

        :returns: The transport and the one exchange logged.
        """
        proxy = ProxyFactory(HelloServerFactory(ServerSettings(), Clock()))
        protocol = proxy.buildProtocol(BALANCER)
        assert protocol is not None
        transport = HalfCloseableTransport(peerAddress=BALANCER)
        protocol.makeConnection(transport)
        size = max(1, -(-len(data) // pieces))
        for start in range(0, len(data), size):
            protocol.dataReceived(data[start : start + size])
        if halfClose and not transport.disconnecting:
            protocol.readConnectionLost()  # type: ignore[attr-defined]
        if transport.writeClosed:
            protocol.writeConnectionLost()  # type: ignore[attr-defined]
        protocol.connectionLost(Failure(ConnectionDone()))
        [event] = [e for e in list(self.events)[self.seen :] if "outcome" in e]
        self.seen = len(self.events)
        return transport, event

    def assertRefused(self, data: bytes, halfClose: bool = False) -> dict[str, Any]:
        """
        ``data`` is closed at once without a greeting, logged as a bad header
        on one line.
        """
        transport, event = self.serve(data, halfClose)
        self.assertEqual(transport.value(), b"", data)
        self.assertTrue(transport.disconnecting, data)
        self.assertEqual(event["outcome"], "bad-proxy-header", data)
        self.assertEqual(event["peer"], "127.0.0.1:40000")
        self.assertTrue(oneLine(formatEvent(event)), formatEvent(event))
        return event

    def test_wellFormedAccepted(self) -> None:
        """
        v1 TCP4, TCP6 and UNKNOWN, and v2 TCP4 and LOCAL, whole or one byte
        at a time, are greeted.
        """
        for data, peer in [
            (header("192.0.2.7"), "192.0.2.7:1234"),
            (b"PROXY TCP6 2001:db8::1 ::1 0 65535\r\n", "[2001:db8::1]:0"),
            (b"PROXY UNKNOWN whatever\r\n", "127.0.0.1:40000"),
            (V2_TCP4, "192.0.2.9:4"),
            (v2Header(0x00, b"", command=0x20), "127.0.0.1:40000"),
        ]:
            for pieces in (1, len(data) + 3):
                transport, event = self.serve(data + b"Hi\n", pieces=pieces)
                self.assertEqual(transport.value(), DEFAULT_GREETING, data)
                self.assertEqual(
                    (event["outcome"], event["peer"]), ("greeted", peer), data
                )

    def test_malformedRefused(self) -> None:
        """
        Impossible addresses, bad ports, extra fields, terminal escapes and
        junk are refused, and what the client sent is quoted escaped.
        """
        for data in [
            b"PROXY TCP4 999.1.1.1 127.0.0.1 1234 5000\r\n",
            b"PROXY TCP4 1.1.1.1\x1b[31mRED 127.0.0.1 1 2\r\n",
            b"PROXY TCP4 01.1.1.1 127.0.0.1 1 2\r\n",
            b"PROXY TCP4 ::1 127.0.0.1 1 2\r\n",
            b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
            b"PROXY TCP6 fe80::1%eth0\n ::1 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 127.0.0.1 65536 2\r\n",
            b"PROXY TCP4 1.2.3.4 127.0.0.1 +5 2\r\n",
            b"PROXY TCP4 1.2.3.4 127.0.0.1 1_0 2\r\n",
            b"PROXY TCP4 1.2.3.4 127.0.0.1 05 2\r\n",
            b"PROXY TCP4 1.2.3.4 127.0.0.1 x y\r\n",
            b"PROXY TCP4 1.2.3.4 127.0.0.1 1 2 extra\r\n",
            b"PROXY TCP5 1.2.3.4 127.0.0.1 1 2\r\n",
            b"PROXY \xff\xfe\r\n",
            b"PROXY " + b"x" * 200,
            b"GET / HTTP/1.0\r\n\r\n",
            b"\r\n\r\n\x00\r\nQUIT\n\x31\x11\x00\x00",
            b"\x16\x03\x01\x02\x00",
        ]:
            event = self.assertRefused(data + b"Hi\n")
            for control in ("\x1b", "\n", "\xff"):
                self.assertNotIn(control, event["reason"])
        event = self.assertRefused(b"PROXY TCP4 999.1.1.1 127.0.0.1 1234 5000\r\n")
        self.assertIn("999.1.1.1 is not an IPv4 address", event["reason"])

    def test_partialHeaderThenHalfClose(self) -> None:
        """
        A header cut short, v1 or v2, then a half-close: closed at once,
        never greeted, logged as an incomplete header.
        """
        for data in [b"PROXY TCP4 1.2.3.4", b"PROX", V2_TCP4[:20], V2_TCP4[:10]]:
            event = self.assertRefused(data, halfClose=True)
            self.assertIn("incomplete PROXY header", event["reason"])

    def test_partialHeaderThenClose(self) -> None:
        """
        A header cut short by a full close is logged the same way.
        """
        transport, event = self.serve(b"PROXY TCP4 1.2.3.4")
        self.assertEqual(transport.value(), b"")
        self.assertEqual(event["outcome"], "bad-proxy-header")

    def test_nothingThenHalfClose(self) -> None:
        """
        A connection that sends nothing and half-closes is only lost (as a
        port probe is anywhere), and not greeted.
        """
        transport, event = self.serve(b"", halfClose=True)
        self.assertEqual(transport.value(), b"")
        self.assertEqual(event["outcome"], "lost")

    def test_unixAddressEscaped(self) -> None:
        """
        A v2 UNIX address holding a line break and a forged record is
        logged escaped, on one line.
        """
        forged = (
            b"\n2026-01-01T00:00:00+0000 [x#info] 1.2.3.4 greeted: FORGED\xe2\x80\xae"
        )
        data = v2Header(0x31, forged.ljust(108, b"\x00") + b"/b".ljust(108, b"\x00"))
        transport, event = self.serve(data + b"Hi\n")
        self.assertEqual(transport.value(), DEFAULT_GREETING)
        self.assertTrue(event["peer"].startswith("\\n2026-01-01"), event["peer"])
        self.assertTrue(oneLine(formatEvent(event)))


class TLSBeneathProxyTests(SynchronousTestCase):
    """
    TLS behind a PROXY endpoint, in memory: the half-close that used to
    recurse without end.
    """

    def setUp(self) -> None:
        self.events = captureLogs(self)
        folder = self.mktemp()
        os.makedirs(folder)
        pki = PKI(folder)
        self.tls = ReloadableServerTLS(
            ServerTLSFiles(CertificateFiles(pki.server[0], pki.server[1]))
        )

    def halfClose(self, tlsFactory: Any) -> HalfCloseableTransport:
        """
        A header, then a half-close, through ``tlsFactory`` beneath PROXY.
        """
        proxy = ProxyFactory(tlsFactory)
        protocol = proxy.buildProtocol(BALANCER)
        assert protocol is not None
        transport = HalfCloseableTransport(peerAddress=BALANCER)
        protocol.makeConnection(transport)
        protocol.dataReceived(header("192.0.2.7"))
        protocol.readConnectionLost()  # type: ignore[attr-defined]
        protocol.connectionLost(Failure(ConnectionDone()))
        return transport

    def test_hellotcpTLS(self) -> None:
        """
        hellotcp's TLS factory: the half-close closes the connection, and
        the exchange is logged once, not greeted.
        """
        factory = HelloServerFactory(ServerSettings(), Clock())
        transport = self.halfClose(TLSServerFactory(self.tls, factory))
        self.assertTrue(transport.disconnecting)
        [event] = [e for e in self.events if "outcome" in e]
        self.assertEqual(event["outcome"], "lost")

    def test_twistedTLS(self) -> None:
        """
        Even Twisted's own TLS protocol, which claims the PROXY wrapper's
        ``IHalfCloseableProtocol`` without implementing it, does not make
        the wrapper call itself back.
        """
        factory = HelloServerFactory(ServerSettings(), Clock())
        transport = self.halfClose(TLSMemoryBIOFactory(self.tls, False, factory))
        self.assertTrue(transport.disconnecting)

    def test_badHeaderBeneathTLS(self) -> None:
        """
        A malformed header in front of TLS is refused without a TLS byte
        read, and the greeter logs it as a bad header, not a TLS failure.
        """
        factory = HelloServerFactory(ServerSettings(), Clock())
        proxy = ProxyFactory(TLSServerFactory(self.tls, factory))
        protocol = proxy.buildProtocol(BALANCER)
        assert protocol is not None
        transport = HalfCloseableTransport(peerAddress=BALANCER)
        protocol.makeConnection(transport)
        protocol.dataReceived(b"PROXY TCP4 999.1.1.1 127.0.0.1 1234 5000\r\n")
        self.assertTrue(transport.disconnecting)
        protocol.connectionLost(Failure(ConnectionDone()))
        [event] = [e for e in self.events if "outcome" in e]
        self.assertEqual(event["outcome"], "bad-proxy-header")
        self.assertIn("999.1.1.1 is not an IPv4 address", event["reason"])

    def test_reportsPassThroughTLS(self) -> None:
        """
        What the PROXY wrapper reports reaches the protocol beneath TLS:
        the real client once the header is read, a refused header.
        """
        for data, expected in [
            (header("192.0.2.7"), [("peerRevealed",)]),
            (b"junk\r\n", [("headerRefused", 'no PROXY header: "junk\\r\\n"')]),
        ]:
            recorder = _Recorder()
            proxy = ProxyFactory(TLSServerFactory(self.tls, _OneProtocol(recorder)))
            protocol = proxy.buildProtocol(BALANCER)
            assert protocol is not None
            protocol.makeConnection(HalfCloseableTransport(peerAddress=BALANCER))
            protocol.dataReceived(data)
            protocol.connectionLost(Failure(ConnectionDone()))
            self.assertEqual(recorder.calls, expected)

    def test_tlsProvidesReport(self) -> None:
        """
        `HalfCloseableTLS` provides `IConnectionReport`, and passes every
        report on to the protocol it wraps.
        """
        verifyObject(IConnectionReport, HalfCloseableTLS(None, Protocol()))
        recorder = _Recorder()
        tls = HalfCloseableTLS(None, recorder)
        tls.peerRevealed()
        tls.headerRefused("bad")
        tls.clientIdentified("CN=c")
        tls.tlsFailed("broken")
        self.assertEqual(
            recorder.calls,
            [
                ("peerRevealed",),
                ("headerRefused", "bad"),
                ("clientIdentified", "CN=c"),
                ("tlsFailed", "broken"),
            ],
        )
        # A protocol that does not listen is told nothing, and nothing fails.
        quiet = HalfCloseableTLS(None, Protocol())
        quiet.peerRevealed()
        quiet.headerRefused("bad")
        quiet.clientIdentified("CN=c")
        quiet.tlsFailed("broken")

    def test_halfCloseable(self) -> None:
        """
        `halfCloseable` accepts a protocol whose class defines
        ``readConnectionLost``, not one that only claims the interface.
        """
        claims = TLSMemoryBIOProtocol(None, Protocol())
        alsoProvides(claims, IHalfCloseableProtocol)
        self.assertIsNone(halfCloseable(claims))
        self.assertIsNotNone(halfCloseable(HalfCloseableTLS(None, Protocol())))


@implementer(IConnectionReport)
class _Recorder(Protocol):
    """
    A protocol that records what the wrappers report to it.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def peerRevealed(self) -> None:
        self.calls.append(("peerRevealed",))

    def headerRefused(self, reason: str) -> None:
        self.calls.append(("headerRefused", reason))

    def clientIdentified(self, subject: str) -> None:
        self.calls.append(("clientIdentified", subject))

    def tlsFailed(self, reason: str) -> None:
        self.calls.append(("tlsFailed", reason))


class _OneProtocol(ServerFactory):
    """
    A factory that builds the one protocol it was given.
    """

    def __init__(self, protocol: Protocol) -> None:
        self._protocol = protocol

    def buildProtocol(self, addr: object) -> Protocol:
        return self._protocol
