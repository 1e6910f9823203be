"""
Unit tests for `hellotcp.protocol`, on in-memory transports and clocks.
"""

from __future__ import annotations

from typing import Any

from OpenSSL import SSL
from prometheus_client import CollectorRegistry
from twisted.internet.address import (
    HostnameAddress,
    IPv4Address,
    IPv6Address,
    UNIXAddress,
)
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    ISSLTransport,
)
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import alsoProvides
from zope.interface.verify import verifyObject

from hellotcp import protocol as protocolModule
from hellotcp._escape import escape, escapeText
from hellotcp._wire import DEFAULT_GREETING, formatAddress
from hellotcp.metrics import PrometheusMetrics
from hellotcp.protocol import (
    HEALTH_CHECK_MESSAGE,
    HelloServerFactory,
    HelloServerProtocol,
    IConnectionReport,
    ServerSettings,
)
from hellotcp.tls import describeTLSError

from .support import PEER, HalfCloseableTransport, ServerHarness, captureLogs, oneLine


class ServerProtocolTests(SynchronousTestCase):
    """
    The framing and answers of `HelloServerProtocol`.
    """

    def test_unterminatedMessageAnsweredAfterGap(self) -> None:
        """
        A message with no terminator (the classic blocking-socket client) is
        answered once the gap passes with no new byte, and the server then
        half-closes.
        """
        server = ServerHarness(self)
        server.send(b"Hello, server!")
        server.clock.advance(server.settings.messageGap * 0.99)
        self.assertEqual(server.transport.value(), b"")
        server.clock.advance(server.settings.messageGap * 0.02)
        self.assertEqual(server.transport.value(), DEFAULT_GREETING)
        self.assertTrue(server.transport.writeClosed)  # type: ignore[attr-defined]
        self.assertFalse(server.transport.disconnecting)
        server.close()
        [event] = server.exchanges()
        self.assertEqual(event["message"], "Hello, server!")
        self.assertEqual(event["outcome"], "greeted")
        self.assertEqual(event["bytes"], 14)
        self.assertEqual(event["peer"], "127.0.0.1:40000")
        self.assertAlmostEqual(event["duration"], server.settings.messageGap * 1.01)

    def test_lineFeedEndsMessage(self) -> None:
        """
        A line feed ends the message at once; a carriage return before it is
        not part of the message.
        """
        server = ServerHarness(self)
        server.send(b"Hello, server!\r\n")
        self.assertEqual(server.transport.value(), DEFAULT_GREETING)
        server.close()
        [event] = server.exchanges()
        self.assertEqual(event["message"], "Hello, server!")
        self.assertEqual(event["duration"], 0)

    def test_trickledMessageAnsweredOnce(self) -> None:
        """
        Bytes arriving one at a time, a few milliseconds apart, make one
        message, logged once and answered once.
        """
        server = ServerHarness(self)
        for byte in b"Hello, server!":
            server.send(bytes([byte]))
            server.clock.advance(0.005)
            self.assertEqual(server.transport.value(), b"")
        server.send(b"\n")
        server.clock.advance(10)
        server.close()
        self.assertEqual(server.transport.value(), DEFAULT_GREETING)
        [event] = server.exchanges()
        self.assertEqual(event["message"], "Hello, server!")

    def test_halfCloseEndsMessage(self) -> None:
        """
        The client's half-close ends the message; the server answers and
        closes all of the connection, since the client has closed its side.
        """
        server = ServerHarness(self)
        server.send(b"Hello")
        server.protocol.readConnectionLost()
        self.assertEqual(server.transport.value(), DEFAULT_GREETING)
        self.assertTrue(server.transport.disconnecting)
        server.close()
        self.assertEqual(server.exchanges()[0]["message"], "Hello")

    def test_bytesAfterMessageDiscarded(self) -> None:
        """
        Bytes after the message are read and discarded, without a second
        answer; the server closes fully once the client closes its side.
        """
        server = ServerHarness(self)
        server.send(b"Hello\nmore")
        server.send(b"x" * 100_000)
        self.assertEqual(server.transport.value(), DEFAULT_GREETING)
        self.assertFalse(server.transport.disconnecting)
        server.protocol.readConnectionLost()
        self.assertTrue(server.transport.disconnecting)
        self.assertFalse(server.transport.disconnected)

    def test_lingerBounded(self) -> None:
        """
        A client that neither closes nor stops sending after the answer is
        aborted once the linger time passes.
        """
        server = ServerHarness(self)
        server.send(b"Hello\n")
        server.clock.advance(server.settings.linger * 0.9)
        server.send(b"still talking")
        self.assertFalse(server.transport.disconnected)
        server.clock.advance(server.settings.linger * 0.2)
        self.assertTrue(server.transport.disconnected)

    def test_lingerAfterGap(self) -> None:
        """
        The linger time also bounds a connection answered after a gap.
        """
        server = ServerHarness(self)
        server.send(b"Hello")
        server.clock.advance(server.settings.messageGap)
        server.clock.advance(server.settings.linger)
        self.assertTrue(server.transport.disconnected)

    def test_tooLong(self) -> None:
        """
        A message longer than the maximum is cut there, logged as
        ``too-long``, and still answered; nothing more is buffered.
        """
        server = ServerHarness(self, ServerSettings(maxMessageBytes=10))
        server.send(b"0123456789A")
        self.assertEqual(server.transport.value(), DEFAULT_GREETING)
        # What follows is discarded: no second answer, not even once the
        # message gap has passed, and the message logged is the first ten.
        server.send(b"B\n" * 5_000)
        server.clock.advance(server.settings.messageGap)
        self.assertEqual(server.transport.value(), DEFAULT_GREETING)
        server.close()
        [event] = server.exchanges()
        self.assertEqual(event["outcome"], "too-long")
        self.assertEqual(event["message"], "0123456789")
        self.assertEqual(event["bytes"], 10)
        self.assertEqual(event["bytes"], 10)

    def test_maximumLengthWithTerminator(self) -> None:
        """
        A message of exactly the maximum followed by a line feed is a normal
        message.
        """
        server = ServerHarness(self, ServerSettings(maxMessageBytes=10))
        server.send(b"0123456789\n")
        server.close()
        self.assertEqual(server.exchanges()[0]["outcome"], "greeted")

    def test_lineFeedBeyondMaximum(self) -> None:
        """
        A line feed past the maximum does not save an over-long message.
        """
        server = ServerHarness(self, ServerSettings(maxMessageBytes=10))
        server.send(b"01234")
        server.send(b"56789AB\n")
        server.close()
        [event] = server.exchanges()
        self.assertEqual(event["outcome"], "too-long")
        self.assertEqual(event["message"], "0123456789")

    def test_idleTimeout(self) -> None:
        """
        A client that sends nothing is closed after the timeout, and the
        timeout is logged.
        """
        server = ServerHarness(self, ServerSettings(timeout=3))
        server.clock.advance(2.9)
        self.assertFalse(server.transport.disconnecting)
        server.clock.advance(0.1)
        self.assertTrue(server.transport.disconnecting)
        self.assertEqual(server.transport.value(), b"")
        server.close()
        [event] = server.exchanges()
        self.assertEqual(event["outcome"], "timeout")
        self.assertEqual(event["bytes"], 0)

    def test_binaryMessageLoggedEscaped(self) -> None:
        """
        Bytes that are not text, or are control characters, are logged
        escaped, and answered as usual.
        """
        server = ServerHarness(self)
        server.send(b"\xff\x00\x1b[2J\n")
        server.close()
        self.assertEqual(server.transport.value(), DEFAULT_GREETING)
        [event] = server.exchanges()
        self.assertEqual(event["message"], "\\xff\\x00\\x1b[2J")
        self.assertEqual(event["bytes"], 6)

    def test_clientGoneBeforeMessage(self) -> None:
        """
        A client that disconnects mid-message is logged as ``lost``, with what
        it sent, and gets no timer left behind.
        """
        server = ServerHarness(self)
        server.send(b"Hel")
        server.close(Failure(ConnectionLost()))
        [event] = server.exchanges()
        self.assertEqual(event["outcome"], "lost")
        self.assertEqual(event["message"], "Hel")
        self.assertEqual(server.clock.getDelayedCalls(), [])

    def test_oneTimerPerConnection(self) -> None:
        """
        Whatever the phase, a connection has at most one pending timer.
        """
        server = ServerHarness(self)
        self.assertEqual(len(server.clock.getDelayedCalls()), 1)
        server.send(b"He")
        self.assertEqual(len(server.clock.getDelayedCalls()), 1)
        server.clock.advance(server.settings.messageGap)
        self.assertEqual(len(server.clock.getDelayedCalls()), 1)
        server.close()
        self.assertEqual(server.clock.getDelayedCalls(), [])

    def test_tlsTransportClosedNotHalfClosed(self) -> None:
        """
        Over TLS the server closes with ``loseConnection`` (a close alert):
        half-closing the TCP connection beneath would cut the TLS stream.
        """
        transport = HalfCloseableTransport(peerAddress=PEER)
        alsoProvides(transport, ISSLTransport)
        server = ServerHarness(self, transport=transport)
        server.send(b"Hello\n")
        self.assertTrue(transport.disconnecting)
        self.assertFalse(transport.writeClosed)

    def test_customGreeting(self) -> None:
        """
        The greeting comes from the settings.
        """
        server = ServerHarness(self, ServerSettings(greeting=b"Bonjour"))
        server.send(b"Hello\n")
        self.assertEqual(server.transport.value(), b"Bonjour")


