"""
Helpers the test modules share: blocking-socket peers, free ports,
`CommandTestCase`, which runs the installed commands as users run them and
holds every server it starts to a clean log, in-memory server connections
(`ServerHarness`), scraping the metrics page, signal storms, and exchanges
that end every way a client can end them (`exchange`).

Test modules import from here (and from `tests.pki`), never from one
another.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import socket
import ssl
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from attrs import define, field
from OpenSSL import SSL
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ProcessDone, ProcessTerminated
from twisted.internet.interfaces import (
    IReactorProcess,
    IReactorTime,
)
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, readBody

from hellotcp import protocol as protocolModule
from hellotcp.certs import Issued
from hellotcp.metrics import NO_METRICS, ServerMetrics
from hellotcp.protocol import HelloServerFactory, HelloServerProtocol, ServerSettings

_T = TypeVar("_T")

TIMEOUT = 10.0
"""No socket operation or command in these tests may take longer than this."""

BIN = os.path.dirname(sys.executable)

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
"""The checkout the tests run from (docs, contrib, the Dockerfile)."""


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


# In-memory server connections.

PEER = IPv4Address("TCP", "127.0.0.1", 40000)
"""The client address of in-memory connections."""


def captureLogs(testCase: SynchronousTestCase) -> EventLoggingObserver:
    """
    Collect what `hellotcp.protocol` logs during ``testCase``.

    The events are taken before they reach the global publisher, because
    trial's legacy log observer rewrites the ``message`` field of every event
    it sees (legacy observers reserve that key).
    """
    events = EventLoggingObserver()
    testCase.patch(
        protocolModule, "_log", Logger(namespace="hellotcp.protocol", observer=events)
    )
    return events


class HalfCloseableTransport(StringTransport):
    """
    A `StringTransport` that can close its writing side, as TCP can.

    :ivar writeClosed: Whether `loseWriteConnection` was called.
    """

    writeClosed = False

    def loseWriteConnection(self) -> None:
        """
        Record the half-close.
        """
        self.writeClosed = True


class ServerHarness:
    """
    One server connection on an in-memory transport and clock.
    """

    def __init__(
        self,
        testCase: SynchronousTestCase,
        settings: ServerSettings = ServerSettings(),
        transport: StringTransport | None = None,
        metrics: ServerMetrics = NO_METRICS,
    ) -> None:
        self.clock = Clock()
        self.events = captureLogs(testCase)
        self.factory = HelloServerFactory(settings, self.clock, metrics=metrics)
        self.settings = settings
        self.transport = transport or HalfCloseableTransport(peerAddress=PEER)
        protocol = self.factory.buildProtocol(PEER)
        assert protocol is not None
        self.protocol: HelloServerProtocol = protocol
        protocol.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        """
        Deliver ``data`` to the server as if it arrived from the client.
        """
        self.protocol.dataReceived(data)

    def close(self, reason: Failure = Failure(ConnectionDone())) -> None:
        """
        Tell the server the connection has closed.
        """
        self.protocol.connectionLost(reason)

    def exchanges(self) -> list[dict[str, Any]]:
        """
        The exchange events the server has logged.
        """
        return [dict(event) for event in self.events if "outcome" in event]


def oneLine(text: str) -> bool:
    """
    Whether ``text`` is one line that reads as it is: no line break of any
    kind and no invisible or direction-changing character.
    """
    return len(text.splitlines()) <= 1 and not [
        c
        for c in text
        if ord(c) < 0x20
        or 0x7F <= ord(c) < 0xA0
        or c in "\u061c\u200b\u200c\u200d\u200e\u200f\u2028\u2029\u2060\ufeff"
        or 0x202A <= ord(c) <= 0x202E
        or 0x2066 <= ord(c) <= 0x2069
    ]


# The client side in memory.


# Metrics pages.

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
"""Prometheus samples by name and sorted labels."""


def samples(text: str) -> Samples:
    """
    Every sample of a Prometheus text page, by name and sorted labels.
    """
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def expires(issued: Issued) -> float:
    """
    When a certificate expires, as the metric shows it.
    """
    return issued.certificate.not_valid_after_utc.timestamp()


async def scrape(port: int) -> Samples:
    """
    GET ``/metrics`` from 127.0.0.1:``port``, as Prometheus does, and parse it.
    """
    agent = Agent(reactor)
    response = await agent.request(
        b"GET", f"http://127.0.0.1:{port}/metrics".encode()
    ).addTimeout(TIMEOUT, reactor)
    body = await readBody(response)
    return samples(body.decode())


async def scrapeUntil(port: int, condition: Callable[[Samples], bool]) -> Samples:
    """
    Scrape until ``condition`` holds of the figures (5 s at most), since a
    server counts an exchange when the client has closed, a moment after the
    client has its answer; the last figures are returned either way.
    """
    for _ in range(100):
        figures = await scrape(port)
        if condition(figures):
            break
        await deferLater(reactor, 0.05)
    return figures


# Servers under signals and load.


def hangUpStorm(
    pid: int, before: int = 25, after: int = 300, terminate: bool = True
) -> int:
    """
    SIGHUP ``pid`` ``before`` times, 20 ms apart, then SIGTERM (unless
    ``terminate`` is false), then SIGHUP again every 2 ms (``after`` times
    at most) until the process is gone, through its drain and its exit.

    :returns: How many SIGHUPs were sent.
    """
    sent = 0
    for _ in range(before):
        os.kill(pid, signal.SIGHUP)
        sent += 1
        time.sleep(0.02)
    if not terminate:
        return sent
    os.kill(pid, signal.SIGTERM)
    for _ in range(after):
        try:
            os.kill(pid, signal.SIGHUP)
        except ProcessLookupError:
            break
        sent += 1
        time.sleep(0.002)
    return sent


def exchangesUntilRefused(
    port: int, limit: int = 2000, stop: threading.Event | None = None
) -> tuple[int, list[object]]:
    """
    Greet the server at ``port`` again and again, one exchange at a time,
    until it refuses to connect, or ``stop`` is set (``limit`` exchanges at
    most).

    :returns: How many were greeted, and every exchange that was not: a
        connection that was accepted and then got anything else than the
        greeting (a lost answer).
    """
    greeted, lost = 0, list[object]()
    for _ in range(limit):
        if stop is not None and stop.is_set():
            break
        try:
            sock = connect(port)
        except ConnectionRefusedError:
            break
        with sock:
            try:
                sock.sendall(b"Hello, server!\n")
                answer = readToEnd(sock)
            except OSError as error:
                lost.append(error)
                continue
        if answer == b"Hello, client!":
            greeted += 1
        else:
            lost.append(answer)
    return greeted, lost


@define
class Load:
    """
    What `continuousLoad` counted.

    :ivar attempted: Exchanges begun (a connection tried).
    :ivar greeted: Exchanges answered with the greeting.
    :ivar lost: Every other outcome: a refused or reset connection, or an
        answer other than the greeting.
    """

    attempted: int = 0
    greeted: int = 0
    lost: list[object] = field(factory=list)


def continuousLoad(
    port: int, stop: threading.Event, limit: int = 200_000, host: str = "127.0.0.1"
) -> Load:
    """
    Greet the server at ``port`` one exchange after another, as the classic
    client does (message, then read to the end), until ``stop`` is set
    (``limit`` exchanges at most); a refused connection counts as lost, not
    as the end.
    """
    load = Load()
    while load.attempted < limit and not stop.is_set():
        load.attempted += 1
        try:
            with socket.create_connection((host, port), timeout=TIMEOUT) as sock:
                sock.sendall(b"Hello, server!\n")
                answer = readToEnd(sock)
        except OSError as error:
            load.lost.append(error)
            continue
        if answer == GREETING:
            load.greeted += 1
        else:
            load.lost.append(answer)
    return load


FIGURES = "reliability-figures.jsonl"
"""Where the proof suite's tests record what they measured, one JSON line
per test, in trial's working folder (.ci/run prints them)."""


