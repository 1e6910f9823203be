"""
``hellotcp-client`` as a probe, run as users run it against a running
``twist hellotcp``: ``--json``, ``--trace``, ``--count``, Ctrl-C and a closed
output.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time

from twisted.internet import reactor
from twisted.internet.task import deferLater

from .pki import PKI, tlsListen, verifiedClient
from .support import (
    TIMEOUT,
    CommandTestCase,
    command,
    freePort,
    greetAfter,
    inThread,
    resetAfter,
    serveInThread,
)


class ProbeCommandTests(CommandTestCase):
    """
    The probe modes of ``hellotcp-client``.
    """

    async def startTwist(self, *listen: str) -> None:
        """
        Start ``twist hellotcp`` listening on plain and, with certificates,
        TLS ports.
        """
        self.port, self.tlsPort = freePort(), freePort()
        self.pki = PKI(self.folder)
        await self.startServer(
            [
                command("twist"),
                "hellotcp",
                "--listen",
                f"tcp:{self.port}:interface=127.0.0.1",
                *tlsListen(self.tlsPort, *self.pki.server),
                *listen,
            ],
            self.tlsPort,
        )

    async def client(self, *argv: str) -> tuple[int, str, str]:
        """
        Run ``hellotcp-client`` with C{argv}.
        """
        return await self.runCommand([command("hellotcp-client"), *argv])

    async def test_json(self) -> None:
        """
        ``--count 3 --json``: three exchange objects and a summary, each a
        line of JSON, exit status 0.
        """
        await self.startTwist()
        status, out, err = await self.client(
            "--connect",
            f"tcp:127.0.0.1:{self.port}",
            "--count",
            "3",
            "--interval",
            "0",
            "--json",
        )
        objects = [json.loads(line) for line in out.splitlines()]
        self.assertEqual((status, err), (0, ""))
        self.assertEqual([o["type"] for o in objects], ["exchange"] * 3 + ["summary"])
        self.assertEqual([o["seq"] for o in objects[:3]], [1, 2, 3])
        for exchange in objects[:3]:
            self.assertEqual(exchange["outcome"], "greeted")
            self.assertEqual(exchange["response"], "Hello, client!")
            self.assertEqual(exchange["remote"], f"127.0.0.1:{self.port}")
            self.assertLessEqual(exchange["connect_ms"], exchange["first_byte_ms"])
            self.assertLessEqual(exchange["first_byte_ms"], exchange["total_ms"])
            self.assertGreater(exchange["rtt_ms"], 0)
            self.assertEqual(exchange["retransmits"], 0)
        summary = objects[3]
        self.assertEqual(
            (summary["sent"], summary["greeted"], summary["failed"]), (3, 3, {})
        )
        self.assertLessEqual(summary["ms"]["min"], summary["ms"]["max"])

    async def test_tlsTrace(self) -> None:
        """
        ``--trace`` over TLS draws the TLS handshake with the certificate.
        """
        await self.startTwist()
        status, out, _ = await self.client(
            *verifiedClient(self.tlsPort, self.pki.ca),
            "--trace",
        )
        self.assertEqual(status, 0)
        self.assertIn("SYN, SYN-ACK, ACK", out)
        self.assertRegex(out, r"TLS TLSv1\.[23]")
        self.assertIn("subject CN=localhost,O=hellotcp", out)
        self.assertIn("names localhost, 127.0.0.1, ::1; expires in", out)
        self.assertIn('"Hello, client!"', out)
        self.assertNotIn("\x1b[", out)  # not a terminal: no colour

    async def test_tlsJSON(self) -> None:
        """
        ``--json`` over TLS carries the TLS details.
        """
        await self.startTwist()
        status, out, _ = await self.client(
            *verifiedClient(self.tlsPort, self.pki.ca),
            "--json",
        )
        exchange, summary = (json.loads(line) for line in out.splitlines())
        self.assertEqual(status, 0)
        self.assertEqual(exchange["tls"]["subject"], "CN=localhost,O=hellotcp")
        self.assertIn(exchange["tls"]["version"], ("TLSv1.2", "TLSv1.3"))
        self.assertLess(exchange["connect_ms"], exchange["tls_ms"])
        self.assertEqual(summary["greeted"], 1)

    async def test_unixTrace(self) -> None:
        """
        Over a UNIX socket there is no TCP line and no kernel round-trip.
        """
        path = os.path.join(self.folder, "hello.sock")
        await self.startTwist("--listen", f"unix:{path}")
        status, out, _ = await self.client("--connect", f"unix:{path}", "--trace")
        self.assertEqual(status, 0)
        self.assertNotIn("SYN", out)
        self.assertNotIn("kernel rtt", out)
        self.assertIn("greeted", out)

    async def test_noneGreeted(self) -> None:
        """
        When no exchange is greeted the exit status is 2, and the summary
        counts the failures by reason.
        """
        port = freePort()
        status, out, _ = await self.client(
            "--connect", f"tcp:127.0.0.1:{port}", "--count", "2", "--interval", "0"
        )
        self.assertEqual(status, 2)
        self.assertIn("2 sent, 0 greeted, 2 failed (refused: 2)", out)
        self.assertIn("seq=1 refused: connection refused", out)

    async def test_interrupt(self) -> None:
        """
        Ctrl-C during ``--count 0`` stops the run, prints the summary and
        exits 0 when every exchange was greeted.
        """
        await self.startTwist()
        process = self.spawn(
            [
                command("hellotcp-client"),
                "--connect",
                f"tcp:127.0.0.1:{self.port}",
                "--count",
                "0",
                "--interval",
                "0.05",
            ]
        )
        for _ in range(int(TIMEOUT / 0.05)):
            if process.out.count(b"seq=") >= 3:
                break
            await deferLater(reactor, 0.05)
        process.transport.signalProcess("INT")  # type: ignore[union-attr]
        status = await process.ended.addTimeout(TIMEOUT, reactor)
        out = process.out.decode()
        self.assertEqual(status, 0, process.err)
        self.assertIn("hellotcp statistics", out)
        self.assertNotIn("Traceback", process.err.decode())

    async def test_closedOutput(self) -> None:
        """
        ``--count 0 --json | head -1`` prints one line and ends at once,
        without a traceback.
        """
        await self.startTwist()
        started = time.monotonic()
        result = subprocess.run(
            [
                "bash",
                "-c",
                f"{command('hellotcp-client')} --connect tcp:127.0.0.1:{self.port} "
                "--count 0 --interval 0 --json | head -1",
            ],
            capture_output=True,
            timeout=TIMEOUT,
            env=self.env,
        )
        self.assertLess(time.monotonic() - started, TIMEOUT)
        self.assertEqual(json.loads(result.stdout)["seq"], 1)
        self.assertEqual(result.stderr, b"")

    async def test_answerCutShortByReset(self) -> None:
        """
        ``Hello, cl`` then a reset is not a greeting: the probe counts it
        failed (``reset``) and exits non-zero; one exchange says why in one
        line and exits 1, printing nothing as the answer.
        """
        port, served = serveInThread(2, resetAfter(b"Hello, cl"))
        where = f"tcp:127.0.0.1:{port}"
        status, out, err = await self.client("--connect", where, "--count", "1")
        self.assertEqual((status, err), (2, ""), out)
        self.assertIn(f"from {where}: seq=1 reset: ", out)
        self.assertIn("1 sent, 0 greeted, 1 failed (reset: 1)", out)
        status, out, err = await self.client("--connect", where)
        self.assertEqual((status, out), (1, ""))
        self.assertEqual(
            err,
            f"hellotcp-client: error: {where}: the connection was reset after 9 "
            "bytes of the answer: "
            '"Hello, cl"\n',
        )
        await served

    async def test_messageNotUTF8(self) -> None:
        """
        ``--message $'\\xff'`` is sent as that byte, in each mode, and
        greeted: never a silent ``0 sent`` success.
        """
        received: list[bytes] = []
        port, served = serveInThread(4, greetAfter(received))
        where = f"tcp:127.0.0.1:{port}"
        for mode in ([], ["--count", "1"], ["--json"], ["--trace"]):
            status, out, err = await self.client(
                "--connect", where, "--message", "\udcff", *mode
            )
            self.assertEqual((status, err), (0, ""), mode)
            self.assertIn("Hello, client!", out)
            if mode == ["--count", "1"]:
                self.assertIn("1 sent, 1 greeted, 0 failed", out)
            if mode == ["--json"]:
                self.assertEqual(json.loads(out.splitlines()[0])["sent_bytes"], 1)
        await served
        self.assertEqual(received, [b"\xff"] * 4)

    async def test_terminate(self) -> None:
        """
        SIGTERM during ``--count 0`` stops the run as Ctrl-C does: the
        summary is printed and the exit status says that nothing was
        greeted (2), not 0.
        """
        process = self.spawn(
            [
                command("hellotcp-client"),
                "--connect",
                f"tcp:127.0.0.1:{freePort()}",
                "--count",
                "0",
                "--interval",
                "0.05",
            ]
        )
        for _ in range(int(TIMEOUT / 0.05)):
            if process.out.count(b"seq=") >= 3:
                break
            await deferLater(reactor, 0.05)
        process.transport.signalProcess("TERM")  # type: ignore[union-attr]
        status = await process.ended.addTimeout(TIMEOUT, reactor)
        out = process.out.decode()
        self.assertEqual((status, process.err), (2, b""), out)
        self.assertIn("hellotcp statistics", out)
        self.assertIn("0 greeted", out)

    async def test_terminateOneExchange(self) -> None:
        """
        SIGTERM while one exchange waits for its answer: one line, exit
        status 1, not a silent 0.
        """
        listener = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(listener.close)
        where = f"tcp:127.0.0.1:{listener.getsockname()[1]}"
        process = self.spawn([command("hellotcp-client"), "--connect", where])
        # The connection is accepted by the kernel (the backlog) and never
        # answered; wait until the client has connected.
        listener.settimeout(TIMEOUT)
        connection, _ = await inThread(listener.accept)
        self.addCleanup(connection.close)
        connection.settimeout(TIMEOUT)
        await inThread(connection.recv, 100)
        process.transport.signalProcess("TERM")  # type: ignore[union-attr]
        status = await process.ended.addTimeout(TIMEOUT, reactor)
        self.assertEqual(
            (status, process.out, process.err.decode()),
            (
                1,
                b"",
                f"hellotcp-client: error: stopped by SIGTERM before {where} answered\n",
            ),
        )
