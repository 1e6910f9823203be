# -*- test-case-name: tests.test_tap -*-
"""
The ``twist hellotcp`` (and ``twistd hellotcp``) plugin: command-line options
to a running service.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import cast

from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IReactorCore
from twisted.python import usage

from . import metrics
from ._listeners import DEFAULT_BACKLOG, endpointType, splitProxy
from ._options import (
    OneLineErrorOptions,
    asUsageError,
    cut,
    describeEndpointError,
    describeTLSFileError,
    number,
    oneLineHelp,
)
from ._signals import noteHangUps
from ._twistedcompat import (
    logsDebug,
    logsInfo,
    parentLogging,
    parseEndpoint,
    twistLog,
)
from ._wiring import ServerPlan, buildService
from .protocol import DEFAULT_GREETING, ServerSettings
from .service import HelloService
from .tls import CertificateFiles, ReloadableServerTLS, ServerTLSFiles, TLSFileError
from .workers import (
    DEFAULT_WORKER_TIMEOUT,
    HEARTBEAT_INTERVAL,
    INTERMEDIATES_VARIABLE,
    MIN_WORKER_TIMEOUT,
    NotAdoptableError,
    WorkerCountError,
    WorkerSupervisor,
    checkAdoptable,
    thisWorker,
    workerCount,
)

__all__ = [
    "DEFAULT_LISTEN",
    "MAX_BACKLOG",
    "MAX_CONNECTIONS",
    "MAX_MESSAGE_BYTES",
    "Options",
    "makeService",
]

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
        [
            "drain-time",
            None,
            "0",
            "Seconds to go on serving after SIGTERM or SIGINT, with health "
            "checks failing, before listening stops: behind a load balancer, "
            "more than its checks take to mark the server down.",
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
            "worker-timeout",
            None,
            str(int(DEFAULT_WORKER_TIMEOUT)),
            "With --workers: seconds without a heartbeat after which a worker "
            "is taken for hung, killed and started again "
            f"(at least {MIN_WORKER_TIMEOUT:g}).",
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

    @oneLineHelp
    def opt_listen(self, description: str) -> None:
        """
        Listen on this Twisted server endpoint (repeatable), e.g.
        tcp:5000:interface=127.0.0.1, 'tcp6:5000:interface=\\:\\:1' (quoted
        for the shell), unix:/run/hellotcp.sock. [default:
        tcp:5000:interface=127.0.0.1, unless --tls-listen is given]
        """
        if description in self["listen"]:
            raise usage.UsageError(f"--listen {description} is given twice")
        self["listen"].append(description)

    @oneLineHelp
    def opt_tls_listen(self, description: str) -> None:
        """
        Serve TLS on this Twisted server endpoint (repeatable), e.g.
        tcp:5001:interface=127.0.0.1; needs --certificate and --private-key.
        """
        if description in self["tls-listen"]:
            raise usage.UsageError(f"--tls-listen {description} is given twice")
        self["tls-listen"].append(description)

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
        self["drain-time"] = number(
            float, "drain-time", self["drain-time"], zeroAllowed=True
        )
        self["backlog"] = number(int, "backlog", self["backlog"], maximum=MAX_BACKLOG)
        with asUsageError(WorkerCountError):
            self["workers"] = workerCount(self["workers"])
        self["worker-timeout"] = number(float, "worker-timeout", self["worker-timeout"])
        if self["worker-timeout"] < MIN_WORKER_TIMEOUT:
            raise usage.UsageError(
                f"--worker-timeout must be at least {MIN_WORKER_TIMEOUT:g} "
                "seconds (a worker beats every "
                f"{HEARTBEAT_INTERVAL:g} s)"
            )
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
                    with asUsageError(NotAdoptableError):
                        checkAdoptable(option, description)
                _checkEndpoint(self.reactor, option, description)
        if self["metrics"] is not None:
            with asUsageError(metrics.MetricsUnavailableError):
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
            raise usage.UsageError(describeTLSFileError(error)) from None


def _checkEndpoint(reactor: object, option: str, description: str) -> None:
    """
    :raises twisted.python.usage.UsageError: If ``description`` is not a
        server endpoint that can be made here, in one line.
    """
    _checkTCPNumbers(option, description)
    try:
        serverFromString(reactor, description)
    except Exception as error:
        reason = describeEndpointError(error)
        systemd = endpointType(description) == "systemd"
        if systemd and isinstance(error, (IndexError, KeyError)):
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
    try:
        args, kwargs = parseEndpoint(splitProxy(description)[1])
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


def makeService(config: Options) -> HelloService | WorkerSupervisor:
    """
    Build the service ``twist hellotcp`` runs from parsed `Options`: one
    server, or, with ``--workers`` above 1, the parent of that many.
    """
    # twist and twistd set their own options as the plugin's parent.
    parent = getattr(config, "parent", None)
    plan = ServerPlan(
        settings=config["settings"],
        listen=config["listen"],
        tlsListen=config["tls-listen"],
        backlog=config["backlog"],
        shutdownTimeout=config["shutdown-timeout"],
        drainTime=config["drain-time"],
        tls=config["tls"],
        metrics=config["metrics"],
        workers=config["workers"],
        workerTimeout=config["worker-timeout"],
        arguments=config.arguments,
    )
    reactor = cast(IReactorCore, config.reactor)
    return buildService(
        reactor,
        plan,
        parentLogging(parent),
        logsInfo(parent),
        logsDebug(parent),
        twistLog(parent),
    )
