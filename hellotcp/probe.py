# -*- test-case-name: tests.test_probe -*-
"""
The client as a probe: one exchange measured step by step
(`ExchangeRecord`), drawn as a sequence diagram (`drawExchange`), and
repeated exchanges summarised as ``ping`` does (`Statistics`).

Everything is measured with Twisted's own callbacks (connection made, TLS
handshake completed, data received, connection lost) on the reactor's clock,
so tests drive it with a fake clock and an in-memory transport.
"""

from __future__ import annotations

import datetime
import socket
import struct
from collections import Counter
from collections.abc import Callable
from typing import Any

from attrs import define, field
from cryptography import x509
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import connectProtocol
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    IHandshakeListener,
    IOpenSSLClientConnectionCreator,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from ._escape import escape, quoted
from ._twistedcompat import wrapClientTLSOn
from ._wire import canHalfClose, formatAddress, socketOf
from .greet import HelloClientProtocol
from .packets import PacketTrace

__all__ = [
    "ExchangeRecord",
    "Statistics",
    "TLSDetails",
    "TracingClientProtocol",
    "drawExchange",
    "pingLine",
    "probe",
    "tlsDetails",
]

# struct tcp_info (linux/tcp.h): tcpi_rtt and tcpi_rttvar (microseconds) at
# byte 68 and 72, tcpi_total_retrans at byte 100.
_TCP_INFO = getattr(socket, "TCP_INFO", None)
_RTT = struct.Struct("=II")
_RETRANSMITS = struct.Struct("=I")


@define
class TLSDetails:
    """
    What the TLS handshake settled, and the server's certificate.

    :ivar version: The protocol version, e.g. ``TLSv1.3``.
    :ivar cipher: The cipher suite's name.
    :ivar subject: The certificate's subject, as RFC 4514 text.
    :ivar issuer: Its issuer, the same way.
    :ivar names: The names and addresses it covers (subject alternative
        names).
    :ivar daysLeft: Whole days until it expires.
    """

    version: str
    cipher: str
    subject: str
    issuer: str
    names: list[str]
    daysLeft: int


@define
class ExchangeRecord:
    """
    One exchange, measured on the client's side.  Times are seconds on the
    reactor's clock; those of steps not reached are `None`.

    :ivar sequence: The exchange's number in a series, from 1.
    :ivar started: When the connection was started.
    :ivar message: The message sent.
    :ivar connected: When TCP connected.
    :ivar tlsDone: When the TLS handshake finished.
    :ivar firstByte: When the first byte of the answer arrived.
    :ivar ended: When the connection ended.
    :ivar local: The client's address, as text.
    :ivar remote: The server's address, as text.
    :ivar response: What the server sent.
    :ivar outcome: ``"greeted"``, or the short name of what went wrong.
    :ivar error: What went wrong, in a sentence; `None` when greeted.
    :ivar halfClosed: Whether the client ended its message with a TCP
        half-close (rather than a line feed).
    :ivar tls: What TLS settled; `None` over plain TCP.
    :ivar rttMs: The kernel's smoothed round-trip time (``TCP_INFO``), in
        milliseconds, where the platform reports it.
    :ivar rttVarMs: Its variation, the same way.
    :ivar retransmits: Segments the kernel sent again, the same way.
    :ivar packets: The connection's segments, when ``--packets`` captured
        them.
    :ivar closedBy: ``"server"`` when the server's end of file came first
        (the normal end), ``"reset"`` when the connection was reset (or a
        TLS stream ended without close_notify), ``"client"`` when the client
        gave up first.
    """

    sequence: int
    started: float
    message: bytes
    connected: float | None = None
    tlsDone: float | None = None
    firstByte: float | None = None
    ended: float | None = None
    local: str | None = None
    remote: str | None = None
    response: bytes = b""
    outcome: str = "greeted"
    error: str | None = None
    closedBy: str | None = None
    halfClosed: bool = False
    tls: TLSDetails | None = None
    rttMs: float | None = None
    rttVarMs: float | None = None
    retransmits: int | None = None
    packets: PacketTrace | None = None

    def elapsed(self, moment: float | None) -> float | None:
        """
        Milliseconds from the start to ``moment``.
        """
        return None if moment is None else (moment - self.started) * 1000

    @property
    def totalMs(self) -> float | None:
        """
        Milliseconds from the connect call to the end.
        """
        return self.elapsed(self.ended)

    def asJSON(self) -> dict[str, Any]:
        """
        The record as JSON-ready data.
        """

        def ms(value: float | None) -> float | None:
            return None if value is None else round(value, 3)

        data = {
            "type": "exchange",
            "seq": self.sequence,
            "outcome": self.outcome,
            "error": self.error,
            "local": self.local,
            "remote": self.remote,
            "connect_ms": ms(self.elapsed(self.connected)),
            "tls_ms": ms(self.elapsed(self.tlsDone)),
            "first_byte_ms": ms(self.elapsed(self.firstByte)),
            "total_ms": ms(self.totalMs),
            "sent_bytes": len(self.message),
            "received_bytes": len(self.response),
            "response": escape(self.response),
            "closed_by": self.closedBy,
            "client_half_closed": self.halfClosed,
            "tls": None
            if self.tls is None
            else {
                "version": self.tls.version,
                "cipher": self.tls.cipher,
                "subject": self.tls.subject,
                "issuer": self.tls.issuer,
                "names": self.tls.names,
                "days_left": self.tls.daysLeft,
            },
            "rtt_ms": self.rttMs,
            "rttvar_ms": self.rttVarMs,
            "retransmits": self.retransmits,
        }
        if self.packets is not None:
            data.update(self.packets.asJSON())
        return data


