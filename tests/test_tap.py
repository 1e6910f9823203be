"""
Tests for `hellotcp.tap`: the options of ``twist hellotcp`` and the service
they make.
"""

from __future__ import annotations

import io
import os
import re
import resource
import shlex
import signal
import sys
from typing import Any
from unittest import mock

from twisted.internet.endpoints import serverFromString
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from hellotcp import _wiring, tap
from hellotcp._listeners import withBacklog
from hellotcp._options import OneLineErrorOptions
from hellotcp._twistedcompat import parseEndpoint, twistOptions
from hellotcp.protocol import HelloServerFactory, ServerSettings
from hellotcp.service import HelloService
from hellotcp.workers import WorkerSupervisor

from .pki import pki, tlsListen
from .support import keepSignalMask


def parse(*argv: str) -> tap.Options:
    """
    Parse ``argv`` as ``twist hellotcp`` would, against a memory reactor.
    """
    options = tap.Options()
    options.reactor = MemoryReactorClock()
    options.parseOptions(list(argv))
    return options


def server(options: tap.Options) -> HelloService:
    """
    The single-process service ``options`` make.
    """
    service = tap.makeService(options)
    assert isinstance(service, HelloService)
    return service


class KeepsSignals(SynchronousTestCase):
    """
    Test cases that build and start services, which take SIGHUP, SIGTERM
    and SIGINT over (holding them blocked until a reactor runs) and raise
    the open-file limit: the test's process gets its own handlers, signal
    mask and limit back after each test.
    """

    def setUp(self) -> None:
        for number in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            self.addCleanup(signal.signal, number, signal.getsignal(number))
        keepSignalMask(self)
        limits = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, limits)


class OneLineErrors(KeepsSignals):
    """
    Test cases that check the one-line errors of the options.
    """

    def assertOneLineError(self, argv: list[str], expected: str) -> None:
        """
        Parsing ``argv`` exits with status 2 after one line on standard error.
        """
        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)
        with self.assertRaises(SystemExit) as raised:
            parse(*argv)
        self.assertEqual(raised.exception.code, 2)
        self.assertEqual(stderr.getvalue(), f"hellotcp: error: {expected}\n")


