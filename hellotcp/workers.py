# -*- test-case-name: tests.test_workers -*-
"""
Several worker processes serving the same listeners: ``--workers N``.

The parent opens every listening socket, then starts N copies of the same
``twist hellotcp`` command, each handed its sockets as inherited file
descriptors that it adopts (Twisted's ``adoptStreamPort``).  On Linux each
worker gets its own TCP socket on the shared port (``SO_REUSEPORT``), so
the kernel spreads new connections evenly and the workers do not wake each
other; elsewhere, and for a socket inherited from systemd, the workers
share one socket.  Only TCP sockets are served this way (see `_ADOPTABLE`).

The parent accepts nothing.  It keeps its copies of the sockets while it
runs, so that the connections queued on a dead worker's socket wait for
its replacement instead of being reset; it restarts a worker that exits,
with a growing pause while workers keep dying young; it passes SIGHUP on
(every worker reloads its TLS files), and on SIGTERM or SIGINT it closes
its copies of the sockets and passes SIGTERM on, so each worker drains and
exits as a single process would, then exits 0 itself.

SIGHUP never kills a worker.  The parent starts each one with SIGHUP
blocked (a blocked signal waits, pending, and the mask is inherited across
``exec``), and the worker unblocks it once its handler is in place (see
`hellotcp._signals.holdHangUps`), so a SIGHUP that reaches a starting worker
by any route is handled, once, as soon as it can be.  SIGTERM and SIGINT
are held the same way until the worker's service takes them over, so that a
worker asked to stop while it starts stops gracefully (exit 0).  The worker then says
it is ready on a pipe the parent gave it (`READY_VARIABLE`); the parent
passes SIGHUP on only to ready workers, and remembers one for each worker
still starting, which it sends the moment that worker is ready (the files
it loaded while starting may be older than the SIGHUP).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import IO, cast

from attrs import define, field
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import (
    AdoptedStreamServerEndpoint,
    TCP4ServerEndpoint,
    TCP6ServerEndpoint,
    serverFromString,
)
from twisted.internet.error import ProcessDone, ProcessExitedAlready
from twisted.internet.interfaces import (
    IDelayedCall,
    IListeningPort,
    IProcessTransport,
    IReactorCore,
    IReactorFromThreads,
    IReactorProcess,
    IReactorTime,
)
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol
from twisted.internet.task import LoopingCall
from twisted.logger import ILogObserver, LogEvent, Logger, globalLogPublisher
from twisted.python.failure import Failure
from zope.interface import implementer

from ._listeners import (
    ListenError,
    describeListenError,
    endpointType,
    exitingOnListenError,
    startListeners,
)
from ._signals import StopSignals, callOnSignal
from ._systemd import NOTIFY_VARIABLE
from ._twistedcompat import stopAccepting, tcpEndpointAddress
from .metrics import NO_SUPERVISOR_METRICS, SupervisorMetrics
from .tls import ReloadableServerTLS

_log = Logger()

__all__ = [
    "MAX_WORKERS",
    "NotAdoptableError",
    "WorkerCommand",
    "WorkerCountError",
    "WorkerSupervisor",
    "checkAdoptable",
    "workerCount",
]

WORKER_VARIABLE = "HELLOTCP_WORKER"
"""The environment variable that tells a worker its number (1, 2, ...)."""

FIRST_LISTENER_DESCRIPTOR = 3
"""A worker finds listener ``i`` (in the order given) at this descriptor + i."""

INTERMEDIATES_VARIABLE = "HELLOTCP_KEEP_INTERMEDIATES"
"""The environment variable that tells a worker that the others serve
intermediate certificates ("1"): it must not start with a certificate file
that has lost them (a file caught half written)."""

READY_VARIABLE = "HELLOTCP_READY_FD"
"""The environment variable that tells a worker the descriptor on which it
says that it is ready (SIGHUP handled, listeners up)."""

MAX_WORKERS = 256
"""The largest ``--workers``.  Each worker is a whole Python process (some
30 MB) and the parent holds a socket per worker per listener; far more
workers than cores only adds memory and context switches."""

# A worker that dies younger than this is restarted after a pause that
# doubles with each such death, from the first pause up to the longest.
STABLE_AFTER = 10.0
FIRST_PAUSE = 0.5
LONGEST_PAUSE = 30.0

# After SIGTERM, workers get the shutdown timeout plus this to exit by
# themselves before they are killed.
_KILL_MARGIN = 5.0

HEARTBEAT_INTERVAL = 0.5
"""Seconds between the heartbeats a ready worker writes to its parent."""

DEFAULT_WORKER_TIMEOUT = 10.0
"""Seconds without a heartbeat after which the parent takes a ready worker
for hung (its loop stuck, or the process stopped): it is killed with
SIGKILL and started again, as gunicorn's ``--timeout`` does."""