class ServerSettingsTests(SynchronousTestCase):
    """
    `ServerSettings` refuses values that would break the server.
    """

    def test_refusesNonPositive(self) -> None:
        """
        Times must be positive and limits at least 1.
        """
        for name in (
            "timeout",
            "messageGap",
            "linger",
            "maxMessageBytes",
            "maxConnections",
        ):
            self.assertRaises(ValueError, ServerSettings, **{name: 0})


class ServerFactoryTests(SynchronousTestCase):
    """
    `HelloServerFactory` limits and stops its connections.
    """

    def connect(
        self, factory: HelloServerFactory
    ) -> tuple[HelloServerProtocol, StringTransport]:
        protocol = factory.buildProtocol(PEER)
        assert protocol is not None
        transport = HalfCloseableTransport(peerAddress=PEER)
        protocol.makeConnection(transport)
        return protocol, transport

    def test_maxConnections(self) -> None:
        """
        Beyond ``maxConnections`` open connections, new ones are refused (so
        Twisted closes them at once) and the refusal is logged; a closed
        connection frees its slot.
        """
        events = captureLogs(self)
        factory = HelloServerFactory(ServerSettings(maxConnections=2), Clock())
        first, _ = self.connect(factory)
        self.connect(factory)
        self.assertIsNone(factory.buildProtocol(PEER))
        [refusal] = [e for e in events if e.get("outcome") == "refused"]
        self.assertEqual(refusal["reason"], "max-connections")
        self.assertEqual(refusal["peer"], "127.0.0.1:40000")
        first.connectionLost(Failure(ConnectionDone()))
        self.assertIsNotNone(factory.buildProtocol(PEER))

    def test_stopGracefullyWaits(self) -> None:
        """
        `HelloServerFactory.stopGracefully` refuses new connections and
        fires once the open ones have finished.
        """
        clock = Clock()
        factory = HelloServerFactory(ServerSettings(), clock)
        protocol, transport = self.connect(factory)
        stopped = factory.stopGracefully(5)
        self.assertNoResult(stopped)
        self.assertIsNone(factory.buildProtocol(PEER))
        protocol.dataReceived(b"Hello\n")
        self.assertEqual(transport.value(), DEFAULT_GREETING)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertIsNone(self.successResultOf(stopped))
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_stopGracefullyAborts(self) -> None:
        """
        Connections still open when the shutdown timeout passes are aborted
        and logged as ``shutdown``.
        """
        events = captureLogs(self)
        clock = Clock()
        factory = HelloServerFactory(ServerSettings(), clock)
        protocol, transport = self.connect(factory)
        stopped = factory.stopGracefully(5)
        clock.advance(5)
        self.assertTrue(transport.disconnected)
        protocol.connectionLost(Failure(ConnectionLost()))
        self.successResultOf(stopped)
        self.assertEqual([e["outcome"] for e in events if "outcome" in e], ["shutdown"])

    def test_stopGracefullyIdle(self) -> None:
        """
        With no connection open, stopping is immediate.
        """
        factory = HelloServerFactory(ServerSettings(), Clock())
        self.successResultOf(factory.stopGracefully(5))


