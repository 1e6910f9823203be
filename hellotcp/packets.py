# -*- test-case-name: tests.test_packets -*-
"""
The segments of one TCP connection, as ``hellotcp-client --trace
--packets`` shows them: IP packets parsed into `Segment`\\ s numbered
relative to each side's initial sequence number (`Conversation`), drawn
between the client's and the server's columns (`drawSegments`) and summed
up (`PacketSummary`).

Parsing is `hellotcp._tcpparse`'s job, naming TLS records
`hellotcp._tlsrecords`'s, capturing `hellotcp._capture`'s.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from attrs import field, frozen

from ._escape import quoted
from ._tcpparse import ACK, FIN, RST, SYN, Packet, flagNames, parsePacket
from ._tlsrecords import TLSRecords, describe

__all__ = [
    "Conversation",
    "Endpoint",
    "Packet",
    "PacketSummary",
    "PacketTrace",
    "Segment",
    "drawSegments",
    "flagNames",
    "parsePacket",
]

# How much of a payload a drawing shows.
_SHOWN = 28


@frozen
class Segment:
    """
    One segment of the connection as drawn: numbered relative to each side's
    initial sequence number, timed from the first SYN.

    :ivar at: Seconds since the client's first SYN, by the kernel's clock.
    :ivar fromClient: Whether the client sent it.
    :ivar flags: Its flags, e.g. ``PSH-ACK``.
    :ivar seq: Its sequence number, relative to its sender's initial number
        (absolute when the sender never sent a SYN, as in the reset that
        refuses a connection).
    :ivar ack: Its acknowledgement number, relative to the receiver's initial
        number; `None` without the ACK flag.
    :ivar length: Payload bytes.
    :ivar window: The receive window it advertises, in bytes (scaled as the
        handshake agreed).
    :ivar payload: A short rendering of the payload: escaped text, or for TLS
        the records it begins.
    :ivar retransmission: Whether it carries numbers its sender had already
        sent.
    :ivar packet: The segment as captured.
    """

    at: float
    fromClient: bool
    flags: str
    seq: int
    ack: int | None
    length: int
    window: int
    payload: str
    retransmission: bool
    packet: Packet

    def asJSON(self) -> dict[str, Any]:
        """
        The segment as JSON-ready data.
        """
        return {
            "ms": round(self.at * 1000, 3),
            "from": "client" if self.fromClient else "server",
            "flags": self.flags,
            "seq": self.seq,
            "ack": self.ack,
            "len": self.length,
            "window": self.window,
            "payload": self.payload,
            "retransmission": self.retransmission,
            "seq_absolute": self.packet.seq,
            "ack_absolute": self.packet.ack if self.ack is not None else None,
        }


@frozen
class PacketSummary:
    """
    What the segments of a connection add up to.

    :ivar fromClient: Segments the client sent.
    :ivar fromServer: Segments the server sent.
    :ivar retransmissions: Segments that repeated numbers already sent.
    :ivar handshakeRTT: Seconds from the client's (last) SYN to the SYN-ACK,
        or `None` without one.
    :ivar clientISN: The client's initial sequence number (x).
    :ivar serverISN: The server's (y).
    """

    fromClient: int
    fromServer: int
    retransmissions: int
    handshakeRTT: float | None
    clientISN: int | None
    serverISN: int | None

    @classmethod
    def of(cls, segments: list[Segment]) -> PacketSummary:
        """
        The summary of a connection's segments, in order.
        """
        syn = synAck = None
        for segment in segments:
            if segment.flags == "SYN" and segment.fromClient:
                syn = segment.at
            elif (
                segment.flags == "SYN-ACK" and not segment.fromClient and synAck is None
            ):
                synAck = segment.at
        isns = {
            s.fromClient: s.packet.seq for s in reversed(segments) if "SYN" in s.flags
        }
        return cls(
            fromClient=sum(s.fromClient for s in segments),
            fromServer=sum(not s.fromClient for s in segments),
            retransmissions=sum(s.retransmission for s in segments),
            handshakeRTT=None if syn is None or synAck is None else synAck - syn,
            clientISN=isns.get(True),
            serverISN=isns.get(False),
        )

    def asJSON(self) -> dict[str, Any]:
        """
        The summary as JSON-ready data.
        """
        return {
            "client_segments": self.fromClient,
            "server_segments": self.fromServer,
            "retransmissions": self.retransmissions,
            "handshake_rtt_ms": None
            if self.handshakeRTT is None
            else round(self.handshakeRTT * 1000, 3),
            "client_isn": self.clientISN,
            "server_isn": self.serverISN,
        }


Endpoint = tuple[str | None, int]
"""An address (`None`: not known, any) and a port."""


def _normal(end: Endpoint) -> Endpoint:
    address, port = end
    if address is not None:
        address = str(ipaddress.ip_address(address.split("%")[0]))
    return address, port


def _at(end: tuple[str, int], known: Endpoint) -> bool:
    return end[1] == known[1] and known[0] in (None, end[0])


class Conversation:
    """
    The segments of one connection, in the order they were captured, and
    what they mean: relative numbers, retransmissions, the handshake's
    round trip.

    :ivar client: The client's address and port, which tell the two
        directions apart.
    :ivar server: The server's.
    :ivar tls: Whether the payload is TLS (then records are named, not
        shown).
    """

    def __init__(self, client: Endpoint, server: Endpoint, tls: bool = False) -> None:
        """
        :param client: The client's address (`None`: any) and port.
        :param server: The server's, the same way.
        :param tls: Whether the payload is TLS.
        """
        self.client = _normal(client)
        self.server = _normal(server)
        self.tls = tls
        self.captured: list[tuple[float, Packet]] = []
        self._reset = False
        self._finEnds: dict[bool, int] = {}
        self._lastAcks: dict[bool, int] = {}

    def belongs(self, packet: Packet) -> bool:
        """
        Whether ``packet`` goes between the client and the server, either
        way.
        """
        source, destination = packet.source, packet.destination
        return (_at(source, self.client) and _at(destination, self.server)) or (
            _at(source, self.server) and _at(destination, self.client)
        )

    def _fromClient(self, packet: Packet) -> bool:
        return _at(packet.source, self.client) and _at(packet.destination, self.server)

    def add(self, when: float, packet: Packet) -> None:
        """
        Add a segment captured at ``when`` (seconds, any epoch).
        """
        self.captured.append((when, packet))
        side = self._fromClient(packet)
        if packet.flags & RST:
            self._reset = True
        if packet.flags & FIN:
            # The number after the FIN: what acknowledges it.
            self._finEnds[side] = (
                packet.seq + len(packet.payload) + 1 + bool(packet.flags & SYN)
            ) % 2**32
        if packet.flags & ACK:
            self._lastAcks[side] = packet.ack

    @property
    def finished(self) -> bool:
        """
        Whether the connection is over on the wire: a reset, or a FIN each
        way and the last one acknowledged.
        """
        if self._reset:
            return True
        return len(self._finEnds) == 2 and all(
            self._lastAcks.get(not side) == end for side, end in self._finEnds.items()
        )

    def segments(self) -> list[Segment]:
        """
        The segments, numbered relative to each side's initial number.
        """
        isn: dict[bool, int] = {}
        scale: dict[bool, int | None] = {}
        highest: dict[bool, int] = {}
        records = {True: TLSRecords(), False: TLSRecords()}
        starts = [when for when, p in self.captured if p.flags & SYN]
        start = starts[0] if starts else self.captured[0][0] if self.captured else 0.0
        drawn: list[Segment] = []
        for when, packet in self.captured:
            side = self._fromClient(packet)
            if packet.flags & SYN:
                isn.setdefault(side, packet.seq)
                scale[side] = packet.windowScale
            consumed = len(packet.payload) + bool(packet.flags & SYN)
            consumed += bool(packet.flags & FIN)
            base = isn.get(side, 0)
            seq = (packet.seq - base) % 2**32
            end = seq + consumed
            retransmission = bool(consumed) and end <= highest.get(side, 0)
            if consumed and side in highest and seq < highest[side] < end:
                # Overlaps what was sent: only the new part is read.
                fresh = packet.payload[highest[side] - seq :]
            else:
                fresh = b"" if retransmission else packet.payload
            highest[side] = max(highest.get(side, 0), end)
            ack = None
            if packet.flags & ACK:
                ack = (packet.ack - isn.get(not side, 0)) % 2**32
            window = packet.window
            if not packet.flags & SYN and None not in (
                scale.get(True),
                scale.get(False),
            ):
                window <<= scale[side] or 0
            drawn.append(
                Segment(
                    at=when - start,
                    fromClient=side,
                    flags=flagNames(packet.flags),
                    seq=seq,
                    ack=ack,
                    length=len(packet.payload),
                    window=window,
                    payload=self._render(records[side], fresh, packet.payload),
                    retransmission=retransmission,
                    packet=packet,
                )
            )
        return drawn

    def _render(self, records: TLSRecords, fresh: bytes, payload: bytes) -> str:
        if not payload:
            return ""
        if not self.tls:
            return quoted(payload, _SHOWN)
        names = records.labels(fresh)
        return "TLS " + (describe(names) if names else "(continued)")

    def summary(self) -> PacketSummary:
        """
        Count the segments each way and the retransmissions, and time the
        handshake.
        """
        return PacketSummary.of(self.segments())


def _label(segment: Segment) -> str:
    parts = [segment.flags, f"Seq={segment.seq}"]
    if segment.ack is not None:
        parts.append(f"Ack={segment.ack}")
    if segment.length:
        parts.append(f"Len={segment.length}")
    return " ".join(parts)


def _symbolic(segment: Segment, handshake: bool) -> str:
    # The figure's own labels for the handshake: Seq=x, then y and x+1,
    # then x+1 and y+1.
    if not handshake:
        return ""
    ours, theirs = ("x", "y") if segment.fromClient else ("y", "x")
    seq = ours if segment.seq == 0 else f"{ours}+{segment.seq}"
    if segment.ack is None:
        return f"(Seq={seq})"
    return f"(Seq={seq}, Ack={theirs}+{segment.ack})"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def drawSegments(trace: PacketTrace, width: int = 50) -> str:
    """
    Draw the segments as the classic figure does: the client's column on the
    left, the server's on the right, one arrow per segment with its flags,
    relative ``Seq``, ``Ack`` and length, and beside it the time since the
    SYN, the window and the payload; above them the initial sequence
    numbers, below them a summary.
    """
    summary = trace.summary
    if summary is None:
        return f"packets: not captured ({trace.problem})"
    lines = [
        _columns(
            f"client  x = {_isn(summary.clientISN)}",
            f"y = {_isn(summary.serverISN)}  server",
            width,
        ),
        "(Seq and Ack are relative to the initial sequence numbers x and y)",
    ]
    handshake = True
    for segment in trace.segments:
        body = f" {_label(segment)} ".center(width - 2, "-")
        arrow = f"|{body}>|" if segment.fromClient else f"|<{body}|"
        notes = [f"{segment.at * 1000:8.3f} ms", f"win {segment.window}"]
        if segment.retransmission:
            notes.append("retransmission")
        notes.append(_symbolic(segment, handshake))
        notes.append(segment.payload)
        lines.append(f"{arrow}  {'  '.join(n for n in notes if n)}")
        # The handshake ends with the client's first segment after the
        # SYN-ACK.
        handshake = (
            handshake
            and (segment.flags == "SYN" or not segment.fromClient)
            and "RST" not in segment.flags
        )
    rtt = (
        "no handshake"
        if summary.handshakeRTT is None
        else f"handshake rtt {summary.handshakeRTT * 1000:.3f} ms (SYN to SYN-ACK)"
    )
    kernel = (
        ""
        if trace.kernelRetransmits is None
        else f" (the kernel counted {trace.kernelRetransmits})"
    )
    lines.append(
        f"{_plural(summary.fromClient, 'segment')} client to server, "
        f"{_plural(summary.fromServer, 'segment')} server to client, "
        f"{_plural(summary.retransmissions, 'retransmission')}{kernel}; {rtt}"
    )
    if trace.problem:
        lines.append(f"packets: {trace.problem}")
    return "\n".join(lines)


def _isn(value: int | None) -> str:
    return "?" if value is None else str(value)


def _columns(left: str, right: str, width: int) -> str:
    return f"{left}{right:>{max(width + 1 - len(left), len(right) + 1)}}"


@frozen
class PacketTrace:
    """
    What ``--packets`` adds to an exchange's record.

    :ivar segments: The connection's segments, in order.
    :ivar summary: What they add up to; `None` if nothing was captured.
    :ivar kernelRetransmits: The retransmissions the kernel counted
        (``TCP_INFO``), where it reports them.
    :ivar problem: Why the capture is missing or partial, in a sentence;
        `None` when whole.
    """

    segments: list[Segment] = field(factory=list)
    summary: PacketSummary | None = None
    kernelRetransmits: int | None = None
    problem: str | None = None

    @classmethod
    def of(
        cls,
        conversation: Conversation,
        kernelRetransmits: int | None = None,
        problem: str | None = None,
    ) -> PacketTrace:
        """
        The trace of a captured conversation.
        """
        segments = conversation.segments()
        return cls(segments, PacketSummary.of(segments), kernelRetransmits, problem)

    def asJSON(self) -> dict[str, Any]:
        """
        The trace as the JSON record's ``segments`` and ``packets`` keys.
        """
        summary = None if self.summary is None else self.summary.asJSON()
        if summary is not None:
            summary["kernel_retransmissions"] = self.kernelRetransmits
        return {
            "segments": None
            if self.summary is None
            else [segment.asJSON() for segment in self.segments],
            "packets": summary,
            "packets_problem": self.problem,
        }
