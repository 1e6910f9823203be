"""
Tests for `hellotcp.service`.
"""

from __future__ import annotations

import atexit
import os
import resource
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs, eventsFromJSONLogFile, formatEvent
from twisted.trial.unittest import SynchronousTestCase, TestCase

from hellotcp import _signals
from hellotcp._filelimit import raiseFileLimit
from hellotcp._signals import SAME_REQUEST, StopSignals, holdHangUps
from hellotcp.protocol import HelloServerFactory
from hellotcp.service import HelloService, ListenError

from .pki import pki, tlsListen, verifiedClient
from .support import (
    TIMEOUT,
    CommandTestCase,
    command,
    exchangesUntilRefused,
    freePort,
    hangUpStorm,
    inThread,
    keepSignalMask,
)


class ListenErrorTests(SynchronousTestCase):
    """
    A listener that cannot listen raises `ListenError` to the application
    that embeds the service, naming the listener and the reason, and leaves
    nothing listening.
    """

    def test_addressInUse(self) -> None:
        """
        An address in use is named as the user wrote it, with the system's
        reason, and the listener started before it is closed again.
        """
        taken = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(taken.close)
        port = taken.getsockname()[1]
        service = HelloService(HelloServerFactory(), reactor)
        service.listen("tcp:0:interface=127.0.0.1")
        description = f"tcp:{port}:interface=127.0.0.1"
        service.listen(description)
        with self.assertRaises(ListenError) as raised:
            service.privilegedStartService()
        self.assertEqual(
            str(raised.exception),
            f"cannot listen on {description}: Address already in use",
        )
        self.assertEqual(raised.exception.listener, description)
        self.assertEqual(raised.exception.reason, "Address already in use")
        self.assertFalse(service.running)
        first = next(iter(service))
        self.assertFalse(first.running)

    def test_badUnixPath(self) -> None:
        """
        A UNIX socket in a folder that does not exist is named as well.
        """
        service = HelloService(HelloServerFactory(), reactor)
        service.listen("unix:/nonexistent/folder/hello.sock")
        with self.assertRaises(ListenError) as raised:
            service.startService()
        self.assertEqual(
            raised.exception.listener, "unix:/nonexistent/folder/hello.sock"
        )
        self.assertIn("No such file or directory", raised.exception.reason)

    def test_signalsLeftAlone(self) -> None:
        """
        Started without ``handleSignals``, the service leaves SIGTERM, SIGINT
        and SIGHUP as the application set them.
        """
        wanted = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        before = [signal.getsignal(number) for number in wanted]
        memory = MemoryReactorClock()
        service = HelloService(HelloServerFactory(clock=memory), memory)
        service.listen("tcp:0")
        service.startService()
        memory.run()
        self.assertEqual([signal.getsignal(number) for number in wanted], before)
        self.successResultOf(service.stopService())

    def test_programExits(self) -> None:
        """
        As ``twist hellotcp`` runs it, the same failure ends the program in
        one line: a `SystemExit` whose message ``twist`` prints.
        """
        taken = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(taken.close)
        description = f"tcp:{taken.getsockname()[1]}:interface=127.0.0.1"
        service = HelloService(HelloServerFactory(), reactor, exitOnListenError=True)
        service.listen(description)
        with self.assertRaises(SystemExit) as raised:
            service.startService()
        self.assertEqual(
            raised.exception.code,
            f"hellotcp: error: cannot listen on {description}: Address already in use",
        )


