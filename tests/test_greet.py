"""
Unit tests for `hellotcp.greet`: the client protocol and `greet`, on
in-memory transports and clocks.
"""

from __future__ import annotations

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
from hellotcp.greet import (
    AnswerCutShortError,
    HelloClientProtocol,
    NoGreetingError,
    ResponseTooLongError,
    greet,
)
from hellotcp.testing import MemoryEndpoint

from .support import HalfCloseableTransport, captureLogs


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