MIN_WORKER_TIMEOUT = 4 * HEARTBEAT_INTERVAL
"""The shortest worker timeout: several heartbeats, so that one late beat
of a busy worker is not taken for a hang."""

START_TIMEOUT = 30.0
"""Seconds a new worker gets to say that it is ready.  One that does not is
killed: started by a rolling restart (SIGUSR2), the roll stops with the old
worker serving; otherwise it is started again, as a hung one is."""

# Where several SO_REUSEPORT sockets on one port share its connections out
# (Linux 3.9 and later); elsewhere the option lets the last socket bound take
# them all, and the workers share one socket instead.
_REUSEPORT_BALANCES = sys.platform.startswith("linux")

# Endpoint types whose listening socket a worker can adopt as it is: the
# TLS of --tls-listen and the PROXY protocol of haproxy: are added by each
# worker around the adopted socket, but an ssl: endpoint's TLS would be lost.
# UNIX sockets are left out: Twisted's port for an adopted UNIX socket sets
# the file's mode to its own default (undoing mode=) and removes the file
# when it stops, which would break the parent's socket for the other workers.
_ADOPTABLE = frozenset({"tcp", "tcp6", "systemd"})

_NOT_ADOPTABLE = "--workers serves TCP: tcp, tcp6 and systemd (INET) endpoints"


class WorkerCountError(ValueError):
    """
    A ``--workers`` value that is neither a number of workers in range nor
    ``auto``; the message is one line naming the range.
    """


class NotAdoptableError(ValueError):
    """
    A listener that several workers could not share; the message is one
    line naming the listener and the endpoint types they can share.
    """


def workerCount(value: str) -> int:
    """
    Parse ``--workers``: a number from 1 to `MAX_WORKERS`, or ``auto`` for
    one per core this process may run on (at most `MAX_WORKERS`).

    :raises WorkerCountError: On anything else.
    """
    if value == "auto":
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            cores = os.cpu_count() or 1
        return min(cores, MAX_WORKERS)
    # Digits only, and few of them: int() would also take "+3", " 3" and
    # "3_000", and spend a long time on a huge number.
    count = int(value) if value.isascii() and value.isdigit() and len(value) < 8 else 0
    if not 1 <= count <= MAX_WORKERS:
        raise WorkerCountError(
            f"--workers must be a whole number from 1 to {MAX_WORKERS}, or auto, "
            f"not {value!r}"
        )
    return count


def checkAdoptable(option: str, description: str) -> None:
    """
    Check that several workers can share the listener ``description``, given
    with option ``--option``.

    :raises NotAdoptableError: If they could not.
    """
    kind = endpointType(description)
    if kind not in _ADOPTABLE:
        advice = " (use --tls-listen for TLS)" if kind == "ssl" else ""
        raise NotAdoptableError(f"--{option} {description}: {_NOT_ADOPTABLE}{advice}")


def thisWorker() -> int | None:
    """
    This process's worker number, if a parent started it as a worker.
    """
    value = os.environ.get(WORKER_VARIABLE)
    return int(value) if value else None


def reportReady(clock: IReactorTime) -> LoopingCall | None:
    """
    Tell the parent that this worker is ready (its SIGHUP handler is in
    place and its listeners are up), on the descriptor the parent named in
    `READY_VARIABLE`, then keep telling it that this worker is alive: a
    heartbeat every `HEARTBEAT_INTERVAL` seconds, written by the reactor's
    loop, so that a worker whose loop is stuck stops beating.  Nothing
    happens without a parent.

    :returns: The heartbeat, if there is a parent to hear it.
    """
    value = os.environ.get(READY_VARIABLE)
    if not value:
        return None
    descriptor = int(value)
    # A parent that does not read (it is stopping) must not block the loop.
    os.set_blocking(descriptor, False)
    if not _beat(descriptor, b"ready\n"):
        return None

    def beat() -> None:
        if not _beat(descriptor, b"."):
            heartbeat.stop()

    heartbeat = LoopingCall(beat)
    heartbeat.clock = clock
    heartbeat.start(HEARTBEAT_INTERVAL, now=False)
    return heartbeat