class SignalTests(SynchronousTestCase):
    """
    SIGTERM and SIGINT stop the reactor, so the process exits 0; a second
    one aborts open exchanges.
    """

    def setUp(self) -> None:
        keepSignalMask(self)

    def signalledService(
        self, queued: list[Any]
    ) -> tuple[MemoryReactorClock, HelloService]:
        """
        A service that takes the signals, on a memory reactor that puts
        what is called from a signal handler in ``queued``.
        """

        class ThreadedMemoryReactor(MemoryReactorClock):
            def callFromThread(self, f: Any, *args: object) -> None:
                queued.append((f, args))

        memory = ThreadedMemoryReactor()
        service = HelloService(
            HelloServerFactory(clock=Clock()), memory, handleSignals=True
        )
        return memory, service

    def test_takesOverSignals(self) -> None:
        """
        Once the reactor runs, SIGTERM and SIGINT are the service's.
        """
        memory = MemoryReactorClock()
        service = HelloService(
            HelloServerFactory(clock=Clock()), memory, handleSignals=True
        )
        for number in (signal.SIGTERM, signal.SIGINT):
            self.addCleanup(signal.signal, number, signal.getsignal(number))
        service.startService()
        memory.run()
        assert service._signals is not None
        self.assertEqual(signal.getsignal(signal.SIGTERM), service._signals.handler)
        self.assertEqual(signal.getsignal(signal.SIGINT), service._signals.handler)

    def test_takenBeforeTheReactorRuns(self) -> None:
        """
        SIGTERM and SIGINT are the service's from the start, before the
        reactor runs: one that comes then is a graceful stop once it runs
        (a clean exit 0, not death by the signal).
        """
        memory = MemoryReactorClock()
        service = HelloService(
            HelloServerFactory(clock=Clock()), memory, handleSignals=True
        )
        for number in (signal.SIGTERM, signal.SIGINT):
            self.addCleanup(signal.signal, number, signal.getsignal(number))
        service.startService()
        self.assertFalse(memory.running)
        assert service._signals is not None
        self.assertEqual(signal.getsignal(signal.SIGTERM), service._signals.handler)
        self.assertEqual(signal.getsignal(signal.SIGINT), service._signals.handler)

    def test_heldUntilTheReactorRuns(self) -> None:
        """
        From the start until the reactor runs, SIGTERM and SIGINT are held
        blocked, so one cannot reach the handlers the reactor installs as
        it starts (Twisted's make ``twist`` die by the signal); once it
        runs, one that came meanwhile reaches the service's, and is a stop.
        """
        queued: list[Any] = []
        memory, service = self.signalledService(queued)
        for number in (signal.SIGTERM, signal.SIGINT):
            self.addCleanup(signal.signal, number, signal.getsignal(number))
        service.startService()
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, set())
        self.assertLessEqual({signal.SIGTERM, signal.SIGINT}, blocked)
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)  # waits
        # What the reactor installs as it starts, which must not see it.
        signal.signal(signal.SIGTERM, lambda *args: queued.append("twisted"))
        self.assertEqual(queued, [])
        memory.run()
        self.assertEqual(queued, [(service._stopRequested, ("SIGTERM",))])
        self.assertNotIn(
            signal.SIGTERM, signal.pthread_sigmask(signal.SIG_BLOCK, set())
        )

    def test_heldSignalsHandled(self) -> None:
        """
        A SIGTERM that waits, blocked (as a worker's parent starts it), is
        let through once the service takes SIGTERM over, and is a stop.
        """
        queued: list[Any] = []
        memory, service = self.signalledService(queued)
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        self.addCleanup(signal.pthread_sigmask, signal.SIG_SETMASK, previous)
        for number in (signal.SIGTERM, signal.SIGINT):
            self.addCleanup(signal.signal, number, signal.getsignal(number))
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)  # blocked: waits
        service.startService()
        memory.run()
        self.assertEqual(queued, [(service._stopRequested, ("SIGTERM",))])
        self.assertNotIn(
            signal.SIGTERM, signal.pthread_sigmask(signal.SIG_BLOCK, set())
        )

    def test_stopThenAbort(self) -> None:
        """
        The first signal stops the reactor; the second, while stopping,
        aborts the open connections at once.
        """
        memory = MemoryReactorClock()
        memory.running = True
        factory = HelloServerFactory(clock=Clock())
        protocol = factory.buildProtocol(None)
        assert protocol is not None
        transport = StringTransport()
        protocol.makeConnection(transport)
        service = HelloService(factory, memory, handleSignals=True)
        service._stopRequested("SIGTERM")
        self.assertTrue(memory.hasStopped)
        service.stopService()
        service._stopRequested("SIGTERM")
        self.assertTrue(transport.disconnected)

    def test_drainsBeforeClosing(self) -> None:
        """
        With ``drainTime``, stopping first sets the factory draining (health
        checks fail) and goes on listening for that long; then the listeners
        close as without it.  A second stop signal cuts the drain short.
        """
        for secondSignal in (False, True):
            memory = MemoryReactorClock()
            memory.running = True
            factory = HelloServerFactory(clock=Clock())
            service = HelloService(factory, memory, handleSignals=True, drainTime=2)
            service.listen("tcp:0")
            service.startService()
            self.assertFalse(factory.draining)
            stopped = service.stopService()
            self.assertTrue(factory.draining)
            memory.advance(1.9)
            self.assertNoResult(stopped)
            if secondSignal:
                service._stopRequested("SIGTERM")
            else:
                memory.advance(0.1)
            self.successResultOf(stopped)
            self.assertLessEqual(memory.seconds(), 1.9 if secondSignal else 2.0)

    def test_workerTakesTwoCopiesAsOne(self) -> None:
        """
        A worker gets a SIGTERM sent to its process group and its parent's
        copy of it: a second one within `SAME_REQUEST` seconds is the same
        request; one after that aborts.
        """
        memory = MemoryReactorClock()
        memory.running = True
        factory = HelloServerFactory(clock=Clock())
        protocol = factory.buildProtocol(None)
        assert protocol is not None
        transport = StringTransport()
        protocol.makeConnection(transport)
        worker = HelloService(factory, memory, handleSignals=True, worker=True)
        worker._stopRequested("SIGTERM")
        worker.stopService()
        memory.advance(SAME_REQUEST / 2)
        worker._stopRequested("SIGTERM")
        self.assertFalse(transport.disconnected)
        memory.advance(SAME_REQUEST)
        worker._stopRequested("SIGTERM")
        self.assertTrue(transport.disconnected)

    def test_stopSignalsIgnoredAtExit(self) -> None:
        """
        Once the signals are taken, SIGTERM and SIGINT are ignored at exit,
        so a late copy cannot turn a clean stop into death by the signal.
        """
        registered: list[Callable[[], None]] = []
        self.patch(_signals, "_ignoredAtExit", set())
        self.patch(atexit, "register", registered.append)
        for number in (signal.SIGTERM, signal.SIGINT):
            self.addCleanup(signal.signal, number, signal.getsignal(number))
        StopSignals(MemoryReactorClock(), lambda name: None)._install()
        [ignore] = registered
        ignore()
        self.assertEqual(signal.getsignal(signal.SIGTERM), signal.SIG_IGN)
        self.assertEqual(signal.getsignal(signal.SIGINT), signal.SIG_IGN)


