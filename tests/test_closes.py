"""
Every way a client can end a connection, against a real ``twist hellotcp``:
plain and TLS, directly and behind a PROXY endpoint (v1 and v2), with the
client closing after reading, half-closing TCP after its message, sending a
TLS close alert after its message, or resetting.

Each case checks that the client's answer and the server's logged outcome
agree: ``greeted`` exactly when the client got the greeting (a client that
resets in the middle of its message gets nothing, and the server must say
so), and the server's log holds no traceback (`CommandTestCase` checks).
"""

from __future__ import annotations

import os
import socket
import struct
from typing import Any

from OpenSSL import SSL
from twisted.internet import reactor
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.logger import eventsFromJSONLogFile
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from .pki import PKI
from .support import (
    GREETING,
    PLAIN_ENDINGS,
    RESET_MID_MESSAGE,
    TIMEOUT,
    TLS_ENDINGS,
    CommandTestCase,
    command,
    exchange,
    freePort,
    inThread,
    proxyHeader,
    readAll,
)

# How many connections each case makes.
REPEAT = 2


class ClosesTests(CommandTestCase):
    """
    One ``twist hellotcp`` with four listeners (plain and TLS, each also
    behind a PROXY endpoint), every ending against each.
    """

    async def startGreeter(self) -> None:
        """
        Start the server on fresh ports.
        """
        self.pki = PKI(self.folder)
        self.log = os.path.join(self.folder, "server.log")
        self.ports = {
            (False, False): freePort(),
            (False, True): freePort(),
            (True, False): freePort(),
            (True, True): freePort(),
        }
        self.server = await self.startServer(
            [
                command("twist"),
                "--log-format=json",
                f"--log-file={self.log}",
                "hellotcp",
                "--listen",
                f"tcp:{self.ports[False, False]}:interface=127.0.0.1",
                "--listen",
                f"haproxy:tcp:{self.ports[False, True]}:interface=127.0.0.1",
                "--tls-listen",
                f"tcp:{self.ports[True, False]}:interface=127.0.0.1",
                "--tls-listen",
                f"haproxy:tcp:{self.ports[True, True]}:interface=127.0.0.1",
                "--certificate",
                self.pki.server[0],
                "--private-key",
                self.pki.server[1],
            ],
            self.ports[False, False],
        )

    async def stopGreeter(self) -> list[dict[str, Any]]:
        """
        Stop the server (exit status 0) and return what it logged.
        """
        self.server.transport.signalProcess("TERM")  # type: ignore[union-attr]
        self.assertEqual(await self.server.ended.addTimeout(TIMEOUT, reactor), 0)
        with open(self.log) as lines:
            return [dict(event) for event in eventsFromJSONLogFile(lines)]

    async def runCases(self, tls: bool) -> None:
        """
        Every ending, directly and behind PROXY v1 and v2, `REPEAT` times;
        then each client's answer against the server's record of it.
        """
        await self.startGreeter()
        answers: dict[str, tuple[str, bytes]] = {}
        for proxy in (0, 1, 2):
            port = self.ports[tls, proxy > 0]
            for ending in TLS_ENDINGS if tls else PLAIN_ENDINGS:
                for attempt in range(REPEAT):
                    case = f"{'tls' if tls else 'plain'} proxy-v{proxy} {ending}"
                    message = f"{case.replace(' ', '/')}/{attempt}"
                    answer = await inThread(
                        exchange,
                        port,
                        self.pki.ca if tls else None,
                        proxy,
                        ending,
                        message.encode(),
                    )
                    answers[message] = (ending, answer)
        events = await self.stopGreeter()
        logged = {
            str(event["message"]): event
            for event in events
            if "outcome" in event and event.get("message") in answers
        }
        for message, (ending, answer) in answers.items():
            if ending == RESET_MID_MESSAGE:
                # The reset may discard the message before the server reads
                # it; either way the client got nothing and no greeting is
                # logged (counted below).
                self.assertEqual(answer, b"", message)
                continue
            self.assertEqual(answer, GREETING, message)
            event = logged.get(message)
            self.assertIsNotNone(event, f"{message}: not logged")
            assert event is not None
            self.assertEqual(event["outcome"], "greeted", (message, event))
        # Nothing else was greeted: greetings logged are greetings received.
        # (The readiness probe's empty message aside.)
        greeted = [
            e
            for e in events
            if e.get("outcome") == "greeted" and e.get("message") != ""
        ]
        self.assertEqual(
            len(greeted),
            sum(a == GREETING for _, a in answers.values()),
            [e["message"] for e in greeted],
        )

    async def test_plain(self) -> None:
        """
        Plain TCP, directly and behind PROXY v1 and v2: every ending.
        """
        await self.runCases(tls=False)

    async def test_tls(self) -> None:
        """
        TLS, directly and behind PROXY v1 and v2 (where TLS used to recurse
        endlessly when the client closed, and a client's TCP half-close lost
        its greeting while the server logged it greeted): every ending.
        """
        await self.runCases(tls=True)