def _beat(descriptor: int, data: bytes) -> bool:
    """
    Write ``data`` on the pipe to the parent; whether the parent is there.
    """
    try:
        os.write(descriptor, data)
    except BlockingIOError:  # the pipe is full: the parent is busy, not gone
        return True
    except OSError:  # the parent is gone: the kernel sends SIGTERM
        os.close(descriptor)
        return False
    return True


# The signals a worker starts with blocked, until it handles them.
_HELD = frozenset({signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGUSR2})


@contextmanager
def _signalsHeld() -> Iterator[None]:
    """
    Block SIGHUP, SIGTERM, SIGINT and SIGUSR2 in this thread for a moment: a process
    started meanwhile inherits the block, and such a signal to this process
    waits until the end.
    """
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def inheritedListeners(
    reactor: object, count: int
) -> list[AdoptedStreamServerEndpoint]:
    """
    Endpoints for the ``count`` listening sockets a worker inherits.
    """
    endpoints = []
    for index in range(count):
        descriptor = FIRST_LISTENER_DESCRIPTOR + index
        # A socket object built on a descriptor reads its family from it;
        # detaching leaves the descriptor open for the endpoint to adopt.
        probe = socket.socket(fileno=descriptor)
        family = probe.family
        probe.detach()
        endpoints.append(AdoptedStreamServerEndpoint(reactor, descriptor, family))
    return endpoints


@implementer(ILogObserver)
@define
class WorkerLogStamp:
    """
    Put the worker's number in every log event: a ``worker`` field, and in
    front of the system shown in brackets in text logs
    (``[worker-2 hellotcp.protocol#info]``).

    It must be the global log publisher's first observer, so that it runs
    before the one that writes the log (see `stampLogs`).
    """

    worker: int

    def __call__(self, event: LogEvent) -> None:
        """
        Stamp one event.
        """
        if "worker" in event:
            return
        event["worker"] = self.worker
        system = event.get("log_system")
        if system is None:
            level = event.get("log_level")
            system = f"{event.get('log_namespace', '-')}#{getattr(level, 'name', '-')}"
        event["log_system"] = f"worker-{self.worker} {system}"


def stampLogs(worker: int) -> None:
    """
    Stamp every log event of this process with ``worker``.

    Called while the plugin builds its service, before ``twist`` adds the
    observer that writes the log file, so the stamp comes first.
    """
    globalLogPublisher.addObserver(WorkerLogStamp(worker))