class FileLimitTests(SynchronousTestCase):
    """
    `raiseFileLimit` makes room for the connections.
    """

    def test_raises(self) -> None:
        """
        The soft limit rises towards what is needed, capped by the hard one.
        """
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard))
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        self.assertEqual(raiseFileLimit(300), 300)
        self.assertEqual(resource.getrlimit(resource.RLIMIT_NOFILE)[0], 300)
        self.assertEqual(raiseFileLimit(100), 300)


class AcceptPendingTests(SynchronousTestCase):
    """
    Stopping accepts what waits in the listen queues before closing them.
    """

    def test_acceptsBeforeStopping(self) -> None:
        """
        The ports listened on are recorded, and each is read (accepting its
        queue) while it still listens, before the service stops them.
        """
        memory = MemoryReactorClock()
        service = HelloService(HelloServerFactory(clock=Clock()), memory)
        service.listen("tcp:7000")
        service.startService()
        [recorded] = service._ports
        self.assertEqual(recorded.getHost().port, 7000)  # type: ignore[attr-defined]
        accepted: list[bool] = []

        class Port:
            def doRead(self) -> None:
                accepted.append(bool(memory.tcpServers) and bool(service.running))

        service._ports.append(Port())
        self.successResultOf(service.stopService())
        self.assertTrue(accepted)
        self.assertTrue(all(accepted))


class CloseAfterAcceptingTests(TestCase):
    """
    On a real port: stopping accepts the queued connections and closes the
    listening socket in the same call.
    """

    async def test_queuedConnectionServed(self) -> None:
        """
        A connection queued by the kernel when the service stops is accepted
        (and then served), and the port refuses new connections at once.
        """
        service = HelloService(HelloServerFactory(), reactor, handleSignals=False)
        service.listen("tcp:0:interface=127.0.0.1")
        service.startService()
        [port] = service._ports
        number = port.getHost().port  # type: ignore[attr-defined]
        queued = socket.create_connection(("127.0.0.1", number), timeout=5)
        self.addCleanup(queued.close)
        queued.sendall(b"Hello, server!\n")
        stopping = service.stopService()
        self.assertEqual(len(service.factory.connections), 1)
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", number), timeout=5)
        await stopping
        queued.settimeout(5)
        self.assertEqual(queued.recv(100), b"Hello, client!")