async def lostUnder(event: str, loads: Sequence[Deferred[Load]]) -> list[object]:
    """
    Wait for the `continuousLoad` runs ``loads`` (their ``stop`` set), report
    how many exchanges were greeted during ``event`` and how many lost, and
    return the lost ones (checked to be more than 100 greeted).
    """
    results = [await load for load in loads]
    lost = [failure for load in results for failure in load.lost]
    greeted = sum(load.greeted for load in results)
    report(event, exchanges=greeted, lost=len(lost))
    assert greeted > 100, f"only {greeted} exchanges during {event}"
    return lost


def installed(name: str, how: str) -> str:
    """
    The path of program ``name``, beside this Python (a test extra) or on
    PATH; fails saying ``how`` to install it.
    """
    beside = os.path.join(BIN, name)
    path = beside if os.path.exists(beside) else shutil.which(name)
    if path is None:
        raise AssertionError(f"{name} is not installed ({how})")
    return path


def report(test: str, **figures: object) -> None:
    """
    Record the figures a test measured.
    """
    with open(FIGURES, "a") as file:
        file.write(json.dumps({"test": test, **figures}) + "\n")


# Exchanges that end every way a client can end them.

GREETING = b"Hello, client!"
"""What the server answers, on the wire."""

# Endings: after reading, TCP half-close after the message, TLS close alert
# after the message (with and without a line feed), reset after reading,
# reset in the middle of the message.
FULL = "full"
HALF_CLOSE = "half-close"
CLOSE_NOTIFY = "close-notify"
CLOSE_NOTIFY_UNTERMINATED = "close-notify-unterminated"
RESET = "reset"
RESET_MID_MESSAGE = "reset-mid-message"