def dieWithParent() -> None:
    """
    Ask the kernel to send this worker SIGTERM if its parent dies, so that a
    killed supervisor leaves no worker behind (Linux only; elsewhere a
    no-op).
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before the request was made
        os.kill(os.getpid(), signal.SIGTERM)


@define
class _Listener:
    """
    One configured listener's sockets in the parent: one per worker with
    ``SO_REUSEPORT``, else one shared by all.
    """

    descriptors: list[int]
    close: Callable[[], object]

    def descriptorFor(self, worker: int) -> int:
        """
        The descriptor worker number ``worker`` (from 1) adopts.
        """
        return self.descriptors[(worker - 1) % len(self.descriptors)]


def _reusePortSockets(
    family: socket.AddressFamily, interface: str, port: int, backlog: int, count: int
) -> list[socket.socket]:
    if port != 0:
        _refuseIfListening(family, interface, port)
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            listening = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(listening)
            # As Twisted's own listenTCP does on POSIX.
            listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            listening.bind((interface, port))
            # Port 0: the first bind picks the port the others share.
            port = listening.getsockname()[1]
            listening.listen(backlog)
            listening.setblocking(False)
    except BaseException:
        for listening in sockets:
            listening.close()
        raise
    return sockets


def _refuseIfListening(family: socket.AddressFamily, interface: str, port: int) -> None:
    """
    Raise ``EADDRINUSE`` if another socket listens on ``interface:port``.

    ``SO_REUSEPORT`` would let this process join the group of sockets that
    another one (of the same user) listens with, such as a second
    supervisor started by mistake, and share its connections; a socket
    without the option cannot bind where one listens, so try one first.
    """
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As Twisted's listenTCP: a port left in TIME_WAIT is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((interface, port))


class _SharedWithWorkers(Factory):
    """
    The factory of the parent's own copy of a socket its workers share: it
    never builds a protocol, since the parent never reads the socket.  (Its
    name is what Twisted's "... starting on" line shows.)
    """

    noisy = False

    def buildProtocol(self, addr: object) -> Protocol | None:
        return None


def openListener(reactor: object, endpointDescription: str, count: int) -> _Listener:
    """
    Open the listening sockets of one listener for ``count`` workers.

    :param endpointDescription: The endpoint, without any ``haproxy:``
        prefix, and with its backlog.
    """
    endpoint = serverFromString(reactor, endpointDescription)
    if isinstance(endpoint, AdoptedStreamServerEndpoint) and (
        endpoint.addressFamily == socket.AF_UNIX
    ):
        raise NotAdoptableError(
            f"{_NOT_ADOPTABLE}; this inherited socket is a UNIX one"
        )
    if isinstance(endpoint, (TCP4ServerEndpoint, TCP6ServerEndpoint)) and (
        _REUSEPORT_BALANCES
    ):
        # Twisted's TCP endpoints have no SO_REUSEPORT option: the sockets
        # are made here, with the endpoint's parsed settings.
        family = (
            socket.AF_INET6
            if isinstance(endpoint, TCP6ServerEndpoint)
            else socket.AF_INET
        )
        sockets = _reusePortSockets(family, *tcpEndpointAddress(endpoint), count)

        def closeAll() -> None:
            for listening in sockets:
                listening.close()

        return _Listener([s.fileno() for s in sockets], closeAll)
    listened: Deferred[IListeningPort] = endpoint.listen(_SharedWithWorkers())
    ports: list[IListeningPort] = []
    failures: list[Failure] = []
    listened.addCallbacks(ports.append, failures.append)
    if failures:
        failures[0].raiseException()
    port = ports[0]
    stopAccepting(port)
    return _Listener([port.fileno()], port.stopListening)  # type: ignore[attr-defined]


class _WorkerProcess(ProcessProtocol):
    """
    The parent's side of one worker process.

    :ivar ready: The worker said that it is ready.
    :ivar lastBeat: When the worker last said it was alive (ready or a
        heartbeat), by the supervisor's clock.
    :ivar hung: The supervisor took it for hung and killed it.
    :ivar becameReady: Fires when the worker says that it is ready.
    :ivar ended: Fires when the worker process has exited.
    :ivar exitStatus: How it exited, in words, once it has.
    :ivar retiring: A rolling restart replaced it and told it to drain: its
        exit is expected, and nothing replaces it.
    :ivar hangUpWaiting: A SIGHUP came while it was starting: it is sent
        once the worker is ready.
    """

    def __init__(
        self, supervisor: WorkerSupervisor, worker: int, readyDescriptor: int
    ) -> None:
        self.supervisor = supervisor
        self.worker = worker
        self.readyDescriptor = readyDescriptor
        self.started = 0.0
        self.pid: int | None = None
        self.ready = False
        self.lastBeat = 0.0
        self.hung = False
        self.becameReady: Deferred[None] = Deferred()
        self.retiring = False
        self.exitStatus: str | None = None
        self.hangUpWaiting = False
        self.ended: Deferred[None] = Deferred()

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        """
        The worker wrote on its readiness pipe: it is ready, or, after that,
        alive.
        """
        if childFD != self.readyDescriptor or not data:
            return
        self.lastBeat = cast(IReactorTime, self.supervisor._reactor).seconds()
        if not self.ready:
            self.ready = True
            self.supervisor._workerReady(self)
            self.becameReady.callback(None)

    def processEnded(self, reason: Failure) -> None:
        """
        The worker exited: the supervisor restarts it unless it is stopping.
        """
        self.supervisor._workerEnded(self, reason)
        self.ended.callback(None)


@define
class WorkerCommand:
    """
    How to start a worker: the command line and what it inherits.

    :ivar arguments: Everything after the program, e.g.
        ``["-m", "twisted", "--log-format=text", "hellotcp", "--listen", ...]``.
    :ivar environment: Variables added to the parent's environment.
    :ivar logDescriptor: The parent's descriptor the workers write their log
        to (as their standard output).
    :ivar executable: The Python that runs them (this one by default).
    """

    arguments: list[str]
    environment: dict[str, str] = field(factory=dict)
    logDescriptor: int = 1
    executable: str = sys.executable


class WorkerSupervisor(MultiService):
    """
    Start ``count`` workers on the listeners given, keep them running, pass
    signals on, and stop them all gracefully.

    :ivar count: How many workers run.
    :ivar ready: Fires once every worker has said that it is ready, the
        first time.
    :ivar listeners: The endpoint descriptions the parent opens, in the
        order the workers adopt them.
    :ivar command: What each worker runs.

    :param reactor: The reactor that spawns the workers and runs the timers.
    :param count: How many workers to run.
    :param listeners: Endpoint descriptions to open (no ``haproxy:``
        prefix), in the order the workers adopt them.
    :param command: What each worker runs.
    :param shutdownTimeout: Seconds the workers get to drain on stop.
    :param handleSignals: Take over SIGTERM and SIGINT on start (see
        `hellotcp._signals.StopSignals`), as ``twist hellotcp`` asks.
    :param exitOnListenError: Turn a `ListenError` into the program's
        one-line `SystemExit`, as ``twist hellotcp`` asks.
    :param workerTimeout: Seconds without a heartbeat after which a ready
        worker is taken for hung, killed and started again.
    :param metrics: Where the workers' starts, the number running and the
        completed rolling restarts are counted.
    :param onWorkerExit: Called with the process id of each worker that
        exits.
    :param reloads: Whether the workers have files to reload on SIGHUP (TLS
        files); without, SIGHUP is only logged, not passed on.
    :param tls: The TLS settings the parent read, kept up to date (quietly)
        on each SIGHUP as the workers' are, so that a worker started later
        is told whether the others serve intermediates.
    """

    def __init__(
        self,
        reactor: IReactorCore,
        count: int,
        listeners: Sequence[str],
        command: WorkerCommand,
        shutdownTimeout: float,
        handleSignals: bool = False,
        onWorkerExit: Callable[[int], object] | None = None,
        reloads: bool = True,
        tls: ReloadableServerTLS | None = None,
        exitOnListenError: bool = False,
        metrics: SupervisorMetrics = NO_SUPERVISOR_METRICS,
        workerTimeout: float = DEFAULT_WORKER_TIMEOUT,
    ) -> None:
        MultiService.__init__(self)
        self._workerTimeout = workerTimeout
        self._watch = LoopingCall(self._checkHeartbeats)
        self._watch.clock = cast(IReactorTime, reactor)
        self._metrics = metrics
        # Every worker process not exited yet: those serving, new ones of a
        # rolling restart still starting, and old ones draining.
        self._running: set[_WorkerProcess] = set()
        self._rolling = False
        self.ready: Deferred[None] = Deferred()
        self._exitOnListenError = exitOnListenError
        self._reloads = reloads
        self._tls = tls
        self.count = count
        self._reactor = reactor
        self.listeners = list(listeners)
        self.command = command
        self._shutdownTimeout = shutdownTimeout
        # As HelloService does in a single process: a requested stop exits
        # 0.  SIGHUP is taken as soon as the service is built (holdHangUps).
        self._signals = (
            StopSignals(reactor, self._stopRequested) if handleSignals else None
        )
        self._onWorkerExit = onWorkerExit
        self._listeners: list[_Listener] = []
        self._protocols: dict[int, _WorkerProcess] = {}
        self._youngDeaths: dict[int, int] = {}
        self._restarts: dict[int, IDelayedCall] = {}
        self._stopping = False
        self._devnull: IO[bytes] | None = None

    def startService(self) -> None:
        """
        Take over SIGTERM and SIGINT (see `hellotcp._signals.StopSignals`),
        open every listener (`ListenError` on failure), then start
        the workers.
        """
        if self._signals is not None:
            self._signals.takeOver()
            reactor = cast(IReactorFromThreads, self._reactor)
            callOnSignal(reactor, signal.SIGUSR2, self.roll)
        with exitingOnListenError(self._exitOnListenError):
            self._openListeners()
        self._devnull = open(os.devnull, "rb")
        for worker in range(1, self.count + 1):
            self._start(worker, "start")
        self._watch.start(HEARTBEAT_INTERVAL, now=False)

    def _checkHeartbeats(self) -> None:
        now = cast(IReactorTime, self._reactor).seconds()
        for protocol in list(self._protocols.values()):
            if protocol.hung:
                continue
            if protocol.ready:
                silent = now - protocol.lastBeat
                if silent <= self._workerTimeout:
                    continue
                problem = (
                    f"stopped answering: no heartbeat for {silent:.1f} s "
                    f"(worker timeout {self._workerTimeout:g} s)"
                )
            elif now - protocol.started > START_TIMEOUT:
                problem = f"was not ready within {START_TIMEOUT:g} s"
            else:
                continue
            protocol.hung = True
            _log.error(
                "worker {worker} (pid {pid}) {problem}; killing it and "
                "starting another",
                worker=protocol.worker,
                pid=protocol.pid,
                problem=problem,
            )
            self._signal(protocol, signal.SIGKILL)

    def _openListeners(self) -> None:
        for description in self.listeners:
            try:
                self._listeners.append(
                    openListener(self._reactor, description, self.count)
                )
            except Exception as error:
                self._closeListeners()
                raise ListenError(description, describeListenError(error)) from error
        # Other services (the metrics page) start before any worker, each
        # failure in one line, as a listener's.
        Service.startService(self)
        try:
            startListeners(self)
        except ListenError:
            self._closeListeners()
            raise

    def _start(self, worker: int, reason: str) -> None:
        self._restarts.pop(worker, None)
        self._protocols[worker] = self._spawn(worker, reason)

    def _spawn(self, worker: int, reason: str) -> _WorkerProcess:
        """
        Start a process for worker number ``worker``, on that number's
        sockets, for ``reason`` (see `SupervisorMetrics.workerStarted`).
        """
        readyDescriptor = FIRST_LISTENER_DESCRIPTOR + len(self._listeners)
        protocol = _WorkerProcess(self, worker, readyDescriptor)
        protocol.started = cast(IReactorTime, self._reactor).seconds()
        assert self._devnull is not None
        childFDs: dict[int, int | str] = {
            0: self._devnull.fileno(),
            1: self.command.logDescriptor,
            2: 2,
        }
        for index, listener in enumerate(self._listeners):
            childFDs[FIRST_LISTENER_DESCRIPTOR + index] = listener.descriptorFor(worker)
        # A pipe the parent reads: the worker writes to it once it is ready.
        childFDs[readyDescriptor] = "r"
        environment = dict(os.environ)
        environment.update(self.command.environment)
        environment[WORKER_VARIABLE] = str(worker)
        # The parent speaks to systemd for every worker.
        environment.pop(NOTIFY_VARIABLE, None)
        if self._tls is not None:
            keep = self._tls.servesIntermediates
            environment[INTERMEDIATES_VARIABLE] = "1" if keep else "0"
        environment[READY_VARIABLE] = str(readyDescriptor)
        # The worker starts with SIGHUP, SIGTERM and SIGINT blocked, until
        # it handles them.
        with _signalsHeld():
            process = cast(IReactorProcess, self._reactor).spawnProcess(
                protocol,
                self.command.executable,
                [self.command.executable, *self.command.arguments],
                env=environment,
                childFDs=childFDs,
            )
        protocol.pid = process.pid
        self._running.add(protocol)
        self._metrics.workerStarted(reason)
        _log.info("worker {worker} started (pid {pid})", worker=worker, pid=process.pid)
        return protocol

    def _workerEnded(self, protocol: _WorkerProcess, reason: Failure) -> None:
        worker = protocol.worker
        self._running.discard(protocol)
        pid = protocol.pid
        status = _exitDescription(reason)
        protocol.exitStatus = status
        if pid is not None and self._onWorkerExit is not None:
            self._onWorkerExit(pid)
        if self._protocols.get(worker) is not protocol:
            # Replaced by a rolling restart, or a new worker of one that
            # failed to start: the roll itself says what happened.
            if protocol.retiring and not reason.check(ProcessDone):
                _log.warn(
                    "worker {worker} (pid {pid}) {status}",
                    worker=worker,
                    pid=pid,
                    status=status,
                )
            return
        del self._protocols[worker]
        self._countRunning()
        if self._stopping:
            if not reason.check(ProcessDone):
                _log.warn("worker {worker} {status}", worker=worker, status=status)
            return
        lived = cast(IReactorTime, self._reactor).seconds() - protocol.started
        if protocol.hung:
            # Its replacement starts at once: the hang was logged already.
            self._start(worker, "hung")
            return
        if lived >= STABLE_AFTER:
            self._youngDeaths[worker] = 0
            pause = 0.0
        else:
            deaths = self._youngDeaths.get(worker, 0)
            self._youngDeaths[worker] = deaths + 1
            pause = min(LONGEST_PAUSE, FIRST_PAUSE * 2**deaths)
        _log.error(
            "worker {worker} (pid {pid}) {status}; starting it again in {pause} s",
            worker=worker,
            pid=pid,
            status=status,
            pause=pause,
        )
        self._restarts[worker] = cast(IReactorTime, self._reactor).callLater(
            pause, self._start, worker, "restart"
        )

    def _workerReady(self, protocol: _WorkerProcess) -> None:
        if protocol.hangUpWaiting and protocol in self._running:
            protocol.hangUpWaiting = False
            self._signal(protocol, signal.SIGHUP)
        self._countRunning()

    def _countRunning(self) -> None:
        ready = sum(1 for protocol in self._protocols.values() if protocol.ready)
        self._metrics.workersRunning(ready)
        if ready == self.count and not self.ready.called:
            self.ready.callback(None)

    def _signal(self, protocol: _WorkerProcess, number: int) -> None:
        if protocol.transport is None:
            return
        try:
            protocol.transport.signalProcess(number)
        except ProcessExitedAlready:  # processEnded is on its way
            pass

    @property
    def processes(self) -> dict[int, IProcessTransport]:
        """
        The worker processes running now, by number.
        """
        return {
            worker: protocol.transport
            for worker, protocol in self._protocols.items()
            if protocol.transport is not None
        }

    def signalWorkers(self, number: int) -> None:
        """
        Send signal ``number`` to every worker process running, those
        starting or draining in a rolling restart included.
        """
        for protocol in list(self._running):
            self._signal(protocol, number)

    def hangUp(self) -> None:
        """
        What SIGHUP to the parent does (see
        `hellotcp._signals.holdHangUps`): pass it on to every ready worker,
        and to each worker still starting as soon as it is ready; with no
        files to reload, only say so.  One log line either way.
        """
        if not self._reloads:
            _log.info("SIGHUP: no TLS files to reload")
            return
        if self._tls is not None:
            self._tls.reload(quiet=True)
        ready = [p for p in self._running if p.ready]
        starting = [p for p in self._running if not p.ready]
        _log.info(
            "SIGHUP: {ready} workers reload their TLS files now, "
            "{starting} once started",
            ready=len(ready),
            starting=len(starting),
        )
        for protocol in ready:
            self._signal(protocol, signal.SIGHUP)
        for protocol in starting:
            protocol.hangUpWaiting = True

    def roll(self) -> None:
        """
        What SIGUSR2 to the parent does: replace every worker, one at a time,
        by a new process running the code installed now.  Each new worker
        serves on its number's sockets before the old one is told to drain
        (SIGTERM), so no queued or open connection is lost.  A new worker
        that does not start stops the roll, and the old one serves on.  A
        SIGUSR2 during a roll, or while stopping, is ignored with one line.
        """
        if self._stopping:
            _log.info("SIGUSR2: stopping; no rolling restart")
            return
        if self._rolling:
            _log.info("SIGUSR2: a rolling restart is under way already; ignored")
            return
        self._rolling = True
        rolled = Deferred.fromCoroutine(self._roll())
        rolled.addErrback(lambda failure: _log.failure("rolling restart", failure))

    async def _roll(self) -> None:
        try:
            workers = sorted(self._protocols)
            _log.info(
                "SIGUSR2: rolling restart of {count} workers, one at a time",
                count=len(workers),
            )
            for worker in workers:
                if self._stopping:
                    return
                if not await self._replace(worker):
                    return
            _log.info(
                "rolling restart complete: {count} workers replaced",
                count=len(workers),
            )
            self._metrics.rollCompleted()
        finally:
            self._rolling = False

    async def _replace(self, worker: int) -> bool:
        """
        Replace worker number ``worker`` by a new process; whether it was.
        """
        old = self._protocols.get(worker)
        new = self._spawn(worker, "roll")
        if not await self._startedInTime(new):
            if new.transport is not None and new in self._running:
                self._signal(new, signal.SIGKILL)
            _log.error(
                "rolling restart stopped: the new worker {worker} (pid {pid}) "
                "{why}; the old one (pid {old}) serves on",
                worker=worker,
                pid=new.pid,
                why=new.exitStatus or f"was not ready within {START_TIMEOUT} s",
                old=old.pid if old is not None else None,
            )
            return False
        if self._stopping:
            return False
        self._protocols[worker] = new
        self._countRunning()
        if old is not None and old in self._running:
            old.retiring = True
            self._signal(old, signal.SIGTERM)
            await old.ended
        _log.info(
            "rolling restart: worker {worker} replaced (pid {old} by pid {new})",
            worker=worker,
            old=old.pid if old is not None else None,
            new=new.pid,
        )
        return True

    def _startedInTime(self, protocol: _WorkerProcess) -> Deferred[bool]:
        """
        Whether ``protocol``'s worker says that it is ready before it exits
        and within `START_TIMEOUT`.
        """
        settled: Deferred[bool] = Deferred()

        def settle(ready: bool) -> None:
            if not settled.called:
                settled.callback(ready)

        protocol.becameReady.addCallback(lambda _: settle(True))
        protocol.ended.addCallback(lambda _: settle(False))
        clock = cast(IReactorTime, self._reactor)
        timeout = clock.callLater(START_TIMEOUT, settle, False)

        def cancelTimeout(ready: bool) -> bool:
            if timeout.active():
                timeout.cancel()
            return ready

        return settled.addCallback(cancelTimeout)

    def stopService(self) -> Deferred[None]:
        """
        Close the parent's copies of the sockets, ask every worker to finish
        (SIGTERM), and fire once all have exited; a worker still running
        after the shutdown timeout (and a margin) is killed.
        """
        self._stopping = True
        if self._watch.running:
            self._watch.stop()
        for restart in self._restarts.values():
            if restart.active():
                restart.cancel()
        self._restarts.clear()
        self._closeListeners()
        waiting = [protocol.ended for protocol in self._running]
        self.signalWorkers(signal.SIGTERM)
        kill = cast(IReactorTime, self._reactor).callLater(
            self._shutdownTimeout + _KILL_MARGIN, self.signalWorkers, signal.SIGKILL
        )

        def finished(result: object) -> Deferred[None] | None:
            if kill.active():
                kill.cancel()
            if self._devnull is not None:
                self._devnull.close()
            stopped: Deferred[None] | None = MultiService.stopService(self)
            return stopped

        return DeferredList(waiting).addCallback(finished)

    def _closeListeners(self) -> None:
        for listener in self._listeners:
            listener.close()
        self._listeners = []

    def _stopRequested(self, name: str) -> None:
        if self._stopping:
            _log.warn("{signal} again: workers abort open exchanges now", signal=name)
            self.signalWorkers(signal.SIGTERM)
        else:
            _log.info(
                "{signal}: stopping {count} workers; open exchanges get "
                "{timeout} s to finish",
                signal=name,
                count=len(self.processes),
                timeout=self._shutdownTimeout,
            )
            self._reactor.stop()


def _exitDescription(reason: Failure) -> str:
    value = reason.value
    signalNumber = getattr(value, "signal", None)
    if signalNumber:
        return f"was killed by {signal.Signals(signalNumber).name}"
    return f"exited with status {getattr(value, 'exitCode', '?')}"
