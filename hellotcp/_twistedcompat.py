"""
Every reach into Twisted's (and cryptography's) private parts, in one place.

Twisted has no public API for a few things hellotcp needs.  Rather than
scatter private names through the code, each reach lives here with a comment
naming the public API that is missing, and ``tests/test_twistedcompat.py``
fails loudly, naming the Twisted version and the missing name, when a release
changes the shape relied on.

Sections, one per area:

- PROXY protocol (``twisted.protocols.haproxy``'s private modules);
- TLS (``TLSMemoryBIOProtocol``'s private hooks, cryptography's bindings);
- endpoints and listening ports;
- the ``twist`` and ``twistd`` command lines.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from attrs import field, frozen
from cryptography.hazmat.bindings.openssl.binding import Binding
from OpenSSL import SSL
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import wrapClientTLS
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IOpenSSLClientConnectionCreator,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.protocols.haproxy._exceptions import (
    InvalidProxyHeader as InvalidProxyHeader,
)
from twisted.protocols.haproxy._info import ProxyInfo as ProxyInfo
from twisted.protocols.haproxy._v1parser import V1Parser as V1Parser
from twisted.protocols.haproxy._v2parser import V2Parser as V2Parser
from twisted.protocols.haproxy._wrapper import HAProxyProtocolWrapper
from twisted.protocols.haproxy._wrapper import (
    HAProxyWrappingFactory as HAProxyWrappingFactory,
)
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

if TYPE_CHECKING:
    from twisted.application.internet import StreamServerEndpointService
    from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint

PRIVATE_SHAPE: list[tuple[str, str]] = []
"""Each private name relied on that a module or class holds as it is
defined, as (module, dotted name): ``tests/test_twistedcompat.py`` checks
that every one is there.  Each section below adds its own."""

# --- PROXY protocol -------------------------------------------------------

# Twisted's public PROXY API is ``proxyEndpoint`` alone: it wraps an endpoint
# with a wrapper that cannot be made stricter, and no parser, header record
# or wrapping factory is public.  Missing public API: a wrapping factory
# whose protocol can be subclassed, and the v1 and v2 parsers.  Private
# shape: the five classes below, the parsers' ``feed`` and ``PREFIX``, and
# the wrapper's ``_proxyInfo`` (which its ``getPeer`` and ``getHost`` read).


PRIVATE_SHAPE += [
    ("twisted.protocols.haproxy._exceptions", "InvalidProxyHeader"),
    ("twisted.protocols.haproxy._info", "ProxyInfo"),
    ("twisted.protocols.haproxy._v1parser", "V1Parser.feed"),
    ("twisted.protocols.haproxy._v2parser", "V2Parser.feed"),
    ("twisted.protocols.haproxy._v2parser", "V2Parser.PREFIX"),
    ("twisted.protocols.haproxy._wrapper", "HAProxyProtocolWrapper"),
    ("twisted.protocols.haproxy._wrapper", "HAProxyWrappingFactory"),
]


class ProxyWrapperBase(HAProxyProtocolWrapper):
    """
    Twisted's PROXY protocol wrapper, with a public name for the header it
    has read.
    """

    @property
    def proxyInfo(self) -> ProxyInfo | None:
        """
        The header's addresses once it has been read, else `None`; the
        wrapper's ``getPeer`` and ``getHost`` answer from it.
        """
        info: ProxyInfo | None = self._proxyInfo
        return info

    @proxyInfo.setter
    def proxyInfo(self, info: ProxyInfo) -> None:
        self._proxyInfo = info


# --- TLS --------------------------------------------------------------------

# ``TLSMemoryBIOProtocol`` is not half-closeable and offers a subclass no
# hook: "the TLS layer has shut down", "the send buffer is flushed", "the
# handshake is done" (``IHandshakeListener`` tells the wrapped protocol, not
# the wrapper), nor read access to its state.  Missing public API: a
# half-closeable TLS transport (TLS 1.3 half-close), or those hooks.
# `TLSProtocolBase` gives each private name hellotcp relies on a public one.

PRIVATE_SHAPE += [
    ("twisted.protocols.tls", f"TLSMemoryBIOProtocol.{name}")
    for name in [
        "_lostTLSConnection",
        "_aborted",
        "_handshakeDone",
        "_reason",
        "_shutdownTLS",
        "_flushSendBIO",
        "_flushReceiveBIO",
        "_checkHandshakeStatus",
    ]
] + [("twisted.internet.abstract", "FileDescriptor._writeDisconnected")]
# Set on instances only, so checked by the test on a live connection: the
# TLS protocol's _tlsConnection, the PROXY wrapper's _proxyInfo, and
# pyOpenSSL's Context._context.


class TLSProtocolBase(TLSMemoryBIOProtocol):
    """
    `TLSMemoryBIOProtocol` with public names for the private state and hooks
    that `hellotcp.tls.HalfCloseableTLS` works with.

    Twisted calls the private hooks; they call the public methods here, which
    a subclass overrides (calling ``super()`` for Twisted's behaviour).
    """

    @property
    def tlsConnection(self) -> SSL.Connection | None:
        """
        The OpenSSL connection; `None` before ``makeConnection`` and after
        ``connectionLost``.
        """
        connection: SSL.Connection | None = getattr(self, "_tlsConnection", None)
        return connection

    @property
    def tlsLost(self) -> bool:
        """
        Whether the TLS layer is over: shut down, failed, or declared over by
        `markTLSLost`.
        """
        return bool(self._lostTLSConnection)

    def markTLSLost(self) -> None:
        """
        Declare the TLS layer over, so that ``connectionLost`` reads nothing
        more from it (nothing is left to diagnose).
        """
        self._lostTLSConnection = True

    @property
    def aborted(self) -> bool:
        """
        Whether ``abortConnection`` has been called.
        """
        return bool(self._aborted)

    @property
    def handshakeDone(self) -> bool:
        """
        Whether the TLS handshake has completed.
        """
        return bool(self._handshakeDone)

    def finalReason(self, reason: Failure) -> Failure:
        """
        What ``connectionLost(reason)`` will pass to the wrapped protocol: a
        TLS error met earlier, or while reading what is left, else
        ``reason``.

        Reading what is left is the first thing Twisted's ``connectionLost``
        does, once; done here, it is skipped there.
        """
        connection = self.tlsConnection
        if not self._lostTLSConnection and connection is not None:
            connection.bio_shutdown()
            self._flushReceiveBIO()  # type: ignore[no-untyped-call]
            self._lostTLSConnection = True
        final: Failure = self._reason or reason
        return final

    def shutdownTLS(self) -> None:
        """
        Start, or answer, the TLS close handshake (Twisted's
        ``_shutdownTLS``).
        """
        TLSMemoryBIOProtocol._shutdownTLS(self)

    def flushSendBIO(self) -> None:
        """
        Write out what OpenSSL has to send (Twisted's ``_flushSendBIO``).
        """
        TLSMemoryBIOProtocol._flushSendBIO(self)

    def handshakeFinished(self) -> None:
        """
        Called once the handshake has completed, before any data is passed
        to the wrapped protocol.  Does nothing here.
        """

    def _shutdownTLS(self) -> None:
        self.shutdownTLS()

    def _flushSendBIO(self) -> None:
        self.flushSendBIO()

    def _checkHandshakeStatus(self) -> None:
        done = self._handshakeDone
        TLSMemoryBIOProtocol._checkHandshakeStatus(self)
        if not done and self._handshakeDone:
            self.handshakeFinished()


def writeSideClosed(transport: object) -> bool:
    """
    Whether ``transport``'s writing side has been closed already
    (``loseWriteConnection``).

    Missing public API: `ITCPTransport` does not say.  Private shape:
    ``abstract.FileDescriptor._writeDisconnected``.
    """
    return bool(getattr(transport, "_writeDisconnected", False))


# A TLS transport batches small writes on a clock (Twisted 22.8 on), the
# global reactor unless its factory is given one.  A client on a test's
# clock must be given it: ``wrapClientTLS`` takes ``clock`` only in
# releases after 25.5; before, ``TLSMemoryBIOFactory(clock=...)`` (public)
# behind an endpoint of our own does what it does.  Not a private reach: a
# public API that older releases lack.


@implementer(IStreamClientEndpoint)
class _ClockedClientTLS:
    def __init__(
        self,
        creator: IOpenSSLClientConnectionCreator,
        endpoint: IStreamClientEndpoint,
        clock: IReactorTime,
    ) -> None:
        self._creator = creator
        self._endpoint = endpoint
        self._clock = clock

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        wrapping = TLSMemoryBIOFactory(
            self._creator, True, protocolFactory, clock=self._clock
        )
        return self._endpoint.connect(wrapping).addCallback(_wrappedProtocol)


def _wrappedProtocol(tls: IProtocol) -> IProtocol:
    assert isinstance(tls, TLSMemoryBIOProtocol)
    wrapped: IProtocol = tls.wrappedProtocol
    return wrapped


def wrapClientTLSOn(
    clock: IReactorTime,
    creator: IOpenSSLClientConnectionCreator,
    endpoint: IStreamClientEndpoint,
) -> IStreamClientEndpoint:
    """
    ``wrapClientTLS(creator, endpoint)`` whose TLS layer batches writes on
    ``clock``.
    """
    if "clock" in inspect.signature(wrapClientTLS).parameters:
        return wrapClientTLS(creator, endpoint, clock=clock)  # type: ignore[call-arg,unused-ignore]
    return _ClockedClientTLS(creator, endpoint, clock)


# pyOpenSSL has no call that sets a list of key-exchange groups (up to 26.4
# at least): its Context.set_tmp_ecdh sets exactly one curve, and cannot name
# X25519.  cryptography binds SSL_CTX_set1_curves_list from 47.0 on, for
# pyOpenSSL to use; until pyOpenSSL does, its binding object is the least
# private way to reach it, with the SSL_CTX pointer pyOpenSSL keeps in
# ``Context._context``.  Missing public API: ``Context.set_groups``.


def canSetGroupsList() -> bool:
    """
    Whether `setGroupsList` can work with this cryptography (47 or later).
    """
    return getattr(Binding().lib, "SSL_CTX_set1_curves_list", None) is not None


def setGroupsList(context: SSL.Context, groups: str) -> int:
    """
    Set the key-exchange groups ``context`` accepts, in OpenSSL's notation
    (``"X25519:P-256"``); only where `canSetGroupsList`.

    :returns: OpenSSL's status: 1 for success.
    """
    setList = Binding().lib.SSL_CTX_set1_curves_list
    status: int = setList(context._context, groups.encode())
    return status


# --- Endpoints and listening ports -------------------------------------------

# A port's accept loop is reached here: ``IListeningPort`` offers only
# ``stopListening``, which closes the socket a reactor turn later and refuses
# to accept once it has begun.  Missing public API: "stop accepting new
# connections but keep the socket" and "accept what is queued, then close".
# Instance attributes (``_interface``, ``_port``, ``_backlog`` of a TCP
# endpoint; ``connected`` of a port) are checked by the tests on instances.

PRIVATE_SHAPE += [
    ("twisted.internet.endpoints", "_parse"),
    ("twisted.internet.tcp", "Port.doRead"),
    ("twisted.internet.tcp", "Port.stopReading"),
    ("twisted.internet.tcp", "Port.connectionLost"),
    ("twisted.application.internet", "StreamServerEndpointService._raiseSynchronously"),
]


def stopAccepting(port: object) -> None:
    """
    Make the reactor stop watching a listening ``port`` (it accepts nothing
    more), leaving its socket open.  A port without that ability (a memory
    reactor's) is left alone.

    Private shape: ``abstract.FileDescriptor.stopReading``.
    """
    stopReading = getattr(port, "stopReading", None)
    if stopReading is not None:
        stopReading()


def closeAfterAccepting(port: object) -> None:
    """
    Accept every connection queued on a listening port, then close it at
    once.

    Closing a listening socket resets the connections the kernel has queued
    on it, whose clients (or balancer) may have sent a whole message.
    Twisted's ``stopListening`` closes the socket one reactor turn later, and
    refuses to accept once it has begun; so the reactor stops watching the
    port, the queue is drained, and the socket is closed in the same breath,
    leaving no turn for a connection to be queued and then reset.

    Private shape: ``tcp.Port.doRead`` (accepts a batch), ``stopReading``,
    ``connected`` and ``connectionLost`` (closes the socket).
    """
    acceptPending = getattr(port, "doRead", None)
    if acceptPending is None:
        return
    stopAccepting(port)
    # Each call accepts up to the port's batch size (at least 100).
    for _ in range(100):
        acceptPending()
    if hasattr(port, "stopReading") and getattr(port, "connected", False):
        port.connectionLost(Failure(ConnectionDone()))  # type: ignore[attr-defined]


def raiseListenErrors(listener: StreamServerEndpointService) -> None:
    """
    Make starting ``listener`` raise when it cannot listen, instead of
    logging the failure and going on, as ``strports.service`` does.

    Missing public API: a ``StreamServerEndpointService`` argument for it
    (``strports.service`` sets it, but parses its own endpoint, and hellotcp
    wraps the endpoint).  Private shape: ``_raiseSynchronously``.
    """
    listener._raiseSynchronously = True


def tcpEndpointAddress(
    endpoint: TCP4ServerEndpoint | TCP6ServerEndpoint,
) -> tuple[str, int, int]:
    """
    The interface, port and backlog a TCP server endpoint listens with.

    Missing public API: accessors for the parsed settings of a TCP server
    endpoint (or an ``SO_REUSEPORT`` option on it).  Private shape:
    ``_interface``, ``_port`` and ``_backlog``.
    """
    return endpoint._interface, endpoint._port, endpoint._backlog


def boundAddress(connector: object) -> IAddress | None:
    """
    The local address a TCP connector's socket is bound to, between
    ``connectTCP`` (which binds it when given a ``bindAddress``) and the
    next reactor turn (which sends the SYN): what a capture of the
    connection filters on before the connection exists.

    Missing public API: ``IConnector`` tells a connection's destination
    only.  Private shape: ``BaseConnector.transport``, the ``tcp.Client``
    whose ``getHost`` reads its socket.

    :returns: The address, or `None` if the connector has no bound socket.
    """
    getHost = getattr(getattr(connector, "transport", None), "getHost", None)
    if getHost is None:
        return None
    try:
        address: IAddress = getHost()
    except OSError:
        return None
    return address


def parseEndpoint(description: str) -> tuple[list[str], dict[str, str]]:
    """
    Split an endpoint description into its positional and keyword parts as
    ``serverFromString`` and ``clientFromString`` do (``\\:`` escapes
    included): ``tcp:host:80:timeout=3`` gives
    ``(["tcp", "host", "80"], {"timeout": "3"})``.

    Missing public API: a parser of endpoint descriptions.  Private shape:
    ``twisted.internet.endpoints._parse``.
    """
    from twisted.internet.endpoints import _parse

    args, kwargs = _parse(description)
    return list(args), dict(kwargs)


# --- twist / twistd command lines --------------------------------------------

# ``twist hellotcp`` and ``twistd hellotcp`` get their command's options as
# the ``parent`` of the plugin's (``usage.Options`` sets it for a
# sub-command).  Missing public API: the logging settings a plugin runs
# under.  Private shape: the keys ``twist`` (``logFormat``, ``logLevel``,
# ``logFile``, ``reactorName``) and ``twistd`` (``logfile``, ``nodaemon``)
# store their options under.

PRIVATE_SHAPE += [("twisted.application.twist._options", "TwistOptions")]


@frozen
class ParentLogging:
    """
    How workers log as their parent ``twist`` or ``twistd`` does.

    :ivar arguments: The ``twist`` options of a worker's command line.
    :ivar descriptor: The parent's descriptor the workers write their log to.
    :ivar appendTo: The log file the parent must append to, as its workers
        do (``twistd`` opens its own without ``O_APPEND``), if any.
    """

    arguments: list[str] = field(factory=list)
    descriptor: int = 1
    appendTo: str | None = None


def logsInfo(parent: Mapping[str, Any] | None) -> bool:
    """
    Whether ``twist``'s ``--log-level`` lets info events through (``twistd``
    has no such option).

    :param parent: The options of the command that runs the plugin.
    """
    level = parent.get("logLevel") if parent is not None else None
    return level is None or level.name in ("debug", "info")


def logsDebug(parent: Mapping[str, Any] | None) -> bool:
    """
    Whether ``twist``'s ``--log-level`` is debug.  ``twistd`` has no such
    option, and writes every level it is given: it counts as info there.

    :param parent: The options of the command that runs the plugin.
    """
    level = parent.get("logLevel") if parent is not None else None
    return level is not None and level.name == "debug"


def parentLogging(parent: Mapping[str, Any] | None) -> ParentLogging:
    """
    The ``twist`` options that make workers log as the command running the
    plugin does, and where they write.

    :param parent: The options of the command that runs the plugin.
    """
    if parent is None:
        return ParentLogging()
    if "logFormat" in parent:  # twist
        arguments = [
            f"--log-format={parent['logFormat']}",
            f"--log-level={parent['logLevel'].name}",
        ]
        if parent.get("reactorName", "default") != "default":
            arguments.append(f"--reactor={parent['reactorName']}")
        return ParentLogging(arguments, parent["logFile"].fileno())
    # twistd: text, to its log file (twistd.log when it daemonizes).
    logfile = parent.get("logfile") or (
        None if parent.get("nodaemon") else "twistd.log"
    )
    if not logfile or logfile == "-":
        return ParentLogging(["--log-format=text"])
    path = os.path.abspath(logfile)
    return ParentLogging(["--log-format=text", f"--log-file={path}"], 1, path)


@frozen
class TwistLog:
    """
    Where and how ``twist`` writes its log.

    :ivar descriptor: The descriptor of its ``--log-file`` (standard output
        by default; in a worker, its parent's log).
    :ivar format: ``"text"`` or ``"json"`` (``--log-format``, or the one
        ``twist`` chose: text for a terminal, else JSON).
    """

    descriptor: int
    format: Literal["text", "json"]


def twistLog(parent: Mapping[str, Any] | None) -> TwistLog | None:
    """
    Where and how ``twist`` writes its log, or `None` under ``twistd``
    (whose log file rotates behind its own object) or outside either.

    :param parent: The options of the command that runs the plugin.
    """
    if parent is None or parent.get("logFormat") not in ("text", "json"):
        return None
    try:
        descriptor = parent["logFile"].fileno()
    except (AttributeError, KeyError, OSError, ValueError):
        return None
    return TwistLog(descriptor, parent["logFormat"])


def twistOptions() -> Any:
    """
    A new ``TwistOptions``, the ``twist`` options that become the plugin's
    parent (for tests; a ``usage.Options``, typed here as `Any` so that
    this module need not import the command-line library).

    Missing public API: ``TwistOptions`` is only importable from the private
    ``twisted.application.twist._options``.
    """
    from twisted.application.twist._options import TwistOptions

    return TwistOptions()