class FormatAddressTests(SynchronousTestCase):
    """
    `formatAddress` writes addresses the way people do.
    """

    def test_kinds(self) -> None:
        """
        IPv4, IPv6 and UNIX addresses, and anything else.
        """
        self.assertEqual(formatAddress(PEER), "127.0.0.1:40000")
        self.assertEqual(formatAddress(IPv6Address("TCP", "::1", 5)), "[::1]:5")
        self.assertEqual(formatAddress(UNIXAddress(b"/tmp/s")), "/tmp/s")
        self.assertEqual(formatAddress(UNIXAddress(None)), "unix")
        self.assertEqual(formatAddress(UNIXAddress("/tmp/t")), "/tmp/t")
        other = HostnameAddress(b"example.com", 5)
        self.assertEqual(formatAddress(other), str(other))


class DefenceTests(SynchronousTestCase):
    """
    Limits per peer and in all, eviction of silent connections, the overall
    deadline, and summarised failure logs.
    """

    def setUp(self) -> None:
        self.events = captureLogs(self)
        self.clock = Clock()

    def factory(self, **settings: Any) -> HelloServerFactory:
        """
        A factory with these settings on this test's clock.
        """
        return HelloServerFactory(ServerSettings(**settings), self.clock)

    def connect(
        self, factory: HelloServerFactory, host: str = "127.0.0.1"
    ) -> tuple[HelloServerProtocol, HalfCloseableTransport] | None:
        """
        Offer a connection from ``host``; `None` if refused.
        """
        address = IPv4Address("TCP", host, 40000)
        protocol = factory.buildProtocol(address)
        if protocol is None:
            return None
        transport = HalfCloseableTransport(peerAddress=address)
        protocol.makeConnection(transport)
        if transport.disconnecting:
            protocol.connectionLost(Failure(ConnectionDone()))
            return None
        return protocol, transport

    def outcomes(self) -> list[str]:
        """
        The outcomes logged so far.
        """
        return [e["outcome"] for e in self.events if "outcome" in e]

    def test_evictsLongestSilent(self) -> None:
        """
        At the limit, the connection silent the longest (1 s or more) is
        closed to make room for the new one.
        """
        factory = self.factory(maxConnections=2)
        first = self.connect(factory)
        self.clock.advance(0.5)
        second = self.connect(factory)
        assert first and second
        self.clock.advance(0.5)
        third = self.connect(factory)
        self.assertIsNotNone(third)
        self.assertTrue(first[1].disconnected)
        self.assertFalse(second[1].disconnected)
        self.assertEqual(len(factory.connections), 2)
        first[0].connectionLost(Failure(ConnectionLost()))
        self.assertEqual(len(factory.connections), 2)
        self.assertEqual(self.outcomes(), ["evicted"])

    def test_youngOrTalkingNotEvicted(self) -> None:
        """
        A connection silent for less than a second, or one that has sent
        bytes, is never evicted: the newcomer is refused instead.
        """
        factory = self.factory(maxConnections=2)
        talking = self.connect(factory)
        assert talking
        talking[0].dataReceived(b"Hel")
        self.clock.advance(0.01)  # less than the message gap
        self.connect(factory)
        self.clock.advance(0.5)
        self.assertIsNone(self.connect(factory))
        self.assertEqual(self.outcomes(), ["refused"])
        [refusal] = [e for e in self.events if e.get("outcome") == "refused"]
        self.assertEqual(refusal["reason"], "max-connections")

    def test_perPeer(self) -> None:
        """
        One address cannot take more than its share; others still get in.
        """
        factory = self.factory(maxConnectionsPerPeer=2)
        self.connect(factory)
        self.connect(factory)
        self.assertIsNone(self.connect(factory))
        self.assertIsNotNone(self.connect(factory, "127.0.0.2"))
        [refusal] = [e for e in self.events if e.get("outcome") == "refused"]
        self.assertEqual(refusal["reason"], "max-connections-per-peer")
        self.assertEqual(refusal["limit"], 2)
        self.clock.advance(1)
        # Now the oldest silent connection of that peer makes room.
        self.assertIsNotNone(self.connect(factory))
        self.assertEqual(factory.connections.count("127.0.0.1"), 2)
        self.assertEqual(factory.connections.count("127.0.0.2"), 1)

    def test_deadline(self) -> None:
        """
        A client trickling bytes faster than the message gap, to keep its
        message open, is aborted at the deadline, unanswered.
        """
        factory = self.factory(deadline=5, maxMessageBytes=100_000)
        connection = self.connect(factory)
        assert connection
        protocol, transport = connection
        while not transport.disconnected:
            self.assertLess(self.clock.seconds(), 6)
            protocol.dataReceived(b"x")
            self.clock.advance(0.03)
        self.assertGreaterEqual(self.clock.seconds(), 5)
        self.assertEqual(transport.value(), b"")
        protocol.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(self.outcomes(), ["deadline"])

    def test_deadlineBeforeTimeout(self) -> None:
        """
        A deadline shorter than the idle timeout wins.
        """
        factory = self.factory(deadline=1, timeout=10)
        connection = self.connect(factory)
        assert connection
        self.clock.advance(1)
        self.assertTrue(connection[1].disconnected)

    def test_failuresSummarised(self) -> None:
        """
        Past ten of a kind in ten seconds, failures are counted and logged
        as one summary when the ten seconds end; greetings are always
        logged.
        """
        factory = self.factory(timeout=0.1)
        for _ in range(25):
            connection = self.connect(factory)
            assert connection
            self.clock.advance(0.1)
            connection[0].connectionLost(Failure(ConnectionDone()))
        greeted = self.connect(factory)
        assert greeted
        greeted[0].dataReceived(b"Hi\n")
        greeted[0].connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.outcomes(), ["timeout"] * 10 + ["greeted"])
        self.clock.advance(10)
        [summary] = [e for e in self.events if e.get("outcome") == "summary"]
        self.assertEqual((summary["kind"], summary["count"]), ("timeout", 15))
        self.assertEqual(self.clock.getDelayedCalls(), [])


