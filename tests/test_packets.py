"""
Tests for `hellotcp.packets`: parsing IP packets into segments, numbering
them relative to each side's initial sequence number, and drawing them.
"""

from __future__ import annotations

import json

from twisted.trial.unittest import SynchronousTestCase

from hellotcp.packets import (
    Conversation,
    PacketTrace,
    Segment,
    drawSegments,
    flagNames,
    parsePacket,
)
from hellotcp.probe import ExchangeRecord

from .support import tcpPacket

CLIENT = ("127.0.0.1", 40000)
SERVER = ("127.0.0.1", 5000)
SYN, FIN, RST, PSH, ACK = 0x02, 0x01, 0x04, 0x08, 0x10
# MSS 65495 and window scale 7, as Linux's loopback offers them.
OPTIONS = bytes([2, 4, 0xFF, 0xD7, 1, 3, 3, 7])


def conversation(
    x: int = 1000,
    y: int = 5000,
    message: bytes = b"Hello, server!",
    greeting: bytes = b"Hello, client!",
    client: tuple[str, int] = CLIENT,
    server: tuple[str, int] = SERVER,
    tls: bool = False,
) -> Conversation:
    """
    The ten segments of a greeting with hellotcp: handshake, the message,
    the client's half-close, the greeting, the server's FIN, each
    acknowledged, one millisecond apart.
    """
    n, g = len(message), len(greeting)
    c, s = (client, server), (server, client)
    rows = [
        (c, SYN, x, 0, b"", OPTIONS),
        (s, SYN | ACK, y, x + 1, b"", OPTIONS),
        (c, ACK, x + 1, y + 1, b"", b""),
        (c, PSH | ACK, x + 1, y + 1, message, b""),
        (s, ACK, y + 1, x + 1 + n, b"", b""),
        (c, FIN | ACK, x + 1 + n, y + 1, b"", b""),
        (s, PSH | ACK, y + 1, x + 2 + n, greeting, b""),
        (c, ACK, x + 2 + n, y + 1 + g, b"", b""),
        (s, FIN | ACK, y + 1 + g, x + 2 + n, b"", b""),
        (c, ACK, x + 2 + n, y + 2 + g, b"", b""),
    ]
    talk = Conversation(client, server, tls)
    for index, ((source, destination), flags, seq, ack, payload, options) in enumerate(
        rows
    ):
        packet = parsePacket(
            tcpPacket(source, destination, flags, seq, ack, payload, options=options)
        )
        assert packet is not None
        talk.add(100 + index / 1000, packet)
    return talk


class ParseTests(SynchronousTestCase):
    """
    `parsePacket` reads the IP and TCP headers and nothing else.
    """

    def test_ipv4(self) -> None:
        """
        Addresses, ports, numbers, flags, window, options and payload of an
        IPv4 packet.
        """
        packet = parsePacket(
            tcpPacket(CLIENT, SERVER, SYN | ACK, 7, 9, b"hi", 1234, OPTIONS)
        )
        assert packet is not None
        self.assertEqual(
            (packet.source, packet.destination, packet.seq, packet.ack),
            (CLIENT, SERVER, 7, 9),
        )
        self.assertEqual(
            (packet.flags, packet.window, packet.payload), (0x12, 1234, b"hi")
        )
        self.assertEqual((packet.mss, packet.windowScale), (65495, 7))

    def test_ipv6(self) -> None:
        """
        The same from an IPv6 packet, addresses in their short form.
        """
        packet = parsePacket(
            tcpPacket(("::1", 40000), ("0:0::1", 5000), ACK, 1, 2, b"x")
        )
        assert packet is not None
        self.assertEqual(
            (packet.source, packet.destination), (("::1", 40000), ("::1", 5000))
        )
        self.assertEqual(packet.payload, b"x")

    def test_notTCP(self) -> None:
        """
        Another protocol, a fragment after the first, a truncated header or
        an empty packet is not a segment.
        """
        self.assertIsNone(parsePacket(tcpPacket(CLIENT, SERVER, ACK, protocol=17)))
        self.assertIsNone(parsePacket(tcpPacket(CLIENT, SERVER, ACK, fragment=0x0010)))
        self.assertIsNone(parsePacket(tcpPacket(CLIENT, SERVER, ACK)[:30]))
        self.assertIsNone(parsePacket(b""))
        self.assertIsNone(parsePacket(b"\x00" * 60))

    def test_hostileOptions(self) -> None:
        """
        Options that lie about their length end the options, never the
        parse: a zero length, a length past the header, an unknown kind.
        """
        for options in (bytes([3, 0, 7]), bytes([2, 40, 1, 1]), bytes([99, 3, 0, 1])):
            packet = parsePacket(tcpPacket(CLIENT, SERVER, SYN, options=options))
            assert packet is not None
            self.assertIsNone(packet.windowScale)

    def test_flagNames(self) -> None:
        """
        Flags are named as the figure names them.
        """
        self.assertEqual(
            [flagNames(f) for f in (SYN, SYN | ACK, ACK, PSH | ACK, FIN | ACK, RST)],
            ["SYN", "SYN-ACK", "ACK", "PSH-ACK", "FIN-ACK", "RST"],
        )
        self.assertEqual(flagNames(FIN | PSH | ACK), "FIN-PSH-ACK")
        self.assertEqual(flagNames(RST | ACK), "RST-ACK")


