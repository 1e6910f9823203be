# -*- test-case-name: tests.test_protocol -*-
"""
The hellotcp wire protocol: framing, the server and client protocols, and
L{greet}.

One exchange on the wire::

    client                                   server
      | ---- message bytes ------------------> |   ends at b"\\n", at the
      |      (then b"\\n", a half-close, or     |   client's half-close, or
      |       simply a pause)                   |   after a short pause
      | <--------------------- greeting ------ |
      | <--------------------- FIN ----------- |   the server's write side
      | ---- FIN -----------------------------> |   the client closes; the
                                                    server closes its socket

The message ends at the first of:
  - a line feed (an optional carriage return before it is dropped);
  - the client's half-close (end of file on the server's reading side);
  - a pause of C{messageGap} seconds after the last byte, so that a client
    which sends no terminator at all (the classic blocking-socket client) is
    answered promptly;
  - C{maxMessageBytes} bytes without a terminator: the message is cut there,
    logged as C{too-long}, and still answered.

The server half-closes after its greeting and reads (and discards) until the
client closes, for at most C{linger} seconds: closing a socket that still
holds unread bytes makes the kernel send a reset, which can destroy the
greeting before the client has read it.

This module knows bytes and factories only: no command line, no files, no
TLS configuration (TLS wraps these factories from outside).
"""

from __future__ import annotations

from enum import Enum
from typing import cast

from attrs import frozen
from OpenSSL import SSL
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import connectProtocol, wrapClientTLS
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHalfCloseableProtocol,
    IHandshakeListener,
    IOpenSSLClientConnectionCreator,
    IReactorTime,
    ISSLTransport,
    IStreamClientEndpoint,
    ITCPTransport,
    ITransport,
)
from twisted.internet.protocol import Protocol, ServerFactory, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ._escape import escape
from ._tlserror import describeTLSError

DEFAULT_GREETING = b"Hello, client!"
"""What the server answers unless told otherwise (the classic server's reply)."""

DEFAULT_MESSAGE = b"Hello, server!"
"""What the client sends unless told otherwise (the classic client's message)."""

_log = Logger()


class Outcome(str, Enum):
    """
    How one connection ended, as logged in the C{outcome} field.
    """

    GREETED = "greeted"
    """The message was received and the greeting sent."""

    TOO_LONG = "too-long"
    """The message exceeded C{maxMessageBytes}; it was cut and greeted."""

    TIMEOUT = "timeout"
    """The client sent nothing within C{timeout} seconds and was closed."""

    LOST = "lost"
    """The client went away before its message was complete."""

    SHUTDOWN = "shutdown"
    """The server shut down before the exchange could finish."""

    TLS_FAILED = "tls-failed"
    """The TLS handshake failed (an untrusted or missing client certificate,
    a client that does not speak TLS, ...)."""