class HostileFieldsTests(CommandTestCase):
    """
    Fields a client controls, through a real server's text log.
    """

    async def test_oneRecordPerLine(self) -> None:
        """
        A message with line and paragraph separators and bidi controls, a
        PROXY v1 header with a terminal escape in its address (refused), an
        impossible address (refused), and a PROXY v2 UNIX address holding a
        forged record: each is one line of the text log, escaped, and no
        forged record appears.
        """
        port = freePort()
        log = os.path.join(self.folder, "server.log")
        server = await self.startServer(
            [
                command("twist"),
                "--log-format=text",
                f"--log-file={log}",
                "hellotcp",
                "--listen",
                f"haproxy:tcp:{port}:interface=127.0.0.1",
            ],
            port,
        )
        forged = (
            b"\n2026-01-01T00:00:00+0000 [hellotcp.protocol#info] x greeted: FORGED"
        )
        unix = forged.ljust(108, b"\x00")
        v2unix = (
            b"\r\n\r\n\x00\r\nQUIT\n\x21\x31"
            + struct.pack("!H", 216)
            + unix
            + b"/b".ljust(108, b"\x00")
        )
        attempts = [
            proxyHeader(1) + "one\u2028two\u202eowt\u200b\n".encode(),
            b"PROXY TCP4 1.1.1.1\x1b[31mRED 127.0.0.1 1 2\r\nHi\n",
            b"PROXY TCP4 999.1.1.1 127.0.0.1 1234 5000\r\nHi\n",
            v2unix + b"Hi\n",
        ]

        def send(data: bytes) -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
                s.sendall(data)
                return readAll(lambda: s.recv(1024))

        answers = [await inThread(send, data) for data in attempts]
        self.assertEqual(answers, [GREETING, b"", b"", GREETING])
        server.transport.signalProcess("TERM")  # type: ignore[union-attr]
        self.assertEqual(await server.ended.addTimeout(TIMEOUT, reactor), 0)
        with open(log, encoding="utf-8") as file:
            text = file.read()
        lines = text.splitlines()
        self.assertEqual(len(lines), len(text.split("\n")) - 1, "a line split")
        self.assertFalse([line for line in lines if line.startswith("2026-01-01")])
        for control in ("\x1b", "\u2028", "\u202e", "\u200b"):
            self.assertNotIn(control, text)
        self.assertIn("one\\u2028two\\u202eowt\\u200b", text)
        self.assertIn("\\x1b[31mRED", text)
        self.assertIn("999.1.1.1 is not an IPv4 address", text)
        self.assertIn("\\n2026-01-01T00:00:00+0000 [hellotcp.protocol#info]", text)
        self.assertEqual(text.count("bad-proxy-header"), 2, text)


class _MemoryClient:
    """
    A TLS client on memory BIOs, trusting ``ca``, for in-memory exchanges.
    """

    def __init__(self, ca: str) -> None:
        context = SSL.Context(SSL.TLS_CLIENT_METHOD)
        context.load_verify_locations(ca)
        context.set_verify(SSL.VERIFY_PEER, lambda *args: bool(args[-1]))
        self.connection = SSL.Connection(context, None)
        self.connection.set_tlsext_host_name(b"localhost")
        self.connection.set_connect_state()
        self.received = b""
        self.closeAlert = False

    def pending(self) -> bytes:
        """
        The bytes the client has to send.
        """
        data = b""
        while True:
            try:
                data += self.connection.bio_read(65536)
            except SSL.WantReadError:
                return data

    def feed(self, data: bytes) -> None:
        """
        Bytes from the server: decrypt what can be.
        """
        if not data:
            return
        self.connection.bio_write(data)
        while True:
            try:
                self.received += self.connection.recv(65536)
            except SSL.ZeroReturnError:
                self.closeAlert = True
                return
            except SSL.WantReadError:
                return


