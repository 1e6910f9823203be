"""
Tests for `hellotcp.testing`: in-memory connections that run real exchanges,
plain and TLS, with TCP's framing and close, on the test's clock; and one
comparison with the same exchanges over a real loopback socket.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import TimeoutError
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IHalfCloseableProtocol, IListeningPort
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

import hellotcp.protocol as protocolModule
from hellotcp import (
    HelloServerFactory,
    ServerSettings,
    clientTLS,
    greet,
    serveTLS,
)
from hellotcp.greet import AnswerCutShortError
from hellotcp.testing import CLIENT_ADDRESS, MemoryConnection, MemoryEndpoint

from .pki import pki
from .support import TIMEOUT, captureLogs


class Recorder(Protocol):
    """
    A protocol that keeps what happens to it, and does what it is told.

    :ivar events: What happened, in order.
    """

    def __init__(self, answer: bytes = b"", close: str = "") -> None:
        self.events: list[Any] = []
        self._answer = answer
        self._close = close

    def connectionMade(self) -> None:
        """
        Note the connection, and answer at once if told to.
        """
        self.events.append("made")
        if self._answer:
            self.transport.write(self._answer)  # type: ignore[union-attr]
        if self._close == "close":
            self.transport.loseConnection()  # type: ignore[union-attr]
        elif self._close == "abort":
            self.transport.abortConnection()  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        """
        Note the data.
        """
        self.events.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Note why the connection was lost.
        """
        self.events.append(reason.type)


@implementer(IHalfCloseableProtocol)
class HalfCloseableRecorder(Recorder):
    """
    A `Recorder` that hears each side's end separately.
    """

    def readConnectionLost(self) -> None:
        """
        Note the peer's end of data.
        """
        self.events.append("read-closed")

    def writeConnectionLost(self) -> None:
        """
        Note that our own end of data was delivered.
        """
        self.events.append("write-closed")


