"""
The installed commands, run as users run them: ``twist hellotcp``,
``twistd hellotcp`` and ``hellotcp-client``, as subprocesses, from a folder
outside the checkout.
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
import time

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.logger import eventsFromJSONLogFile

from .support import (
    CHECKOUT,
    TIMEOUT,
    CommandTestCase,
    classicClient,
    command,
    connect,
    freePort,
    inThread,
    readToEnd,
)


class TwistTests(CommandTestCase):
    """
    ``twist hellotcp``, installed, in a real process.
    """

    async def test_servesLogsAndStops(self) -> None:
        """
        The server greets the classic client and ``hellotcp-client``, logs
        each exchange as structured JSON, and exits 0 on SIGTERM.
        """
        port = freePort()
        log = os.path.join(self.folder, "hellotcp.log")
        server = await self.startServer(
            [
                command("twist"),
                "--log-format=json",
                f"--log-file={log}",
                "hellotcp",
                "--listen",
                f"tcp:{port}:interface=127.0.0.1",
            ],
            port,
        )
        answer, _ = await inThread(classicClient, port)
        self.assertEqual(answer, b"Hello, client!")
        status, out, err = await self.runCommand(
            [command("hellotcp-client"), "--connect", f"tcp:127.0.0.1:{port}"]
        )
        self.assertEqual((status, out, err), (0, "Hello, client!\n", ""))
        server.transport.signalProcess("TERM")  # type: ignore[union-attr]
        self.assertEqual(await server.ended.addTimeout(TIMEOUT, reactor), 0)
        with open(log) as lines:
            events = list(eventsFromJSONLogFile(lines))
        # The readiness probe connected and closed: an empty message.
        exchanges = [e for e in events if e.get("bytes")]
        self.assertEqual(len(exchanges), 2, events)
        for event in exchanges:
            self.assertEqual(event["outcome"], "greeted")
            self.assertEqual(event["message"], "Hello, server!")
            self.assertEqual(event["bytes"], 14)
            self.assertTrue(event["peer"].startswith("127.0.0.1:"))
            self.assertGreaterEqual(event["duration"], 0)
        # The jq command of docs/operations.md reads the same file.
        with open(os.path.join(CHECKOUT, "docs", "operations.md")) as page:
            [shown] = [line for line in page if line.startswith("jq ")]
        argv = shlex.split(shown.replace("/var/log/hellotcp.json", log))
        jq = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT)
        self.assertEqual(jq.returncode, 0, jq.stderr)
        expected = [
            f"{e['peer']} {e['outcome']} {e['duration']}"
            for e in events
            if "outcome" in e
        ]
        self.assertEqual(jq.stdout.splitlines(), expected)
        self.assertGreaterEqual(len(expected), 2)

    async def test_exchangeInFlightFinishesOnSIGTERM(self) -> None:
        """
        An exchange whose message has arrived is answered after SIGTERM,
        before the process exits 0.
        """
        port = freePort()
        server = await self.startServer(
            [
                command("twist"),
                "hellotcp",
                "--listen",
                f"tcp:{port}:interface=127.0.0.1",
                "--message-gap",
                "1",
            ],
            port,
        )
        sock = await inThread(connect, port)
        self.addCleanup(sock.close)
        sock.sendall(b"Hello, server!")
        await deferLater(reactor, 0.3)
        started = time.monotonic()
        server.transport.signalProcess("TERM")  # type: ignore[union-attr]
        self.assertEqual(await inThread(readToEnd, sock), b"Hello, client!")
        self.assertEqual(await server.ended.addTimeout(TIMEOUT, reactor), 0)
        self.assertLess(time.monotonic() - started, 5)

    async def test_badOption(self) -> None:
        """
        A bad option value is one line on standard error and exit status 2.
        """
        status, _, err = await self.runCommand(
            [command("twist"), "hellotcp", "--timeout", "-1"]
        )
        self.assertOneLine(status, err, "--timeout must be a number greater than 0")
        self.assertEqual(status, 2)
        status, _, err = await self.runCommand(
            [command("twist"), "hellotcp", "--listen", "tcp:notaport"]
        )
        self.assertOneLine(status, err, "--listen tcp:notaport: ")

    async def test_portInUse(self) -> None:
        """
        A port in use is one line naming it, and a non-zero exit.
        """
        taken = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(taken.close)
        port = taken.getsockname()[1]
        status, _, err = await self.runCommand(
            [
                command("twist"),
                "hellotcp",
                "--listen",
                f"tcp:{port}:interface=127.0.0.1",
            ]
        )
        self.assertOneLine(
            status,
            err,
            f"cannot listen on tcp:{port}:interface=127.0.0.1: Address already in use",
        )

    async def test_help(self) -> None:
        """
        ``--help`` documents every option with its default.
        """
        status, out, _ = await self.runCommand([command("twist"), "hellotcp", "--help"])
        self.assertEqual(status, 0)
        # usage wraps long words at their hyphens: join them again.
        text = " ".join(out.split()).replace("- ", "-")
        for option, default in [
            ("--listen", "tcp:5000:interface=127.0.0.1, unless --tls-listen is given"),
            ("--greeting", "Hello, client!"),
            ("--timeout", "10"),
            ("--max-message-bytes", "1024"),
            ("--max-connections", "10000"),
            ("--backlog", "4096"),
            ("--shutdown-timeout", "5"),
            ("--message-gap", "0.04"),
            ("--max-connections-per-peer", "2000"),
            ("--deadline", "30"),
            ("--workers", "1"),
            ("--worker-timeout", "10"),
            ("--drain-time", "0"),
        ]:
            self.assertIn(option, text)
            self.assertIn(f"[default: {default}]", text)
        # Every option is in the tables of the README and the operations page.
        from hellotcp.tap import Options

        options = {f"--{name}" for name, *_ in Options.optParameters}
        options |= {"--listen", "--tls-listen"}
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        for page in ("README.md", os.path.join("docs", "operations.md")):
            with open(os.path.join(root, page)) as read:
                documented = read.read()
            for option in options:
                self.assertIn(f"| `{option}`", documented, f"{option} in {page}")


class TwistdTests(CommandTestCase):
    """
    ``twistd hellotcp`` reads the same plugin.
    """

    async def test_twistd(self) -> None:
        """
        ``twistd -n hellotcp`` serves and exits 0 on SIGTERM.
        """
        port = freePort()
        server = await self.startServer(
            [
                command("twistd"),
                "--nodaemon",
                "--pidfile=",
                "--logfile=-",
                "hellotcp",
                "--listen",
                f"tcp:{port}:interface=127.0.0.1",
                "--greeting",
                "Salut",
            ],
            port,
        )
        answer, _ = await inThread(classicClient, port)
        self.assertEqual(answer, b"Salut")
        server.transport.signalProcess("TERM")  # type: ignore[union-attr]
        self.assertEqual(await server.ended.addTimeout(TIMEOUT, reactor), 0)
        self.assertIn(b"greeted: Hello, server!", server.out)


class ClosedOutputTests(CommandTestCase):
    """
    Help read by a reader that stops early (``| head -1``) ends quietly.
    """

    def test_helpIntoClosedPipe(self) -> None:
        """
        ``--help`` written into a pipe whose reader has gone: no traceback,
        nothing on stderr, exit status 0, for each of hellotcp's programs.
        """
        for program in ("hellotcp-client", "hellotcp-certs"):
            reader, writer = os.pipe()
            os.close(reader)  # every write now fails with EPIPE
            try:
                result = subprocess.run(
                    [command(program), "--help"],
                    stdout=writer,
                    stderr=subprocess.PIPE,
                    timeout=TIMEOUT,
                )
            finally:
                os.close(writer)
            self.assertEqual((result.returncode, result.stderr), (0, b""), program)


class ClientCommandTests(CommandTestCase):
    """
    ``hellotcp-client``'s errors: one line each, and a non-zero exit.
    """

    async def test_refused(self) -> None:
        """
        Nobody listening: "connection refused", exit status 1.
        """
        port = freePort()
        status, out, err = await self.runCommand(
            [command("hellotcp-client"), "--connect", f"tcp:127.0.0.1:{port}"]
        )
        self.assertOneLine(status, err, f"connection refused by tcp:127.0.0.1:{port}")
        self.assertEqual((status, out), (1, ""))

    async def test_timeout(self) -> None:
        """
        A server that never answers: a timeout after ``--timeout`` seconds.
        """
        silent = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(silent.close)
        port = silent.getsockname()[1]
        status, _, err = await self.runCommand(
            [
                command("hellotcp-client"),
                "--connect",
                f"tcp:127.0.0.1:{port}",
                "--timeout",
                "0.5",
            ]
        )
        self.assertOneLine(status, err, "no answer from")
        self.assertIn("within 0.5 seconds", err)

    async def test_closedWithoutAnswer(self) -> None:
        """
        A server that closes without answering is told apart.
        """
        listener = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(listener.close)
        listener.settimeout(TIMEOUT)
        port = listener.getsockname()[1]

        def closeAtOnce() -> None:
            connection, _ = listener.accept()
            connection.recv(1024)
            connection.close()

        accepting = inThread(closeAtOnce)
        status, _, err = await self.runCommand(
            [command("hellotcp-client"), "--connect", f"tcp:127.0.0.1:{port}"]
        )
        await accepting
        self.assertOneLine(status, err, "closed the connection without answering")

    async def test_tlsAlertFromPlainRequest(self) -> None:
        """
        A server that answers plain TCP with a TLS alert is a TLS port: the
        client says so instead of printing the alert's bytes.
        """
        listener = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(listener.close)
        listener.settimeout(TIMEOUT)
        port = listener.getsockname()[1]

        def alertServer() -> None:
            connection, _ = listener.accept()
            with connection:
                connection.recv(1024)
                connection.sendall(b"\x15\x03\x03\x00\x02\x02\x46")

        serving = inThread(alertServer)
        status, out, err = await self.runCommand(
            [command("hellotcp-client"), "--connect", f"tcp:127.0.0.1:{port}"]
        )
        await serving
        self.assertOneLine(status, err, "answered in TLS (a TLS alert); use --tls")
        self.assertEqual(out, "")

    async def test_badArguments(self) -> None:
        """
        A malformed endpoint or timeout: one line, exit status 2.
        """
        status, _, err = await self.runCommand(
            [command("hellotcp-client"), "--connect", "bogus:1"]
        )
        self.assertOneLine(status, err, "--connect bogus:1: ")
        self.assertEqual(status, 2)
        status, _, err = await self.runCommand(
            [sys.executable, "-m", "hellotcp.client", "--timeout", "soon"]
        )
        self.assertOneLine(status, err, "--timeout must be a number greater than 0")
        self.assertEqual(status, 2)

    async def test_messageOption(self) -> None:
        """
        ``--message`` is what the server receives, byte for byte (a classic
        server here).
        """
        listener = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(listener.close)
        listener.settimeout(TIMEOUT)
        port = listener.getsockname()[1]

        def classicServer() -> bytes:
            connection, _ = listener.accept()
            with connection:
                data = connection.recv(1024)
                connection.sendall(b"Hello, client!")
                return data

        serving = inThread(classicServer)
        status, out, _ = await self.runCommand(
            [
                sys.executable,
                "-m",
                "hellotcp.client",
                "--connect",
                f"tcp:localhost:{port}",
                "--message",
                "Grüß dich",
            ]
        )
        self.assertEqual(await serving, "Grüß dich".encode())
        self.assertEqual((status, out), (0, "Hello, client!\n"))
