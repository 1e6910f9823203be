"""
Helpers the test modules share: blocking-socket peers, free ports, and
`CommandTestCase`, which runs the installed commands as users run them and
holds every server it starts to a clean log.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.interfaces import IReactorProcess, IReactorTime
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

_T = TypeVar("_T")

TIMEOUT = 10.0
"""No socket operation or command in these tests may take longer than this."""

BIN = os.path.dirname(sys.executable)


def command(name: str) -> str:
    """
    The path of an installed console script beside this Python.
    """
    return os.path.join(BIN, name)


def freePort() -> int:
    """
    A loopback TCP port nobody listens on (free a moment ago).
    """
    with socket.create_server(("127.0.0.1", 0)) as sock:
        return int(sock.getsockname()[1])


def inThread(function: Callable[..., _T], *args: Any) -> Deferred[_T]:
    """
    Run a blocking-socket peer in a thread, so the reactor under test keeps
    serving while it waits.
    """
    return deferToThread(function, *args)


def connect(port: int) -> socket.socket:
    """
    A blocking client socket connected to the server under test.
    """
    return socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)


def readToEnd(sock: socket.socket) -> bytes:
    """
    Read until the server closes.
    """
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def classicClient(port: int) -> tuple[bytes, float]:
    """
    The classic blocking-socket client: send without terminator or
    half-close, one ``recv(1024)``, close.

    :returns: What the one ``recv`` returned, and the seconds it took.
    """
    started = time.monotonic()
    with connect(port) as sock:
        sock.sendall(b"Hello, server!")
        answer = sock.recv(1024)
    return answer, time.monotonic() - started


# Signs of a failure that must never reach a server's log.
_FORBIDDEN = ("Traceback (most recent call last)", "Unhandled Error", "RecursionError")

# A text record: twist's or twistd's timestamp, then the system in brackets.
_TEXT_RECORD = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} \[[^\]]*\] ")

# The one line a command prints on standard error when it cannot go on.
_COMMAND_ERROR = re.compile(r"^hellotcp: error: [^\n]+$")

# The levels of a record that a test must expect explicitly.
_ALARMING = ("error", "critical")


def logProblems(
    text: str, allowedErrors: Sequence[str] = (), maxRecords: int | None = None
) -> list[str]:
    """
    What is wrong with a server's log: a traceback, an ``Unhandled Error``, a
    line that is not a whole record (text or JSON, one per line), an error
    record that the test did not expect, or more records than the test's
    exchanges explain.

    :param allowedErrors: Substrings of the error records the test expects.
    :param maxRecords: The most records the log may hold, if the test knows.
    :returns: One sentence per problem; none for a clean log.
    """
    problems = [f"the log holds {marker!r}" for marker in _FORBIDDEN if marker in text]
    records = 0
    for line in text.splitlines():
        line = line.lstrip("\x1e")
        if not line.strip():
            continue
        records += 1
        level = None
        if line.startswith("{"):
            try:
                event = json.loads(line)
            except ValueError:
                problems.append(f"not a whole JSON record: {line[:200]!r}")
                continue
            level = (event.get("log_level") or {}).get("name")
        elif _COMMAND_ERROR.match(line):
            continue
        elif _TEXT_RECORD.match(line):
            level = line.partition("#")[2].partition("]")[0] or None
        else:
            problems.append(f"not a whole log record: {line[:200]!r}")
            continue
        if level in _ALARMING and not any(a in line for a in allowedErrors):
            problems.append(f"an unexpected {level} record: {line[:300]!r}")
    if maxRecords is not None and records > maxRecords:
        problems.append(f"{records} records where at most {maxRecords} are explained")
    return problems


def _logFiles(argv: Sequence[str], folder: str) -> list[str]:
    """
    The log files a ``twist`` or ``twistd`` command line writes to.
    """
    files = []
    for index, argument in enumerate(argv):
        for option in ("--log-file", "--logfile", "-l"):
            if argument.startswith(option + "="):
                files.append(argument.split("=", 1)[1])
            elif argument == option and index + 1 < len(argv):
                files.append(argv[index + 1])
    return [os.path.join(folder, f) for f in files if f != "-"]


class Process(ProcessProtocol):
    """
    A subprocess whose output is kept and whose end is awaited.

    :ivar ended: Fires with the exit status (or minus the signal number).
    :ivar allowedErrors: For a server: substrings of the error records its
        test expects (anything else at error level fails the test).
    :ivar maxRecords: For a server: the most log records its test explains.
    """

    def __init__(self) -> None:
        self.out = b""
        self.err = b""
        self.ended: Deferred[int] = Deferred()
        self.allowedErrors: list[str] = []
        self.maxRecords: int | None = None

    def outReceived(self, data: bytes) -> None:
        """
        Keep standard output.
        """
        self.out += data

    def errReceived(self, data: bytes) -> None:
        """
        Keep standard error.
        """
        self.err += data

    def processEnded(self, reason: Failure) -> None:
        """
        Fire `ended` with the exit status.
        """
        value = reason.value
        if isinstance(value, ProcessDone):
            self.ended.callback(0)
        elif isinstance(value, ProcessTerminated):
            status = value.exitCode if value.exitCode is not None else -value.signal
            self.ended.callback(status)


class CommandTestCase(TestCase):
    """
    Run installed commands in a scratch folder outside the checkout, with an
    environment that does not point into it.

    Every server a test starts (`startServer`, or `spawn` with
    ``server=True``) is held to a clean log once it has ended: see
    `logProblems`.
    """

    def setUp(self) -> None:
        self.folder = tempfile.mkdtemp(prefix="hellotcp-test-")
        self.addCleanup(shutil.rmtree, self.folder, True)
        self.env = {
            key: value for key, value in os.environ.items() if key != "PYTHONPATH"
        }

    def spawn(
        self,
        argv: Sequence[str],
        env: dict[str, str] | None = None,
        server: bool = False,
    ) -> Process:
        """
        Start ``argv``; the test fails unless it ends within `TIMEOUT`
        seconds after the test, and it is killed if still running.

        :param server: ``argv`` runs a server: its log (output, error stream
            and log files) is held to `assertCleanLog` once it has ended.
        """
        process = Process()
        spawner: IReactorProcess = reactor
        transport = spawner.spawnProcess(
            process,
            argv[0],
            list(argv),
            env=self.env if env is None else env,
            path=self.folder,
        )

        def kill() -> Deferred[int]:
            if not process.ended.called:
                transport.signalProcess("KILL")
            return process.ended

        if server:
            self.addCleanup(self.assertCleanLog, process, _logFiles(argv, self.folder))
        self.addCleanup(kill)
        return process

    def assertCleanLog(self, process: Process, files: Sequence[str] = ()) -> None:
        """
        Fail if the server ``process`` logged a traceback, an unexpected
        error, a record that is not one line, or more records than its test
        explains (on its output, its error stream, and its log files).
        """
        texts = [
            process.out.decode(errors="replace"),
            process.err.decode(errors="replace"),
        ]
        for path in files:
            if os.path.exists(path):
                with open(path, errors="replace") as log:
                    texts.append(log.read())
        problems = logProblems(
            "\n".join(texts), process.allowedErrors, process.maxRecords
        )
        if problems:
            self.fail("the server's log is not clean:\n" + "\n".join(problems[:20]))

    async def runCommand(self, argv: Sequence[str]) -> tuple[int, str, str]:
        """
        Run ``argv`` to its end.

        :returns: The exit status, standard output and standard error.
        """
        process = self.spawn(argv)
        status = await process.ended.addTimeout(TIMEOUT, reactor)
        return status, process.out.decode(), process.err.decode()

    async def startServer(self, argv: Sequence[str], port: int) -> Process:
        """
        Start a server command and wait until ``port`` answers; a hellotcp
        server's log (``twist`` or ``twistd``) is checked once it has ended.
        """
        program = os.path.basename(argv[0])
        hellotcp = program in ("twist", "twistd") or "hellotcp" in argv
        process = self.spawn(argv, server=hellotcp)
        clock: IReactorTime = reactor
        deadline = clock.seconds() + TIMEOUT
        while True:
            self.assertFalse(process.ended.called, process.err.decode())
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return process
            except ConnectionRefusedError:
                self.assertLess(clock.seconds(), deadline, "server never listened")
                await deferLater(clock, 0.05)

    def assertOneLine(self, status: int, stderr: str, expected: str) -> None:
        """
        The command failed with exactly one line on standard error, holding
        ``expected``, and no traceback or usage text.
        """
        self.assertNotEqual(status, 0)
        self.assertEqual(len(stderr.splitlines()), 1, stderr)
        self.assertIn(expected, stderr)
        self.assertNotIn("Traceback", stderr)
        self.assertNotIn("Usage", stderr)