class OptionsTests(OneLineErrors):
    """
    `tap.Options` turns the command line into settings.
    """

    def test_defaults(self) -> None:
        """
        With no option, the server listens where the classic server did and
        uses the default settings.
        """
        options = parse()
        self.assertEqual(options["listen"], ["tcp:5000:interface=127.0.0.1"])
        self.assertEqual(options["settings"], ServerSettings())
        self.assertEqual(options["settings"].greeting, b"Hello, client!")
        self.assertEqual(options["settings"].timeout, 10.0)
        self.assertEqual(options["settings"].maxMessageBytes, 1024)
        self.assertEqual(options["settings"].maxConnectionsPerPeer, 2000)
        self.assertEqual(options["settings"].deadline, 30.0)
        self.assertEqual(options["backlog"], 4096)
        self.assertEqual(options["shutdown-timeout"], 5.0)

    def test_values(self) -> None:
        """
        Every option reaches the settings.
        """
        options = parse(
            "--listen",
            "tcp:7000",
            "-l",
            "unix:/tmp/hello.sock",
            "--greeting",
            "Grüß dich",
            "--timeout",
            "2.5",
            "--max-message-bytes",
            "64",
            "--max-connections",
            "3",
            "--message-gap",
            "0.1",
            "--backlog",
            "10",
            "--shutdown-timeout",
            "0",
            "--max-connections-per-peer",
            "2",
            "--deadline",
            "7.5",
        )
        self.assertEqual(options["listen"], ["tcp:7000", "unix:/tmp/hello.sock"])
        self.assertEqual(
            options["settings"],
            ServerSettings(
                greeting="Grüß dich".encode(),
                timeout=2.5,
                maxMessageBytes=64,
                maxConnections=3,
                maxConnectionsPerPeer=2,
                messageGap=0.1,
                deadline=7.5,
            ),
        )
        self.assertEqual(options["backlog"], 10)
        self.assertEqual(options["shutdown-timeout"], 0)

    def test_badValues(self) -> None:
        """
        Each kind of mistake is named in one line.
        """
        cases = {
            ("--timeout", "-1"): "--timeout must be a number greater than 0, not '-1'",
            (
                "--timeout",
                "abc",
            ): "--timeout must be a number greater than 0, not 'abc'",
            (
                "--timeout",
                "nan",
            ): "--timeout must be a number greater than 0, not 'nan'",
            ("--max-connections", "1.5"): (
                "--max-connections must be a whole number greater than 0, not '1.5'"
            ),
            ("--max-message-bytes", "0"): (
                "--max-message-bytes must be a whole number greater than 0, not '0'"
            ),
            ("--shutdown-timeout", "-2"): (
                "--shutdown-timeout must be a number 0 or more, not '-2'"
            ),
            (
                "--listen",
                "nosuch:1",
            ): "--listen nosuch:1: Unknown endpoint type: 'nosuch'",
            ("--listen", "tcp:5000:bogus=1"): (
                "--listen tcp:5000:bogus=1: no parameter bogus= for this kind of endpoint"
            ),
            ("--greeting", ""): "--greeting must not be empty",
            ("--bogus",): "option --bogus not recognized",
            ("--listen", "tcp:1", "--listen", "tcp:1"): "--listen tcp:1 is given twice",
        }
        for argv, expected in cases.items():
            self.assertOneLineError(list(argv), expected)

    def test_helpExamplesSurviveTheShell(self) -> None:
        """
        Every endpoint that ``--listen``'s help shows, read by a POSIX shell
        as it is printed, still describes the endpoint meant: the IPv6 one
        is quoted, so its escaped colons reach Twisted.
        """
        help = " ".join((tap.Options.opt_listen.__doc__ or "").split())
        examples = re.findall(r"e\.g\. (.*?) \[default", help)[0]
        words = [w.rstrip(",.") for w in shlex.split(examples) if ":" in w]
        self.assertIn("tcp6:5000:interface=\\:\\:1", words)
        for word in words:
            args, kwargs = parseEndpoint(word)
            if args[0] == "tcp6":
                self.assertEqual(kwargs["interface"], "::1")
            serverFromString(MemoryReactorClock(), word)
        # The same for the commands of the operations page.
        checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        with open(os.path.join(checkout, "docs", "operations.md")) as page:
            lines = [line for line in page if line.startswith("twist ")]
        shown = [w for line in lines for w in shlex.split(line) if "tcp6" in w]
        self.assertNotEqual(shown, [])
        for word in shown:
            self.assertEqual(parseEndpoint(word)[1]["interface"], "::1")

    def test_isOneLineErrorOptions(self) -> None:
        """
        The plugin's options share the behaviour of the programs' options:
        ``--version`` says hellotcp's version and exits 0 (and a mistake is
        one line, see `test_badValues`).
        """
        from hellotcp import __version__

        stdout = io.StringIO()
        self.patch(sys, "stdout", stdout)
        with self.assertRaises(SystemExit) as raised:
            parse("--version")
        self.assertEqual(raised.exception.code, 0)
        self.assertEqual(stdout.getvalue(), f"hellotcp {__version__}\n")
        self.assertIsInstance(tap.Options(), OneLineErrorOptions)


class MakeServiceTests(KeepsSignals):
    """
    `tap.makeService` serves the factory on every endpoint.
    """

    def test_listens(self) -> None:
        """
        Starting the service listens on each endpoint with the backlog,
        serving one `HelloServerFactory`.
        """
        options = parse(
            "--listen", "tcp:7000:interface=127.0.0.1", "--listen", "tcp:7001"
        )
        service = server(options)
        service.startService()
        reactor = options.reactor
        assert isinstance(reactor, MemoryReactorClock)
        self.assertEqual(
            [
                (port, backlog, interface)
                for port, _, backlog, interface in reactor.tcpServers
            ],
            [(7000, 4096, "127.0.0.1"), (7001, 4096, "")],
        )
        factories = {factory for _, factory, _, _ in reactor.tcpServers}
        [factory] = factories
        self.assertIsInstance(factory, HelloServerFactory)
        self.assertIs(factory, service.factory)
        self.assertEqual(factory.settings, options["settings"])

    def test_holdsHangUpsAtOnce(self) -> None:
        """
        Building the service takes SIGHUP over at once, before the reactor
        runs, for the service's own `HelloService.hangUp` (with or without
        TLS).
        """
        queued: list[Any] = []

        class ThreadedMemoryReactor(MemoryReactorClock):
            def callFromThread(self, f: Any, *args: object) -> None:
                queued.append((f, args))

        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        for argv, said in [
            ([], "SIGHUP: no TLS files to reload"),
            (tlsListen(7001, *pki().server), "TLS certificate reloaded from "),
        ]:
            options = tap.Options()
            options.reactor = ThreadedMemoryReactor()
            options.parseOptions(["--listen", "tcp:7000", *argv])
            server(options)
            self.assertFalse(options.reactor.running)
            self.assertNotIn(signal.getsignal(signal.SIGHUP), (signal.SIG_DFL, None))
            os.kill(os.getpid(), signal.SIGHUP)
            [(f, args)] = queued
            queued.clear()
            with capturedLogs() as events:
                f(*args)
            [line] = [formatEvent(e) for e in events]
            self.assertTrue(line.startswith(said), line)

    def test_fileLimitCountsListeners(self) -> None:
        """
        The descriptors kept for the server itself grow with its listeners
        and with the metrics listener and its connections.
        """
        from hellotcp.metricspage import MAX_CONNECTIONS

        needed = _wiring.descriptorsNeeded
        base = needed(1, worker=False, metricsPage=False)
        self.assertEqual(needed(2, worker=False, metricsPage=False), base + 1)
        withMetrics = needed(1, worker=False, metricsPage=True)
        self.assertEqual(withMetrics, base + 1 + MAX_CONNECTIONS)
        # A worker does not serve the page; it holds its readiness pipe.
        self.assertEqual(needed(1, worker=True, metricsPage=True), base + 1)

    def test_stopDrains(self) -> None:
        """
        Stopping the service stops listening and waits for the open
        exchange, which is still answered.
        """
        options = parse("--listen", "tcp:7000", "--shutdown-timeout", "5")
        service = server(options)
        service.startService()
        protocol = service.factory.buildProtocol(None)
        assert protocol is not None
        transport = StringTransport()
        protocol.makeConnection(transport)
        stopped = service.stopService()
        self.assertNoResult(stopped)
        protocol.dataReceived(b"Hello, server!\n")
        self.assertEqual(transport.value(), b"Hello, client!")
        protocol.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(stopped)
        self.assertEqual(len(service.factory.connections), 0)


