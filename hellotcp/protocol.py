# -*- test-case-name: tests.test_protocol -*-
"""
The hellotcp wire protocol, server side: framing, `HelloServerProtocol`,
and `HelloServerFactory` with its limits.

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
  - a pause of ``messageGap`` seconds after the last byte, so that a client
    which sends no terminator at all (the classic blocking-socket client) is
    answered promptly;
  - ``maxMessageBytes`` bytes without a terminator: the message is cut there,
    logged as ``too-long``, and still answered.

The server half-closes after its greeting and reads (and discards) until the
client closes, for at most ``linger`` seconds: closing a socket that still
holds unread bytes makes the kernel send a reset, which can destroy the
greeting before the client has read it.

Defences against hostile clients, all on by default:
  - an idle timeout before the first byte, and an overall deadline for the
    whole connection, so trickling bytes cannot hold a slot for long;
  - a limit on connections in all and per peer address; when a limit is
    reached, the connection silent the longest (for at least a second) is
    closed to make room, and only if there is none is the newcomer refused;
  - repeated failures (timeouts, refusals, broken TLS handshakes, ...) are
    logged one by one up to a burst, then summarised.

This module knows bytes and factories only: no command line, no files, no
TLS and no PROXY protocol.  Those wrap these factories from outside
(`hellotcp.tls`, `hellotcp._proxy`), and report what they learn about a
connection through `IConnectionReport`, which `HelloServerProtocol`
provides:

  - ``peerRevealed()``: a PROXY header has been read, and the transport's
    ``getPeer()`` now names the real client rather than the balancer;
  - ``headerRefused(reason)``: the PROXY header was malformed or cut short;
    the connection is closed without a greeting (``bad-proxy-header``);
  - ``clientIdentified(subject)``: the TLS handshake verified a client
    certificate, logged in the exchange's ``client`` field;
  - ``tlsFailed(reason)``: TLS failed, and that is why the connection is
    being lost (``tls-failed``).

A wrapper that is itself wrapped (TLS beneath a PROXY wrapper) passes on
what the outer one reports.
"""

from __future__ import annotations

from enum import Enum
from time import time
from typing import TYPE_CHECKING, cast

from attrs import frozen
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IHalfCloseableProtocol,
    IReactorTime,
    ITCPTransport,
)
from twisted.internet.protocol import Protocol, ServerFactory, connectionDone
from twisted.logger import ILogObserver, Logger, LogLevel
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from ._connections import ConnectionTable
from ._escape import escape, escapeText
from ._summary import SummarizingLog
from ._timeouts import Countdown, Countdowns

# What both ends share lives in _wire; these names stay importable from here,
# where they were first defined.
from ._wire import DEFAULT_GREETING as DEFAULT_GREETING
from ._wire import DEFAULT_MESSAGE as DEFAULT_MESSAGE
from ._wire import canHalfClose as canHalfClose
from ._wire import formatAddress as formatAddress
from .exchangelog import IExchangeLog
from .metrics import NO_METRICS, ServerMetrics

__all__ = [
    "EVICTION_AGE",
    "HEALTH_CHECK_MESSAGE",
    "HelloServerFactory",
    "HelloServerProtocol",
    "IConnectionReport",
    "Outcome",
    "ServerSettings",
]

_log = Logger()


class Outcome(str, Enum):
    """
    How one connection ended, as logged in the ``outcome`` field.
    """

    GREETED = "greeted"
    """The message was received and the greeting sent."""

    TOO_LONG = "too-long"
    """The message exceeded ``maxMessageBytes``; it was cut and greeted."""

    TIMEOUT = "timeout"
    """The client sent nothing within ``timeout`` seconds and was closed."""

    LOST = "lost"
    """The client went away before its message was complete, or the
    connection broke before the greeting was handed to the kernel."""

    SHUTDOWN = "shutdown"
    """The server shut down before the exchange could finish."""

    TLS_FAILED = "tls-failed"
    """The TLS handshake failed (an untrusted or missing client certificate,
    a client that does not speak TLS, ...)."""

    DEADLINE = "deadline"
    """The connection outlived ``deadline`` seconds and was aborted."""

    EVICTED = "evicted"
    """The server was full and this connection, silent the longest, was
    closed to make room."""

    HEALTH_CHECK = "health-check"
    """A load balancer's health check (the message `HEALTH_CHECK_MESSAGE`)
    was greeted; logged at debug level only."""

    BAD_PROXY_HEADER = "bad-proxy-header"
    """Behind a PROXY endpoint, the PROXY header was malformed or cut short;
    the connection was closed without a greeting."""