class InMemoryTLSEndingsTests(SynchronousTestCase):
    """
    `hellotcp.tls.HalfCloseableTLS` around the greeter, on an in-memory
    transport: the ends of a TLS client's message that used to lose the
    greeting.
    """

    def setUp(self) -> None:
        from twisted.internet.address import IPv4Address
        from twisted.internet.task import Clock

        from hellotcp.protocol import HelloServerFactory, ServerSettings
        from hellotcp.tls import (
            CertificateFiles,
            ReloadableServerTLS,
            ServerTLSFiles,
            TLSServerFactory,
        )

        from .support import HalfCloseableTransport, captureLogs

        self.events = captureLogs(self)
        folder = self.mktemp()
        os.makedirs(folder)
        pki = PKI(folder)
        tls = ReloadableServerTLS(
            ServerTLSFiles(CertificateFiles(pki.server[0], pki.server[1]))
        )
        factory = TLSServerFactory(tls, HelloServerFactory(ServerSettings(), Clock()))
        peer = IPv4Address("TCP", "127.0.0.1", 40000)
        protocol = factory.buildProtocol(peer)
        assert protocol is not None
        self.server: Any = protocol
        self.transport = HalfCloseableTransport(peerAddress=peer)
        self.server.makeConnection(self.transport)
        self.client = _MemoryClient(pki.ca)
        for _ in range(10):
            try:
                self.client.connection.do_handshake()
                break
            except SSL.WantReadError:
                self.toServer()
        self.toServer()

    def toServer(self) -> None:
        """
        Carry the client's pending bytes to the server, and its answer back.
        """
        pending = self.client.pending()
        if pending:
            self.server.dataReceived(pending)
        self.client.feed(self.transport.value())
        self.transport.clear()

    def outcome(self) -> str:
        """
        The outcome the server logged.
        """
        [event] = [e for e in self.events if "outcome" in e]
        return str(event["outcome"])

    def test_tcpHalfClose(self) -> None:
        """
        The message, then a TCP half-close without a close alert: the
        greeting and the server's close alert are written before the
        connection is closed, and the exchange is logged greeted.
        """
        self.client.connection.sendall(b"Hi")
        self.toServer()
        self.assertEqual(self.client.received, b"")
        self.server.readConnectionLost()
        self.client.feed(self.transport.value())
        self.assertEqual(self.client.received, GREETING)
        self.assertTrue(self.client.closeAlert)
        self.assertTrue(self.transport.disconnecting)
        self.server.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.outcome(), "greeted")

    def test_closeAlertEndsMessage(self) -> None:
        """
        The message without a line feed, then the client's close alert: the
        alert ends the message, and the greeting comes before the server's
        own alert.
        """
        self.client.connection.sendall(b"Hi")
        self.client.connection.shutdown()
        self.toServer()
        self.assertEqual(self.client.received, GREETING)
        self.assertTrue(self.client.closeAlert)
        self.server.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.outcome(), "greeted")

    def test_lineThenServerHalfCloses(self) -> None:
        """
        A line: greeting and close alert, then the TCP writing side is shut
        (FIN) and its completion marks the greeting delivered, so a reset
        from the client afterwards does not make it lost.
        """
        self.client.connection.sendall(b"Hi\n")
        self.toServer()
        self.assertEqual(self.client.received, GREETING)
        self.assertTrue(self.transport.writeClosed)
        self.server.writeConnectionLost()
        self.server.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(self.outcome(), "greeted")

    def test_resetBeforeFlush(self) -> None:
        """
        A line, then a reset before the transport wrote anything out: the
        greeting was not delivered, and the log says lost.
        """
        self.client.connection.sendall(b"Hi\n")
        self.toServer()
        self.server.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(self.outcome(), "lost")
