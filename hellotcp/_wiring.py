# -*- test-case-name: tests.test_tap -*-
"""
The running server, put together from checked settings: a single process,
one worker of several, or the workers' parent.

`hellotcp.tap` turns ``twist hellotcp``'s command line into a `ServerPlan`;
this module wires what the plan names (the factory and its listeners, the
metrics, the open-file limit, the worker supervisor).  It takes plain
values, never the command's options, so that it imports nothing of the
command line.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import shutil
from collections.abc import Callable
from typing import Any, cast

from attrs import field, frozen
from twisted.application.service import Service
from twisted.application.strports import service as listenerService
from twisted.internet.interfaces import IReactorCore, IReactorFromThreads, IReactorTime
from twisted.logger import Logger, globalLogPublisher

from . import metrics
from ._filelimit import RESERVED_DESCRIPTORS, fitFileLimit, raiseFileLimit
from ._listeners import DEFAULT_BACKLOG, splitProxy, withBacklog
from ._signals import holdHangUps
from ._systemd import notify, reloading
from ._twistedcompat import ParentLogging, TwistLog
from .exchangelog import ExchangeLogFile, FlushFirst
from .metricspage import MAX_CONNECTIONS as METRICS_MAX_CONNECTIONS
from .metricspage import metricsSite
from .protocol import HelloServerFactory, ServerSettings
from .service import HelloService
from .tls import ReloadableServerTLS
from .workers import (
    DEFAULT_WORKER_TIMEOUT,
    WorkerCommand,
    WorkerSupervisor,
    dieWithParent,
    inheritedListeners,
    reportReady,
    stampLogs,
    thisWorker,
)

# The lines logged here keep the namespace they were first logged under,
# which operators may filter on.
_log = Logger(namespace="hellotcp.tap")


@frozen
class ServerPlan:
    """
    What ``twist hellotcp`` was asked to run, checked.

    :ivar settings: The settings of every connection.
    :ivar listen: Plain listener descriptions (``--listen``).
    :ivar tlsListen: TLS listener descriptions (``--tls-listen``).
    :ivar backlog: The listen queue of endpoints that do not set one.
    :ivar shutdownTimeout: Seconds open exchanges get to finish on stop.
    :ivar drainTime: Seconds to serve on, health checks failing, before
        listening stops.
    :ivar tls: The TLS files of the TLS listeners.
    :ivar metrics: Where ``/metrics`` is served, if anywhere.
    :ivar workers: How many worker processes serve the listeners.
    :ivar workerTimeout: Seconds without a heartbeat after which a worker is
        taken for hung.
    :ivar arguments: The plugin's command line as given, which each worker
        runs again.
    """

    settings: ServerSettings = field(factory=ServerSettings)
    listen: list[str] = field(factory=list)
    tlsListen: list[str] = field(factory=list)
    backlog: int = DEFAULT_BACKLOG
    shutdownTimeout: float = 5.0
    drainTime: float = 0.0
    tls: ReloadableServerTLS | None = None
    metrics: str | None = None
    workers: int = 1
    workerTimeout: float = DEFAULT_WORKER_TIMEOUT
    arguments: list[str] = field(factory=list)


def buildService(
    reactor: IReactorCore,
    plan: ServerPlan,
    logging: ParentLogging,
    logGreetings: bool = True,
    logHealthChecks: bool = False,
    exchangesTo: TwistLog | None = None,
) -> HelloService | WorkerSupervisor:
    """
    The service that runs ``plan``: one server, or, with more than one
    worker, their parent (in a worker, that worker's server).

    :param logging: How the command running the plugin logs, which workers
        follow.
    :param logGreetings: Whether greetings are logged (info events pass).
    :param logHealthChecks: Whether health checks are logged (debug events
        pass; twice a second per balancer).
    :param exchangesTo: Under ``twist``, its log, where the records of
        greetings and health checks are written by an
        `hellotcp.exchangelog.ExchangeLogFile` rather than through
        `twisted.logger`.
    """
    worker = thisWorker()
    if worker is None and plan.workers > 1:
        return _supervisor(reactor, plan, logging)
    exchangeLog = None
    if exchangesTo is not None and (logGreetings or logHealthChecks):
        exchangeLog = _exchangeLog(reactor, exchangesTo, worker)
    return _server(reactor, plan, worker, logGreetings, logHealthChecks, exchangeLog)


def _exchangeLog(
    reactor: IReactorCore, log: TwistLog, worker: int | None
) -> ExchangeLogFile:
    """
    The buffered writer of exchange records into ``twist``'s log, flushed
    before any other event reaches that log (so the file stays in order)
    and once the reactor has stopped (so a graceful stop loses nothing).
    """
    exchangeLog = ExchangeLogFile(
        log.descriptor, log.format, cast(IReactorTime, reactor), worker=worker
    )
    # Added while the plugin builds its service, before twist adds the
    # observer that writes its log: this one comes first.
    globalLogPublisher.addObserver(FlushFirst(exchangeLog))
    reactor.addSystemEventTrigger("after", "shutdown", exchangeLog.flush)
    return exchangeLog


def descriptorsNeeded(listeners: int, worker: bool, metricsPage: bool) -> int:
    """
    The descriptors a server needs beyond its greeting connections: one per
    listener, a worker's readiness pipe, and, where it serves ``/metrics``
    (never in a worker), that listener and its connections, and the reserve.
    """
    needed = listeners + RESERVED_DESCRIPTORS
    if worker:
        needed += 1  # the pipe on which it says that it is ready
    if metricsPage and not worker:
        needed += 1 + METRICS_MAX_CONNECTIONS
    return needed


def _server(
    reactor: IReactorCore,
    plan: ServerPlan,
    worker: int | None,
    logGreetings: bool,
    logHealthChecks: bool,
    exchangeLog: ExchangeLogFile | None,
) -> HelloService:
    """
    The server of a single process, or of worker number ``worker``.
    """
    own = descriptorsNeeded(
        len(plan.listen) + len(plan.tlsListen),
        worker is not None,
        plan.metrics is not None,
    )
    settings = fitFileLimit(plan.settings, own, _log)
    counted: metrics.ServerMetrics = metrics.NO_METRICS
    if plan.metrics is not None or metrics.inMultiprocessMode():
        counted = metrics.serverMetrics()
    factory = HelloServerFactory(
        settings,
        cast(IReactorTime, reactor),
        logGreetings=logGreetings,
        metrics=counted,
        logHealthChecks=logHealthChecks,
        exchangeLog=exchangeLog,
    )
    service = HelloService(
        factory,
        reactor,
        plan.shutdownTimeout,
        handleSignals=True,
        exitOnListenError=True,
        backlog=plan.backlog,
        tls=plan.tls,
        worker=worker is not None,
        drainTime=plan.drainTime,
    )
    # SIGHUP is safe from here on (a worker's parent held it back until now).
    if worker is None:
        holdHangUps(cast(IReactorFromThreads, reactor), _toldToSystemd(service.hangUp))
        # The listeners are up once the reactor runs (twist and twistd start
        # the service first).
        reactor.callWhenRunning(notify, "READY=1")
        reactor.addSystemEventTrigger("before", "shutdown", notify, "STOPPING=1")
    else:
        holdHangUps(cast(IReactorFromThreads, reactor), service.hangUp)
    listeners = [(d, False) for d in plan.listen]
    listeners += [(d, True) for d in plan.tlsListen]
    adopted: list[Any] = [None] * len(listeners)
    if worker is not None:
        stampLogs(worker)
        dieWithParent()
        adopted = inheritedListeners(reactor, len(listeners))
        reactor.callWhenRunning(reportReady, cast(IReactorTime, reactor))
    for (description, secure), endpoint in zip(listeners, adopted, strict=True):
        service.listen(description, secure=secure, adopted=endpoint)
    if plan.tls is not None:
        counted.certificateExpires(plan.tls.expires)
    if worker is None and isinstance(counted, metrics.PrometheusMetrics):
        assert counted.registry is not None and plan.metrics is not None
        service.serveMetrics(plan.metrics, metricsSite(counted.registry))
    return service


def _supervisor(
    reactor: IReactorCore, plan: ServerPlan, logging: ParentLogging
) -> WorkerSupervisor:
    """
    The parent of ``plan.workers`` processes, each running this same command.
    """
    environment: dict[str, str] = {}
    directory: str | None = None
    listeners = plan.listen + plan.tlsListen
    _fitParentFileLimit(plan.workers, len(listeners), plan.metrics)
    if plan.metrics is not None:
        # A killed parent could not remove its folder: the next one does.
        for stale in metrics.removeStaleFolders():
            _log.info(
                "Removed the metrics folder of a parent that died: {folder}",
                folder=stale,
            )
        directory = metrics.workersFolder()
        # Removed at exit, however the parent stops (a port in use included).
        atexit.register(shutil.rmtree, directory, True)
        environment = metrics.workerEnvironment(directory)
    command = WorkerCommand(
        ["-m", "twisted", *logging.arguments, "hellotcp", *plan.arguments],
        environment,
        logging.descriptor,
    )
    # The parent opens the sockets; each worker adds the PROXY protocol.
    descriptions = [
        withBacklog(splitProxy(description)[1], plan.backlog)
        for description in listeners
    ]

    def forget(pid: int) -> None:
        if directory is not None:
            metrics.forgetWorker(pid, directory)

    # The parent's own series (its workers' lives) beside the sum of theirs.
    registry = metrics.workersRegistry(directory) if directory is not None else None
    supervisorMetrics: metrics.SupervisorMetrics = metrics.NO_SUPERVISOR_METRICS
    if registry is not None:
        supervisorMetrics = metrics.PrometheusSupervisorMetrics(registry)
    supervisor = WorkerSupervisor(
        reactor,
        plan.workers,
        descriptions,
        command,
        # Each worker drains (with the same --drain-time) before it stops.
        plan.drainTime + plan.shutdownTimeout,
        onWorkerExit=forget,
        handleSignals=True,
        exitOnListenError=True,
        reloads=plan.tls is not None,
        tls=plan.tls,
        workerTimeout=plan.workerTimeout,
        metrics=supervisorMetrics,
    )
    # SIGHUP is safe from here on, before any worker starts.
    holdHangUps(cast(IReactorFromThreads, reactor), _toldToSystemd(supervisor.hangUp))
    # The parent speaks for its workers: ready once every one serves.
    supervisor.ready.addCallback(lambda _: notify("READY=1"))
    reactor.addSystemEventTrigger("before", "shutdown", notify, "STOPPING=1")
    if logging.appendTo is not None:
        appending = _AppendingLog(logging.appendTo)
        appending.setServiceParent(supervisor)  # type: ignore[no-untyped-call]
    if registry is not None:
        assert plan.metrics is not None
        site = metricsSite(registry)
        listener = listenerService(plan.metrics, site, reactor=reactor)
        listener.setName(f"{plan.metrics} (metrics)")
        listener.setServiceParent(supervisor)
    return supervisor


def _toldToSystemd(hangUp: Callable[[], object]) -> Callable[[], None]:
    """
    ``hangUp`` (what SIGHUP does) between systemd's ``RELOADING=1`` and
    ``READY=1``, so that ``systemctl reload`` waits for it.
    """

    def reload() -> None:
        reloading()
        try:
            hangUp()
        finally:
            notify("READY=1")

    return reload


def _fitParentFileLimit(
    workers: int, listeners: int, metricsEndpoint: str | None
) -> None:
    """
    Raise the parent's open-file limit to fit a socket per worker per
    listener, a pipe per worker, and the metrics listener and its
    connections.

    :raises SystemExit: In one line, if the hard limit is too low.
    """
    needed = workers * (listeners + 1) + RESERVED_DESCRIPTORS
    if metricsEndpoint is not None:
        needed += 1 + METRICS_MAX_CONNECTIONS
    available = raiseFileLimit(needed)
    if available < needed:
        raise SystemExit(
            f"hellotcp: error: --workers {workers} needs {needed} open files, "
            f"and the open-file limit is {available} (ulimit -n, LimitNOFILE=)"
        )


class _AppendingLog(Service):
    """
    Make this process's own writes to the log file at ``path`` append, as
    its workers' do, once the log is open (``twistd`` opens it after it has
    built the service, and without ``O_APPEND``: its writes would land at
    its own offset, over the lines the workers appended meanwhile).
    """

    name = "the log file"

    def __init__(self, path: str) -> None:
        self.path = os.path.realpath(path)

    def startService(self) -> None:
        """
        Set ``O_APPEND`` on every descriptor of this process open on the log
        (Linux: found in ``/proc/self/fd``; elsewhere, nothing is done).
        """
        Service.startService(self)
        try:
            descriptors = os.listdir("/proc/self/fd")
        except OSError:
            return
        for name in descriptors:
            try:
                if os.path.realpath(f"/proc/self/fd/{name}") != self.path:
                    continue
                descriptor = int(name)
                flags = fcntl.fcntl(descriptor, fcntl.F_GETFL)
                fcntl.fcntl(descriptor, fcntl.F_SETFL, flags | os.O_APPEND)
            except (OSError, ValueError):
                continue