HEALTH_CHECK_MESSAGE = b"health-check"
"""The message by which a load balancer's health check is recognised: it is
greeted like any other, but logged at debug level and counted under its own
outcome, so that checks every half second do not fill the log."""


@frozen
class ServerSettings:
    """
    The limits and answer of a `HelloServerFactory`.

    :ivar greeting: The bytes sent back to every client.
    :ivar timeout: Seconds a new connection may stay silent before it is closed.
    :ivar maxMessageBytes: The longest message kept; longer ones are cut.
    :ivar maxConnections: Connections served at once.
    :ivar maxConnectionsPerPeer: Connections served at once from one address.
    :ivar deadline: Seconds a connection may last, whatever it does.
    :ivar messageGap: Seconds of silence after which a message without a
        terminator is taken as complete.
    :ivar linger: Seconds the server keeps reading (and discarding) after its
        greeting, waiting for the client to close first.
    """

    greeting: bytes = DEFAULT_GREETING
    timeout: float = 10.0
    maxMessageBytes: int = 1024
    maxConnections: int = 10000
    maxConnectionsPerPeer: int = 2000
    messageGap: float = 0.04
    linger: float = 2.0
    deadline: float = 30.0

    def __attrs_post_init__(self) -> None:
        for name in ("timeout", "messageGap", "linger", "deadline"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be greater than 0")
        for name in ("maxMessageBytes", "maxConnections", "maxConnectionsPerPeer"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")


EVICTION_AGE = 1.0
"""Seconds: a silent connection younger than this is never evicted to make
room, since a client that has just connected is about to send its message."""

# Outcomes that are not a normal exchange: a flood of them is summarised.
_FAILURES = frozenset(
    {
        Outcome.BAD_PROXY_HEADER,
        Outcome.TIMEOUT,
        Outcome.LOST,
        Outcome.TLS_FAILED,
        Outcome.DEADLINE,
        Outcome.EVICTED,
        Outcome.TOO_LONG,
        Outcome.SHUTDOWN,
    }
)


# Outcomes of a connection that was sent the greeting.
_ANSWERED = frozenset({Outcome.GREETED, Outcome.TOO_LONG, Outcome.HEALTH_CHECK})


class _State(Enum):
    READING = "reading"
    ANSWERED = "answered"
    CLOSED = "closed"


class IConnectionReport(Interface):
    """
    What a wrapper between a connection and its protocol (TLS, the PROXY
    protocol) has learnt about the connection and tells the protocol.

    A wrapper calls these methods on the protocol it wraps, if that protocol
    provides this interface; a wrapper that is itself wrapped provides it
    too and passes on what it is told.  Each may be called at most once per
    connection.  The texts are for the exchange's log line.
    """

    def peerRevealed() -> None:
        """
        A PROXY header has been read: from now on the transport's
        ``getPeer()`` names the real client, no longer the balancer.  It
        comes before the first byte of the message.
        """

    def headerRefused(reason: str) -> None:
        """
        The PROXY header was malformed or cut short, and the connection is
        being closed without passing a byte on; ``connectionLost`` follows.

        :param reason: How, safe to log as it is: whatever it quotes of the
            client's bytes is escaped already.
        """

    def clientIdentified(subject: str) -> None:
        """
        The TLS handshake verified the client's certificate (mutual TLS).

        :param subject: The certificate's subject, as RFC 4514 text; not
            escaped.
        """

    def tlsFailed(reason: str) -> None:
        """
        TLS failed (a handshake refused, a client that does not speak TLS,
        a corrupt record), and that is why the connection is being lost;
        ``connectionLost`` follows at once.

        :param reason: OpenSSL's reasons in one line; not escaped.
        """


@implementer(IHalfCloseableProtocol, IConnectionReport)
class HelloServerProtocol(Protocol):
    """
    Serve one exchange: read a message, log it, answer with the greeting,
    close.

    Each connection counts down to its overall deadline, and to one of: the
    idle timeout before the first byte, the pause that ends an unterminated
    message, the linger after the answer (the factory's countdowns, one
    reactor timer for all connections: see `hellotcp._timeouts`).
    """

    transport: ITCPTransport

    # The state of a new connection, as class attributes: a connection sets
    # only what changes (a greeting is served thousands of times a second).
    peer: str | None = None
    _state = _State.READING
    _buffer = b""
    _message = b""
    _outcome = Outcome.LOST
    _started = 0.0
    _address: IAddress  # set in connectionMade
    # Every connection counts down to its deadline (the idle timeout first,
    # then the rest of the way), and to one of the pause that ends a message
    # and the linger after the answer.
    _overall: Countdown[HelloServerProtocol] | None = None
    _countdown: Countdown[HelloServerProtocol] | None = None
    _client: str | None = None
    _received = 0
    _flushed = False
    # What the wrappers reported (see IConnectionReport).
    _peerRevealed = False
    _headerRefusal: str | None = None
    _tlsFailure: str | None = None

    def __init__(self, factory: HelloServerFactory) -> None:
        """
        :param factory: The factory that made this protocol: its settings,
            clock, connection table and metrics serve the connection.
        """
        self.factory = factory
        self._settings = factory.settings
        self._clock = factory.clock

    def connectionMade(self) -> None:
        """
        Register with the factory, which may refuse a peer that has too many
        connections, and start the idle timeout.

        The peer is read from the transport rather than from the address the
        protocol was built for; behind a PROXY endpoint (``haproxy:``) it is
        the balancer's until the header is read, and is counted again then
        (see `HelloServerFactory.connectionSpoke`).
        """
        self._started = now = self._clock.seconds()
        self._address = self.transport.getPeer()
        self.peer = getattr(self._address, "host", None)
        if not self.factory.connectionStarted(self, now):
            # Closed as Twisted closes a connection its factory refuses.
            self._state = _State.CLOSED
            self.transport.loseConnection()
            return
        self._overall = self.factory._silences
        self._overall.start(self)

    def dataReceived(self, data: bytes) -> None:
        """
        Collect the message until it is complete; discard anything after it.
        """
        self._received += len(data)
        if self._state is not _State.READING:
            return
        if not self._buffer and not self.factory.connectionSpoke(self):
            self._state = _State.CLOSED
            self.transport.loseConnection()
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
            self._countDown(self.factory._pauses)

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
        Our own half-close completed: the greeting has been handed to the
        kernel.  Nothing more to do until the client closes.
        """
        self._flushed = True

    def peerRevealed(self) -> None:
        """
        Behind a PROXY endpoint, the real client is known now; it is
        counted against the per-peer limit at the first byte of the message
        (see `HelloServerFactory.connectionSpoke`).
        """
        self._peerRevealed = True
        self._address = self.transport.getPeer()

    def headerRefused(self, reason: str) -> None:
        """
        The PROXY header was refused: the exchange is logged as
        ``bad-proxy-header`` with ``reason`` (escaped already).
        """
        self._headerRefusal = reason

    def clientIdentified(self, subject: str) -> None:
        """
        Under mutual TLS, note the client certificate's subject for the
        exchange's log.
        """
        self._client = escapeText(subject)

    def tlsFailed(self, reason: str) -> None:
        """
        TLS failed: unless the exchange had another outcome already, it is
        logged as ``tls-failed`` with ``reason``.
        """
        self._tlsFailure = reason

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Log the exchange and forget the connection.
        """
        if self._state is _State.CLOSED:
            return  # refused in connectionMade, and logged there
        if self._overall is not None:
            self._overall.stop(self)
        if self._countdown is not None:
            self._countdown.stop(self)
        problem = None
        # (isinstance: Failure.check compares the names of every class the
        # exception derives from, which costs more than the rest here)
        done = isinstance(reason.value, ConnectionDone)
        if self._state is _State.READING:
            self._message = self._buffer
            if self._headerRefusal is not None:
                self._outcome = Outcome.BAD_PROXY_HEADER
                problem = self._headerRefusal  # escaped where it was made
            elif self._outcome is Outcome.LOST and not done:
                if self._tlsFailure is not None:
                    self._outcome = Outcome.TLS_FAILED
                    problem = escapeText(self._tlsFailure)
                else:
                    problem = escapeText(reason.getErrorMessage())
        elif not self._flushed and not done:
            # The connection broke before the greeting was written out (a
            # clean close, or our half-close completing, comes only after):
            # the client was not answered.
            self._outcome = Outcome.LOST
            problem = "the greeting was not delivered: " + escapeText(
                reason.getErrorMessage()
            )
        self._state = _State.CLOSED
        factory = self.factory
        outcome = self._outcome
        factory.connectionEnded(self)
        metrics = factory.metrics
        logged = not (
            (outcome is Outcome.GREETED and not factory.logGreetings)
            or (outcome is Outcome.HEALTH_CHECK and not factory.logHealthChecks)
        )
        if metrics is NO_METRICS and not logged:
            return  # (the common case at --log-level=warn: nothing to do)
        duration = round(self._clock.seconds() - self._started, 6)
        if metrics is not NO_METRICS:
            metrics.ended(
                outcome.value,
                self._received,
                len(self._settings.greeting) if outcome in _ANSWERED else 0,
                duration,
                problem if outcome is Outcome.TLS_FAILED else None,
            )
        if not logged:
            return
        factory.recordExchange(
            outcome,
            "{peer} {outcome}: {reason}"
            if problem
            else "{peer} ({client}) {outcome}: {message}"
            if self._client
            else "{peer} {outcome}: {message}",
            formatAddress(self._address),
            escape(self._message),
            len(self._message),
            duration,
            self._client,
            problem,
        )

    def abort(self, outcome: Outcome) -> None:
        """
        Abort the connection now: the server is stopping, or needs the room.
        The outcome is logged unless the client had been answered already.
        """
        if self._state is _State.READING:
            self._outcome = outcome
        self.transport.abortConnection()

    def _answer(
        self, message: bytes, outcome: Outcome, peerClosed: bool = False
    ) -> None:
        self._state = _State.ANSWERED
        self._message = message
        self._buffer = b""
        if outcome is Outcome.GREETED and message == HEALTH_CHECK_MESSAGE:
            outcome = Outcome.HEALTH_CHECK
        self._outcome = outcome
        if outcome is not Outcome.HEALTH_CHECK or not self.factory.draining:
            self.transport.write(self._settings.greeting)
        if peerClosed or not canHalfClose(self.transport):
            self.transport.loseConnection()
        else:
            self.transport.loseWriteConnection()
        self._countDown(self.factory._lingers)

    def _countDown(self, countdown: Countdown[HelloServerProtocol] | None) -> None:
        """
        Count down to ``countdown``'s end from now, instead of the one
        running, if any.
        """
        running = self._countdown
        if running is not None and running is not countdown:
            running.stop(self)
        self._countdown = countdown
        if countdown is not None:
            countdown.start(self)

    def _silenceEnded(self) -> None:
        # The idle timeout (or the deadline, if that is sooner) since the
        # connection was made.
        self._overall = None
        settings = self._settings
        if settings.deadline <= settings.timeout:
            self.abort(Outcome.DEADLINE)
        elif self._state is _State.READING and not self._buffer:
            self._outcome = Outcome.TIMEOUT
            self.transport.loseConnection()
        else:
            # It spoke: the rest of the way to the deadline.
            self._overall = self.factory._deadlines
            self._overall.start(self)

    def _deadlinePassed(self) -> None:
        self._overall = None
        self.abort(Outcome.DEADLINE)

    def _paused(self) -> None:
        # A pause after some bytes: the message is complete.
        self._countdown = None
        self._answer(self._buffer, Outcome.GREETED)

    def _lingeredTooLong(self) -> None:
        # The client did not close within the linger time.
        self._countdown = None
        self.transport.abortConnection()


if TYPE_CHECKING:
    _ServerFactory = ServerFactory[HelloServerProtocol]
else:
    # Twisted's factories are generic (subscriptable) only from 26.4 on.
    _ServerFactory = ServerFactory


class HelloServerFactory(_ServerFactory):
    """
    Build `HelloServerProtocol`s within the limits of ``settings``: in all,
    and per peer address.

    When a limit is reached, the connection that has been silent the longest
    (at least `EVICTION_AGE` seconds, never having sent a byte) is closed to
    make room; only if there is none is the new connection refused (closed at
    once by Twisted).  An idle flood thus cannot lock well-behaved clients
    out, even from the same address.

    :ivar settings: The greeting and the limits.
    :ivar clock: Where every timeout comes from.
    :ivar connections: The connections being served now.
    :ivar failures: Where repeated failures are logged and summarised.
    :ivar logGreetings: Whether to log each greeted exchange (at info);
        failures are always logged.  An application that filters out info
        sets it to `False` so the events are not even built.
    :ivar logHealthChecks: Whether to log each health check (at debug): only
        where debug events are kept (``twist --log-level=debug``), since
        ``twistd`` and most applications write every level they are given.
    :ivar metrics: Where connections and exchanges are counted.
    :ivar exchangeLog: Where the records of greetings and health checks go:
        `None` (the default) for `twisted.logger`'s global publisher, or a
        log observer of their own, such as the buffered
        `hellotcp.exchangelog.ExchangeLogFile` that ``twist hellotcp``
        writes with.  Failures always go through `twisted.logger`, where
        they are summarised.
    :ivar draining: Whether the server is about to stop: health checks
        (`HEALTH_CHECK_MESSAGE`) are then closed without a greeting, so that
        a load balancer takes the server out before it stops listening;
        every other client is still greeted.
    """

    draining = False

    # Every exchange is logged already; "Starting factory" lines add nothing.
    noisy = False

    def __init__(
        self,
        settings: ServerSettings = ServerSettings(),
        clock: IReactorTime | None = None,
        logGreetings: bool = True,
        metrics: ServerMetrics = NO_METRICS,
        logHealthChecks: bool = False,
        exchangeLog: ILogObserver | None = None,
    ) -> None:
        if clock is None:
            from twisted.internet import reactor

            clock = cast(IReactorTime, reactor)
        self.settings = settings
        self.clock = clock
        self.connections: ConnectionTable[HelloServerProtocol] = ConnectionTable()
        # Every connection's timeouts, on one reactor timer (the deadline
        # first: at the same instant, it wins), never armed further ahead
        # than the shortest but the pause, so only that moves it sooner.
        countdowns = Countdowns(
            clock, min(settings.timeout, settings.linger, settings.deadline)
        )
        silence = min(settings.timeout, settings.deadline)
        self._deadlines = countdowns.countdown(
            settings.deadline - silence, HelloServerProtocol._deadlinePassed
        )
        self._silences = countdowns.countdown(
            silence, HelloServerProtocol._silenceEnded
        )
        self._pauses = countdowns.countdown(
            settings.messageGap, HelloServerProtocol._paused
        )
        self._lingers = countdowns.countdown(
            settings.linger, HelloServerProtocol._lingeredTooLong
        )
        self.failures = SummarizingLog(_log, clock)
        self.logGreetings = logGreetings
        self.logHealthChecks = logHealthChecks
        self.metrics = metrics
        self.exchangeLog = exchangeLog
        self._stopping = False
        self._idle: list[Deferred[None]] = []

    def buildProtocol(self, addr: IAddress | None) -> HelloServerProtocol | None:
        """
        Build a protocol for a new connection, or return `None` (which makes
        Twisted close it at once) when the server is stopping or a limit is
        reached and no silent connection can make room.
        """
        if self._stopping:
            self.metrics.refused("shutdown")
            return None
        limit = self.settings.maxConnections
        if len(self.connections) >= limit and not self._evict(None):
            self._refuse(addr, "max-connections", limit)
            return None
        return HelloServerProtocol(self)

    def _evict(self, peer: str | None) -> bool:
        victim = self.connections.oldestSilent(
            self.clock.seconds() - EVICTION_AGE, peer
        )
        if victim is None:
            return False
        self.connections.remove(victim)
        victim.abort(Outcome.EVICTED)
        return True

    def _refuse(self, addr: IAddress | None, reason: str, limit: int) -> None:
        self.metrics.refused(reason)
        self.failures.emit(
            f"refused ({reason})",
            LogLevel.warn,
            "{peer} refused: {reason} ({limit}) reached",
            peer=formatAddress(addr) if addr is not None else "?",
            outcome="refused",
            reason=reason,
            limit=limit,
        )

    def recordExchange(
        self,
        result: Outcome,
        format: str,
        peer: str,
        message: str,
        size: int,
        duration: float,
        client: str | None,
        reason: str | None,
    ) -> None:
        """
        Log one exchange, as `logExchange` does, with its fields (escaped
        already): a greeting or health check goes straight to an
        ``exchangeLog`` that takes records without an event
        (`hellotcp.exchangelog.IExchangeLog`).
        """
        if result not in _FAILURES:
            records = self._exchangeRecords
            if records is not None:
                level = (
                    LogLevel.debug if result is Outcome.HEALTH_CHECK else LogLevel.info
                )
                records.exchange(
                    level,
                    format,
                    time(),
                    peer,
                    result.value,
                    message,
                    size,
                    duration,
                    client,
                    reason,
                )
                return
        self.logExchange(
            result,
            format,
            peer=peer,
            outcome=result.value,
            message=message,
            bytes=size,
            duration=duration,
            client=client,
            reason=reason,
        )

    @property
    def exchangeLog(self) -> ILogObserver | None:
        """
        See the class's description.
        """
        return self._exchangeLog

    @exchangeLog.setter
    def exchangeLog(self, observer: ILogObserver | None) -> None:
        self._exchangeLog = observer
        self._exchangeRecords = IExchangeLog(observer, None)

    def logExchange(self, result: Outcome, format: str, **fields: object) -> None:
        """
        Log one exchange: every greeting, and failures up to a burst per
        kind before they are summarised.
        """
        if result in _FAILURES:
            kind = result.value
            if result is Outcome.TLS_FAILED:
                kind = f"{kind} ({fields.get('reason')})"
            self.failures.emit(kind, LogLevel.info, format, **fields)
            return
        level = LogLevel.debug if result is Outcome.HEALTH_CHECK else LogLevel.info
        if self.exchangeLog is None:
            _log.emit(level, format, **fields)
            return
        # The event Logger.emit would build, without what only Twisted's
        # own observers read (log_logger, log_source).
        fields["log_time"] = time()
        fields["log_level"] = level
        fields["log_namespace"] = _log.namespace
        fields["log_format"] = format
        self.exchangeLog(fields)

    def connectionStarted(self, protocol: HelloServerProtocol, now: float) -> bool:
        """
        Count a connection that has just been made, unless its peer is at its
        limit and none of its connections can make room.

        :returns: Whether the connection is admitted.
        """
        peer = protocol.peer
        limit = self.settings.maxConnectionsPerPeer
        if peer is not None and self.connections.count(peer) >= limit:
            if not self._evict(peer):
                self._refuse(
                    protocol.transport.getPeer(), "max-connections-per-peer", limit
                )
                return False
        self.connections.add(protocol, peer, now)
        if self.metrics is not NO_METRICS:
            self.metrics.accepted()
        return True

    def connectionSpoke(self, protocol: HelloServerProtocol) -> bool:
        """
        A connection sent its first bytes: it is no longer idle.  Behind a
        PROXY endpoint its real client is known now, and counted against the
        per-peer limit.

        :returns: Whether the connection may go on.
        """
        self.connections.spoke(protocol)
        if not protocol._peerRevealed:
            return True
        peer = getattr(protocol.transport.getPeer(), "host", None)
        if peer == protocol.peer:
            return True
        self.connections.repeer(protocol, peer)
        protocol.peer = peer
        limit = self.settings.maxConnectionsPerPeer
        if peer is not None and self.connections.count(peer) > limit:
            if not self._evict(peer):
                self.connections.remove(protocol)
                self.metrics.withdrawn()
                self._refuse(
                    protocol.transport.getPeer(), "max-connections-per-peer", limit
                )
                return False
        return True

    def connectionEnded(self, protocol: HelloServerProtocol) -> None:
        """
        Forget a connection that has closed.
        """
        self.connections.remove(protocol)
        if not self.connections and self._idle:
            idle, self._idle = self._idle, []
            for waiting in idle:
                waiting.callback(None)

    def stopGracefully(self, timeout: float) -> Deferred[None]:
        """
        Accept no new connection, give the open ones up to ``timeout`` seconds
        to finish their exchange, then abort whatever is left.

        :returns: A `Deferred` that fires once every connection is closed.
        """
        self._stopping = True
        if not self.connections:
            self.failures.flush()
            return succeed(None)
        idle: Deferred[None] = Deferred()
        self._idle.append(idle)
        deadline = self.clock.callLater(timeout, self.abortAll)

        def finish(result: None) -> None:
            if deadline.active():
                deadline.cancel()
            self.failures.flush()

        return idle.addCallback(finish)

    def abortAll(self) -> None:
        """
        Abort every open connection now.
        """
        for protocol in self.connections:
            protocol.abort(Outcome.SHUTDOWN)
