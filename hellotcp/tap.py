# -*- test-case-name: tests.test_tap -*-
"""
The ``twist hellotcp`` (and ``twistd hellotcp``) plugin: command-line options
to a running service.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import shutil
import sys
from collections.abc import Sequence
from typing import Any, cast

from attrs import evolve
from twisted.application.service import Service
from twisted.application.strports import service as listenerService
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IReactorCore, IReactorTime
from twisted.logger import Logger
from twisted.python import usage

from . import metrics
from ._options import OneLineErrorOptions, number
from .metricspage import MAX_CONNECTIONS as METRICS_MAX_CONNECTIONS
from .metricspage import metricsSite
from .protocol import DEFAULT_GREETING, HelloServerFactory, ServerSettings
from .service import (
    DEFAULT_BACKLOG,
    HelloService,
    holdHangUps,
    noteHangUps,
    raiseFileLimit,
    withBacklog,
)
from .tls import CertificateFiles, ReloadableServerTLS, ServerTLSFiles, TLSFileError
from .workers import (
    INTERMEDIATES_VARIABLE,
    WorkerCommand,
    WorkerSupervisor,
    checkAdoptable,
    dieWithParent,
    inheritedListeners,
    reportReady,
    stampLogs,
    thisWorker,
    workerCount,
)

DEFAULT_LISTEN = "tcp:5000:interface=127.0.0.1"
"""Where the server listens unless told otherwise: the classic server's
address, on loopback only."""

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
"""The largest ``--max-message-bytes``: 16 MiB."""

MAX_CONNECTIONS = 1_000_000
"""The largest ``--max-connections`` and ``--max-connections-per-peer``:
each connection holds a descriptor, and Linux allows a process at most
about a million unless ``fs.nr_open`` is raised."""

MAX_BACKLOG = 65535
"""The largest ``--backlog``: the kernel caps the queue at
``net.core.somaxconn`` anyway."""

_defaults = ServerSettings()
_log = Logger()


class Options(OneLineErrorOptions):
    """
    Options of ``twist hellotcp``.

    :ivar reactor: The reactor that endpoints are parsed and served with
        (tests put a memory reactor here before parsing).
    """

    synopsis = "[--listen ENDPOINT]... [options]"
    longdesc = (
        "Serve the hellotcp greeting: each client sends one short message, "
        "which is logged, and is answered with the greeting before the "
        "connection closes."
    )

    optParameters = [
        [
            "greeting",
            None,
            DEFAULT_GREETING.decode(),
            "The answer sent to each client.",
        ],
        [
            "timeout",
            None,
            f"{_defaults.timeout:g}",
            "Seconds a connection may stay silent before it is closed.",
        ],
        [
            "max-message-bytes",
            None,
            str(_defaults.maxMessageBytes),
            "Longest message kept; a longer one is cut there, logged as "
            "too-long, and still answered.",
        ],
        [
            "max-connections",
            None,
            str(_defaults.maxConnections),
            "Connections served at once. When full, the connection silent the "
            "longest (1 s or more) is closed to make room; if none is, the new "
            "one is closed at once. Both are logged.",
        ],
        [
            "max-connections-per-peer",
            None,
            str(_defaults.maxConnectionsPerPeer),
            "Connections served at once from one IP address, evicting or "
            "refusing as for --max-connections.",
        ],
        [
            "deadline",
            None,
            f"{_defaults.deadline:g}",
            "Seconds a connection may last in all, however it trickles.",
        ],
        [
            "message-gap",
            None,
            f"{_defaults.messageGap:g}",
            "Seconds of silence that end a message sent without a line feed.",
        ],
        [
            "backlog",
            None,
            str(DEFAULT_BACKLOG),
            "Listen queue length for tcp, tcp6, ssl and unix endpoints that "
            "do not set backlog= themselves.",
        ],
        [
            "shutdown-timeout",
            None,
            "5",
            "Seconds open exchanges get to finish after SIGTERM or SIGINT.",
        ],
    ]

    optParameters += [
        [
            "certificate",
            None,
            None,
            "PEM file of the TLS certificate chain: the server's certificate, "
            "then its intermediates.",
        ],
        ["private-key", None, None, "PEM file of the certificate's private key."],
        [
            "workers",
            None,
            "1",
            "Worker processes serving every listener, on the same ports "
            "(auto: one per core). With more than one, this process "
            "supervises them.",
        ],
        [
            "metrics",
            None,
            None,
            "Serve Prometheus metrics at /metrics on this endpoint, e.g. "
            "tcp:9100:interface=127.0.0.1 (needs the metrics extra).",
        ],
        [
            "client-ca",
            None,
            None,
            "PEM file of the CAs whose client certificates are accepted: "
            "with it, TLS clients must present one (mutual TLS).",
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["tls-listen"] = []
        self.reactor: IReactorCore | None = None
        self.arguments: list[str] = []

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        """
        Parse the command line, keeping it as given for the workers.
        """
        self.arguments = list(sys.argv[1:] if options is None else options)
        super().parseOptions(options)

    def opt_listen(self, description: str) -> None:
        """
        Listen on this Twisted server endpoint (repeatable), e.g.
        tcp:5000:interface=127.0.0.1, tcp6:5000:interface=\\:\\:1,
        unix:/run/hellotcp.sock, ssl:5001:privateKey=key.pem:certKey=cert.pem.
        [default: tcp:5000:interface=127.0.0.1]
        """
        if description in self["listen"]:
            raise usage.UsageError(f"--listen {description} is given twice")
        self["listen"].append(description)

    def opt_tls_listen(self, description: str) -> None:
        """
        Serve TLS on this Twisted server endpoint (repeatable), e.g.
        tcp:5001:interface=127.0.0.1; needs --certificate and --private-key.
        """
        if description in self["tls-listen"]:
            raise usage.UsageError(f"--tls-listen {description} is given twice")
        self["tls-listen"].append(description)

    # usage.Options shows a docstring as it stands, indentation included.
    opt_listen.__doc__ = " ".join((opt_listen.__doc__ or "").split())
    opt_tls_listen.__doc__ = " ".join((opt_tls_listen.__doc__ or "").split())
    opt_l = opt_listen

    def postOptions(self) -> None:
        """
        Check every value and turn it into the settings of the service.
        """
        if self.reactor is None:
            from twisted.internet import reactor

            self.reactor = cast(IReactorCore, reactor)
        # The bytes given on the command line, whatever they are: os.fsencode
        # undoes the surrogateescape decoding of argv (so a greeting that is
        # not UTF-8 is sent as it was given), and text is UTF-8.
        greeting = os.fsencode(self["greeting"])
        if not greeting:
            raise usage.UsageError("--greeting must not be empty")
        self["settings"] = ServerSettings(
            greeting=greeting,
            timeout=number(float, "timeout", self["timeout"]),
            maxMessageBytes=number(
                int,
                "max-message-bytes",
                self["max-message-bytes"],
                maximum=MAX_MESSAGE_BYTES,
            ),
            maxConnections=number(
                int,
                "max-connections",
                self["max-connections"],
                maximum=MAX_CONNECTIONS,
            ),
            maxConnectionsPerPeer=number(
                int,
                "max-connections-per-peer",
                self["max-connections-per-peer"],
                maximum=MAX_CONNECTIONS,
            ),
            deadline=number(float, "deadline", self["deadline"]),
            messageGap=number(float, "message-gap", self["message-gap"]),
        )
        self["shutdown-timeout"] = number(
            float, "shutdown-timeout", self["shutdown-timeout"], zeroAllowed=True
        )
        self["backlog"] = number(int, "backlog", self["backlog"], maximum=MAX_BACKLOG)
        self["workers"] = workerCount(self["workers"])
        # A SIGHUP from here on reloads what is about to be read.
        noteHangUps()
        self["tls"] = self._loadTLS()
        if not self["listen"] and not self["tls-listen"]:
            self["listen"] = [DEFAULT_LISTEN]
        if thisWorker() is not None:
            # The parent checked the endpoints and opened the sockets a worker
            # adopts (and a systemd: endpoint's descriptors are not the
            # worker's to parse).
            return
        for option in ("listen", "tls-listen"):
            for description in self[option]:
                if self["workers"] > 1:
                    checkAdoptable(option, description)
                _checkEndpoint(self.reactor, option, description)
        if self["metrics"] is not None:
            metrics.checkAvailable()
            _checkEndpoint(self.reactor, "metrics", self["metrics"])

    def _loadTLS(self) -> ReloadableServerTLS | None:
        files = [self[name] for name in ("certificate", "private-key", "client-ca")]
        if not self["tls-listen"]:
            if any(files):
                raise usage.UsageError(
                    "--certificate, --private-key and --client-ca go with --tls-listen"
                )
            return None
        certificate, privateKey, clientCA = files
        if not (certificate and privateKey):
            raise usage.UsageError("--tls-listen needs --certificate and --private-key")
        # A worker started while the others serve intermediates must not
        # start without them (see hellotcp.workers).
        keep = os.environ.get(INTERMEDIATES_VARIABLE) == "1" and thisWorker()
        try:
            return ReloadableServerTLS(
                ServerTLSFiles(CertificateFiles(certificate, privateKey), clientCA),
                keepIntermediates=bool(keep),
            )
        except TLSFileError as error:
            raise usage.UsageError(str(error)) from None


def _checkEndpoint(reactor: object, option: str, description: str) -> None:
    """
    :raises twisted.python.usage.UsageError: If ``description`` is not a
        server endpoint that can be made here, in one line.
    """
    _checkTCPNumbers(option, description)
    try:
        serverFromString(reactor, description)
    except Exception as error:
        reason = str(error)
        kind = description.removeprefix("haproxy:").partition(":")[0]
        if kind == "systemd" and isinstance(error, (IndexError, KeyError)):
            reason = _noInheritedSocket(error)
        raise usage.UsageError(
            f"--{option} {description}: {reason}".rstrip(": ")
        ) from None


def _checkTCPNumbers(option: str, description: str) -> None:
    """
    Check the port (0 to 65535) and ``backlog=`` (1 to `MAX_BACKLOG`) of a
    ``tcp:`` or ``tcp6:`` server endpoint (also under ``haproxy:``), which
    Twisted would only refuse when listening (a port out of range) or not
    at all (a negative backlog; a huge one overflowed).

    :raises twisted.python.usage.UsageError: Naming the option, the
        endpoint (cut if long) and the problem.
    """
    from twisted.internet.endpoints import _parse

    from ._options import cut

    try:
        args, kwargs = _parse(description.removeprefix("haproxy:"))
    except Exception:
        return  # serverFromString says what is wrong with it
    if not args or args[0] not in ("tcp", "tcp6"):
        return
    where = f"--{option} {cut(description, 80)}"
    values = [
        ("port", kwargs.get("port", args[1] if len(args) > 1 else None), True, 65535),
        ("backlog", kwargs.get("backlog"), False, MAX_BACKLOG),
    ]
    for name, value, zeroAllowed, maximum in values:
        if value is None:
            continue
        try:
            number(
                int,
                name,
                str(value),
                zeroAllowed=zeroAllowed,
                maximum=maximum,
                label=f"{name}=" if name == "backlog" else "the port",
            )
        except usage.UsageError as problem:
            raise usage.UsageError(f"{where}: {problem}") from None


def _noInheritedSocket(error: IndexError | KeyError) -> str:
    """
    Why a ``systemd:`` endpoint found no socket, in a few words.
    """
    which = (
        f"named {error.args[0]!r}" if isinstance(error, KeyError) else "at that index"
    )
    count = os.environ.get("LISTEN_FDS")
    owner = os.environ.get("LISTEN_PID")
    if not count:
        why = (
            "LISTEN_FDS is not set (systemd passes sockets to a service that "
            "its .socket unit starts)"
        )
    elif owner != str(os.getpid()):
        why = f"LISTEN_PID ({owner}) is not this process"
    else:
        why = f"systemd passed {count} (LISTEN_FDS={count})"
    return f"no inherited socket {which}: {why}"


# Descriptors kept for the server's own use beyond its listeners: log files,
# TLS files, the reactor's own (its poller, wakers, the one Twisted reserves
# for recovering from EMFILE) and the parent's pipes.
_RESERVED_DESCRIPTORS = 64


def _descriptorsNeeded(config: Options, worker: int | None) -> int:
    """
    The descriptors a server needs beyond its greeting connections: one per
    listener, and, where it serves ``/metrics``, that listener and its
    connections, and the reserve.
    """
    listeners = len(config["listen"]) + len(config["tls-listen"])
    if worker is not None:
        listeners += 1  # the pipe on which it says that it is ready
    if config["metrics"] is not None and worker is None:
        listeners += 1 + METRICS_MAX_CONNECTIONS
    return listeners + _RESERVED_DESCRIPTORS


def _fitFileLimit(settings: ServerSettings, own: int) -> ServerSettings:
    """
    Raise the open-file limit to fit ``--max-connections`` and ``own``
    descriptors for the server's own use (see `_descriptorsNeeded`); where
    the hard limit does not allow it, lower the connection limit to fit
    instead, so that running out of descriptors (EMFILE) is a refusal like
    any other.
    """
    needed = settings.maxConnections + own
    available = raiseFileLimit(needed)
    if available >= needed:
        return settings
    usable = max(available - own, 1)
    _log.warn(
        "The open-file limit ({available}) is below --max-connections "
        "({configured}) plus {reserved} for the server itself (listeners, "
        "metrics, files): serving at most {usable} connections at once.",
        available=available,
        configured=settings.maxConnections,
        reserved=own,
        usable=usable,
    )
    return evolve(
        settings,
        maxConnections=usable,
        maxConnectionsPerPeer=min(settings.maxConnectionsPerPeer, usable),
    )


def _logsLevel(config: Options, *names: str) -> bool:
    """
    Whether ``twist``'s ``--log-level`` is one of ``names`` (``twist``'s
    default is info; ``twistd`` has no such option and counts as info).
    Events of a level that would be dropped are not even built: a greeting's
    event costs about a tenth of an exchange.
    """
    parent = getattr(config, "parent", None)
    level = parent.get("logLevel") if parent is not None else None
    return (level.name if level is not None else "info") in names


def makeService(config: Options) -> HelloService | WorkerSupervisor:
    """
    Build the service ``twist hellotcp`` runs from parsed `Options`: one
    server, or, with ``--workers`` above 1, the parent of that many.
    """
    worker = thisWorker()
    if worker is None and config["workers"] > 1:
        return _supervisor(config)
    reactor: Any = config.reactor
    settings = _fitFileLimit(config["settings"], _descriptorsNeeded(config, worker))
    counted: metrics.ServerMetrics = metrics.NO_METRICS
    if config["metrics"] is not None or metrics.inMultiprocessMode():
        counted = metrics.serverMetrics()
    factory = HelloServerFactory(
        settings,
        cast(IReactorTime, reactor),
        logGreetings=_logsLevel(config, "debug", "info"),
        metrics=counted,
        # Twice a second per balancer: only where debug is asked for.
        logHealthChecks=_logsLevel(config, "debug"),
    )
    service = HelloService(
        factory,
        reactor,
        config["shutdown-timeout"],
        backlog=config["backlog"],
        tls=config["tls"],
        worker=worker is not None,
    )
    # SIGHUP is safe from here on (a worker's parent held it back until now).
    holdHangUps(reactor, service.hangUp)
    listeners = [(d, False) for d in config["listen"]]
    listeners += [(d, True) for d in config["tls-listen"]]
    adopted: list[Any] = [None] * len(listeners)
    if worker is not None:
        stampLogs(worker)
        dieWithParent()
        adopted = inheritedListeners(reactor, len(listeners))
        reactor.callWhenRunning(reportReady)
    for (description, secure), endpoint in zip(listeners, adopted, strict=True):
        service.listen(description, secure=secure, adopted=endpoint)
    if config["tls"] is not None:
        counted.certificateExpires(config["tls"].expires)
    if worker is None and isinstance(counted, metrics.PrometheusMetrics):
        assert counted.registry is not None
        service.serveMetrics(config["metrics"], metricsSite(counted.registry))
    return service


def _supervisor(config: Options) -> WorkerSupervisor:
    """
    The parent of ``--workers`` processes, each running this same command.
    """
    environment: dict[str, str] = {}
    directory: str | None = None
    listeners = config["listen"] + config["tls-listen"]
    _fitWorkersFileLimit(config["workers"], len(listeners), config["metrics"])
    if config["metrics"] is not None:
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
    twistArguments, logDescriptor = _loggingOfWorkers(config)
    command = WorkerCommand(
        ["-m", "twisted", *twistArguments, "hellotcp", *config.arguments],
        environment,
        logDescriptor,
    )
    descriptions = [
        withBacklog(description.removeprefix("haproxy:"), config["backlog"])
        for description in listeners
    ]

    def forget(pid: int) -> None:
        if directory is not None:
            metrics.forgetWorker(pid, directory)

    supervisor = WorkerSupervisor(
        config.reactor,  # type: ignore[arg-type]
        config["workers"],
        descriptions,
        command,
        config["shutdown-timeout"],
        onWorkerExit=forget,
        reloads=config["tls"] is not None,
        tls=config["tls"],
    )
    # SIGHUP is safe from here on, before any worker starts.
    holdHangUps(config.reactor, supervisor.hangUp)  # type: ignore[arg-type]
    appended = [a for a in twistArguments if a.startswith("--log-file=")]
    if appended and "logFormat" not in getattr(config, "parent", {}):
        appending = _AppendingLog(appended[0].removeprefix("--log-file="))
        appending.setServiceParent(supervisor)  # type: ignore[no-untyped-call]
    if directory is not None:
        site = metricsSite(metrics.workersRegistry(directory))
        listener = listenerService(config["metrics"], site, reactor=config.reactor)
        listener.setName(f"{config['metrics']} (metrics)")
        listener.setServiceParent(supervisor)
    return supervisor


def _fitWorkersFileLimit(
    workers: int, listeners: int, metricsEndpoint: str | None
) -> None:
    """
    Raise the parent's open-file limit to fit a socket per worker per
    listener, a pipe per worker, and the metrics listener and its
    connections.

    :raises SystemExit: In one line, if the hard limit is too low.
    """
    needed = workers * (listeners + 1) + _RESERVED_DESCRIPTORS
    if metricsEndpoint is not None:
        needed += 1 + METRICS_MAX_CONNECTIONS
    available = raiseFileLimit(needed)
    if available < needed:
        raise SystemExit(
            f"hellotcp: error: --workers {workers} needs {needed} open files, "
            f"and the open-file limit is {available} (ulimit -n, LimitNOFILE=)"
        )


def _loggingOfWorkers(config: Options) -> tuple[list[str], int]:
    """
    The ``twist`` options that make workers log as this process does, and
    the descriptor they write their log to.
    """
    parent: Any = getattr(config, "parent", None)
    if parent is None:
        return [], 1
    if "logFormat" in parent:  # twist
        arguments = [
            f"--log-format={parent['logFormat']}",
            f"--log-level={parent['logLevel'].name}",
        ]
        if parent.get("reactorName", "default") != "default":
            arguments.append(f"--reactor={parent['reactorName']}")
        return arguments, parent["logFile"].fileno()
    # twistd: text, to its log file (twistd.log when it daemonizes).
    logfile = parent.get("logfile") or (
        None if parent.get("nodaemon") else "twistd.log"
    )
    arguments = ["--log-format=text"]
    if logfile and logfile != "-":
        arguments.append(f"--log-file={os.path.abspath(logfile)}")
    return arguments, 1


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
