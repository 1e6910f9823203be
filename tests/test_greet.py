"""
Unit tests for `hellotcp.greet`: the client protocol and `greet`, on
in-memory transports and clocks.
"""

from __future__ import annotations

import select
import socket
import struct

from twisted.internet.defer import CancelledError, TimeoutError
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    ISSLTransport,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import alsoProvides

from hellotcp import HelloServerFactory, ServerSettings
from hellotcp._wire import endedByReset
from hellotcp.greet import (
    AnswerCutShortError,
    HelloClientProtocol,
    NoGreetingError,
    ResponseTooLongError,
    greet,
)
from hellotcp.testing import MemoryEndpoint

from .support import TIMEOUT, HalfCloseableTransport, captureLogs


class ClientProtocolTests(SynchronousTestCase):
    """
    `HelloClientProtocol` sends its message and collects the answer.
    """

    def test_sendsThenHalfCloses(self) -> None:
        """
        Over TCP the message goes out exactly as given, then a half-close.
        """
        client = HelloClientProtocol(b"Hello, server!")
        transport = HalfCloseableTransport()
        client.makeConnection(transport)
        self.assertEqual(transport.value(), b"Hello, server!")
        self.assertTrue(transport.writeClosed)
        client.dataReceived(b"Hello, ")
        client.dataReceived(b"client!")
        self.assertNoResult(client.response)
        client.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.successResultOf(client.response), b"Hello, client!")

    def test_lineFeedWhereNoHalfClose(self) -> None:
        """
        Where the transport cannot half-close (TLS), a line feed ends the
        message, unless it has one already.
        """
        for message, sent in [(b"Hi", b"Hi\n"), (b"Hi\n", b"Hi\n")]:
            client = HelloClientProtocol(message)
            transport = HalfCloseableTransport()
            alsoProvides(transport, ISSLTransport)
            client.makeConnection(transport)
            self.assertEqual(transport.value(), sent)
            self.assertFalse(transport.writeClosed)

    def test_noGreeting(self) -> None:
        """
        A server that closes without a byte fails the response with
        `NoGreetingError`.
        """
        client = HelloClientProtocol(b"Hi")
        client.makeConnection(HalfCloseableTransport())
        client.connectionLost(Failure(ConnectionDone()))
        self.failureResultOf(client.response, NoGreetingError)

    def test_lostWithoutAnswer(self) -> None:
        """
        A connection lost uncleanly before any answer fails with its reason.
        """
        client = HelloClientProtocol(b"Hi")
        client.makeConnection(HalfCloseableTransport())
        client.connectionLost(Failure(ConnectionLost()))
        self.failureResultOf(client.response, ConnectionLost)

    def test_answerCutShort(self) -> None:
        """
        Part of an answer, then a reset over plain TCP: the response fails
        with `AnswerCutShortError`, which keeps what arrived, rather than
        passing the part for the answer.
        """
        client = HelloClientProtocol(b"Hi")
        client.makeConnection(HalfCloseableTransport())
        client.dataReceived(b"Hello, cl")
        client.connectionLost(Failure(ConnectionLost()))
        failure = self.failureResultOf(client.response, AnswerCutShortError)
        self.assertEqual(failure.value.received, b"Hello, cl")
        self.assertIn("reset after 9 bytes of the answer", str(failure.value))

    def test_tlsWithoutCloseNotify(self) -> None:
        """
        Over TLS, an answer whose stream ends without close_notify (which
        Twisted reports as a lost connection) is the answer: many TLS
        servers close that way, and the records arrived whole.
        """
        client = HelloClientProtocol(b"Hi")
        transport = HalfCloseableTransport()
        alsoProvides(transport, ISSLTransport)
        client.makeConnection(transport)
        client.dataReceived(b"Hello, client!")
        client.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(self.successResultOf(client.response), b"Hello, client!")

    def test_tooLong(self) -> None:
        """
        More than 64 KiB of answer fails the response and aborts the
        connection.
        """
        client = HelloClientProtocol(b"Hi")
        transport = HalfCloseableTransport()
        client.makeConnection(transport)
        client.dataReceived(b"x" * 65536)
        self.assertNoResult(client.response)
        client.dataReceived(b"x")
        self.failureResultOf(client.response, ResponseTooLongError)
        self.assertTrue(transport.disconnected)
        client.connectionLost(Failure(ConnectionLost()))

    def test_cancelAborts(self) -> None:
        """
        Cancelling the response aborts the connection.
        """
        client = HelloClientProtocol(b"Hi")
        transport = HalfCloseableTransport()
        client.makeConnection(transport)
        client.response.cancel()
        self.assertTrue(transport.disconnected)
        self.failureResultOf(client.response, CancelledError)