PLAIN_ENDINGS = (FULL, HALF_CLOSE, RESET, RESET_MID_MESSAGE)
TLS_ENDINGS = (*PLAIN_ENDINGS, CLOSE_NOTIFY, CLOSE_NOTIFY_UNTERMINATED)


def proxyHeader(version: int, source: str = "192.0.2.1") -> bytes:
    """
    A PROXY header (``version`` 1 or 2, 0 for none) naming ``source``.
    """
    if version == 1:
        return f"PROXY TCP4 {source} 127.0.0.1 4000 5000\r\n".encode()
    if version == 2:
        addresses = socket.inet_aton(source) + socket.inet_aton("127.0.0.1")
        return (
            b"\r\n\r\n\x00\r\nQUIT\n\x21\x11"
            + struct.pack("!H", 12)
            + addresses
            + struct.pack("!HH", 4000, 5000)
        )
    return b""


def _reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def readAll(read: Callable[[], bytes], sock: socket.socket | None = None) -> bytes:
    """
    Read with ``read`` until the peer closes, an error, 4 KiB or `TIMEOUT`
    seconds; ``sock`` is the socket under a non-blocking pyOpenSSL
    connection, waited on when it wants to read.
    """
    answer = b""
    deadline = time.monotonic() + TIMEOUT
    while len(answer) < 4096 and time.monotonic() < deadline:
        try:
            chunk = read()
        except SSL.WantReadError:
            assert sock is not None
            select.select([sock], [], [], TIMEOUT)
            continue
        except (SSL.ZeroReturnError, ssl.SSLZeroReturnError):
            break
        except (OSError, SSL.Error):
            break
        if not chunk:
            break
        answer += chunk
    return answer