class PlainExchangeTests(SynchronousTestCase):
    """
    `greet` and `HelloServerFactory` over a `MemoryEndpoint`.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.events = captureLogs(self)
        self.factory = HelloServerFactory(ServerSettings(), self.clock)
        self.endpoint = MemoryEndpoint(self.clock, self.factory)

    def test_greeted(self) -> None:
        """
        An exchange runs to the end in one flush: the answer arrives, the
        server logs the client's address and message, both sides are closed
        and no timer is left on the clock.
        """
        answer = greet(self.clock, self.endpoint, "Hello, server!")
        self.assertNoResult(answer)
        self.assertTrue(self.endpoint.flush())
        self.assertEqual(self.successResultOf(answer), b"Hello, client!")
        [event] = [e for e in self.events if "outcome" in e]
        self.assertEqual(
            (event["outcome"], event["message"], event["peer"]),
            ("greeted", "Hello, server!", "127.0.0.1:40000"),
        )
        [connection] = self.endpoint.connections
        self.assertTrue(connection.closed)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertFalse(self.endpoint.flush())

    def test_halfCloseFrames(self) -> None:
        """
        `greet` ends its message with a half-close, as over TCP: the message
        goes without a line feed, and the server answers at the end of it
        rather than after a pause.
        """
        answer = greet(self.clock, self.endpoint, "no terminator")
        [connection] = self.endpoint.connections
        self.assertEqual(connection.clientTransport.value(), b"no terminator")
        self.assertTrue(connection.clientTransport.writeClosed)
        self.endpoint.flush()
        self.assertEqual(self.successResultOf(answer), b"Hello, client!")
        self.assertEqual(self.clock.seconds(), 0)

    def test_addresses(self) -> None:
        """
        Each side sees the other's address, as the endpoint was given them.
        """
        client = IPv4Address("TCP", "192.0.2.7", 51000)
        server = IPv4Address("TCP", "192.0.2.1", 5000)
        endpoint = MemoryEndpoint(self.clock, self.factory, client, server)
        greet(self.clock, endpoint, "hi")
        [connection] = endpoint.connections
        self.assertEqual(connection.serverTransport.getPeer(), client)
        self.assertEqual(connection.clientTransport.getPeer(), server)
        endpoint.flush()
        [event] = [e for e in self.events if "outcome" in e]
        self.assertEqual(event["peer"], "192.0.2.7:51000")

    def test_serverTimeout(self) -> None:
        """
        The server's timers run on the test's clock: a client that sends
        nothing is closed when the clock passes the timeout, not before.
        """
        client = Recorder()
        connection = MemoryConnection(
            client, self.factory.buildProtocol(CLIENT_ADDRESS)
        )
        connection.flush()
        self.clock.advance(ServerSettings().timeout - 0.1)
        connection.flush()
        self.assertEqual(client.events, ["made"])
        self.clock.advance(0.1)
        connection.flush()
        self.assertEqual(client.events, ["made", ConnectionDone])
        [event] = [e for e in self.events if "outcome" in e]
        self.assertEqual(event["outcome"], "timeout")

    def test_greetTimeout(self) -> None:
        """
        `greet`'s timeout runs on the test's clock too: against a server
        that never answers, it fails when the clock passes it, and aborts
        the connection, which the server sees as a reset.
        """
        silent = HalfCloseableRecorder()
        endpoint = MemoryEndpoint(self.clock, Factory.forProtocol(lambda: silent))
        answer = greet(self.clock, endpoint, "hi", timeout=5)
        endpoint.flush()
        self.assertNoResult(answer)
        self.clock.advance(5)
        endpoint.flush()
        self.failureResultOf(answer, TimeoutError)
        self.assertEqual(silent.events, ["made", b"hi", "read-closed", ConnectionLost])

    def test_refused(self) -> None:
        """
        A connection the server factory refuses (its limit reached) is
        closed at once: the client's message reaches a closed socket, and
        the client sees the reset the kernel answers with, no greeting.
        """
        factory = HelloServerFactory(ServerSettings(maxConnections=1), self.clock)
        endpoint = MemoryEndpoint(self.clock, factory)
        endpoint.connect(Factory.forProtocol(Recorder))
        answer = greet(self.clock, endpoint, "hi")
        self.assertIsNone(endpoint.connections[1].server)
        # A client that sends nothing sees the end of the server's data.
        silent = Recorder()
        endpoint.connect(Factory.forProtocol(lambda: silent))
        endpoint.flush()
        self.assertEqual(silent.events, ["made", ConnectionDone])
        endpoint.flush()
        self.failureResultOf(answer, ConnectionLost)


class TCPBehaviourTests(SynchronousTestCase):
    """
    The transports deliver ends of data and resets as TCP does.
    """

    def test_halfCloseBothWays(self) -> None:
        """
        A half-close reaches a half-closeable peer as ``readConnectionLost``
        and the closer, once delivered, as ``writeConnectionLost``; the
        connection goes on in the other direction.
        """
        client, server = HalfCloseableRecorder(), HalfCloseableRecorder()
        connection = MemoryConnection(client, server)
        connection.clientTransport.write(b"question")
        connection.clientTransport.loseWriteConnection()
        connection.flush()
        self.assertEqual(client.events, ["made", "write-closed"])
        self.assertEqual(server.events, ["made", b"question", "read-closed"])
        connection.serverTransport.write(b"answer")
        connection.serverTransport.loseConnection()
        connection.flush()
        self.assertEqual(client.events[2:], [b"answer", "read-closed"])
        self.assertEqual(server.events[3:], [ConnectionDone])

    def test_endClosesPlainProtocol(self) -> None:
        """
        A protocol that is not half-closeable is closed by its peer's end
        of data, as a reactor closes it.
        """
        client, server = Recorder(), Recorder(b"hi", "close")
        connection = MemoryConnection(client, server)
        connection.flush()
        self.assertEqual(client.events, ["made", b"hi", ConnectionDone])
        self.assertEqual(server.events, ["made", ConnectionDone])
        self.assertTrue(connection.closed)

    def test_abortResets(self) -> None:
        """
        ``abortConnection`` drops what was not delivered; the peer sees a
        reset, the aborting side an abort.
        """
        client, server = Recorder(), Recorder(b"never delivered", "abort")
        connection = MemoryConnection(client, server)
        connection.flush()
        self.assertEqual(client.events, ["made", ConnectionLost])
        self.assertEqual(server.events, ["made", ConnectionAborted])

    def test_writeToClosedResets(self) -> None:
        """
        Bytes written to a side that has closed reset the writer, as a
        kernel answers them with RST; a later write is dropped.
        """
        client = HalfCloseableRecorder()
        server = Recorder(b"", "close")
        connection = MemoryConnection(client, server)
        connection.flush()
        self.assertEqual(client.events, ["made", "read-closed"])
        connection.clientTransport.write(b"too late")
        connection.flush()
        self.assertEqual(client.events[2:], [ConnectionLost])
        connection.clientTransport.write(b"later still")
        self.assertEqual(connection.clientTransport.value(), b"")

    def test_unreadBytesReset(self) -> None:
        """
        A side that closes with bytes it has not read resets the peer
        rather than ending its data cleanly.
        """
        client, server = HalfCloseableRecorder(), Recorder()
        connection = MemoryConnection(client, server)
        connection.serverTransport.loseConnection()
        connection.clientTransport.write(b"unread")
        connection.flush()
        self.assertEqual(server.events, ["made", ConnectionDone])
        self.assertEqual(client.events, ["made", ConnectionLost])

    def test_endless(self) -> None:
        """
        Two sides that write to each other forever are reported, not
        looped on.
        """

        class Echo(Protocol):
            def dataReceived(self, data: bytes) -> None:
                self.transport.write(data)  # type: ignore[union-attr]

        connection = MemoryConnection(Echo(), Echo())
        connection.clientTransport.write(b"ping")
        self.assertRaises(RuntimeError, connection.flush)


class TLSExchangeTests(SynchronousTestCase):
    """
    The TLS handshake and exchange run in memory.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.events = captureLogs(self)
        self.factory = HelloServerFactory(ServerSettings(), self.clock)

    def test_verified(self) -> None:
        """
        A verified TLS exchange ends in one flush, with the line feed that
        ends a message over TLS.
        """
        files = pki()
        served = serveTLS(self.factory, *files.server, clock=self.clock)
        endpoint = MemoryEndpoint(self.clock, served)
        answer = greet(
            self.clock, endpoint, "Hello", tls=clientTLS("localhost", files.ca)
        )
        endpoint.flush()
        self.assertEqual(self.successResultOf(answer), b"Hello, client!")
        [event] = [e for e in self.events if "outcome" in e]
        self.assertEqual((event["outcome"], event["message"]), ("greeted", "Hello"))
        self.assertTrue(endpoint.connections[0].closed)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_clientCertificate(self) -> None:
        """
        Mutual TLS: the server logs the subject of the client's
        certificate.
        """
        files = pki()
        served = serveTLS(
            self.factory, *files.server, clientCAs=files.ca, clock=self.clock
        )
        endpoint = MemoryEndpoint(self.clock, served)
        tls = clientTLS("localhost", files.ca, *files.client)
        answer = greet(self.clock, endpoint, "Hello", tls=tls)
        endpoint.flush()
        self.assertEqual(self.successResultOf(answer), b"Hello, client!")
        [event] = [e for e in self.events if "outcome" in e]
        self.assertEqual(event["client"], "CN=a client,O=hellotcp")

    def test_untrusted(self) -> None:
        """
        A server whose certificate the client does not trust: the client
        fails, the server logs ``tls-failed``.
        """
        files = pki()
        served = serveTLS(self.factory, *files.foreignServer, clock=self.clock)
        endpoint = MemoryEndpoint(self.clock, served)
        answer = greet(
            self.clock, endpoint, "Hello", tls=clientTLS("localhost", files.ca)
        )
        endpoint.flush()
        failure = self.failureResultOf(answer)
        self.assertIn("certificate verify failed", str(failure.value))
        [event] = [e for e in self.events if "outcome" in e]
        self.assertEqual(event["outcome"], "tls-failed")