class QuietGreetingTests(SynchronousTestCase):
    """
    A factory told not to log greetings still logs failures.
    """

    def test_onlyFailures(self) -> None:
        """
        Greetings go unlogged; a timeout is logged.
        """
        events = captureLogs(self)
        clock = Clock()
        factory = HelloServerFactory(
            ServerSettings(timeout=1), clock, logGreetings=False
        )
        for data in (b"Hi\n", b""):
            protocol = factory.buildProtocol(PEER)
            assert protocol is not None
            protocol.makeConnection(HalfCloseableTransport(peerAddress=PEER))
            if data:
                protocol.dataReceived(data)
            clock.advance(1)
            protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual([e["outcome"] for e in events if "outcome" in e], ["timeout"])


class ProxiedPeerTests(SynchronousTestCase):
    """
    Behind a PROXY-protocol endpoint the factory sees the balancer's address,
    and the transport the real client's once the header is read.
    """

    def test_peerFromTransport(self) -> None:
        """
        The per-peer limit counts the client the transport names when the
        connection is made, not the address the protocol was built for.
        """
        captureLogs(self)
        factory = HelloServerFactory(ServerSettings(maxConnectionsPerPeer=1), Clock())
        balancer = IPv4Address("TCP", "10.0.0.1", 1)
        for client in ("192.0.2.1", "192.0.2.2", "192.0.2.1"):
            protocol = factory.buildProtocol(balancer)
            assert protocol is not None
            transport = HalfCloseableTransport(
                peerAddress=IPv4Address("TCP", client, 2)
            )
            protocol.makeConnection(transport)
        self.assertEqual(factory.connections.count("192.0.2.1"), 1)
        self.assertEqual(factory.connections.count("192.0.2.2"), 1)
        self.assertEqual(factory.connections.count("10.0.0.1"), 0)
        self.assertTrue(transport.disconnecting)  # the second from 192.0.2.1