def exchange(
    port: int, tls: str | None, proxy: int, ending: str, message: bytes
) -> bytes:
    """
    One exchange from a blocking client that ends as ``ending`` says.

    :param tls: The CA file to verify the server with, or `None` for plain.
    :returns: What the client received.
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    try:
        sock.sendall(proxyHeader(proxy))
        unterminated = ending in (RESET_MID_MESSAGE, CLOSE_NOTIFY_UNTERMINATED)
        data = message if unterminated else message + b"\n"
        if tls is not None and ending in (CLOSE_NOTIFY, CLOSE_NOTIFY_UNTERMINATED):
            return _closeNotifyExchange(sock, tls, data)
        channel: socket.socket = sock
        if tls is not None:
            context = ssl.create_default_context(cafile=tls)
            channel = context.wrap_socket(sock, server_hostname="localhost")
        channel.sendall(data)
        if ending == RESET_MID_MESSAGE:
            _reset(channel)
            return b""
        if ending == HALF_CLOSE:
            # The TCP socket's own shutdown: no TLS close alert.
            socket.socket.shutdown(channel, socket.SHUT_WR)
        answer = readAll(lambda: channel.recv(1024))
        if ending == RESET:
            _reset(channel)
        else:
            channel.close()
        return answer
    finally:
        sock.close()


def _closeNotifyExchange(sock: socket.socket, ca: str, data: bytes) -> bytes:
    # pyOpenSSL sends a close alert without waiting for the server's (the
    # standard library's unwrap() waits); it needs a blocking socket.
    sock.settimeout(None)
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.load_verify_locations(ca)
    context.set_verify(SSL.VERIFY_PEER, lambda *args: bool(args[-1]))
    connection = SSL.Connection(context, sock)
    connection.set_tlsext_host_name(b"localhost")
    connection.set_connect_state()
    connection.do_handshake()
    connection.sendall(data)
    connection.shutdown()
    sock.setblocking(False)
    return readAll(lambda: connection.recv(1024), sock)


# Packets built by hand, for the parser and the capture filter.


def tcpPacket(
    source: tuple[str, int],
    destination: tuple[str, int],
    flags: int,
    seq: int = 0,
    ack: int = 0,
    payload: bytes = b"",
    window: int = 512,
    options: bytes = b"",
    fragment: int = 0,
    protocol: int = 6,
) -> bytes:
    """
    An IPv4 or IPv6 packet (as the addresses are) carrying one TCP segment;
    checksums are left at zero (the parser and the filter never read them).

    :param flags: The TCP flag bits (``0x12`` is SYN-ACK).
    :param options: TCP options, padded here to a multiple of four bytes.
    :param fragment: The IPv4 flags and fragment offset field.
    :param protocol: The IP protocol number (6 is TCP).
    """
    options += b"\x00" * (-len(options) % 4)
    tcp = (
        struct.pack(
            "!HHIIBBHHH",
            source[1],
            destination[1],
            seq % 2**32,
            ack % 2**32,
            (5 + len(options) // 4) << 4,
            flags,
            window,
            0,
            0,
        )
        + options
        + payload
    )
    if ":" in source[0]:
        return (
            struct.pack("!IHBB", 6 << 28, len(tcp), protocol, 64)
            + socket.inet_pton(socket.AF_INET6, source[0])
            + socket.inet_pton(socket.AF_INET6, destination[0])
            + tcp
        )
    return (
        struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(tcp), 0, fragment, 64, protocol, 0)
        + socket.inet_aton(source[0])
        + socket.inet_aton(destination[0])
        + tcp
    )


# Blocking-socket servers of one behaviour each, in a thread.


def resetAfter(answer: bytes) -> Callable[[socket.socket], None]:
    """
    A hostile server's way with one connection: read the message to its
    end, send ``answer`` (part of a greeting), then reset the connection
    (``SO_LINGER`` 0: an RST, not a FIN).
    """

    def serve(connection: socket.socket) -> None:
        while connection.recv(65536):
            pass
        connection.sendall(answer)
        connection.setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
        )

    return serve


def greetAfter(received: list[bytes]) -> Callable[[socket.socket], None]:
    """
    A server's way with one connection: keep the message, then greet.
    """

    def serve(connection: socket.socket) -> None:
        chunks = []
        while chunk := connection.recv(65536):
            chunks.append(chunk)
        received.append(b"".join(chunks))
        connection.sendall(b"Hello, client!")

    return serve


def serveInThread(
    connections: int, serve: Callable[[socket.socket], None]
) -> tuple[int, Deferred[None]]:
    """
    Listen on a loopback port and handle ``connections`` connections with
    ``serve``, in a thread, each bounded by `TIMEOUT`.

    :returns: The port, and a `Deferred` that fires when all are handled.
    """
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(TIMEOUT)

    def run() -> None:
        with listener:
            for _ in range(connections):
                connection, _ = listener.accept()
                with connection:
                    connection.settimeout(TIMEOUT)
                    serve(connection)

    return listener.getsockname()[1], inThread(run)


def keepSignalMask(testCase: SynchronousTestCase) -> None:
    """
    Give the test's process its signal mask back after ``testCase``: a
    service that takes SIGTERM and SIGINT holds them blocked until its
    reactor runs, and a memory reactor never runs.  Left blocked, they
    would stay blocked in every process the test run starts afterwards
    (a mask survives ``exec``), which then ignores SIGTERM and Ctrl-C.
    """
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, set())
    testCase.addCleanup(signal.pthread_sigmask, signal.SIG_SETMASK, previous)