@frozen
class ServerSettings:
    """
    The limits and answer of a L{HelloServerFactory}.

    :ivar greeting: The bytes sent back to every client.
    :ivar timeout: Seconds a new connection may stay silent before it is closed.
    :ivar maxMessageBytes: The longest message kept; longer ones are cut.
    :ivar maxConnections: Connections served at once; more are closed at once.
    :ivar messageGap: Seconds of silence after which a message without a
        terminator is taken as complete.
    :ivar linger: Seconds the server keeps reading (and discarding) after its
        greeting, waiting for the client to close first.
    """

    greeting: bytes = DEFAULT_GREETING
    timeout: float = 10.0
    maxMessageBytes: int = 1024
    maxConnections: int = 10000
    messageGap: float = 0.04
    linger: float = 2.0

    def __attrs_post_init__(self) -> None:
        for name in ("timeout", "messageGap", "linger"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be greater than 0")
        for name in ("maxMessageBytes", "maxConnections"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")


def formatAddress(address: IAddress) -> str:
    """
    Format a peer or host address the way people write it.

    :returns: C{host:port}, C{[v6-host]:port}, a UNIX socket path, or the
        address's own C{str} for anything else.
    """
    if isinstance(address, IPv4Address):
        return f"{address.host}:{address.port}"
    if isinstance(address, IPv6Address):
        return f"[{address.host}]:{address.port}"
    if isinstance(address, UNIXAddress):
        name = address.name
        if isinstance(name, bytes):
            return name.decode("utf-8", "backslashreplace") or "unix"
        return name or "unix"
    return str(address)


def _canHalfClose(transport: ITransport) -> bool:
    """
    Whether C{transport} can close its writing side and go on reading.

    TLS transports pass C{loseWriteConnection} through to the TCP connection
    beneath them, which would cut the TLS stream mid-record, so they count as
    unable (they close with a TLS close alert instead).
    """
    return hasattr(transport, "loseWriteConnection") and not (
        ISSLTransport.providedBy(transport)
    )


class _State(Enum):
    READING = "reading"
    ANSWERED = "answered"
    CLOSED = "closed"


@implementer(IHalfCloseableProtocol, IHandshakeListener)
class HelloServerProtocol(Protocol):
    """
    Serve one exchange: read a message, log it, answer with the greeting,
    close.

    One timer per connection serves every timeout: the idle timeout before
    the first byte, the pause that ends an unterminated message, and the
    linger after the answer.
    """

    transport: ITCPTransport

    def __init__(self, factory: HelloServerFactory) -> None:
        self.factory = factory
        self._settings = factory.settings
        self._clock = factory.clock
        self._state = _State.READING
        self._buffer = b""
        self._message = b""
        self._outcome = Outcome.LOST
        self._started = 0.0
        self._timer: IDelayedCall | None = None
        self._client: str | None = None

    def connectionMade(self) -> None:
        """
        Start the idle timeout and register with the factory.
        """
        self._started = self._clock.seconds()
        self._timer = self._clock.callLater(self._settings.timeout, self._timerFired)
        self.factory.connectionStarted(self)

    def dataReceived(self, data: bytes) -> None:
        """
        Collect the message until it is complete; discard anything after it.
        """
        if self._state is not _State.READING:
            return
        buffered = self._buffer + data
        maximum = self._settings.maxMessageBytes
        # Only the new chunk can hold the first line feed: earlier ones had
        # none, or the message would be complete already.
        end = buffered.find(b"\n", len(self._buffer), maximum + 1)
        if end >= 0:
            self._answer(buffered[:end].removesuffix(b"\r"), Outcome.GREETED)
        elif len(buffered) > maximum:
            self._answer(buffered[:maximum], Outcome.TOO_LONG)
        else:
            self._buffer = buffered
            self._resetTimer(self._settings.messageGap)

    def readConnectionLost(self) -> None:
        """
        The client half-closed: what it sent is the whole message.
        """
        if self._state is _State.READING:
            self._answer(self._buffer, Outcome.GREETED, peerClosed=True)
        else:
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        """
        Our own half-close completed; nothing to do until the client closes.
        """

    def handshakeCompleted(self) -> None:
        """
        Under TLS, note the verified client certificate's subject, if the
        client presented one, for the exchange's log.
        """
        certificate = self.transport.getPeerCertificate()  # type: ignore[attr-defined]
        if certificate is not None:
            self._client = certificate.to_cryptography().subject.rfc4514_string()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Log the exchange and forget the connection.
        """
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        problem = None
        if self._state is _State.READING:
            self._message = self._buffer
            if not reason.check(ConnectionDone):
                if reason.check(SSL.Error):
                    self._outcome = Outcome.TLS_FAILED
                    problem = describeTLSError(reason.value)
                else:
                    problem = reason.getErrorMessage()
        self._state = _State.CLOSED
        peer = self.transport.getPeer()
        _log.info(
            "{peer} {outcome}: {reason}"
            if problem
            else "{peer} ({client}) {outcome}: {message}"
            if self._client
            else "{peer} {outcome}: {message}",
            peer=formatAddress(peer),
            outcome=self._outcome.value,
            message=escape(self._message),
            bytes=len(self._message),
            duration=round(self._clock.seconds() - self._started, 6),
            client=self._client,
            reason=problem,
        )
        self.factory.connectionEnded(self)

    def shutDown(self) -> None:
        """
        Abort the connection because the server is stopping.
        """
        if self._state is _State.READING:
            self._outcome = Outcome.SHUTDOWN
        self.transport.abortConnection()

    def _answer(
        self, message: bytes, outcome: Outcome, peerClosed: bool = False
    ) -> None:
        self._state = _State.ANSWERED
        self._message = message
        self._buffer = b""
        self._outcome = outcome
        self.transport.write(self._settings.greeting)
        if peerClosed or not _canHalfClose(self.transport):
            self.transport.loseConnection()
        else:
            self.transport.loseWriteConnection()
        self._resetTimer(self._settings.linger)

    def _resetTimer(self, delay: float) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.reset(delay)
        else:
            self._timer = self._clock.callLater(delay, self._timerFired)

    def _timerFired(self) -> None:
        if self._state is _State.ANSWERED:
            # The client did not close within the linger time.
            self.transport.abortConnection()
        elif self._buffer:
            # A pause after some bytes: the message is complete.
            self._answer(self._buffer, Outcome.GREETED)
        else:
            self._outcome = Outcome.TIMEOUT
            self.transport.loseConnection()


class HelloServerFactory(ServerFactory[HelloServerProtocol]):
    """
    Build L{HelloServerProtocol}s, keep count of them, and refuse
    connections beyond C{settings.maxConnections}.

    :ivar settings: The greeting and the limits.
    :ivar clock: Where every timeout comes from.
    :ivar connections: The connections being served now.
    """

    # Every exchange is logged already; "Starting factory" lines add nothing.
    noisy = False

    def __init__(
        self,
        settings: ServerSettings = ServerSettings(),
        clock: IReactorTime | None = None,
    ) -> None:
        if clock is None:
            from twisted.internet import reactor

            clock = cast(IReactorTime, reactor)
        self.settings = settings
        self.clock = clock
        self.connections: set[HelloServerProtocol] = set()
        self._stopping = False
        self._idle: list[Deferred[None]] = []

    def buildProtocol(self, addr: IAddress | None) -> HelloServerProtocol | None:
        """
        Build a protocol for a new connection, or return L{None} (which makes
        Twisted close it at once) when the server is full or stopping.
        """
        if self._stopping:
            return None
        if len(self.connections) >= self.settings.maxConnections:
            _log.warn(
                "{peer} refused: {limit} connections already open",
                peer=formatAddress(addr) if addr is not None else "?",
                outcome="refused",
                reason="max-connections",
                limit=self.settings.maxConnections,
            )
            return None
        return HelloServerProtocol(self)

    def connectionStarted(self, protocol: HelloServerProtocol) -> None:
        """
        Count a connection that has just been made.
        """
        self.connections.add(protocol)

    def connectionEnded(self, protocol: HelloServerProtocol) -> None:
        """
        Forget a connection that has closed.
        """
        self.connections.discard(protocol)
        if not self.connections and self._idle:
            idle, self._idle = self._idle, []
            for waiting in idle:
                waiting.callback(None)

    def stopGracefully(self, timeout: float) -> Deferred[None]:
        """
        Accept no new connection, give the open ones up to C{timeout} seconds
        to finish their exchange, then abort whatever is left.

        :returns: A L{Deferred} that fires once every connection is closed.
        """
        self._stopping = True
        if not self.connections:
            return succeed(None)
        idle: Deferred[None] = Deferred()
        self._idle.append(idle)
        deadline = self.clock.callLater(timeout, self.abortAll)

        def cancelDeadline(result: None) -> None:
            if deadline.active():
                deadline.cancel()

        return idle.addCallback(cancelDeadline)

    def abortAll(self) -> None:
        """
        Abort every open connection now.
        """
        for protocol in list(self.connections):
            protocol.shutDown()


_MAX_RESPONSE_BYTES = 65536


class NoGreetingError(Exception):
    """
    The server closed the connection without sending anything.
    """


class ResponseTooLongError(Exception):
    """
    The server sent more than any greeting should be (64 KiB).
    """


class HelloClientProtocol(Protocol):
    """
    Send one message, then read the answer until the server closes.

    Over TCP the message is sent as it is and followed by a half-close, so a
    classic blocking-socket server receives exactly those bytes.  Where the
    transport cannot half-close (TLS) a line feed ends the message instead,
    unless it already ends with one.

    :ivar response: Fires with the answer, or fails with L{NoGreetingError},
        L{ResponseTooLongError} or the reason the connection was lost.
        Cancelling it aborts the connection.
    """

    transport: ITCPTransport

    def __init__(self, message: bytes) -> None:
        self._message = message
        self._received: list[bytes] = []
        self._size = 0
        self.response: Deferred[bytes] = Deferred(self._cancel)

    def connectionMade(self) -> None:
        """
        Send the message and mark its end.
        """
        transport = self.transport
        if _canHalfClose(transport):
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

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Deliver what was received, or why nothing was.
        """
        if self.response.called:
            return
        if self._received:
            self.response.callback(b"".join(self._received))
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
    Connect to a hellotcp (or classic) server, send C{message}, and return
    its answer.

    :param reactor: The clock for the timeout.
    :param endpoint: Where to connect: any client endpoint, TLS included.
    :param message: The message; text is sent as UTF-8.
    :param timeout: Seconds for the whole exchange, connection included.
    :param tls: TLS settings (see L{hellotcp.tls.clientTLS}) to wrap the
        exchange in; L{None} for plain TCP (or an endpoint that is already
        TLS, such as C{tls:} endpoint strings make).
    :returns: A L{Deferred} that fires with the bytes the server sent before
        closing, or fails with L{NoGreetingError}, L{ResponseTooLongError},
        L{twisted.internet.defer.TimeoutError} or the connection error.
    """
    if isinstance(message, str):
        message = message.encode("utf-8")
    if tls is not None:
        endpoint = wrapClientTLS(tls, endpoint)
    protocol = HelloClientProtocol(message)
    connecting = connectProtocol(endpoint, protocol)
    response: Deferred[bytes] = connecting.addCallback(lambda _: protocol.response)
    return response.addTimeout(timeout, reactor)