class GreetedOnlyIfDeliveredTests(SynchronousTestCase):
    """
    An exchange is logged ``greeted`` only once its greeting was handed to
    the kernel: the half-close completed (``writeConnectionLost``), or the
    connection closed cleanly (which Twisted reports only after flushing).
    """

    def test_halfCloseCompleted(self) -> None:
        """
        After the server's half-close completed, a reset from the client
        does not undo the greeting.
        """
        transport = HalfCloseableTransport(peerAddress=PEER)
        server = ServerHarness(self, transport=transport)
        server.send(b"Hi\n")
        self.assertTrue(transport.writeClosed)
        server.protocol.writeConnectionLost()
        server.close(Failure(ConnectionLost()))
        [event] = server.exchanges()
        self.assertEqual(event["outcome"], "greeted")

    def test_resetBeforeFlush(self) -> None:
        """
        A reset before the greeting was flushed: the client was not answered,
        and the log says so, with the reason.
        """
        registry = CollectorRegistry()
        server = ServerHarness(self, metrics=PrometheusMetrics(registry))
        server.send(b"Hi\n")
        server.close(Failure(ConnectionLost("reset by peer")))
        [event] = server.exchanges()
        self.assertEqual(event["outcome"], "lost")
        self.assertIn("the greeting was not delivered", event["reason"])
        self.assertIn("reset by peer", event["reason"])
        self.assertEqual(
            registry.get_sample_value(
                "hellotcp_exchanges_total", {"outcome": "greeted"}
            ),
            None,
        )

    def test_cleanCloseAfterLoseConnection(self) -> None:
        """
        Over TLS (no half-close) a clean close is the transport's word that
        everything was flushed: greeted.  A reset instead: lost.
        """
        for reason, outcome in [
            (Failure(ConnectionDone()), "greeted"),
            (Failure(ConnectionLost()), "lost"),
        ]:
            transport = HalfCloseableTransport(peerAddress=PEER)
            alsoProvides(transport, ISSLTransport)
            server = ServerHarness(self, transport=transport)
            server.send(b"Hi\n")
            server.close(reason)
            self.assertEqual(server.exchanges()[-1]["outcome"], outcome)

    def test_abortedBeforeFlush(self) -> None:
        """
        The server stopping (or the deadline) aborts an answered connection
        whose greeting was not flushed yet: lost, not greeted.
        """
        server = ServerHarness(self)
        server.send(b"Hi\n")
        server.protocol.abort(protocolModule.Outcome.SHUTDOWN)
        server.close(Failure(ConnectionAborted()))
        self.assertEqual(server.exchanges()[0]["outcome"], "lost")


