"""
Tests for ``hellotcp-client --trace --packets`` and `hellotcp._capture`:
the kernel filter's program (run here by a small interpreter of classic
BPF), the reactor that binds connections before they connect, and the
command on loopback against ``twist hellotcp``, the classic server, a
server that resets and a closed port, each drawing compared with what
tcpdump saw of the same connection.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import socket
import struct
import sys
import threading
from typing import Any

from twisted.internet import reactor
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import ClientFactory
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from hellotcp import _capture
from hellotcp._capture import CapturingReactor, checkCapture, connectionFilter
from hellotcp.packets import parsePacket

from .pki import PKI, tlsListen
from .support import (
    CHECKOUT,
    TIMEOUT,
    CommandTestCase,
    Process,
    classicClient,
    command,
    freePort,
    inThread,
    resetAfter,
    serveInThread,
    tcpPacket,
)

SYN, FIN, RST, PSH, ACK = 0x02, 0x01, 0x04, 0x08, 0x10
CLIENT = ("127.0.0.1", 40000)
SERVER = ("127.0.0.2", 5000)


def runFilter(program: bytes, packet: bytes, etherType: int) -> int:
    """
    Run a classic BPF program as the kernel runs it on a ``SOCK_DGRAM``
    packet socket (the packet starts at its network header); only the
    instructions `connectionFilter` uses are known.

    :returns: What the program returns: the bytes to keep, 0 to drop.
    """
    rows = [
        struct.unpack_from("=HBBI", program, at) for at in range(0, len(program), 8)
    ]
    a = x = 0
    pc = 0
    for _ in range(len(rows)):
        code, true, false, k = rows[pc]
        pc += 1
        if code in (0x20, 0x28, 0x30, 0x48):
            size = {0x20: 4, 0x28: 2, 0x30: 1, 0x48: 2}[code]
            at = k + (x if code == 0x48 else 0)
            if code == 0x28 and k == 0xFFFFF000:
                a = etherType
                continue
            if at + size > len(packet):
                return 0
            a = int.from_bytes(packet[at : at + size], "big")
        elif code == 0xB1:
            x = 4 * (packet[k] & 0x0F)
        elif code == 0x15:
            pc += true if a == k else false
        elif code == 0x45:
            pc += true if a & k else false
        elif code == 0x06:
            return int(k)
        else:
            raise AssertionError(f"instruction {code:#x} not known here")
    raise AssertionError("the program ran off its end")


class FilterTests(SynchronousTestCase):
    """
    `connectionFilter` keeps one connection's segments, both ways, and
    nothing else.
    """

    def kept(self, program: bytes, packet: bytes, etherType: int = 0x0800) -> bool:
        """
        Whether ``program`` keeps ``packet``.
        """
        return runFilter(program, packet, etherType) > 0

    def test_fourTuple(self) -> None:
        """
        Both directions of the 4-tuple are kept; a change of any one of its
        four parts, another protocol, another EtherType or a later fragment
        is dropped.
        """
        program = connectionFilter(socket.AF_INET, CLIENT, SERVER)
        self.assertTrue(self.kept(program, tcpPacket(CLIENT, SERVER, SYN)))
        self.assertTrue(self.kept(program, tcpPacket(SERVER, CLIENT, SYN | ACK)))
        for source, destination in [
            (("127.0.0.3", 40000), SERVER),
            (("127.0.0.1", 40001), SERVER),
            (CLIENT, ("127.0.0.3", 5000)),
            (CLIENT, ("127.0.0.2", 5001)),
            (SERVER, ("127.0.0.1", 40001)),
            (CLIENT, CLIENT),
        ]:
            self.assertFalse(
                self.kept(program, tcpPacket(source, destination, ACK)),
                (source, destination),
            )
        self.assertFalse(
            self.kept(program, tcpPacket(CLIENT, SERVER, ACK, protocol=17))
        )
        self.assertFalse(self.kept(program, tcpPacket(CLIENT, SERVER, ACK), 0x86DD))
        self.assertFalse(
            self.kept(program, tcpPacket(CLIENT, SERVER, ACK, fragment=0x0002))
        )
        # Options move the ports: the filter reads the header's length.
        self.assertTrue(
            self.kept(program, tcpPacket(CLIENT, SERVER, SYN, options=b"\x01" * 8))
        )

    def test_sameAddress(self) -> None:
        """
        On loopback both ends may have one address: the ports alone tell the
        directions apart, and a third port is dropped.
        """
        server = ("127.0.0.1", 5000)
        program = connectionFilter(socket.AF_INET, CLIENT, server)
        self.assertTrue(self.kept(program, tcpPacket(CLIENT, server, ACK)))
        self.assertTrue(self.kept(program, tcpPacket(server, CLIENT, ACK)))
        self.assertFalse(
            self.kept(program, tcpPacket(server, ("127.0.0.1", 40001), ACK))
        )

    def test_anyAddress(self) -> None:
        """
        An address not known yet (a host name) matches any address.
        """
        program = connectionFilter(socket.AF_INET, (None, 40000), (None, 5000))
        self.assertTrue(self.kept(program, tcpPacket(("10.1.1.1", 40000), SERVER, ACK)))
        self.assertFalse(
            self.kept(program, tcpPacket(("10.1.1.1", 40002), SERVER, ACK))
        )

    def test_ipv6(self) -> None:
        """
        IPv6: all four words of both addresses count.
        """
        client, server = ("::1", 40000), ("2001:db8::1", 5000)
        program = connectionFilter(socket.AF_INET6, client, server)
        self.assertTrue(self.kept(program, tcpPacket(client, server, SYN), 0x86DD))
        self.assertTrue(self.kept(program, tcpPacket(server, client, ACK), 0x86DD))
        self.assertFalse(self.kept(program, tcpPacket(client, server, SYN), 0x0800))
        self.assertFalse(
            self.kept(program, tcpPacket(client, ("2001:db8::2", 5000), SYN), 0x86DD)
        )
        self.assertFalse(
            self.kept(program, tcpPacket(("::2", 40000), server, SYN), 0x86DD)
        )


class CapturingReactorTests(SynchronousTestCase):
    """
    `CapturingReactor` binds each connection before it connects.
    """

    def test_boundToTheRoute(self) -> None:
        """
        A connection to an address is bound to the address the route to it
        uses, on a port the kernel picks; the connection is made by the real
        reactor.  Where the port cannot be known first (here, a memory
        reactor), the problem is kept and the connection still made.
        """
        memory = MemoryReactorClock()
        capturing = CapturingReactor(memory, tls=False)
        capturing.connectTCP("127.0.0.1", 5000, ClientFactory())
        [(host, port, _, _, bind)] = memory.tcpClients
        self.assertEqual((host, port, bind), ("127.0.0.1", 5000, ("127.0.0.1", 0)))
        self.assertEqual(
            capturing.problems,
            ["the connection's port was not known before it connected"],
        )
        trace = self.successResultOf(capturing.trace(None, memory))
        self.assertIsNone(trace.summary)
        self.assertEqual(trace.problem, capturing.problems[0])

    def test_hostName(self) -> None:
        """
        A host name is resolved by the real reactor, later: the connection is
        bound to any address.
        """
        memory = MemoryReactorClock()
        CapturingReactor(memory, tls=False).connectTCP(
            "localhost", 5000, ClientFactory()
        )
        self.assertEqual(memory.tcpClients[0][4], ("", 0))

    def test_ssl(self) -> None:
        """
        An ``ssl:`` endpoint's connection is bound the same way.
        """
        memory = MemoryReactorClock()
        capturing = CapturingReactor(memory, tls=True)
        capturing.connectSSL("::1", 5001, ClientFactory(), object())
        self.assertEqual(memory.sslClients[0][5], ("::1", 0))
        self.assertEqual(len(capturing.problems), 1)

    def test_passesTheRest(self) -> None:
        """
        Everything else is the real reactor's, interfaces included.
        """
        memory = MemoryReactorClock()
        capturing = CapturingReactor(memory, tls=False)
        self.assertEqual(capturing.seconds(), memory.seconds())
        self.assertTrue(IReactorTime.providedBy(capturing))


class ConnectionCaptureTests(SynchronousTestCase):
    """
    `hellotcp._capture.ConnectionCapture` on a real packet socket, fed by
    hand.
    """

    def setUp(self) -> None:
        try:
            checkCapture()
        except _capture.CaptureUnavailable as problem:
            raise SkipTest(str(problem)) from None
        self.reactor = MemoryReactorClock()
        self.capture = _capture.ConnectionCapture(
            self.reactor, socket.AF_INET, CLIENT, SERVER, tls=False
        )
        self.addCleanup(self.capture.close)

    def test_kernelFilter(self) -> None:
        """
        The kernel itself drops other connections' segments: the socket
        receives nothing of a connection to the same server port made just
        before, and every segment of the 4-tuple it filters on.
        """
        listener = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(listener.close)
        client = socket.socket()
        self.addCleanup(client.close)
        client.bind(("127.0.0.1", 0))
        clientPort = client.getsockname()[1]
        ours = _capture.ConnectionCapture(
            self.reactor,
            socket.AF_INET,
            client.getsockname(),
            listener.getsockname(),
            tls=False,
        )
        self.addCleanup(ours.close)
        raw: list[bytes] = []
        ours._reader._received = lambda when, data: raw.append(data)
        for sock in (socket.create_connection(listener.getsockname()), client):
            if sock is client:
                client.connect(listener.getsockname())
            sock.sendall(b"Hello, server!")
            accepted, _ = listener.accept()
            accepted.recv(1024)
            sock.close()
            accepted.close()
        # Bounded: until both FINs of our connection are in, or 5 seconds.
        for _ in range(50):
            ours._reader.readQueued(100)
            packets = [parsePacket(data) for data in raw]
            if sum(bool(p and p.flags & FIN) for p in packets) >= 2:
                break
            select.select([ours._socket], [], [], 0.1)
        self.assertGreaterEqual(len(raw), 6)
        for packet in packets:
            assert packet is not None
            self.assertIn(clientPort, (packet.source[1], packet.destination[1]))

    def test_bounded(self) -> None:
        """
        A flood keeps at most `MOST_SEGMENTS` segments, and segments of
        another connection none.
        """
        self.assertEqual(self.reactor.readers, {self.capture._reader})
        for seq in range(_capture.MOST_SEGMENTS + 100):
            self.capture._received(
                1.0, tcpPacket(SERVER, CLIENT, ACK | PSH, seq, 1, b"x")
            )
        self.capture._received(1.0, tcpPacket(("127.0.0.9", 1), CLIENT, ACK))
        self.assertEqual(
            len(self.capture.conversation.captured), _capture.MOST_SEGMENTS
        )

    def test_finishNeverHangs(self) -> None:
        """
        A connection that never ends on the wire is given `FINISH_BOUND`
        seconds, then the capture stops with what it has and closes.
        """
        self.capture._received(1.0, tcpPacket(CLIENT, SERVER, SYN, 7))
        finishing = self.capture.finish(self.reactor, _capture.FINISH_BOUND)
        self.assertNoResult(finishing)
        self.reactor.advance(_capture.FINISH_BOUND)
        conversation = self.successResultOf(finishing)
        self.assertEqual(len(conversation.captured), 1)
        self.assertEqual(self.reactor.readers, set())

    def test_finishAtTheReset(self) -> None:
        """
        A reset ends the capture at once, without waiting for the bound.
        """
        self.capture._received(1.0, tcpPacket(CLIENT, SERVER, SYN, 7))
        finishing = self.capture.finish(self.reactor, _capture.FINISH_BOUND)
        self.capture._received(1.1, tcpPacket(SERVER, CLIENT, RST | ACK, 0, 8))
        self.assertEqual(len(self.successResultOf(finishing).captured), 2)
        self.assertEqual(self.reactor.getDelayedCalls(), [])


# tcpdump's text for one segment (-nn -S -tt): time, addresses, flags,
# absolute numbers, window, length.
_TCPDUMP_LINE = re.compile(
    r"^(?P<time>\d+\.\d+) IP6? (?P<source>\S+)\.(?P<sport>\d+) > "
    r"(?P<destination>\S+)\.(?P<dport>\d+): Flags \[(?P<flags>[^\]]*)\]"
    r"(?:, seq (?P<seq>\d+)(?::\d+)?)?(?:, ack (?P<ack>\d+))?, win \d+"
    r"(?:, options \[[^\]]*\])?, length (?P<length>\d+)"
)
_TCPDUMP_FLAGS = {"S": "SYN", "F": "FIN", "R": "RST", "P": "PSH", ".": "ACK"}


def tcpdumpSegments(text: str, clientPort: int) -> list[dict[str, Any]]:
    """
    The segments of tcpdump's output to or from ``clientPort``.
    """
    segments = []
    for line in text.splitlines():
        match = _TCPDUMP_LINE.match(line)
        if match is None:
            continue
        ports = {int(match["sport"]), int(match["dport"])}
        if clientPort not in ports:
            continue
        segments.append(
            {
                "from": "client" if int(match["sport"]) == clientPort else "server",
                "flags": {_TCPDUMP_FLAGS[f] for f in match["flags"]},
                "seq": None if match["seq"] is None else int(match["seq"]),
                "ack": None if match["ack"] is None else int(match["ack"]),
                "len": int(match["length"]),
            }
        )
    return segments


def packetsJSON(connect: str, *argv: str) -> list[str]:
    """
    ``hellotcp-client --trace --packets --json`` to ``connect``.
    """
    return [
        command("hellotcp-client"),
        *("--trace", "--packets", "--json", "--connect", connect),
        *argv,
    ]


def dropNetRaw(argv: list[str]) -> list[str]:
    """
    ``argv`` run as root without ``CAP_NET_RAW``: dropped from the bounding
    set (``prctl(PR_CAPBSET_DROP)``) before ``exec``, so the program can
    read every file but not open a packet socket.
    """
    code = (
        "import ctypes, os, sys; "
        "ctypes.CDLL(None, use_errno=True).prctl(24, 13, 0, 0, 0) == 0 or sys.exit(99); "
        "os.execv(sys.argv[1], sys.argv[1:])"
    )
    return [sys.executable, "-c", code, *argv]


class PacketsCommandTests(CommandTestCase):
    """
    ``hellotcp-client --trace --packets`` on loopback, each drawing held to
    what tcpdump saw of the same connection.
    """

    def setUp(self) -> None:
        super().setUp()
        try:
            checkCapture()
        except _capture.CaptureUnavailable as problem:
            raise SkipTest(str(problem)) from None
        self.tcpdumpPath = shutil.which("tcpdump")
        if self.tcpdumpPath is None:
            raise SkipTest("no tcpdump to compare with (apt-get install tcpdump)")

    async def startTwist(self, *listen: str) -> int:
        """
        Start ``twist hellotcp`` on a loopback port (and ``listen``).
        """
        port = freePort()
        await self.startServer(
            [
                command("twist"),
                "hellotcp",
                "--listen",
                f"tcp:{port}:interface=127.0.0.1",
                *listen,
            ],
            port,
        )
        return port

    async def tcpdump(self, port: int) -> Process:
        """
        Start tcpdump on loopback ``port`` and wait until it captures.
        """
        assert self.tcpdumpPath is not None
        process = self.spawn(
            [
                self.tcpdumpPath,
                "-i",
                "lo",
                "-nn",
                "-S",
                "-tt",
                "-l",
                "--immediate-mode",
                f"tcp port {port}",
            ]
        )
        for _ in range(int(TIMEOUT / 0.02)):
            if b"listening on" in process.err or process.ended.called:
                break
            await deferLater(reactor, 0.02)
        self.assertIn(b"listening on", process.err, process.err)
        return process

    async def stopTcpdump(self, process: Process, port: int, count: int) -> str:
        """
        Wait until tcpdump has shown ``count`` segments of client ``port``
        (bounded by `TIMEOUT`), then stop it and return its output.
        """
        for _ in range(int(TIMEOUT / 0.02)):
            if len(tcpdumpSegments(process.out.decode(), port)) >= count:
                break
            await deferLater(reactor, 0.02)
        assert process.transport is not None
        process.transport.signalProcess("INT")
        await process.ended.addTimeout(TIMEOUT, reactor)
        return process.out.decode()

    async def packets(
        self, connect: str, *argv: str
    ) -> tuple[int, dict[str, Any], str]:
        """
        Run ``hellotcp-client --trace --packets --json`` while tcpdump
        watches the server's port; check the record's segments against
        tcpdump's.

        :returns: The exit status, the exchange's record and tcpdump's
            output.
        """
        port = int(connect.rsplit(":", 1)[1])
        dumping = await self.tcpdump(port)
        status, out, err = await self.runCommand(packetsJSON(connect, *argv))
        self.assertEqual(err, "")
        record = json.loads(out.splitlines()[0])
        segments = record["segments"]
        clientPort = int(record["local"].rsplit(":", 1)[1]) if record["local"] else None
        if clientPort is None:
            # A refused connection has no local address to report: its port
            # is the first segment's, as tcpdump shows it.
            clientPort = await self.portOfFirstSYN(dumping, port)
        text = await self.stopTcpdump(dumping, clientPort, len(segments))
        self.assertMatchesTcpdump(segments, tcpdumpSegments(text, clientPort))
        return status, record, text

    async def portOfFirstSYN(self, dumping: Process, serverPort: int) -> int:
        """
        The client port of the first SYN tcpdump shows to ``serverPort``
        (waiting for it at most `TIMEOUT` seconds).
        """
        for _ in range(int(TIMEOUT / 0.02)):
            for line in dumping.out.decode().splitlines():
                match = _TCPDUMP_LINE.match(line)
                if (
                    match
                    and match["flags"] == "S"
                    and int(match["dport"]) == serverPort
                ):
                    return int(match["sport"])
            await deferLater(reactor, 0.02)
        self.fail(f"tcpdump saw no SYN: {dumping.out!r}")

    def assertMatchesTcpdump(
        self, drawn: list[dict[str, Any]], seen: list[dict[str, Any]]
    ) -> None:
        """
        The drawn segments are tcpdump's, one for one: direction, flags,
        absolute numbers (where tcpdump prints them) and length; and the
        relative numbers are the absolute ones less each side's initial
        number.
        """
        self.assertEqual(len(drawn), len(seen), (drawn, seen))
        isn = {s["from"]: s["seq_absolute"] for s in drawn if "SYN" in s["flags"]}
        for ours, theirs in zip(drawn, seen, strict=True):
            self.assertEqual(ours["from"], theirs["from"])
            self.assertEqual(set(ours["flags"].split("-")), theirs["flags"])
            self.assertEqual(ours["len"], theirs["len"])
            if theirs["seq"] is not None:
                self.assertEqual(ours["seq_absolute"], theirs["seq"])
            if theirs["ack"] is not None:
                self.assertEqual(ours["ack_absolute"], theirs["ack"])
            other = "server" if ours["from"] == "client" else "client"
            if ours["from"] in isn:
                self.assertEqual(
                    ours["seq"], (ours["seq_absolute"] - isn[ours["from"]]) % 2**32
                )
            if ours["ack"] is not None and other in isn:
                self.assertEqual(
                    ours["ack"], (ours["ack_absolute"] - isn[other]) % 2**32
                )

    def assertFigureArithmetic(self, segments: list[dict[str, Any]], sent: int) -> None:
        """
        The handshake and the numbers as the figure has them: the SYN-ACK
        acknowledges x+1, the client's data starts at x+1, the answer is
        acknowledged at y+1+len, each FIN consumes one number.
        """
        syn, synAck, ack = segments[:3]
        self.assertEqual((syn["from"], syn["flags"], syn["seq"]), ("client", "SYN", 0))
        self.assertEqual(
            (synAck["from"], synAck["flags"], synAck["seq"], synAck["ack"]),
            ("server", "SYN-ACK", 0, 1),
        )
        self.assertEqual((ack["flags"], ack["seq"], ack["ack"]), ("ACK", 1, 1))
        data = [s for s in segments if s["from"] == "client" and s["len"]]
        self.assertEqual((data[0]["seq"], sum(s["len"] for s in data)), (1, sent))
        answer = [s for s in segments if s["from"] == "server" and s["len"]]
        received = sum(s["len"] for s in answer)
        fins = {s["from"]: s for s in segments if "FIN" in s["flags"]}
        self.assertEqual(set(fins), {"client", "server"})
        self.assertEqual(fins["client"]["seq"], 1 + sent)
        self.assertEqual(fins["server"]["seq"], 1 + received)
        acks = {(s["from"], s["ack"]) for s in segments if s["ack"] is not None}
        # The answer is acknowledged, then the server's FIN, one number on.
        self.assertIn(("client", 1 + received), acks)
        self.assertIn(("client", 2 + received), acks)
        self.assertIn(("server", 2 + sent), acks)

    async def test_twist(self) -> None:
        """
        Against ``twist hellotcp``: the ten segments of a greeting with a
        half-close, as tcpdump saw them, with the figure's arithmetic.
        """
        port = await self.startTwist()
        status, record, _ = await self.packets(f"tcp:127.0.0.1:{port}")
        self.assertEqual((status, record["outcome"]), (0, "greeted"))
        segments = record["segments"]
        self.assertFigureArithmetic(segments, 14)
        self.assertEqual(
            [s["payload"] for s in segments if s["payload"]],
            ['"Hello, server!"', '"Hello, client!"'],
        )
        summary = record["packets"]
        self.assertEqual(
            (summary["client_segments"], summary["server_segments"]),
            (
                sum(s["from"] == "client" for s in segments),
                sum(s["from"] == "server" for s in segments),
            ),
        )
        self.assertEqual(summary["retransmissions"], 0)
        self.assertEqual(summary["kernel_retransmissions"], record["retransmits"])
        self.assertEqual(summary["client_isn"], segments[0]["seq_absolute"])
        self.assertGreater(summary["handshake_rtt_ms"], 0)
        self.assertLessEqual(summary["handshake_rtt_ms"], segments[1]["ms"])
        # hellotcp answers a whole message: after the client's FIN.
        greeting = next(s for s in segments if s["payload"] == '"Hello, client!"')
        self.assertEqual(greeting["ack"], 16)

    async def test_drawing(self) -> None:
        """
        The text: the ordinary drawing, then one arrow per segment with the
        handshake labelled as the figure does, and the summary.
        """
        port = await self.startTwist()
        status, out, err = await self.runCommand(
            [
                command("hellotcp-client"),
                "--trace",
                "--packets",
                "--connect",
                f"tcp:127.0.0.1:{port}",
            ]
        )
        self.assertEqual((status, err), (0, ""))
        ordinary, drawn = out.split("\n\n", 1)
        self.assertIn("SYN, SYN-ACK, ACK", ordinary)
        arrows = [line for line in drawn.splitlines() if line.startswith("|")]
        self.assertEqual(len(arrows), 10, drawn)
        self.assertRegex(arrows[0], r"^\|-+ SYN Seq=0 -+>\| .*\(Seq=x\)$")
        self.assertRegex(
            arrows[1], r"^\|<-+ SYN-ACK Seq=0 Ack=1 -+\| .*\(Seq=y, Ack=x\+1\)$"
        )
        self.assertRegex(
            arrows[2], r"^\|-+ ACK Seq=1 Ack=1 -+>\| .*\(Seq=x\+1, Ack=y\+1\)$"
        )
        self.assertRegex(arrows[3], r'PSH-ACK Seq=1 Ack=1 Len=14 .* "Hello, server!"$')
        self.assertRegex(
            drawn.strip().splitlines()[-1],
            r"^6 segments client to server, 4 segments server to client, "
            r"0 retransmissions \(the kernel counted 0\); handshake rtt [\d.]+ ms",
        )

    async def test_tls(self) -> None:
        """
        Under TLS the payloads are named by their records: the client's
        first is a ClientHello, the server's first a ServerHello.
        """
        pki = PKI(self.folder)
        tlsPort = freePort()
        await self.startTwist(*tlsListen(tlsPort, *pki.server))
        status, record, _ = await self.packets(
            f"tcp:localhost:{tlsPort}", "--tls", "--ca", pki.ca
        )
        self.assertEqual((status, record["outcome"]), (0, "greeted"))
        segments = record["segments"]
        payloads = [(s["from"], s["payload"]) for s in segments if s["payload"]]
        self.assertEqual(payloads[0], ("client", "TLS ClientHello"))
        self.assertEqual(payloads[1][0], "server")
        self.assertTrue(payloads[1][1].startswith("TLS ServerHello"), payloads)
        self.assertEqual(segments[1]["flags"], "SYN-ACK")
        self.assertEqual(segments[1]["ack"], 1)
        fins = [s for s in segments if "FIN" in s["flags"]]
        self.assertEqual(len(fins), 2)

    async def test_ipv6(self) -> None:
        """
        Over IPv6 loopback.
        """
        if not socket.has_ipv6:
            raise SkipTest("no IPv6")
        port = freePort()
        await self.startTwist("--listen", f"tcp6:{port}:interface=\\:\\:1")
        status, record, text = await self.packets(f"tcp:\\:\\:1:{port}")
        self.assertEqual((status, record["outcome"]), (0, "greeted"))
        self.assertTrue(record["local"].startswith("[::1]:"))
        self.assertIn(" IP6 ::1.", text)
        self.assertFigureArithmetic(record["segments"], 14)

    async def test_classicServer(self) -> None:
        """
        Against the classic server (the tutorial's): it answers as soon as
        its one ``recv`` returns and closes at once; the drawing still
        matches tcpdump's, and its numbers the figure's.
        """
        port = freePort()
        await self.startServer(
            [
                sys.executable,
                os.path.join(CHECKOUT, "docs", "examples", "tcp_server.py"),
                str(port),
            ],
            port,
        )
        status, record, _ = await self.packets(f"tcp:127.0.0.1:{port}")
        self.assertEqual((status, record["outcome"]), (0, "greeted"))
        self.assertFigureArithmetic(record["segments"], 14)

    async def test_reset(self) -> None:
        """
        A server that resets after reading: the drawing ends with its RST,
        the exit status is the one without ``--packets``.
        """
        port, served = serveInThread(2, resetAfter(b""))
        where = f"tcp:127.0.0.1:{port}"
        status, record, _ = await self.packets(where)
        self.assertEqual(record["segments"][-1]["from"], "server")
        self.assertIn("RST", record["segments"][-1]["flags"])
        without, _, _ = await self.runCommand(
            [command("hellotcp-client"), "--trace", "--connect", where]
        )
        self.assertEqual(status, without)
        self.assertNotEqual(status, 0)
        await served

    async def test_refused(self) -> None:
        """
        A closed port: the SYN, answered by a reset that acknowledges x+1;
        no handshake to time; the exit status is the one without
        ``--packets``.
        """
        where = f"tcp:127.0.0.1:{freePort()}"
        status, record, _ = await self.packets(where)
        self.assertEqual(record["outcome"], "refused")
        self.assertEqual(
            [(s["from"], s["flags"], s["seq"], s["ack"]) for s in record["segments"]],
            [("client", "SYN", 0, None), ("server", "RST-ACK", 0, 1)],
        )
        self.assertIsNone(record["packets"]["handshake_rtt_ms"])
        without, _, _ = await self.runCommand(
            [command("hellotcp-client"), "--trace", "--connect", where]
        )
        self.assertEqual(status, without)
        self.assertNotEqual(status, 0)

    async def test_unrelatedTraffic(self) -> None:
        """
        Other connections to the same server port, from this host, while the
        capture runs, are not drawn: the drawing holds exactly the
        segments tcpdump saw of the client's own connection.
        """
        port = await self.startTwist()
        stop = threading.Event()
        counted: list[int] = []

        def load() -> None:
            # Bounded in count and time.
            for _ in range(2000):
                if stop.is_set():
                    break
                classicClient(port)
                counted.append(1)

        loading = inThread(load)
        try:
            for _ in range(500):
                if len(counted) >= 5:
                    break
                await deferLater(reactor, 0.01)
            status, record, text = await self.packets(f"tcp:127.0.0.1:{port}")
        finally:
            stop.set()
            await loading
        self.assertEqual(status, 0)
        self.assertFigureArithmetic(record["segments"], 14)
        self.assertEqual(len(record["segments"]), 10)
        # The other connections were there, in the same instants.
        ports = set(re.findall(rf" 127\.0\.0\.1\.(\d+) > 127\.0\.0\.1\.{port}:", text))
        self.assertGreater(len(ports), 1)

    async def test_series(self) -> None:
        """
        ``--count`` with ``--concurrency``: each exchange draws its own
        connection.
        """
        port = await self.startTwist()
        status, out, err = await self.runCommand(
            packetsJSON(
                f"tcp:127.0.0.1:{port}",
                *("--count", "4", "--concurrency", "4", "--interval", "0"),
            )
        )
        self.assertEqual((status, err), (0, ""))
        records = [json.loads(line) for line in out.splitlines()][:4]
        self.assertEqual(len({r["local"] for r in records}), 4)
        for record in records:
            self.assertFigureArithmetic(record["segments"], 14)
            isn = record["segments"][0]["seq_absolute"]
            self.assertEqual(record["packets"]["client_isn"], isn)

    async def test_withoutPrivilege(self) -> None:
        """
        Without ``CAP_NET_RAW``: one line says so and how to grant it, the
        ordinary drawing follows, the exit status is unchanged.
        """
        port = await self.startTwist()
        where = f"tcp:127.0.0.1:{port}"
        argv = [command("hellotcp-client"), "--trace", "--packets", "--connect", where]
        status, out, err = await self.runCommand(dropNetRaw(argv))
        self.assertEqual(status, 0, err)
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertIn("needs root or CAP_NET_RAW", err)
        self.assertIn("setcap cap_net_raw+ep", err)
        self.assertNotIn("Traceback", err)
        self.assertIn("SYN, SYN-ACK, ACK", out)
        self.assertNotIn("Seq=", out)
        status, out, err = await self.runCommand(dropNetRaw([*argv, "--json"]))
        self.assertEqual((status, len(err.splitlines())), (0, 1))
        self.assertNotIn("segments", json.loads(out.splitlines()[0]))
        status, _, err = await self.runCommand(
            dropNetRaw(
                [
                    command("hellotcp-client"),
                    "--trace",
                    "--packets",
                    "--connect",
                    f"tcp:127.0.0.1:{freePort()}",
                ]
            )
        )
        self.assertNotEqual(status, 0)
        self.assertEqual(len(err.splitlines()), 1, err)


class UsageTests(CommandTestCase):
    """
    ``--packets`` on the command line.
    """

    async def test_needsTrace(self) -> None:
        """
        ``--packets`` without ``--trace`` is a usage error: one line, exit 2.
        """
        for argv in (["--packets"], ["--packets", "--json"]):
            status, _, err = await self.runCommand([command("hellotcp-client"), *argv])
            self.assertEqual(status, 2)
            self.assertEqual(
                err, "hellotcp-client: error: --packets goes with --trace\n"
            )

    async def test_needsTCP(self) -> None:
        """
        ``--packets`` with an endpoint that is not TCP: one line, exit 2.
        """
        status, _, err = await self.runCommand(
            [
                command("hellotcp-client"),
                "--trace",
                "--packets",
                "--connect",
                "unix:/nowhere",
            ]
        )
        self.assertEqual(status, 2)
        self.assertOneLine(status, err, "is not a tcp:, tls: or ssl: endpoint")