class HoldHangUpsTests(SynchronousTestCase):
    """
    `holdHangUps` makes SIGHUP safe in this process as soon as it is called.
    """

    def setUp(self) -> None:
        self.calls: list[Any] = []

    def callFromThread(self, f: Any, *args: object) -> None:
        """
        What a reactor's would do: queue the call (here, record it).
        """
        self.calls.append((f, args))

    def test_handledAtOnce(self) -> None:
        """
        From the call on, a SIGHUP is handed to the reactor's loop; several
        before the loop runs count once; one after counts again.
        """
        handled: list[bool] = []
        restore = holdHangUps(self, lambda: handled.append(True))  # type: ignore[arg-type]
        self.addCleanup(restore)
        self.assertNotIn(signal.getsignal(signal.SIGHUP), (signal.SIG_DFL, None))
        for _ in range(3):
            os.kill(os.getpid(), signal.SIGHUP)
        self.assertEqual(len(self.calls), 1)
        f, args = self.calls.pop()
        f(*args)
        self.assertEqual(handled, [True])
        os.kill(os.getpid(), signal.SIGHUP)
        self.assertEqual(len(self.calls), 1)

    def test_notedThenHandled(self) -> None:
        """
        A SIGHUP between `noteHangUps` (before the TLS files are read) and
        `holdHangUps` is handled once the latter takes over; none, nothing.
        """
        self.addCleanup(signal.signal, signal.SIGHUP, signal.getsignal(signal.SIGHUP))
        for sent in (0, 2):
            self.calls.clear()
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            _signals.noteHangUps()
            for _ in range(sent):
                os.kill(os.getpid(), signal.SIGHUP)
            handled: list[bool] = []
            restore = holdHangUps(self, partial(handled.append, True))  # type: ignore[arg-type]
            for f, args in self.calls:
                f(*args)
            self.assertEqual(handled, [True] if sent else [])
            restore()

    def test_noteLeavesHandlersAlone(self) -> None:
        """
        `noteHangUps` takes SIGHUP only where Python has no handler for it.
        """
        restore = holdHangUps(self, lambda: None)  # type: ignore[arg-type]
        self.addCleanup(restore)
        handler = signal.getsignal(signal.SIGHUP)
        _signals.noteHangUps()
        self.assertIs(signal.getsignal(signal.SIGHUP), handler)

    def test_pluginIgnoresUntilRead(self) -> None:
        """
        Choosing the plugin (twist asks for its options) makes SIGHUP
        ignored where it would kill, before anything of hellotcp is imported.
        """
        from twisted.plugins.hellotcp_plugin import hellotcp

        self.addCleanup(signal.signal, signal.SIGHUP, signal.getsignal(signal.SIGHUP))
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        from hellotcp.tap import Options

        self.assertIs(hellotcp.options, Options)
        self.assertEqual(signal.getsignal(signal.SIGHUP), signal.SIG_IGN)

    def test_heldBackSignalHandled(self) -> None:
        """
        A SIGHUP that waits, blocked (as a worker's parent starts it), is let
        through and handled.
        """
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
        self.addCleanup(signal.pthread_sigmask, signal.SIG_SETMASK, previous)
        restore = signal.signal(signal.SIGHUP, signal.SIG_DFL)
        self.addCleanup(signal.signal, signal.SIGHUP, restore)
        # To this thread: a process-wide signal could be taken by another
        # thread (trial's thread pool) that does not block it, and kill us.
        signal.pthread_kill(threading.get_ident(), signal.SIGHUP)
        self.addCleanup(holdHangUps(self, lambda: None))  # type: ignore[arg-type]
        self.assertEqual(len(self.calls), 1)
        self.assertNotIn(signal.SIGHUP, signal.pthread_sigmask(signal.SIG_BLOCK, set()))

    def test_ignoredAtExit(self) -> None:
        """
        At exit SIGHUP is ignored, so that Python's shutdown does not make it
        deadly again.
        """
        registered: list[Callable[[], None]] = []
        self.patch(_signals, "_ignoredAtExit", set())
        self.patch(atexit, "register", registered.append)
        self.addCleanup(holdHangUps(self, lambda: None))  # type: ignore[arg-type]
        handler = signal.getsignal(signal.SIGHUP)
        self.addCleanup(signal.signal, signal.SIGHUP, handler)
        [ignore] = registered
        ignore()
        self.assertEqual(signal.getsignal(signal.SIGHUP), signal.SIG_IGN)
        # Once is enough.
        holdHangUps(self, lambda: None)  # type: ignore[arg-type]
        self.assertEqual(len(registered), 1)

    def test_serviceWithoutTLS(self) -> None:
        """
        Without TLS, the service's SIGHUP says, in one line, that there is
        nothing to reload.
        """
        hello = HelloService(HelloServerFactory(clock=Clock()), MemoryReactorClock())
        with capturedLogs() as events:
            hello.hangUp()
        self.assertEqual(
            [formatEvent(e) for e in events], ["SIGHUP: no TLS files to reload"]
        )