class HealthCheckTests(SynchronousTestCase):
    """
    The health-check message is greeted like any other, but logged at debug
    level and counted under its own outcome.
    """

    def test_quietAndCounted(self) -> None:
        """
        ``health-check\\n`` (or the same ended by a half-close) is answered,
        logged at debug level with outcome ``health-check``, and counted so.
        """
        registry = CollectorRegistry()
        metrics = PrometheusMetrics(registry)
        for ending in (b"\n", b"\r\n", b""):
            server = ServerHarness(self, metrics=metrics)
            server.factory.logHealthChecks = True
            server.send(HEALTH_CHECK_MESSAGE + ending)
            if not ending:
                server.protocol.readConnectionLost()
            self.assertEqual(server.transport.value(), DEFAULT_GREETING)
            server.protocol.writeConnectionLost()
            server.close()
            [event] = server.exchanges()
            self.assertEqual(event["outcome"], "health-check")
            self.assertEqual(event["log_level"], LogLevel.debug)
        self.assertEqual(
            registry.get_sample_value(
                "hellotcp_exchanges_total", {"outcome": "health-check"}
            ),
            3,
        )

    def test_notLoggedUnlessAsked(self) -> None:
        """
        By default a health check is counted but not logged at all, since
        ``twistd`` and most applications keep debug events.
        """
        registry = CollectorRegistry()
        server = ServerHarness(self, metrics=PrometheusMetrics(registry))
        server.send(HEALTH_CHECK_MESSAGE + b"\n")
        server.protocol.writeConnectionLost()
        server.close()
        self.assertEqual(server.exchanges(), [])
        self.assertEqual(
            registry.get_sample_value(
                "hellotcp_exchanges_total", {"outcome": "health-check"}
            ),
            1,
        )

    def test_failsWhileDraining(self) -> None:
        """
        While the factory drains, a health check gets no greeting (a load
        balancer's check then fails), still counted as a health check;
        every other client is greeted as before.
        """
        registry = CollectorRegistry()
        metrics = PrometheusMetrics(registry)
        check = ServerHarness(self, metrics=metrics)
        check.factory.draining = True
        check.send(HEALTH_CHECK_MESSAGE + b"\n")
        self.assertEqual(check.transport.value(), b"")
        assert isinstance(check.transport, HalfCloseableTransport)
        self.assertTrue(check.transport.writeClosed)
        client = ServerHarness(self, metrics=metrics)
        client.factory.draining = True
        client.send(b"Hello, server!\n")
        self.assertEqual(client.transport.value(), DEFAULT_GREETING)
        for server in (check, client):
            server.protocol.writeConnectionLost()
            server.close()
        self.assertEqual(
            registry.get_sample_value(
                "hellotcp_exchanges_total", {"outcome": "health-check"}
            ),
            1,
        )

    def test_otherMessagesNotChecks(self) -> None:
        """
        Only the exact message counts: anything else is an ordinary greeting.
        """
        for message in (b"health-check!\n", b"Health-check\n", b"x health-check\n"):
            server = ServerHarness(self)
            server.send(message)
            server.protocol.writeConnectionLost()
            server.close()
            [event] = server.exchanges()
            self.assertEqual(event["outcome"], "greeted")
            self.assertEqual(event["log_level"], LogLevel.info)


