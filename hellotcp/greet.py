# -*- test-case-name: tests.test_greet -*-
"""
The client side of the hellotcp exchange: `HelloClientProtocol` and
`greet`, which run one exchange over any Twisted client endpoint, TLS
included, against hellotcp or the classic blocking-socket server.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import connectProtocol
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IOpenSSLClientConnectionCreator,
    IReactorTime,
    ISSLTransport,
    IStreamClientEndpoint,
    ITCPTransport,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from ._twistedcompat import wrapClientTLSOn
from ._wire import DEFAULT_MESSAGE, canHalfClose, endedByReset

__all__ = [
    "AnswerCutShortError",
    "HelloClientProtocol",
    "NoGreetingError",
    "ResponseTooLongError",
    "greet",
]

_MAX_RESPONSE_BYTES = 65536


class NoGreetingError(Exception):
    """
    The server closed the connection without sending anything.
    """


class ResponseTooLongError(Exception):
    """
    The server sent more than any greeting should be (64 KiB).
    """


class AnswerCutShortError(Exception):
    """
    A plain TCP connection was reset after part of the answer: what arrived
    may not be all of it, so it is not taken for the answer.

    :ivar received: What arrived before the connection was lost.
    :ivar reason: Why the connection was lost.
    """

    def __init__(self, received: bytes, reason: Failure) -> None:
        self.received = received
        self.reason = reason
        super().__init__(
            f"the connection was reset after {len(received)} bytes of the answer"
        )


@implementer(IHalfCloseableProtocol)
class HelloClientProtocol(Protocol):
    """
    Send one message, then read the answer until the server closes.

    Over TCP the message is sent as it is and followed by a half-close, so a
    classic blocking-socket server receives exactly those bytes.  Where the
    transport cannot half-close (TLS) a line feed ends the message instead,
    unless it already ends with one.

    :ivar response: Fires with the answer once the server has closed
        cleanly, or fails with `NoGreetingError`, `ResponseTooLongError`,
        `AnswerCutShortError` (part of an answer, then a reset over plain
        TCP) or the reason
        the connection was lost.
        Cancelling it aborts the connection.
    """

    transport: ITCPTransport

    def __init__(self, message: bytes) -> None:
        """
        :param message: The bytes to send, as they are.
        """
        self._message = message
        self._received: list[bytes] = []
        self._size = 0
        self._reset = False
        self.response: Deferred[bytes] = Deferred(self._cancel)

    @property
    def received(self) -> bytes:
        """
        What the server has sent so far.
        """
        return b"".join(self._received)

    def connectionMade(self) -> None:
        """
        Send the message and mark its end.
        """
        transport = self.transport
        if canHalfClose(transport):
            transport.write(self._message)
            transport.loseWriteConnection()
        elif self._message.endswith(b"\n"):
            transport.write(self._message)
        else:
            transport.write(self._message + b"\n")

    def dataReceived(self, data: bytes) -> None:
        """
        Collect the answer, refusing to hold more than 64 KiB of it.
        """
        self._received.append(data)
        self._size += len(data)
        if self._size > _MAX_RESPONSE_BYTES and not self.response.called:
            self.response.errback(
                ResponseTooLongError(
                    f"the server sent more than {_MAX_RESPONSE_BYTES} bytes"
                )
            )
            self.transport.abortConnection()

    def readConnectionLost(self) -> None:
        """
        The server's side of the stream ended: note whether it was in fact
        reset (see `hellotcp._wire.endedByReset`), and close ours.
        """
        self._reset = endedByReset(self.transport)
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        """
        Nothing to do: the message was sent whole before the half-close.
        """

    def endReason(self, reason: Failure) -> Failure:
        """
        Why the connection ended, a reset that Twisted reported as a clean
        end (see `readConnectionLost`) counted as the reset it was.
        """
        if self._reset and reason.check(ConnectionDone):
            return Failure(ConnectionLost("the connection was reset"))
        return reason

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Deliver what was received, or why nothing was.
        """
        reason = self.endReason(reason)
        if self.response.called:
            return
        # Over TLS the answer arrives in whole, authenticated records, and
        # many TLS servers (Python's ssl module, the classic server wrapped
        # in TLS) close without a close_notify, which Twisted reports as a
        # lost connection: what arrived is the answer.  Over plain TCP a
        # reset after part of the answer may have cut it anywhere.
        if self._received and (
            reason.check(ConnectionDone) or ISSLTransport.providedBy(self.transport)
        ):
            self.response.callback(b"".join(self._received))
        elif self._received:
            self.response.errback(AnswerCutShortError(self.received, reason))
        elif reason.check(ConnectionDone):
            self.response.errback(
                NoGreetingError("the server closed the connection without answering")
            )
        else:
            self.response.errback(reason)

    def _cancel(self, response: Deferred[bytes]) -> None:
        self.transport.abortConnection()


def greet(
    reactor: IReactorTime,
    endpoint: IStreamClientEndpoint,
    message: bytes | str = DEFAULT_MESSAGE,
    timeout: float = 10.0,
    tls: IOpenSSLClientConnectionCreator | None = None,
) -> Deferred[bytes]:
    """
    Connect to a hellotcp (or classic) server, send ``message``, and return
    its answer.

    :param reactor: The clock for the timeout (and for TLS's batching of
        writes).
    :param endpoint: Where to connect: any client endpoint, TLS included.
    :param message: The message; text is sent as UTF-8.
    :param timeout: Seconds for the whole exchange, connection included.
    :param tls: TLS settings (see `hellotcp.tls.clientTLS`) to wrap the
        exchange in; `None` for plain TCP (or an endpoint that is already
        TLS, such as ``tls:`` endpoint strings make).
    :returns: A `Deferred` that fires with the bytes the server sent before
        closing, or fails with `NoGreetingError`, `ResponseTooLongError`,
        `AnswerCutShortError`,
        `twisted.internet.defer.TimeoutError` or the connection error.
    """
    if isinstance(message, str):
        message = message.encode("utf-8")
    if tls is not None:
        endpoint = wrapClientTLSOn(reactor, tls, endpoint)
    protocol = HelloClientProtocol(message)
    connecting = connectProtocol(endpoint, protocol)
    response: Deferred[bytes] = connecting.addCallback(lambda _: protocol.response)
    return response.addTimeout(timeout, reactor)