def caughtSignals(pid: int, field: str = "SigCgt") -> int:
    """
    The signals that ``twist hellotcp`` in process ``pid`` handles (or, with
    ``field="SigIgn"``, ignores), as a bit mask (bit ``n - 1`` for signal
    ``n``), from ``/proc``: none until it runs that program (between fork
    and exec a child has its parent's handlers).
    """
    with open(f"/proc/{pid}/cmdline", "rb") as command:
        if b"hellotcp" not in command.read():
            return 0
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1], 16)
    return 0


def signalAsSoonAsCaught(pid: int, number: int, field: str = "SigCgt") -> None:
    """
    Send signal ``number`` to ``pid`` the moment it handles it (or ignores
    it: ``field="SigIgn"``), polling ``/proc`` for `TIMEOUT` seconds at most.
    """
    deadline = time.monotonic() + TIMEOUT
    while not caughtSignals(pid, field) & (1 << (number - 1)):
        if time.monotonic() > deadline:
            raise AssertionError(f"process {pid} never handled signal {number}")
        time.sleep(0.0005)
    os.kill(pid, number)


# Start a program with SIGHUP blocked (the mask survives exec).
_BLOCK_HANGUPS = (
    "import os, signal, sys;"
    "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP});"
    "os.execv(sys.argv[1], sys.argv[1:])"
)


def signalOnceBlocked(pid: int, number: int) -> None:
    """
    Send signal ``number`` to ``pid`` once the process blocks it (polling
    ``/proc``, for `TIMEOUT` seconds at most).
    """
    deadline = time.monotonic() + TIMEOUT
    while True:
        with open(f"/proc/{pid}/status") as status:
            blocked = next(
                int(line.split()[1], 16)
                for line in status
                if line.startswith("SigBlk:")
            )
        if blocked & (1 << (number - 1)):
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"process {pid} never blocked signal {number}")
        time.sleep(0.0005)
    os.kill(pid, number)