HOSTILE = "a\nb\rc\x1bd\x85e\u2028f\u2029g\u202eh\u2066i\u200bj\ufeffk\u061cl\\x41"


class EscapingTests(SynchronousTestCase):
    """
    Every field a client controls is escaped by one policy before it reaches
    a log line: each record stays one line that reads as it is.
    """

    def assertEscaped(self, events: list[dict[str, Any]]) -> None:
        """
        Each event's text is one line, with no control or invisible
        character, and shows the hostile text escaped.
        """
        self.assertTrue(events)
        for event in events:
            text = formatEvent(event)
            self.assertTrue(oneLine(text), repr(text))
            for field in ("peer", "message", "client", "reason"):
                value = event.get(field)
                if isinstance(value, str):
                    self.assertTrue(oneLine(value), (field, value))

    def test_message(self) -> None:
        """
        The message: controls, separators, bidi and zero-width characters
        escaped; a backslash doubled.
        """
        message = HOSTILE.replace("\n", "").encode()  # a line feed ends it
        server = ServerHarness(self)
        server.send(message + b"\n")
        server.protocol.writeConnectionLost()
        server.close()
        self.assertEscaped(server.exchanges())
        self.assertEqual(server.exchanges()[0]["message"], escape(message))
        self.assertIn("\\\\x41", server.exchanges()[0]["message"])

    def test_peerAddresses(self) -> None:
        """
        The peer, whatever its kind (a PROXY header chooses it): IPv4 and
        IPv6 host names and a UNIX path holding a forged record.
        """
        for address in [
            IPv4Address("TCP", HOSTILE, 1),
            IPv6Address("TCP", HOSTILE, 1),
            UNIXAddress(("\n2026-01-01 greeted: FORGED" + HOSTILE).encode()),
        ]:
            text = formatAddress(address)
            self.assertTrue(oneLine(text), text)
            server = ServerHarness(
                self, transport=HalfCloseableTransport(peerAddress=address)
            )
            server.send(b"Hi\n")
            server.close(Failure(ConnectionLost()))
            self.assertEscaped(server.exchanges())

    def test_providesConnectionReport(self) -> None:
        """
        The server protocol hears what TLS and PROXY wrappers report.
        """
        verifyObject(IConnectionReport, ServerHarness(self).protocol)

    def test_certificateSubject(self) -> None:
        """
        A client certificate's subject (mutual TLS), as the TLS wrapper
        reports it, is escaped.
        """
        transport = HalfCloseableTransport(peerAddress=PEER)
        alsoProvides(transport, ISSLTransport)
        server = ServerHarness(self, transport=transport)
        server.protocol.clientIdentified("CN=" + HOSTILE)
        server.send(b"Hi\n")
        server.close()
        self.assertEscaped(server.exchanges())
        self.assertEqual(server.exchanges()[0]["client"], escapeText("CN=" + HOSTILE))

    def test_errorTexts(self) -> None:
        """
        TLS error texts and other reasons (which may quote the client) are
        escaped.
        """
        for reason in [
            Failure(SSL.Error([("SSL routines", "", HOSTILE)])),
            Failure(ConnectionLost(HOSTILE)),
        ]:
            server = ServerHarness(self)
            if reason.check(SSL.Error):
                # As the TLS wrapper reports it (hellotcp.tls.HalfCloseableTLS).
                server.protocol.tlsFailed(describeTLSError(reason.value))
            server.close(reason)
            self.assertEscaped(server.exchanges())
            self.assertIn(escapeText(HOSTILE), server.exchanges()[0]["reason"])