def tlsDetails(handle: Any, now: datetime.datetime) -> TLSDetails | None:
    """
    The TLS facts of an established ``OpenSSL.SSL.Connection``.
    """
    peer = handle.get_peer_certificate()
    if peer is None:
        return None
    certificate = peer.to_cryptography()
    try:
        alternative = certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value
        names = [str(n) for n in alternative.get_values_for_type(x509.DNSName)] + [
            str(n) for n in alternative.get_values_for_type(x509.IPAddress)
        ]
    except x509.ExtensionNotFound:
        names = []
    return TLSDetails(
        version=handle.get_protocol_version_name(),
        cipher=handle.get_cipher_name(),
        subject=certificate.subject.rfc4514_string(),
        issuer=certificate.issuer.rfc4514_string(),
        names=names,
        daysLeft=(certificate.not_valid_after_utc - now).days,
    )


@implementer(IHandshakeListener)
class TracingClientProtocol(HelloClientProtocol):
    """
    `HelloClientProtocol` that records when each step happened.
    """

    def __init__(self, record: ExchangeRecord, clock: IReactorTime) -> None:
        """
        :param record: Where to note each step; its ``message`` is sent.
        :param clock: What the steps are timed on.
        """
        super().__init__(record.message)
        self.record = record
        self._clock = clock

    def connectionMade(self) -> None:
        """
        Note the connection and its addresses, then send.
        """
        self.record.connected = self._clock.seconds()
        self.record.local = formatAddress(self.transport.getHost())
        self.record.remote = formatAddress(self.transport.getPeer())
        self._readTCPInfo()
        super().connectionMade()
        self.record.halfClosed = canHalfClose(self.transport)

    def handshakeCompleted(self) -> None:
        """
        Note the TLS handshake and what it settled.
        """
        self.record.tlsDone = self._clock.seconds()
        handle = getattr(self.transport, "getHandle", lambda: None)()
        if handle is not None and hasattr(handle, "get_peer_certificate"):
            self.record.tls = tlsDetails(
                handle, datetime.datetime.now(datetime.timezone.utc)
            )

    def dataReceived(self, data: bytes) -> None:
        """
        Note the first byte of the answer.
        """
        if self.record.firstByte is None:
            self.record.firstByte = self._clock.seconds()
            self._readTCPInfo()
        super().dataReceived(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Note the end and who closed first.
        """
        reason = self.endReason(reason)
        self.record.ended = self._clock.seconds()
        if reason.check(ConnectionDone):
            self.record.closedBy = "server"
        elif reason.check(ConnectionLost) and not reason.check(ConnectionAborted):
            # A reset, or (under TLS) an end without close_notify.
            self.record.closedBy = "reset"
        else:
            self.record.closedBy = "client"
        super().connectionLost(reason)

    def _readTCPInfo(self) -> None:
        sock = socketOf(self.transport)
        if sock is None or _TCP_INFO is None or sock.family == socket.AF_UNIX:
            return
        try:
            info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 104)
        except OSError:
            return
        if len(info) >= 104:
            rtt, rttVar = _RTT.unpack_from(info, 68)
            self.record.rttMs = rtt / 1000
            self.record.rttVarMs = rttVar / 1000
            self.record.retransmits = _RETRANSMITS.unpack_from(info, 100)[0]


def probe(
    reactor: IReactorTime,
    endpoint: IStreamClientEndpoint,
    sequence: int,
    message: bytes,
    timeout: float,
    tls: IOpenSSLClientConnectionCreator | None,
    describe: Callable[[Failure], tuple[str, str]],
) -> Deferred[ExchangeRecord]:
    """
    Run one measured exchange.  It never fails: a failure is recorded in the
    record's ``outcome`` (a short kind) and ``error`` (a sentence), as
    ``describe`` names them.
    """
    if tls is not None:
        endpoint = wrapClientTLSOn(reactor, tls, endpoint)
    record = ExchangeRecord(
        sequence=sequence, started=reactor.seconds(), message=message
    )
    protocol = TracingClientProtocol(record, reactor)
    exchange = connectProtocol(endpoint, protocol).addCallback(
        lambda _: protocol.response
    )

    def answered(response: bytes) -> ExchangeRecord:
        record.response = response
        return record

    def failed(failure: Failure) -> ExchangeRecord:
        record.outcome, record.error = describe(failure)
        record.response = protocol.received
        if record.ended is None:
            record.ended = reactor.seconds()
            record.closedBy = "client"
        return record

    measured: Deferred[ExchangeRecord] = exchange.addTimeout(
        timeout, reactor
    ).addCallbacks(answered, failed)
    return measured


# Colours, used only when standard output is a terminal and NO_COLOR is unset.
_STYLES = {
    "arrow": "\x1b[36m",
    "note": "\x1b[2m",
    "bad": "\x1b[31m",
    "good": "\x1b[32m",
}
_RESET = "\x1b[0m"

# Bytes of a message or an answer that fit on an arrow.
_SHOWN = 28


def drawExchange(record: ExchangeRecord, colour: bool = False, width: int = 50) -> str:
    """
    Draw ``record`` as a sequence diagram: the client on the left, the server
    on the right, one arrow per step with what was measured.
    """

    def paint(style: str, text: str) -> str:
        return f"{_STYLES[style]}{text}{_RESET}" if colour else text

    def right(label: str) -> str:
        body = f" {label} ".center(width - 2, "-")
        return paint("arrow", f"|{body}>|")

    def left(label: str) -> str:
        body = f" {label} ".center(width - 2, "-")
        return paint("arrow", f"|<{body}|")

    def ms(value: float | None) -> str:
        return "?" if value is None else f"{value:.2f} ms"

    half = width // 2
    lines = [
        f"{'client':<{half}}{'server':>{width + 1 - half}}",
        f"{record.local or '?':<{half}}{record.remote or '?':>{width + 1 - half}}",
    ]

    def step(arrow: str, *notes: str) -> None:
        lines.append(f"{arrow}  {paint('note', notes[0]) if notes else ''}".rstrip())
        for note in notes[1:]:
            lines.append(f"|{' ' * (width - 1)}|  {paint('note', note)}")

    tcp = record.rttMs is not None
    if record.connected is not None:
        label = "SYN, SYN-ACK, ACK" if tcp else "connect"
        step(right(label), f"connected in {ms(record.elapsed(record.connected))}")
    else:
        step(right("connect"), paint("bad", record.error or "no connection"))
    if record.tls is not None:
        tls = record.tls
        step(
            right(f"TLS {tls.version}"),
            f"handshake done at {ms(record.elapsed(record.tlsDone))}, {tls.cipher}",
            f"subject {tls.subject}",
            f"issuer {tls.issuer}",
            f"names {', '.join(tls.names) or '(none)'}; expires in {tls.daysLeft} days",
        )
    if record.connected is not None:
        step(right(quoted(record.message, _SHOWN)), f"{len(record.message)} bytes sent")
        if record.halfClosed:
            step(right("FIN"), "the client half-closed: its message is whole")
    if record.response:
        step(
            left(quoted(record.response, _SHOWN)),
            f"{len(record.response)} bytes, first after "
            f"{ms(record.elapsed(record.firstByte))}",
        )
    if record.ended is not None and record.connected is not None:
        if record.closedBy == "server":
            step(left("FIN"), "the server closed; the client closes in turn")
        elif record.closedBy == "reset":
            step(left("RST"), "the connection was reset (or TLS ended uncleanly)")
        else:
            step(right("close"), "the client closed before the server did")
    verdict = (
        paint("good", "greeted")
        if record.outcome == "greeted"
        else paint("bad", f"{record.outcome}: {record.error}")
    )
    summary = f"total {ms(record.totalMs)}, {verdict}"
    if tcp:
        summary += (
            f"; kernel rtt {record.rttMs:.3f} ms (±{record.rttVarMs:.3f}), "
            f"{record.retransmits} retransmissions"
        )
    lines.append(f"|{' ' * (width - 1)}|  {summary}")
    return "\n".join(lines)


def pingLine(record: ExchangeRecord, where: str) -> str:
    """
    One line per exchange, as ``ping`` prints them.
    """
    if record.outcome == "greeted":
        return (
            f"{len(record.response)} bytes from {where}: seq={record.sequence} "
            f'time={record.totalMs or 0:.2f} ms greeted "{escape(record.response)}"'
        )
    return f"from {where}: seq={record.sequence} {record.outcome}: {record.error}"


@define
class Statistics:
    """
    What a series of exchanges came to.

    :ivar times: The total time of each greeted exchange, in milliseconds.
    :ivar failures: How many exchanges failed, by outcome.
    """

    times: list[float] = field(factory=list)
    failures: Counter[str] = field(factory=Counter)

    def add(self, record: ExchangeRecord) -> None:
        """
        Count one exchange.
        """
        if record.outcome == "greeted":
            self.times.append(record.totalMs or 0.0)
        else:
            self.failures[record.outcome] += 1

    @property
    def sent(self) -> int:
        """
        Exchanges attempted.
        """
        return len(self.times) + sum(self.failures.values())

    def exitStatus(self) -> int:
        """
        0 when every exchange was greeted, 2 when none was, 1 otherwise.
        """
        if not self.failures:
            return 0
        return 2 if not self.times else 1

    def percentiles(self) -> dict[str, float] | None:
        """
        Min, median, p99 and max of the greeted exchanges' times (ms).
        """
        if not self.times:
            return None
        ordered = sorted(self.times)

        def at(fraction: float) -> float:
            return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]

        middle = len(ordered) // 2
        median = (
            ordered[middle]
            if len(ordered) % 2
            else (ordered[middle - 1] + ordered[middle]) / 2
        )
        return {
            "min": ordered[0],
            "median": median,
            "p99": at(0.99),
            "max": ordered[-1],
        }

    def asJSON(self) -> dict[str, Any]:
        """
        The summary as JSON-ready data.
        """
        times = self.percentiles()
        return {
            "type": "summary",
            "sent": self.sent,
            "greeted": len(self.times),
            "failed": dict(self.failures),
            "ms": None if times is None else {k: round(v, 3) for k, v in times.items()},
            "exit_status": self.exitStatus(),
        }

    def render(self, where: str) -> str:
        """
        The summary as ``ping`` prints it.
        """
        failed = sum(self.failures.values())
        reasons = ", ".join(f"{kind}: {n}" for kind, n in sorted(self.failures.items()))
        lines = [
            f"--- {where} hellotcp statistics ---",
            f"{self.sent} sent, {len(self.times)} greeted, {failed} failed"
            + (f" ({reasons})" if reasons else ""),
        ]
        times = self.percentiles()
        if times is not None:
            lines.append(
                "min/median/p99/max = "
                + "/".join(f"{times[k]:.3f}" for k in ("min", "median", "p99", "max"))
                + " ms"
            )
        return "\n".join(lines)