class SameAsTCPTests(TestCase):
    """
    The same exchanges in memory and over a loopback socket end the same
    way: the server logs the same outcome and message, the client gets the
    same answer.
    """

    CASES = [
        b"Hello, server!",
        b"line then more\nafter",
        b"",
        b"x" * 2000,
    ]

    def record(self) -> EventLoggingObserver:
        """
        Collect the server's exchange events.
        """
        events = EventLoggingObserver()
        self.patch(
            protocolModule,
            "_log",
            Logger(namespace="hellotcp.protocol", observer=events),
        )
        return events

    async def test_sameEnds(self) -> None:
        """
        Each case, in memory and on loopback.
        """
        events = self.record()
        factory = HelloServerFactory(ServerSettings())
        # Twisted's stubs want a ServerFactory of a protocol typed loosely.
        port: IListeningPort = reactor.listenTCP(0, factory, 50, "127.0.0.1")  # type: ignore[arg-type]
        self.addCleanup(port.stopListening)
        address = port.getHost()
        assert isinstance(address, IPv4Address)
        tcp = TCP4ClientEndpoint(reactor, "127.0.0.1", address.port)
        overTCP = []
        for message in self.CASES:
            answer = greet(reactor, tcp, message, timeout=TIMEOUT)
            overTCP.append(await answer.addErrback(lambda f: f.type))
        tcpEvents = [(e["outcome"], e["message"]) for e in events if "outcome" in e]
        events = self.record()

        clock = Clock()
        endpoint = MemoryEndpoint(clock, HelloServerFactory(ServerSettings(), clock))
        inMemory = []
        for message in self.CASES:
            answer = greet(clock, endpoint, message)
            endpoint.flush()
            clock.advance(1)  # a pause ends a message that nothing else ends
            endpoint.flush()
            inMemory.append(self.successResultOf(answer.addErrback(lambda f: f.type)))
        memoryEvents = [(e["outcome"], e["message"]) for e in events if "outcome" in e]

        self.assertEqual(inMemory, overTCP)
        self.assertEqual(memoryEvents, tcpEvents)
        self.assertEqual(len(memoryEvents), len(self.CASES))
        self.assertNotIn(AnswerCutShortError, inMemory)