def numbers(segments: list[Segment]) -> list[tuple[bool, str, int, int | None, int]]:
    """
    Each segment's direction, flags, relative numbers and length.
    """
    return [(s.fromClient, s.flags, s.seq, s.ack, s.length) for s in segments]


class ConversationTests(SynchronousTestCase):
    """
    `Conversation` numbers segments as the figure does and knows when the
    connection is over.
    """

    def test_figureArithmetic(self) -> None:
        """
        The SYN-ACK acknowledges x+1, the client's data starts at x+1, the
        greeting is acknowledged at y+1+len, each FIN consumes one number.
        """
        self.assertEqual(
            numbers(conversation().segments()),
            [
                (True, "SYN", 0, None, 0),
                (False, "SYN-ACK", 0, 1, 0),
                (True, "ACK", 1, 1, 0),
                (True, "PSH-ACK", 1, 1, 14),
                (False, "ACK", 1, 15, 0),
                (True, "FIN-ACK", 15, 1, 0),
                (False, "PSH-ACK", 1, 16, 14),
                (True, "ACK", 16, 15, 0),
                (False, "FIN-ACK", 15, 16, 0),
                (True, "ACK", 16, 16, 0),
            ],
        )

    def test_anyInitialNumbers(self) -> None:
        """
        Relative numbers do not depend on the initial numbers, even where
        the 32-bit sequence space wraps; the absolute ones are kept.
        """
        top = 2**32 - 1
        for x, y, message, greeting in [
            (0, 0, b"m", b"g"),
            (top, top, b"Hello, server!", b"Hello, client!"),
            (top - 5, 3, b"m" * 64, b"g" * 7),
            (2**31, top - 14, b"\x00" * 20, b"Hello, client!"),
            (123456789, 987654321, b"x" * 1500, b"y"),
        ]:
            segments = conversation(x, y, message, greeting).segments()
            n, g = len(message), len(greeting)
            self.assertEqual(segments[1].ack, 1)
            self.assertEqual(segments[3].seq, 1)
            self.assertEqual(segments[7].ack, 1 + g)
            self.assertEqual(segments[6].ack, n + 2)
            self.assertEqual(segments[9].ack, segments[8].seq + 1)
            self.assertEqual(segments[0].packet.seq, x)
            self.assertEqual(segments[1].packet.seq, y)
            self.assertFalse(any(s.retransmission for s in segments))

    def test_finished(self) -> None:
        """
        The connection is over when a FIN went each way and the last one was
        acknowledged, not before.
        """
        whole = conversation()
        self.assertTrue(whole.finished)
        talk = Conversation(CLIENT, SERVER)
        for when, packet in whole.captured:
            self.assertFalse(talk.finished)
            talk.add(when, packet)
        self.assertTrue(talk.finished)

    def test_resetFinishes(self) -> None:
        """
        A reset ends the connection, whatever came before.
        """
        talk = Conversation(CLIENT, SERVER)
        for flags in (SYN, RST | ACK):
            self.assertFalse(talk.finished)
            source, destination = (CLIENT, SERVER) if flags == SYN else (SERVER, CLIENT)
            packet = parsePacket(tcpPacket(source, destination, flags, 0, 77))
            assert packet is not None
            talk.add(1.0, packet)
        self.assertTrue(talk.finished)

    def test_refused(self) -> None:
        """
        The reset that refuses a connection acknowledges x+1; its Seq is
        absolute (0), the server having chosen no initial number; there is
        no handshake to time.
        """
        talk = Conversation(CLIENT, SERVER)
        for source, destination, flags, seq, ack in (
            (CLIENT, SERVER, SYN, 41, 0),
            (SERVER, CLIENT, RST | ACK, 0, 42),
        ):
            packet = parsePacket(tcpPacket(source, destination, flags, seq, ack))
            assert packet is not None
            talk.add(2.0, packet)
        self.assertEqual(
            numbers(talk.segments()),
            [(True, "SYN", 0, None, 0), (False, "RST-ACK", 0, 1, 0)],
        )
        summary = talk.summary()
        self.assertEqual((summary.clientISN, summary.serverISN), (41, None))
        self.assertIsNone(summary.handshakeRTT)

    def test_retransmission(self) -> None:
        """
        A segment that repeats numbers already sent is a retransmission;
        the summary counts it.
        """
        talk = Conversation(CLIENT, SERVER)
        captured = conversation().captured
        for when, packet in [*captured[:4], captured[3], *captured[4:]]:
            talk.add(when, packet)
        segments = talk.segments()
        self.assertEqual([s.retransmission for s in segments].count(True), 1)
        self.assertTrue(segments[4].retransmission)
        self.assertEqual(talk.summary().retransmissions, 1)

    def test_foreignSegments(self) -> None:
        """
        Only segments between the client and the server belong, either way.
        """
        talk = Conversation(CLIENT, SERVER)
        for source, destination, belongs in (
            (CLIENT, SERVER, True),
            (SERVER, CLIENT, True),
            (("127.0.0.1", 40001), SERVER, False),
            (SERVER, ("127.0.0.2", 40000), False),
            (CLIENT, ("127.0.0.1", 5001), False),
        ):
            packet = parsePacket(tcpPacket(source, destination, ACK))
            assert packet is not None
            self.assertEqual(talk.belongs(packet), belongs, (source, destination))

    def test_anyAddress(self) -> None:
        """
        An address not known (`None`) matches any address, the port still
        counts.
        """
        talk = Conversation((None, 40000), (None, 5000))
        packet = parsePacket(tcpPacket(("10.0.0.1", 40000), ("10.0.0.2", 5000), ACK))
        assert packet is not None
        self.assertTrue(talk.belongs(packet))
        other = parsePacket(tcpPacket(("10.0.0.1", 40002), ("10.0.0.2", 5000), ACK))
        assert other is not None
        self.assertFalse(talk.belongs(other))

    def test_window(self) -> None:
        """
        Windows are scaled as the handshake agreed, except on the SYNs.
        """
        segments = conversation().segments()
        self.assertEqual(segments[0].window, 512)
        self.assertEqual(segments[2].window, 512 << 7)

    def test_summary(self) -> None:
        """
        Segments each way, the initial numbers, and the handshake's round
        trip from the SYN to the SYN-ACK.
        """
        summary = conversation(x=7, y=9).summary()
        self.assertEqual((summary.fromClient, summary.fromServer), (6, 4))
        self.assertEqual((summary.clientISN, summary.serverISN), (7, 9))
        assert summary.handshakeRTT is not None
        self.assertAlmostEqual(summary.handshakeRTT, 0.001)

    def test_payloadEscaped(self) -> None:
        """
        Payload bytes reach the terminal escaped and cut short.
        """
        segments = conversation(message=b"\x1b[31mred\n" + b"a" * 40).segments()
        self.assertEqual(segments[3].payload, '"\\x1b[31mred\\n' + "a" * 19 + '"...')

    def test_tlsRecords(self) -> None:
        """
        Under TLS each segment names the records that begin in it, and a
        handshake record by its message, even when a record's header or its
        message type falls in the next segment.
        """
        hello = b"\x16\x03\x01\x00\x06\x01" + b"\x00" * 5
        server = (
            b"\x16\x03\x03\x00\x02\x02\x00"
            + b"\x14\x03\x03\x00\x01\x01"
            + b"\x17\x03\x03\x00\x01\x00" * 2
        )
        talk = conversation(message=hello, greeting=server, tls=True)
        segments = talk.segments()
        self.assertEqual(segments[3].payload, "TLS ClientHello")
        self.assertEqual(
            segments[6].payload, "TLS ServerHello, ChangeCipherSpec, ApplicationData x2"
        )
        # The same ClientHello cut inside its record header, after it, and
        # after the handshake message's type.
        for cut, first in ((3, "Handshake"), (5, "Handshake"), (6, "ClientHello")):
            split = conversation(message=hello[:cut], tls=True)
            tail = parsePacket(
                tcpPacket(CLIENT, SERVER, PSH | ACK, 1001 + cut + 1, 5015, hello[cut:])
            )
            assert tail is not None
            split.add(200.0, tail)
            labels = [s.payload for s in split.segments()]
            self.assertEqual(
                (labels[3], labels[-1]), (f"TLS {first}", "TLS (continued)")
            )