class HangUpCommandTests(CommandTestCase):
    """
    SIGHUP to a real ``twist hellotcp`` never stops it.
    """

    async def test_withoutTLS(self) -> None:
        """
        A server without TLS says in one line that it has nothing to
        reload, goes on serving, and exits 0 on SIGTERM.
        """
        port = freePort()
        log = os.path.join(self.folder, "hellotcp.log")
        server = await self.startServer(
            [
                command("twist"),
                "--log-format=text",
                f"--log-file={log}",
                "hellotcp",
                "--listen",
                f"tcp:{port}:interface=127.0.0.1",
            ],
            port,
        )
        server.transport.signalProcess("HUP")  # type: ignore[union-attr]
        for _ in range(200):
            with open(log) as text:
                if "SIGHUP" in text.read():
                    break
            await deferLater(reactor, 0.02)
        self.assertEqual(await inThread(exchangesUntilRefused, port, 3), (3, []))
        server.transport.signalProcess("TERM")  # type: ignore[union-attr]
        self.assertEqual(await server.ended.addTimeout(TIMEOUT, reactor), 0)
        with open(log) as text:
            lines = [line for line in text if "SIGHUP" in line]
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("SIGHUP: no TLS files to reload", lines[0])

    async def hangUpEarly(self, blocked: bool, field: str = "SigCgt") -> int:
        """
        Start a TLS server, SIGHUP it early (see the callers), then check
        that it serves, that the SIGHUP was one reload, and that SIGTERM
        exits 0.

        :param blocked: Start it with SIGHUP blocked, as a ``--workers``
            parent starts a worker, and send SIGHUP at once, while Python
            starts; else send it the moment the process handles it.
        """
        port = freePort()
        log = os.path.join(self.folder, "hellotcp.log")
        twist = [
            command("twist"),
            "--log-format=json",
            f"--log-file={log}",
            "hellotcp",
            *tlsListen(port, *pki().server),
        ]
        if blocked:
            twist = [sys.executable, "-c", _BLOCK_HANGUPS, *twist]
        server = self.spawn(twist, server=True)
        pid = server.transport.pid  # type: ignore[union-attr]
        if blocked:
            await inThread(signalOnceBlocked, pid, signal.SIGHUP)
        else:
            await inThread(signalAsSoonAsCaught, pid, signal.SIGHUP, field)
        for _ in range(200):
            self.assertFalse(server.ended.called, server.err.decode())
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except ConnectionRefusedError:
                await deferLater(reactor, 0.05)
        status, out, err = await self.runCommand(
            [command("hellotcp-client"), *verifiedClient(port)]
        )
        self.assertEqual((status, out, err), (0, "Hello, client!\n", ""))
        self.assertFalse(server.ended.called)
        server.transport.signalProcess("TERM")  # type: ignore[union-attr]
        self.assertEqual(await server.ended.addTimeout(TIMEOUT, reactor), 0)
        with open(log) as lines:
            events = list(eventsFromJSONLogFile(lines))
        reloads = [e for e in events if e.get("outcome") == "reloaded"]
        if field == "SigCgt":
            self.assertEqual(len(reloads), 1)
        return len(reloads)

    async def test_heldFromTheStart(self) -> None:
        """
        A SIGHUP sent right after the process starts, while it holds SIGHUP
        blocked (as a worker does), does not kill it once unblocked: it came
        before anything was read, so it is dropped when hellotcp is chosen
        (ignored, which discards a pending SIGHUP), and the server serves.
        """
        self.assertEqual(await self.hangUpEarly(blocked=True, field="SigIgn"), 0)

    async def test_beforeTheReactorRuns(self) -> None:
        """
        A TLS server handles SIGHUP from the moment hellotcp builds its
        service, before the reactor runs: a SIGHUP sent as soon as it is
        handled is one reload, and the server serves.
        """
        await self.hangUpEarly(blocked=False)

    async def test_whileStarting(self) -> None:
        """
        From the moment hellotcp is chosen as twist's plugin (before it is
        even imported), SIGHUP cannot kill the server: one sent as soon as
        it is ignored is dropped (nothing was loaded yet) or, if it comes
        after the TLS files were read, one reload; either way it serves.
        """
        reloads = await self.hangUpEarly(blocked=False, field="SigIgn")
        self.assertIn(reloads, (0, 1))

    async def test_earlySIGTERM(self) -> None:
        """
        SIGTERM sent the moment the server handles it (as it builds its
        service, before the reactor runs) is a graceful stop: exit 0, with
        or without workers.
        """
        for extra in [[], ["--workers", "2"]]:
            server = self.spawn(
                [
                    command("twist"),
                    "hellotcp",
                    "--listen",
                    f"tcp:{freePort()}:interface=127.0.0.1",
                    *extra,
                ],
                server=True,
            )
            pid = server.transport.pid  # type: ignore[union-attr]
            await inThread(signalAsSoonAsCaught, pid, signal.SIGTERM)
            self.assertEqual(await server.ended.addTimeout(TIMEOUT, reactor), 0)
            # Workers asked to stop as they start stop gracefully too.
            self.assertNotIn(b"was killed", server.out)

    async def test_stormWithSIGTERM(self) -> None:
        """
        A storm of SIGHUPs with SIGTERM in the middle, under load: every
        exchange the server accepted is answered, and the process exits 0
        (SIGHUPs reach it until it is gone).
        """
        port, secure = freePort(), freePort()
        log = os.path.join(self.folder, "hellotcp.log")
        server = await self.startServer(
            [
                command("twist"),
                "--log-format=json",
                f"--log-file={log}",
                "hellotcp",
                "--listen",
                f"tcp:{port}:interface=127.0.0.1",
                *tlsListen(secure, *pki().server),
            ],
            port,
        )
        pid = server.transport.pid  # type: ignore[union-attr]
        loads = [inThread(exchangesUntilRefused, port) for _ in range(2)]
        sent = await inThread(hangUpStorm, pid)
        self.assertEqual(await server.ended.addTimeout(TIMEOUT, reactor), 0)
        for load in loads:
            greeted, lost = await load
            self.assertEqual(lost, [])
            self.assertGreater(greeted, 0)
        self.assertGreater(sent, 25)
