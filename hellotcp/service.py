# -*- test-case-name: tests.test_service -*-
"""
The running server: its listeners, a graceful stop, and clean start-up
errors.
"""

from __future__ import annotations

import atexit
import math
import resource
import signal
from collections.abc import Callable, Iterable
from types import FrameType
from typing import cast

from attrs import evolve
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, MultiService, Service
from twisted.application.strports import service as listenerService
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IReactorCore,
    IReactorFromThreads,
    IReactorTime,
    IStreamServerEndpoint,
)
from twisted.logger import Logger
from zope.interface import implementer

from ._proxy import ProxyFactory
from ._twistedcompat import closeAfterAccepting, raiseListenErrors
from .protocol import HelloServerFactory, ServerSettings
from .tls import ReloadableServerTLS, TLSServerFactory

_log = Logger()

PROXY_PREFIX = "haproxy:"
"""The prefix of a listener description that adds the PROXY protocol (its
header comes first, in clear, then TLS if any)."""

DEFAULT_BACKLOG = 4096
"""Listen queue length unless an endpoint description sets its own."""

# Endpoint types whose listen queue length hellotcp sets when the description
# does not: Twisted's default of 50 overflows under a burst of connections,
# and every dropped SYN costs the client a retransmission of 1 to 7 seconds.
_BACKLOG_TYPES = frozenset({"tcp", "tcp6", "ssl", "unix"})


def splitProxy(description: str) -> tuple[bool, str]:
    """
    Split a listener description into whether it asks for the PROXY
    protocol (an ``haproxy:`` prefix) and the server endpoint beneath.
    """
    endpoint = description.removeprefix(PROXY_PREFIX)
    return endpoint != description, endpoint


def endpointType(description: str) -> str:
    """
    The type of a listener's server endpoint (``tcp``, ``unix``, ...),
    looking through an ``haproxy:`` prefix.
    """
    return splitProxy(description)[1].partition(":")[0]


def withBacklog(description: str, backlog: int) -> str:
    """
    Add ``backlog=N`` to a server endpoint description that lacks one and
    whose type takes one (looking through an ``haproxy:`` prefix).
    """
    if endpointType(description) not in _BACKLOG_TYPES or "backlog=" in description:
        return description
    return f"{description}:backlog={backlog}"


@implementer(IStreamServerEndpoint)
class _PortRecordingEndpoint:
    """
    An endpoint that remembers the ports it listens on, so the service can
    accept what waits in their queues before it stops listening.
    """

    def __init__(self, endpoint: IStreamServerEndpoint, ports: list[object]) -> None:
        self._endpoint = endpoint
        self._ports = ports

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        """
        Listen, and remember the port.
        """

        def record(port: IListeningPort) -> IListeningPort:
            self._ports.append(port)
            return port

        return self._endpoint.listen(protocolFactory).addCallback(record)


def describeListenError(error: BaseException) -> str:
    """
    The reason, in a few words, that listening failed.
    """
    if isinstance(error, CannotListenError) and isinstance(error.socketError, OSError):
        return error.socketError.strerror or str(error.socketError)
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error)


def cannotListen(name: str, error: BaseException) -> SystemExit:
    """
    The exit, in one line and with no traceback, of a server that cannot
    listen on ``name`` (a listener as the user wrote it).
    """
    return SystemExit(
        f"hellotcp: error: cannot listen on {name}: {describeListenError(error)}"
    )


def startListeners(services: Iterable[IService], privileged: bool = False) -> None:
    """
    Start each of ``services`` (listeners, named as the user wrote them).

    :param privileged: Call ``privilegedStartService`` instead.
    :raises SystemExit: In one line (see `cannotListen`), when one cannot
        listen; those started before it are left running.
    """
    for listener in services:
        try:
            if privileged:
                listener.privilegedStartService()
            else:
                listener.startService()
        except Exception as error:
            raise cannotListen(str(listener.name), error) from None