class WithBacklogTests(SynchronousTestCase):
    """
    `withBacklog` sets the listen queue where Twisted's default would apply.
    """

    def test_added(self) -> None:
        """
        TCP, TCP6, SSL, UNIX and PROXY-wrapped TCP get the backlog.
        """
        for description in (
            "tcp:5000",
            "tcp6:5000",
            "ssl:5000",
            "unix:/s",
            "haproxy:tcp:5000",
        ):
            self.assertEqual(withBacklog(description, 9), f"{description}:backlog=9")

    def test_kept(self) -> None:
        """
        An explicit backlog, or an endpoint type without one, is left alone.
        """
        for description in ("tcp:5000:backlog=3", "systemd:domain=INET:index=0"):
            self.assertEqual(withBacklog(description, 9), description)


class LogLevelTests(KeepsSignals):
    """
    Under ``twist --log-level=warn`` greetings are not logged at all.
    """

    def test_followsTwist(self) -> None:
        """
        The factory logs greetings unless twist's log level is above info.
        """
        from twisted.logger import LogLevel

        for level, expected in [(LogLevel.info, True), (LogLevel.warn, False)]:
            options = parse("--listen", "tcp:7000")
            parent = twistOptions()
            parent["logLevel"] = level
            options.parent = parent
            self.assertIs(server(options).factory.logGreetings, expected)
        self.assertTrue(server(parse()).factory.logGreetings)

    def test_healthChecksOnlyAtDebug(self) -> None:
        """
        Health checks are logged only under ``twist --log-level=debug``; not
        at twist's default, and not under ``twistd`` (no parent level), which
        writes debug events too.
        """
        from twisted.application.twist._options import TwistOptions
        from twisted.logger import LogLevel

        for level, expected in [(LogLevel.debug, True), (LogLevel.info, False)]:
            options = parse("--listen", "tcp:7000")
            parent = TwistOptions()
            parent["logLevel"] = level
            options.parent = parent
            self.assertIs(server(options).factory.logHealthChecks, expected)
        self.assertFalse(server(parse()).factory.logHealthChecks)


