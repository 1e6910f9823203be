# -*- test-case-name: tests.test_service -*-
"""
`HelloService`: one greeting factory served on any number of listeners,
stopping gracefully.
"""

from __future__ import annotations

import math
import signal
from typing import cast

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service
from twisted.application.strports import service as listenerService
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IReactorCore,
    IReactorFromThreads,
    IReactorTime,
    IStreamServerEndpoint,
)
from twisted.internet.task import deferLater
from twisted.logger import Logger
from zope.interface import implementer

from ._listeners import (
    DEFAULT_BACKLOG,
    ListenError,
    exitingOnListenError,
    splitProxy,
    startListeners,
    withBacklog,
)
from ._proxy import ProxyFactory
from ._signals import SAME_REQUEST, StopSignals, callOnSignal, ignoreSignal
from ._twistedcompat import closeAfterAccepting, raiseListenErrors
from .protocol import HelloServerFactory
from .tls import ReloadableServerTLS, TLSServerFactory

__all__ = ["DEFAULT_BACKLOG", "HelloService", "ListenError"]

_log = Logger()


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


class HelloService(MultiService):
    """
    Serve one `HelloServerFactory` on any number of endpoints, and stop
    gracefully: stopping stops listening, then gives exchanges in flight up
    to ``shutdownTimeout`` seconds to finish.

    Starting it listens on every endpoint at once; one that cannot listen
    raises `ListenError` from ``startService`` (or
    ``privilegedStartService``) after closing those already listening, so
    the application that embeds it decides what happens next.  Signals are
    the application's: the service takes none unless ``handleSignals``
    asks it to.

    :ivar factory: The factory every listener serves.
    :ivar shutdownTimeout: Seconds open exchanges get to finish on stop.
    :ivar tls: The TLS settings of the TLS listeners (`reloadTLS` reads
        their files again).
    """

    def __init__(
        self,
        factory: HelloServerFactory,
        reactor: IReactorCore,
        shutdownTimeout: float = 5.0,
        handleSignals: bool = False,
        backlog: int = DEFAULT_BACKLOG,
        tls: ReloadableServerTLS | None = None,
        worker: bool = False,
        exitOnListenError: bool = False,
        drainTime: float = 0.0,
    ) -> None:
        """
        :param factory: The factory every listener serves.
        :param reactor: The reactor to listen with, and, with
            ``handleSignals``, to stop on SIGTERM or SIGINT.
        :param shutdownTimeout: Seconds open exchanges get to finish when the
            service stops; then they are aborted.
        :param handleSignals: Behave as a program does (``twist hellotcp``
            asks for this): from ``startService`` on, SIGTERM and SIGINT
            stop the reactor gracefully and a second one aborts open
            exchanges.  Off by default: an embedding application keeps its
            own signal handlers.
        :param backlog: The listen queue length of TCP and UNIX endpoints
            whose description sets none (Twisted's default, 50, overflows
            under a burst of connections).
        :param tls: The TLS settings of listeners added with
            ``listen(..., secure=True)`` (see `hellotcp.tls.serverTLS`).
        :param worker: With ``handleSignals``, run as one of several workers
            (see `hellotcp.workers`): SIGINT is left to the parent, which
            passes SIGTERM on, and two SIGTERMs within a second are one.
        :param exitOnListenError: Behave as a program does when a listener
            cannot listen: raise `SystemExit` with one line
            (``hellotcp: error: cannot listen on ...``), which ``twist`` and
            ``twistd`` print without a traceback, instead of `ListenError`.
        :param drainTime: Seconds to go on serving when asked to stop, with
            health checks failing (`HelloServerFactory.draining`), before
            listening stops: time for a load balancer to take the server
            out, so that no connection reaches a listener that is closing.
            A second stop signal cuts it short.
        """
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
        self._exitOnListenError = exitOnListenError
        self.tls = tls
        self._ports: list[object] = []
        self._stopping = False
        self._stopRequestedAt = -math.inf
        self.drainTime = drainTime
        self._draining: Deferred[None] | None = None

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
        # startService (as a ListenError, see _startListeners).
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
        With ``handleSignals``, take over SIGTERM and SIGINT (see
        `hellotcp._signals.StopSignals`) and SIGUSR2; then listen on every
        endpoint not listening yet.
        """
        if self._signals is not None:
            self._signals.takeOver()
            if self._worker:
                # A rolling restart is the parent's business.
                ignoreSignal(signal.SIGUSR2)
            else:
                reactor = cast(IReactorFromThreads, self._reactor)
                callOnSignal(reactor, signal.SIGUSR2, self._nothingToRoll)
        self._startListeners(privileged=False)

    def _nothingToRoll(self) -> None:
        _log.info(
            "SIGUSR2: nothing to roll: this server is a single process "
            "(a rolling restart needs --workers); serving on"
        )

    def _startListeners(self, privileged: bool) -> None:
        # MultiService's own start methods would let the first error escape
        # with the listeners before it still listening; each listener is
        # started here instead (see startListeners).
        if privileged:
            Service.privilegedStartService(self)
        else:
            Service.startService(self)
        with exitingOnListenError(self._exitOnListenError):
            try:
                startListeners(self, privileged)
            except ListenError:
                self.running = False
                raise

    def stopService(self) -> Deferred[None]:
        """
        Stop listening, then wait for open exchanges (up to
        ``shutdownTimeout`` seconds).
        """
        self._stopping = True
        stopped: Deferred[None] = Deferred.fromCoroutine(self._stop())
        return stopped

    async def _stop(self) -> None:
        if self.drainTime > 0 and self._ports:
            self.factory.draining = True
            _log.info(
                "draining for {drainTime} s: health checks fail from now on; "
                "then listening stops",
                drainTime=self.drainTime,
            )
            clock = cast(IReactorTime, self._reactor)
            self._draining = deferLater(clock, self.drainTime, lambda: None)
            try:
                await self._draining
            except CancelledError:
                pass
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
            if self._draining is not None:
                self._draining.cancel()
            self.factory.abortAll()
            return
        _log.info(
            "{signal}: stopping; open exchanges get {timeout} s to finish",
            signal=name,
            timeout=self.shutdownTimeout,
        )
        self._reactor.stop()