class StopSignals:
    """
    SIGTERM and SIGINT as a request to stop, handed to the reactor's loop.

    Twisted's own handlers make ``twist`` and ``twistd`` die by the signal
    (exit status 143 or 130); a requested stop is a success, so a service
    handles them itself and stops the reactor, and the process exits 0.

    :param onSignal: Called in the reactor's loop with the signal's name
        (``"SIGTERM"``).
    :param interrupt: Handle SIGINT too; without, it is ignored (a worker,
        whose parent passes Ctrl-C on as SIGTERM: the terminal's own SIGINT
        to the whole process group would otherwise count twice).
    """

    def __init__(
        self,
        reactor: IReactorCore,
        onSignal: Callable[[str], object],
        interrupt: bool = True,
    ) -> None:
        self._reactor = reactor
        self._onSignal = onSignal
        self._interrupt = interrupt

    def takeOver(self) -> None:
        """
        Handle the signals now, and again once the reactor runs (it installs
        its own handlers as it starts): one that comes before the reactor
        runs is a graceful stop as soon as it does, not death by the signal.
        """
        self._install()
        self._reactor.callWhenRunning(self._install)

    def _install(self) -> None:
        signal.signal(signal.SIGTERM, self.handler)
        signal.signal(
            signal.SIGINT, self.handler if self._interrupt else signal.SIG_IGN
        )
        # A worker's parent starts it with these blocked (see
        # hellotcp.workers): one that came meanwhile is handled now.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
        ignoreAtExit(signal.SIGTERM, signal.SIGINT)

    def handler(self, number: int, frame: FrameType | None) -> None:
        """
        The signal handler: a signal handler may run between any two
        bytecodes of the reactor, so the work is handed to its own loop.
        """
        fromThreads = cast(IReactorFromThreads, self._reactor)
        fromThreads.callFromThread(self._onSignal, signal.Signals(number).name)


