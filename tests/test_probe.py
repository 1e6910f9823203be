"""
Unit tests for `hellotcp.probe`: the measured exchange, its drawing, and the
statistics, on in-memory transports and a fake clock.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol, ITCPTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from hellotcp import HelloServerFactory, ServerSettings
from hellotcp.probe import (
    ExchangeRecord,
    Statistics,
    TLSDetails,
    TracingClientProtocol,
    drawExchange,
    pingLine,
    probe,
)
from hellotcp.testing import MemoryEndpoint

from .support import HalfCloseableTransport


def describe(failure: Failure) -> tuple[str, str]:
    """
    Name failures the way the client would, roughly.
    """
    return type(failure.value).__name__, str(failure.value) or "?"


def measured() -> ExchangeRecord:
    """
    A complete TLS exchange, as the probe records one.
    """
    return ExchangeRecord(
        sequence=1,
        started=10.0,
        message=b"Hello, server!",
        connected=10.0005,
        tlsDone=10.003,
        firstByte=10.004,
        ended=10.0045,
        local="127.0.0.1:40000",
        remote="127.0.0.1:5001",
        response=b"Hello, client!",
        closedBy="server",
        tls=TLSDetails(
            version="TLSv1.3",
            cipher="TLS_AES_256_GCM_SHA384",
            subject="CN=localhost",
            issuer="CN=hellotcp private CA",
            names=["localhost", "127.0.0.1"],
            daysLeft=42,
        ),
        rttMs=0.05,
        rttVarMs=0.02,
        retransmits=0,
    )


class TracingTests(SynchronousTestCase):
    """
    `TracingClientProtocol` records each step on the clock.
    """

    def test_steps(self) -> None:
        """
        Connection, half-close, first byte and the server's close are
        recorded with the clock's times and the addresses.
        """
        clock = Clock()
        clock.advance(100)
        record = ExchangeRecord(1, clock.seconds(), b"Hi")
        protocol = TracingClientProtocol(record, clock)
        transport = HalfCloseableTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 40000),
            peerAddress=IPv4Address("TCP", "127.0.0.1", 5000),
        )
        clock.advance(0.001)
        protocol.makeConnection(transport)
        clock.advance(0.002)
        protocol.dataReceived(b"Hello, ")
        clock.advance(0.001)
        protocol.dataReceived(b"client!")
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.successResultOf(protocol.response), b"Hello, client!")
        data = record.asJSON()
        self.assertEqual(
            {
                k: data[k]
                for k in ("local", "remote", "connect_ms", "first_byte_ms", "total_ms")
            },
            {
                "local": "127.0.0.1:40000",
                "remote": "127.0.0.1:5000",
                "connect_ms": 1.0,
                "first_byte_ms": 3.0,
                "total_ms": 4.0,
            },
        )
        self.assertEqual(
            (data["closed_by"], data["client_half_closed"]), ("server", True)
        )
        self.assertIsNone(data["rtt_ms"])  # no kernel socket in memory


@implementer(IHalfCloseableProtocol)
class PartAnswer(Protocol):
    """
    A server that sends part of a greeting at once, and resets the
    connection when it hears the end of the client's message.
    """

    transport: ITCPTransport

    def connectionMade(self) -> None:
        """
        Answer in part.
        """
        self.transport.write(b"Hello, cl")

    def readConnectionLost(self) -> None:
        """
        Reset the connection.
        """
        self.transport.abortConnection()

    def writeConnectionLost(self) -> None:
        """
        Not used: this server never half-closes.
        """


class ProbeTests(SynchronousTestCase):
    """
    `probe` never fails: failures are recorded.
    """

    def test_timeout(self) -> None:
        """
        A server that never answers is a recorded timeout, with the time it
        took and the client as the one who closed.
        """
        clock = Clock()
        endpoint = MemoryEndpoint(clock, Factory.forProtocol(Protocol))
        result = probe(clock, endpoint, 7, b"Hi", 2.0, None, describe)
        endpoint.flush()
        clock.advance(2.0)
        record = self.successResultOf(result)
        self.assertEqual((record.sequence, record.outcome), (7, "TimeoutError"))
        self.assertEqual((record.totalMs, record.closedBy), (2000.0, "client"))
        self.assertTrue(endpoint.connections[0].clientTransport.disconnecting)

    def test_answer(self) -> None:
        """
        An answered exchange is recorded as greeted with the response.
        """
        clock = Clock()
        endpoint = MemoryEndpoint(clock, HelloServerFactory(ServerSettings(), clock))
        result = probe(clock, endpoint, 1, b"Hi", 2.0, None, describe)
        endpoint.flush()
        record = self.successResultOf(result)
        self.assertEqual(
            (record.outcome, record.response), ("greeted", b"Hello, client!")
        )
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_answerCutShort(self) -> None:
        """
        Part of an answer, then a reset: a failed exchange (not greeted),
        whose record keeps the part received.
        """
        clock = Clock()
        endpoint = MemoryEndpoint(clock, Factory.forProtocol(PartAnswer))
        result = probe(clock, endpoint, 1, b"Hi", 2.0, None, describe)
        endpoint.flush()
        record = self.successResultOf(result)
        self.assertEqual(
            (record.outcome, record.response, record.closedBy),
            ("AnswerCutShortError", b"Hello, cl", "reset"),
        )
        self.assertIn("RST", drawExchange(record))
        statistics = Statistics()
        statistics.add(record)
        self.assertEqual((statistics.sent, statistics.exitStatus()), (1, 2))


class DrawingTests(SynchronousTestCase):
    """
    `drawExchange` draws what was measured, step by step.
    """

    def test_tls(self) -> None:
        """
        A TLS exchange: the TCP handshake, the TLS handshake with the
        certificate, the message, the greeting, the close, and the totals.
        """
        drawing = drawExchange(measured())
        lines = drawing.splitlines()
        self.assertEqual(lines[0].split(), ["client", "server"])
        self.assertEqual(lines[1].split(), ["127.0.0.1:40000", "127.0.0.1:5001"])
        self.assertIn(
            "SYN, SYN-ACK, ACK --------------->|  connected in 0.50 ms", lines[2]
        )
        self.assertIn("TLS TLSv1.3", lines[3])
        self.assertIn("handshake done at 3.00 ms, TLS_AES_256_GCM_SHA384", lines[3])
        self.assertIn("subject CN=localhost", lines[4])
        self.assertIn("issuer CN=hellotcp private CA", lines[5])
        self.assertIn("names localhost, 127.0.0.1; expires in 42 days", lines[6])
        self.assertIn('"Hello, server!" --------------->|  14 bytes sent', lines[7])
        self.assertIn('|<--------------- "Hello, client!"', lines[8])
        self.assertIn("first after 4.00 ms", lines[8])
        self.assertIn("|<--------------------- FIN", lines[9])
        self.assertIn(
            "total 4.50 ms, greeted; kernel rtt 0.050 ms (±0.020), 0 retransmissions",
            lines[10],
        )
        self.assertNotIn("\x1b[", drawing)
        for line in lines[2:]:
            self.assertEqual(line.index("|", 1), 50, line)

    def test_colour(self) -> None:
        """
        With colour, the arrows and the verdict are painted.
        """
        drawing = drawExchange(measured(), colour=True)
        self.assertIn("\x1b[36m|---", drawing)
        self.assertIn("\x1b[32mgreeted\x1b[0m", drawing)

    def test_noTCP(self) -> None:
        """
        Without TCP figures (a UNIX socket) there is no TCP handshake line
        and no kernel round-trip time.
        """
        record = measured()
        record.rttMs = record.rttVarMs = record.retransmits = None
        record.tls = None
        drawing = drawExchange(record)
        self.assertNotIn("SYN", drawing)
        self.assertIn("-- connect --", drawing)
        self.assertNotIn("kernel rtt", drawing)

    def test_longMessage(self) -> None:
        """
        A long message or answer is cut on its arrow (28 bytes and ``...``),
        so that every arrow keeps the drawing's width.
        """
        record = measured()
        record.message = b"x" * 1500
        record.response = b"y" * 900
        lines = drawExchange(record).splitlines()
        handshake = next(line for line in lines if "SYN" in line).split("  ")[0]
        arrows = [
            line.split("  ")[0]
            for line in lines
            if line.startswith("|") and ("xx" in line or "yy" in line)
        ]
        self.assertEqual(len(arrows), 2)
        self.assertIn('"' + "x" * 28 + '"...', arrows[0])
        self.assertEqual({len(arrow) for arrow in arrows}, {len(handshake)})

    def test_refused(self) -> None:
        """
        A refused connection draws the attempt and why it failed.
        """
        record = ExchangeRecord(3, 0.0, b"Hi", ended=0.001)
        record.outcome, record.error = "refused", "connection refused by tcp:x:1"
        drawing = drawExchange(record)
        self.assertIn("connection refused by tcp:x:1", drawing)
        self.assertIn("total 1.00 ms, refused: connection refused by tcp:x:1", drawing)


class StatisticsTests(SynchronousTestCase):
    """
    `Statistics` and `pingLine`.
    """

    def record(
        self, sequence: int, ms: float | None, outcome: str = "greeted"
    ) -> ExchangeRecord:
        """
        A record that took C{ms} milliseconds.
        """
        record = ExchangeRecord(sequence, 0.0, b"Hi", response=b"Hello, client!")
        record.ended = None if ms is None else ms / 1000
        if outcome != "greeted":
            record.outcome, record.error, record.response = outcome, "it failed", b""
        return record

    def test_figures(self) -> None:
        """
        Min, median, p99 and max of the greeted, and failures by reason.
        """
        statistics = Statistics()
        for sequence, ms in enumerate([4.0, 1.0, 3.0, 2.0], 1):
            statistics.add(self.record(sequence, ms))
        statistics.add(self.record(5, None, "refused"))
        self.assertEqual(
            statistics.percentiles(),
            {"min": 1.0, "median": 2.5, "p99": 4.0, "max": 4.0},
        )
        self.assertEqual(
            statistics.render("tcp:x:1").splitlines(),
            [
                "--- tcp:x:1 hellotcp statistics ---",
                "5 sent, 4 greeted, 1 failed (refused: 1)",
                "min/median/p99/max = 1.000/2.500/4.000/4.000 ms",
            ],
        )
        self.assertEqual(statistics.asJSON()["failed"], {"refused": 1})

    def test_exitStatus(self) -> None:
        """
        0 when all were greeted, 1 when some failed, 2 when none was greeted.
        """
        statistics = Statistics()
        statistics.add(self.record(1, 1.0))
        self.assertEqual(statistics.exitStatus(), 0)
        statistics.add(self.record(2, None, "timeout"))
        self.assertEqual(statistics.exitStatus(), 1)
        failing = Statistics()
        failing.add(self.record(1, None, "timeout"))
        self.assertEqual((failing.exitStatus(), failing.percentiles()), (2, None))

    def test_pingLine(self) -> None:
        """
        One line per exchange, with its sequence number and time.
        """
        self.assertEqual(
            pingLine(self.record(3, 1.5), "tcp:x:1"),
            '14 bytes from tcp:x:1: seq=3 time=1.50 ms greeted "Hello, client!"',
        )
        self.assertEqual(
            pingLine(self.record(4, None, "refused"), "tcp:x:1"),
            "from tcp:x:1: seq=4 refused: it failed",
        )
