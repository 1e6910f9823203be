"""
Socket activation as systemd does it, without systemd: ``twist hellotcp``
started with an inherited listening socket as descriptor 3 and
``LISTEN_FDS``/``LISTEN_PID`` set.
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import sys
import threading

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import SkipTest

from hellotcp._systemd import NOTIFY_VARIABLE

from .support import (
    TIMEOUT,
    CommandTestCase,
    Process,
    classicClient,
    command,
    continuousLoad,
    freePort,
    inThread,
    lostUnder,
)

# Like systemd: descriptor 3 is the socket, LISTEN_PID names the process that
# will use it (the pid survives the exec), LISTEN_FDNAMES names the socket
# (systemd 227 and later always set it, and Twisted requires it).
ACTIVATE = (
    "import os, sys;"
    "os.environ['LISTEN_FDS'] = '1';"
    "os.environ['LISTEN_FDNAMES'] = 'hellotcp.socket';"
    "os.environ['LISTEN_PID'] = str(os.getpid());"
    "os.execv(sys.argv[1], sys.argv[1:])"
)


UNIT = os.path.join(
    os.path.dirname(os.path.dirname(__file__)), "contrib", "systemd", "hellotcp.service"
)


class SocketActivationTests(CommandTestCase):
    """
    ``--listen systemd:domain=INET:index=0``.
    """

    async def test_inheritedSocket(self) -> None:
        """
        The server greets on the socket it was handed (it never binds one),
        and exits 0 on SIGTERM.
        """
        await self.activate()

    async def test_inheritedSocketSharedByWorkers(self) -> None:
        """
        With ``--workers 2`` the parent adopts the socket and both workers
        serve it.
        """
        await self.activate("--workers", "2")

    async def test_restartUnderLoadLosesNothing(self) -> None:
        """
        ``systemctl restart`` of a socket-activated server: systemd holds
        the listening socket, so connections made while no server runs wait
        in its queue for the next one.  Under continuous load from two
        clients, SIGTERM to the first server, then a second on the same
        socket: every exchange is greeted.
        """
        listener = socket.create_server(("127.0.0.1", 0), backlog=4096)
        self.addCleanup(listener.close)
        port = listener.getsockname()[1]
        first = self.start(listener, "systemd:domain=INET:index=0")
        self.assertEqual((await inThread(classicClient, port))[0], b"Hello, client!")
        stop = threading.Event()
        loads = [inThread(continuousLoad, port, stop) for _ in range(2)]
        try:
            await deferLater(reactor, 1.0)
            first.transport.signalProcess("TERM")  # type: ignore[union-attr]
            self.assertEqual(await first.ended.addTimeout(TIMEOUT, reactor), 0)
            second = self.start(listener, "systemd:domain=INET:index=0")
            await deferLater(reactor, 1.5)
        finally:
            stop.set()
        self.assertEqual(await lostUnder("socket-activation restart", loads), [])
        second.transport.signalProcess("TERM")  # type: ignore[union-attr]
        self.assertEqual(await second.ended.addTimeout(TIMEOUT, reactor), 0)

    async def test_reload(self) -> None:
        """
        ``systemctl reload`` (the unit's ``ExecReload``, SIGHUP) on a server
        without TLS: one line saying there is nothing to reload, and the
        server goes on serving.
        """
        with open(UNIT) as unit:
            self.assertIn("ExecReload=/bin/kill -HUP $MAINPID\n", unit.read())
        process = await self.activate(hangUp=True)
        lines = (process.out + process.err).decode().splitlines()
        self.assertEqual(
            [line for line in lines if "SIGHUP" in line],
            [line for line in lines if "SIGHUP: no TLS files to reload" in line],
        )
        self.assertEqual(len([line for line in lines if "SIGHUP" in line]), 1)

    async def test_reloadWithWorkers(self) -> None:
        """
        The same with ``--workers 2``: the parent says it in one line, and no
        worker dies.
        """
        process = await self.activate("--workers", "2", hangUp=True)
        lines = (process.out + process.err).decode().splitlines()
        self.assertEqual(len([line for line in lines if "SIGHUP" in line]), 1)
        self.assertNotIn("was killed", "\n".join(lines))

    async def test_noInheritedSocket(self) -> None:
        """
        Without an inherited socket, one line says so (not ``list index out
        of range``), exit status 2 as for any listener that is wrong on the
        command line; with ``--workers`` as well.
        """
        for extra in [[], ["--workers", "2"]]:
            status, _, err = await self.runCommand(
                [
                    command("twist"),
                    "hellotcp",
                    "--listen",
                    "systemd:domain=INET:index=0",
                    *extra,
                ]
            )
            self.assertEqual(status, 2)
            self.assertOneLine(
                status,
                err,
                "hellotcp: error: --listen systemd:domain=INET:index=0: no "
                "inherited socket at that index: LISTEN_FDS is not set",
            )

    async def test_inheritedUNIXSocketRefusedWithWorkers(self) -> None:
        """
        A UNIX socket from systemd is refused with ``--workers``, in one line
        naming the reason, before any worker starts.
        """
        path = os.path.join(self.folder, "hellotcp.sock")
        listener = socket.socket(socket.AF_UNIX)
        self.addCleanup(listener.close)
        listener.bind(path)
        listener.listen()
        process = self.start(
            listener,
            "systemd:domain=UNIX:index=0",
            "--workers",
            "2",
        )
        status = await process.ended.addTimeout(TIMEOUT, reactor)
        self.assertOneLine(
            status,
            process.err.decode(),
            "cannot listen on systemd:domain=UNIX:index=0: --workers serves TCP",
        )
        self.assertTrue(os.path.exists(path))

    def start(self, listener: socket.socket, *arguments: str) -> Process:
        """
        Start ``twist hellotcp`` as systemd would, with ``listener`` as
        descriptor 3.
        """
        process = Process()
        transport = reactor.spawnProcess(
            process,
            sys.executable,
            [
                sys.executable,
                "-c",
                ACTIVATE,
                command("twist"),
                "hellotcp",
                "--listen",
                *arguments,
            ],
            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
            path=self.folder,
            childFDs={0: "w", 1: "r", 2: "r", 3: listener.fileno()},
        )

        def kill() -> Deferred[int]:
            if not process.ended.called:
                transport.signalProcess("KILL")
            return process.ended

        self.addCleanup(self.assertCleanLog, process)
        self.addCleanup(kill)
        return process

    async def activate(self, *extra: str, hangUp: bool = False) -> Process:
        """
        Start ``twist hellotcp`` as systemd would on an inherited socket,
        greet it five times (SIGHUP it, as ``systemctl reload`` does, and
        greet it five times more), and stop it with SIGTERM.
        """
        listener = socket.create_server(("127.0.0.1", 0), backlog=4096)
        self.addCleanup(listener.close)
        port = listener.getsockname()[1]
        process = self.start(listener, "systemd:domain=INET:index=0", *extra)
        # Only the server holds the socket from here on.
        listener.close()
        for _ in range(5):
            answer, _ = await inThread(classicClient, port)
            self.assertEqual(answer, b"Hello, client!")
        if hangUp:
            process.transport.signalProcess("HUP")  # type: ignore[union-attr]
            for _ in range(5):
                answer, _ = await inThread(classicClient, port)
                self.assertEqual(answer, b"Hello, client!")
        process.transport.signalProcess("TERM")  # type: ignore[union-attr]
        self.assertEqual(await process.ended.addTimeout(TIMEOUT, reactor), 0)
        self.assertNotIn(b"error", process.out + process.err)
        return process


class NotifySocket:
    """
    A stand-in for systemd's notification socket: a datagram socket that
    receives with the sender's credentials.
    """

    def __init__(self, folder: str) -> None:
        self.path = os.path.join(folder, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.setblocking(False)

    def received(self) -> list[tuple[int, list[str]]]:
        """
        Every notification waiting: the sender's pid and its states.
        """
        found: list[tuple[int, list[str]]] = []
        credentials = struct.calcsize("3i")
        while True:
            try:
                data, ancillary, _, _ = self.sock.recvmsg(
                    4096, socket.CMSG_SPACE(credentials)
                )
            except BlockingIOError:
                return found
            pid = -1
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("3i", value[:credentials])[0]
            found.append((pid, data.decode().split("\n")))

    async def waitFor(self, state: str) -> list[tuple[int, list[str]]]:
        """
        Wait (10 s at most) for a notification holding ``state``; every one
        received until then.
        """
        seen: list[tuple[int, list[str]]] = []
        for _ in range(200):
            seen += self.received()
            if any(state in states for _, states in seen):
                return seen
            await deferLater(reactor, 0.05)
        raise AssertionError(f"systemd was never told {state}: {seen}")


class NotifyTests(CommandTestCase):
    """
    ``Type=notify``: what the server tells systemd, and when.
    """

    async def test_unitVerifies(self) -> None:
        """
        ``systemd-analyze verify`` accepts the shipped units (the command
        line pointed at this machine's ``twist``), and the service is
        ``Type=notify``, main process only.
        """
        analyze = shutil.which("systemd-analyze")
        if analyze is None and not os.environ.get("CI"):
            raise SkipTest("no systemd-analyze (apt-get install systemd)")
        assert analyze is not None, "CI installs systemd-analyze (.ci/run)"
        folder = os.path.join(self.folder, "units")
        os.mkdir(folder)
        for name in ("hellotcp.service", "hellotcp.socket"):
            with open(os.path.join(os.path.dirname(UNIT), name)) as unit:
                text = unit.read().replace("/opt/hellotcp/bin/twist", command("twist"))
            with open(os.path.join(folder, name), "w") as copy:
                copy.write(text)
        self.assertIn("Type=notify\n", text := open(UNIT).read())
        self.assertIn("NotifyAccess=main\n", text)
        status, out, err = await self.runCommand(
            [analyze, "verify", os.path.join(folder, "hellotcp.service")]
        )
        self.assertEqual((status, out, err), (0, "", ""))

    async def notified(self, *extra: str) -> None:
        """
        Start ``twist hellotcp`` under a stand-in for systemd: ``READY=1``
        comes once the port answers, ``RELOADING=1`` and ``READY=1`` around
        SIGHUP, ``STOPPING=1`` on SIGTERM, all from the main process.
        """
        notifications = NotifySocket(self.folder)
        self.addCleanup(notifications.sock.close)
        port = freePort()
        self.env[NOTIFY_VARIABLE] = notifications.path
        server = await self.startServer(
            [
                command("twist"),
                "hellotcp",
                "--listen",
                f"tcp:{port}:interface=127.0.0.1",
                *extra,
            ],
            port,
        )
        assert server.transport is not None
        main = server.transport.pid
        seen = await notifications.waitFor("READY=1")
        # Ready means answering, every worker included.
        answers = await inThread(lambda: [classicClient(port)[0] for _ in range(10)])
        self.assertEqual(answers, [b"Hello, client!"] * 10)
        server.transport.signalProcess("HUP")
        seen += await notifications.waitFor("READY=1")
        server.transport.signalProcess("TERM")
        self.assertEqual(await server.ended.addTimeout(TIMEOUT, reactor), 0)
        seen += notifications.received()
        self.assertEqual({pid for pid, _ in seen}, {main})
        states = [states[0] for _, states in seen]
        self.assertEqual(states, ["READY=1", "RELOADING=1", "READY=1", "STOPPING=1"])
        [reload] = [states for _, states in seen if states[0] == "RELOADING=1"]
        self.assertRegex(reload[1], r"^MONOTONIC_USEC=\d+$")

    async def test_notify(self) -> None:
        """
        A single process tells systemd when it is ready, reloading and
        stopping.
        """
        await self.notified()

    async def test_notifyWithWorkers(self) -> None:
        """
        With ``--workers 2``, the parent speaks for them, once both serve;
        the workers say nothing.
        """
        await self.notified("--workers", "2")