class HelloService(MultiService):
    """
    Serve one `HelloServerFactory` on any number of endpoints.

    Starting it listens on every endpoint at once, before the reactor runs,
    so that an address in use or a malformed socket path stops the program
    with one clear line.  Stopping it stops listening, then gives exchanges
    in flight up to ``shutdownTimeout`` seconds to finish.

    :ivar factory: The factory every listener serves.
    :ivar shutdownTimeout: Seconds open exchanges get to finish on stop.
    :ivar backlog: The listen queue length of endpoints that do not set one.
    :ivar tls: The TLS settings of the TLS listeners, reloaded on SIGHUP.

    :param handleSignals: Take over SIGTERM and SIGINT once the reactor runs
        (SIGHUP is taken by `holdHangUps`, as soon as the service is built).
    :param worker: Run as one of several workers (see `hellotcp.workers`):
        SIGINT is left to the parent, which passes SIGTERM on.
    """

    def __init__(
        self,
        factory: HelloServerFactory,
        reactor: IReactorCore,
        shutdownTimeout: float = 5.0,
        handleSignals: bool = True,
        backlog: int = DEFAULT_BACKLOG,
        tls: ReloadableServerTLS | None = None,
        worker: bool = False,
    ) -> None:
        MultiService.__init__(self)
        self.factory = factory
        self.shutdownTimeout = shutdownTimeout
        self._reactor = reactor
        self._signals = (
            StopSignals(reactor, self._stopRequested, interrupt=not worker)
            if handleSignals
            else None
        )
        self._backlog = backlog
        self._worker = worker
        self.tls = tls
        self._ports: list[object] = []
        self._stopping = False
        self._stopRequestedAt = -math.inf

    def listen(
        self,
        description: str,
        secure: bool = False,
        adopted: IStreamServerEndpoint | None = None,
    ) -> None:
        """
        Add a listener on the server endpoint ``description``, with the
        service's backlog unless the description sets one.

        :param secure: Serve TLS on it, with the service's ``tls`` settings.
        :param adopted: The endpoint of a listening socket opened for this
            description by someone else (a worker's parent): listen there
            instead, adding what the description adds (the PROXY protocol).
        """
        factory: IProtocolFactory = self.factory
        name = description
        if secure:
            if self.tls is None:
                raise ValueError("a TLS listener needs the service's tls settings")
            factory = TLSServerFactory(self.tls, factory)
            name = f"{description} (TLS)"
        proxied, endpoint = splitProxy(description)
        if proxied:
            # The PROXY header comes first, in clear, then TLS if any.
            factory = ProxyFactory(factory)
        if adopted is None:
            adopted = serverFromString(
                self._reactor, withBacklog(endpoint, self._backlog)
            )
        listener = StreamServerEndpointService(
            _PortRecordingEndpoint(adopted, self._ports), factory
        )
        # As strports.service does: a failure to listen raises from
        # startService, to be reported in one line.
        raiseListenErrors(listener)
        listener.setName(name)
        listener.setServiceParent(self)

    def serveMetrics(self, description: str, site: IProtocolFactory) -> None:
        """
        Serve ``site`` (the ``/metrics`` page) on the server endpoint
        ``description``; it stops with the service, without draining.
        """
        listener = listenerService(description, site, reactor=self._reactor)
        listener.setName(f"{description} (metrics)")
        listener.setServiceParent(self)

    def privilegedStartService(self) -> None:
        """
        Listen on every endpoint (``twistd`` calls this before dropping
        privileges).
        """
        self._startListeners(privileged=True)

    def startService(self) -> None:
        """
        Take over SIGTERM and SIGINT (see `StopSignals`), and listen on
        every endpoint not listening yet.
        """
        if self._signals is not None:
            self._signals.takeOver()
        self._startListeners(privileged=False)

    def _startListeners(self, privileged: bool) -> None:
        # MultiService's own start methods would let the first error escape
        # as a traceback; each listener is started here instead.
        if privileged:
            Service.privilegedStartService(self)
        else:
            Service.startService(self)
        startListeners(self, privileged)

    def stopService(self) -> Deferred[None]:
        """
        Stop listening, then wait for open exchanges (up to
        ``shutdownTimeout`` seconds).
        """
        self._stopping = True
        stopped: Deferred[None] = Deferred.fromCoroutine(self._stop())
        return stopped

    async def _stop(self) -> None:
        for port in self._ports:
            closeAfterAccepting(port)
        draining = self.factory.stopGracefully(self.shutdownTimeout)
        await MultiService.stopService(self)
        await draining

    def hangUp(self) -> None:
        """
        What SIGHUP does (see `holdHangUps`): read the TLS files again, or,
        without TLS, say that there is nothing to reload; one log line
        either way, and the server goes on serving.
        """
        if self.tls is None:
            _log.info("SIGHUP: no TLS files to reload")
            return
        self.reloadTLS()

    def reloadTLS(self) -> bool:
        """
        Read the TLS certificate, key and client CAs again (what SIGHUP
        does); on a problem keep the current ones and log it.

        :returns: Whether the files now in use are the new ones.
        """
        if self.tls is None or not self.tls.reload():
            return False
        self.factory.metrics.certificateExpires(self.tls.expires)
        return True

    def _stopRequested(self, name: str) -> None:
        now = cast(IReactorTime, self._reactor).seconds()
        if self._worker and now - self._stopRequestedAt < SAME_REQUEST:
            # The group's copy and the parent's: one request.
            return
        self._stopRequestedAt = now
        if self._stopping:
            _log.warn("{signal} again: aborting open exchanges now", signal=name)
            self.factory.abortAll()
            return
        _log.info(
            "{signal}: stopping; open exchanges get {timeout} s to finish",
            signal=name,
            timeout=self.shutdownTimeout,
        )
        self._reactor.stop()


_ignoredAtExit: set[signal.Signals] = set()


def ignoreAtExit(*signals: signal.Signals) -> None:
    """
    Ignore ``signals`` once the interpreter begins to exit.  Python then
    puts back the default action of every signal it handles (death), so one
    arriving after a clean stop, such as the second copy of a SIGTERM sent
    both to a worker and to its parent, would turn exit status 0 into death
    by that signal.
    """
    new = set(signals) - _ignoredAtExit
    if not new:
        return
    _ignoredAtExit.update(new)

    def ignore() -> None:
        for number in new:
            signal.signal(number, signal.SIG_IGN)

    atexit.register(ignore)