class WorkersOptionTests(OneLineErrors):
    """
    ``--workers`` and ``--metrics``.
    """

    def test_default(self) -> None:
        """
        One worker by default: the single process, no supervisor.
        """
        options = parse()
        self.assertEqual(options["workers"], 1)
        self.assertIsInstance(tap.makeService(options), HelloService)

    def test_several(self) -> None:
        """
        With more than one worker the service is their supervisor, over
        every listener (PROXY prefix removed, backlog added), re-running the
        same command line.
        """
        import os

        options = parse(
            "--workers",
            "3",
            "--listen",
            "haproxy:tcp:7000",
            "-l",
            "tcp6:7000",
        )
        service = tap.makeService(options)
        assert isinstance(service, WorkerSupervisor)
        self.assertEqual(service.count, 3)
        self.assertEqual(
            service.listeners,
            ["tcp:7000:backlog=4096", "tcp6:7000:backlog=4096"],
        )
        self.assertEqual(
            service.command.arguments,
            [
                "-m",
                "twisted",
                "hellotcp",
                "--workers",
                "3",
                "--listen",
                "haproxy:tcp:7000",
                "-l",
                "tcp6:7000",
            ],
        )
        # auto: one per core this process may run on (three here).
        self.patch(os, "sched_getaffinity", lambda pid: {0, 2, 5})
        self.assertEqual(parse("--workers", "auto")["workers"], 3)

    def test_twistLogging(self) -> None:
        """
        Workers log in the format, at the level and to the file of ``twist``.
        """
        from twisted.logger import LogLevel

        options = parse("--workers", "2")
        parent = twistOptions()
        parent["logLevel"] = LogLevel.warn
        parent["logFormat"] = "json"
        parent["logFile"] = sys.stderr
        options.parent = parent
        service = tap.makeService(options)
        assert isinstance(service, WorkerSupervisor)
        self.assertEqual(
            service.command.arguments[2:4], ["--log-format=json", "--log-level=warn"]
        )
        self.assertEqual(service.command.logDescriptor, 2)

    def test_refused(self) -> None:
        """
        A bad count, or a listener the workers could not adopt, is one line.
        """
        wrongCount = "--workers must be a whole number from 1 to 256, or auto"
        for argv, expected in [
            (["--workers", "0"], f"{wrongCount}, not '0'"),
            (["--workers", "many"], f"{wrongCount}, not 'many'"),
            (["--workers", "20000"], f"{wrongCount}, not '20000'"),
            (
                ["--listen", "systemd:domain=INET:index=0"],
                "--listen systemd:domain=INET:index=0: no inherited socket at "
                "that index: LISTEN_FDS is not set (systemd passes sockets to a "
                "service that its .socket unit starts)",
            ),
            (
                ["--workers", "2", "--listen", "systemd:domain=INET:name=web"],
                "--listen systemd:domain=INET:name=web: no inherited socket "
                "named 'web': LISTEN_FDS is not set (systemd passes sockets to a "
                "service that its .socket unit starts)",
            ),
            (
                ["--workers", "2", "--listen", "ssl:7000:privateKey=k.pem"],
                "--listen ssl:7000:privateKey=k.pem: --workers serves TCP: tcp, "
                "tcp6 and systemd (INET) endpoints (use --tls-listen for TLS)",
            ),
            (
                ["--workers", "2", "--listen", "unix:/run/h.sock"],
                "--listen unix:/run/h.sock: --workers serves TCP: tcp, tcp6 and "
                "systemd (INET) endpoints",
            ),
            (
                ["--metrics", "tcp:notaport"],
                "--metrics tcp:notaport: the port must be a whole number 0 or "
                "more, not 'notaport'",
            ),
        ]:
            self.assertOneLineError(argv, expected)

    def test_parentFileLimit(self) -> None:
        """
        The parent raises its open-file limit for a socket per worker per
        listener, a pipe per worker, the metrics listener and its
        connections; if the hard limit is too low, it stops in one line.
        """
        asked: list[int] = []

        def raiseFileLimit(needed: int) -> int:
            asked.append(needed)
            return 100

        self.patch(_wiring, "raiseFileLimit", raiseFileLimit)
        options = parse(
            "--workers", "4", "--listen", "tcp:7000", "--listen", "tcp:7001"
        )
        self.assertIsInstance(tap.makeService(options), WorkerSupervisor)
        self.assertEqual(asked, [4 * (2 + 1) + 64])
        with self.assertRaises(SystemExit) as raised:
            tap.makeService(parse("--workers", "20", "--metrics", "tcp:9100"))
        self.assertEqual(
            raised.exception.code,
            "hellotcp: error: --workers 20 needs 121 open files, and the "
            "open-file limit is 100 (ulimit -n, LimitNOFILE=)",
        )

    def test_metricsNeedTheExtra(self) -> None:
        """
        Without ``prometheus_client``, ``--metrics`` is one line saying what
        to install.
        """
        # A None entry makes the import fail as if it were not installed.
        with mock.patch.dict(sys.modules, {"prometheus_client": None}):
            self.assertOneLineError(
                ["--metrics", "tcp:9100"],
                "--metrics needs prometheus_client, the metrics extra: "
                "pip install '.[metrics]' in a clone of hellotcp",
            )
        # The extra the message names exists, so the command works.
        checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        with open(os.path.join(checkout, "pyproject.toml"), encoding="utf-8") as f:
            self.assertRegex(f.read(), r"(?m)^metrics = \[")

    def test_metricsServed(self) -> None:
        """
        ``--metrics`` serves the page on its endpoint beside the listeners.
        """
        options = parse("--listen", "tcp:7000", "--metrics", "tcp:9100")
        service = server(options)
        service.startService()
        reactor = options.reactor
        assert isinstance(reactor, MemoryReactorClock)
        ports = {
            port: type(factory).__name__ for port, factory, _, _ in reactor.tcpServers
        }
        self.assertEqual(
            ports, {7000: "HelloServerFactory", 9100: "LimitedConnections"}
        )