class DrawingTests(SynchronousTestCase):
    """
    `drawSegments` draws the figure.
    """

    def test_figure(self) -> None:
        """
        One arrow per segment, the client's to the right, with its flags and
        relative numbers; the handshake as the figure labels it; the initial
        numbers above and the summary below.
        """
        talk = conversation(x=7, y=9)
        drawing = drawSegments(PacketTrace.of(talk, kernelRetransmits=0))
        lines = drawing.splitlines()
        self.assertIn("x = 7", lines[0])
        self.assertIn("y = 9", lines[0])
        arrows = [line for line in lines if line.startswith("|")]
        self.assertEqual(len(arrows), 10)
        self.assertIn("SYN Seq=0 ---", arrows[0])
        self.assertTrue(arrows[0].split("  ")[0].endswith(">|"))
        self.assertTrue(arrows[1].startswith("|<"))
        self.assertIn("(Seq=x)", arrows[0])
        self.assertIn("(Seq=y, Ack=x+1)", arrows[1])
        self.assertIn("(Seq=x+1, Ack=y+1)", arrows[2])
        self.assertNotIn("(Seq", arrows[3])
        self.assertIn("PSH-ACK Seq=1 Ack=1 Len=14", arrows[3])
        self.assertIn('"Hello, server!"', arrows[3])
        self.assertIn("1.000 ms", arrows[1])
        self.assertEqual(
            lines[-1],
            "6 segments client to server, 4 segments server to client, "
            "0 retransmissions (the kernel counted 0); "
            "handshake rtt 1.000 ms (SYN to SYN-ACK)",
        )

    def test_notCaptured(self) -> None:
        """
        Without a capture, one line says why.
        """
        self.assertEqual(
            drawSegments(PacketTrace(problem="no TCP connection was made")),
            "packets: not captured (no TCP connection was made)",
        )

    def test_json(self) -> None:
        """
        With ``--json`` each segment is an object of the exchange's record,
        with the summary beside; a record without ``--packets`` has neither.
        """
        record = ExchangeRecord(sequence=1, started=0.0, message=b"m")
        self.assertNotIn("segments", record.asJSON())
        record.packets = PacketTrace.of(conversation(x=7, y=9), kernelRetransmits=0)
        data = json.loads(json.dumps(record.asJSON()))
        self.assertEqual(len(data["segments"]), 10)
        self.assertEqual(
            data["segments"][1],
            {
                "ms": 1.0,
                "from": "server",
                "flags": "SYN-ACK",
                "seq": 0,
                "ack": 1,
                "len": 0,
                "window": 512,
                "payload": "",
                "retransmission": False,
                "seq_absolute": 9,
                "ack_absolute": 8,
            },
        )
        self.assertEqual(data["packets"]["client_isn"], 7)
        self.assertEqual(data["packets"]["kernel_retransmissions"], 0)
        self.assertIsNone(data["packets_problem"])