class GreetTests(SynchronousTestCase):
    """
    `greet` runs one exchange on any endpoint.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.events = captureLogs(self)

    def test_answer(self) -> None:
        """
        `greet` sends the message (text as UTF-8) and fires with the answer.
        """
        server = HelloServerFactory(ServerSettings(), self.clock)
        endpoint = MemoryEndpoint(self.clock, server)
        answer = greet(self.clock, endpoint, "Grüß", timeout=5)
        self.assertEqual(
            endpoint.connections[0].clientTransport.value(), "Grüß".encode()
        )
        endpoint.flush()
        self.assertEqual(self.successResultOf(answer), b"Hello, client!")
        self.assertEqual(self.clock.getDelayedCalls(), [])
        [event] = [e for e in self.events if "outcome" in e]
        self.assertEqual(event["message"], "Grüß")

    def test_timeout(self) -> None:
        """
        With no answer within the timeout, `greet` aborts the connection and
        fails with `TimeoutError`.
        """
        endpoint = MemoryEndpoint(self.clock, Factory.forProtocol(Protocol))
        answer = greet(self.clock, endpoint, b"Hi", timeout=5)
        endpoint.flush()
        self.clock.advance(5)
        self.assertTrue(endpoint.connections[0].clientTransport.disconnecting)
        endpoint.flush()
        self.assertTrue(endpoint.connections[0].closed)
        self.failureResultOf(answer, TimeoutError)


def endedPair(end: str) -> socket.socket:
    """
    A loopback TCP client socket whose peer sent ``Hello, cl`` and then
    ended the stream as ``end`` says: ``"fin"`` (a close), ``"reset"`` (a
    close with ``SO_LINGER`` 0), or ``"fin-then-reset"`` (a half-close, then
    a reset when the client's bytes arrive unread); the data is read, the
    end is left for `endedByReset` to find (at most `TIMEOUT` seconds
    waited for it).
    """
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname(), timeout=TIMEOUT)
        server, _ = listener.accept()
    with server:
        server.sendall(b"Hello, cl")
        if end == "fin-then-reset":
            server.shutdown(socket.SHUT_WR)
            select.select([client], [], [], TIMEOUT)
            client.sendall(b"more")
            select.select([server], [], [], TIMEOUT)
        elif end == "reset":
            server.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
    received = b""
    while len(received) < 9:
        received += client.recv(9 - len(received))
    # The end has arrived once the socket polls readable again.
    select.select([client], [], [], TIMEOUT)
    return client


class SocketTransport(HalfCloseableTransport):
    """
    An in-memory transport whose handle is a real socket.
    """

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self.sock = sock

    def getHandle(self) -> socket.socket:
        """
        The socket.
        """
        return self.sock


class EndedByResetTests(SynchronousTestCase):
    """
    A reset that Twisted reports as a clean end of stream (its poll-based
    reactors take "hung up and in error, not readable" for one) is told
    from a real end by asking the socket.
    """

    def test_kernelTellsThemApart(self) -> None:
        """
        After a FIN the stream ended; after a reset alone it was reset;
        after a FIN and then a reset it ended (the FIN came first).
        """
        for end, reset in [("fin", False), ("reset", True), ("fin-then-reset", False)]:
            with endedPair(end) as client:
                self.assertEqual(endedByReset(SocketTransport(client)), reset, end)

    def test_memoryTransport(self) -> None:
        """
        A transport without a socket ended as it says.
        """
        self.assertFalse(endedByReset(HalfCloseableTransport()))

    def test_answerCutShort(self) -> None:
        """
        Part of an answer, then a reset reported as an end: the client
        fails with `AnswerCutShortError`, as for a reset reported as one;
        after a real end, what arrived is the answer.
        """
        for end, cut in [("reset", True), ("fin", False)]:
            with endedPair(end) as sock:
                protocol = HelloClientProtocol(b"Hello, server!")
                protocol.makeConnection(SocketTransport(sock))
                protocol.dataReceived(b"Hello, cl")
                protocol.readConnectionLost()
                protocol.connectionLost(Failure(ConnectionDone()))
                if cut:
                    failure = self.failureResultOf(
                        protocol.response, AnswerCutShortError
                    )
                    self.assertEqual(failure.value.received, b"Hello, cl")
                else:
                    self.assertEqual(
                        self.successResultOf(protocol.response), b"Hello, cl"
                    )