# A worker gets the SIGTERM sent to its whole process group and, a moment
# later, the copy its parent passes on: within this many seconds a second
# one is the same request, not a second one that aborts.
SAME_REQUEST = 1.0


_hungUpEarly = False


def _noteHangUp(number: int, frame: FrameType | None) -> None:
    global _hungUpEarly
    _hungUpEarly = True


def noteHangUps() -> None:
    """
    Note a SIGHUP from now until `holdHangUps` takes it over, which then
    handles it: ``twist hellotcp`` calls this before it reads its TLS files,
    so that files replaced after that first read are read again.  (Before
    it, the plugin has SIGHUP ignored: nothing is loaded yet.)  Only where
    SIGHUP has no handler of Python's, and only in the main thread.
    """
    if signal.getsignal(signal.SIGHUP) not in (signal.SIG_DFL, signal.SIG_IGN):
        return
    try:
        signal.signal(signal.SIGHUP, _noteHangUp)
    except ValueError:  # not the main thread: signals are not ours to take
        return
    ignoreAtExit(signal.SIGHUP)


def holdHangUps(
    reactor: IReactorFromThreads, onHangUp: Callable[[], object]
) -> Callable[[], None]:
    """
    Make SIGHUP safe in this process from now until it exits: each one
    calls ``onHangUp`` in the reactor's loop (at once if the reactor runs,
    else as soon as it does), and nothing else happens.

    ``twist hellotcp`` calls this when it builds its service, before it
    listens and before the reactor runs; one noted since it read its files
    (`noteHangUps`) is handled as if it came now.  A SIGHUP that a parent held back
    while it started this process (see `hellotcp.workers`) is let through
    here, and handled.  Signals that arrive while one is waiting for the
    reactor count once.  When the process exits, SIGHUP is ignored:
    otherwise Python would restore its default action (death, status 129)
    while the interpreter shuts down, after a clean stop.

    :returns: A function that restores the previous handler (for tests).
    """
    waiting = False

    def handled() -> None:
        nonlocal waiting
        waiting = False
        onHangUp()

    def onSignal(number: int, frame: FrameType | None) -> None:
        # A signal handler may run between any two bytecodes of the reactor;
        # the work is handed to the reactor's own loop.
        nonlocal waiting
        if not waiting:
            waiting = True
            reactor.callFromThread(handled)

    global _hungUpEarly
    previous = signal.signal(signal.SIGHUP, onSignal)
    ignoreAtExit(signal.SIGHUP)
    if previous is _noteHangUp and _hungUpEarly:
        _hungUpEarly = False
        onSignal(signal.SIGHUP, None)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})

    def restore() -> None:
        signal.signal(signal.SIGHUP, previous)

    return restore


RESERVED_DESCRIPTORS = 64
"""Descriptors a server keeps for its own use beyond its listeners: log
files, TLS files, the reactor's own (its poller, wakers, the one Twisted
reserves for recovering from EMFILE) and a worker parent's pipes."""


def raiseFileLimit(needed: int) -> int:
    """
    Raise the soft limit on open files towards ``needed``, as far as the hard
    limit allows: each connection holds a descriptor.

    :returns: The soft limit now in force.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        soft = wanted
    return soft


def fitFileLimit(
    settings: ServerSettings, own: int, log: Logger = _log
) -> ServerSettings:
    """
    Raise the open-file limit to fit ``settings.maxConnections`` and ``own``
    descriptors for the server's own use; where the hard limit does not
    allow it, lower the connection limit to fit instead, so that running out
    of descriptors (EMFILE) is a refusal like any other.

    :param log: Where the warning goes when the limits are lowered.
    :returns: ``settings``, or a copy with the limits lowered.
    """
    needed = settings.maxConnections + own
    available = raiseFileLimit(needed)
    if available >= needed:
        return settings
    usable = max(available - own, 1)
    log.warn(
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
