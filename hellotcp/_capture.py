# -*- test-case-name: tests.test_capture -*-
"""
Capture the segments of the client's own TCP connection with the kernel's
own interfaces, through the standard library: a packet socket
(``AF_PACKET``, which sees every packet into and out of this host), a
classic BPF program attached to it that keeps only the connection's
4-tuple (the kernel drops everything else before copying it), and the
kernel's receive timestamps (``SO_TIMESTAMPNS``).  Linux only; it needs
root or ``CAP_NET_RAW``.

The 4-tuple is known before the SYN leaves: the client's socket is bound
to the address the route to the server uses and to a port the kernel
picks, by ``connectTCP`` itself (`CapturingReactor`), and Twisted sends
the SYN on the reactor's next turn, after the filter is in place.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import socket
import struct
import sys
import time
from collections.abc import Callable
from typing import Any

from twisted.internet.abstract import isIPv6Address
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, TimeoutError, succeed
from twisted.internet.interfaces import IReactorFDSet, IReactorTime, IReadDescriptor
from twisted.python.failure import Failure
from zope.interface import directlyProvides, implementer, providedBy

from ._twistedcompat import boundAddress
from .packets import Conversation, PacketTrace, parsePacket

__all__ = [
    "FINISH_BOUND",
    "CaptureUnavailable",
    "CapturingReactor",
    "ConnectionCapture",
    "checkCapture",
    "connectionFilter",
]

# linux/if_ether.h, asm-generic/socket.h, linux/if_packet.h, linux/if_arp.h
_ETH_P_ALL = 0x0003
_ETH_P_IP = 0x0800
_ETH_P_IPV6 = 0x86DD
_SO_ATTACH_FILTER = 26
_SO_TIMESTAMPNS = 35
_PACKET_OUTGOING = 4
_ARPHRD_LOOPBACK = 772
# Keep whole packets (TLS records are named from their headers, which may
# be anywhere in a segment); loopback's MTU is 64 KiB.
_SNAPLEN = 0x40000
_TIMESPEC = struct.Struct("@qq")
# Packets read per turn of the reactor, so that a flood cannot hold it.
_BATCH = 64
# Segments kept per connection at most: a greeting takes about ten.
MOST_SEGMENTS = 1000
FINISH_BOUND = 1.0
"""Seconds a capture waits, after the exchange, for the connection's last
segments (the acknowledgement of the last FIN) before it stops."""

# Classic BPF (linux/filter.h): instruction classes, sizes and modes.
_LDB_ABS, _LDH_ABS, _LDW_ABS = 0x30, 0x28, 0x20
_LDH_IND, _LDX_MSH = 0x48, 0xB1
_JEQ, _JSET, _RET = 0x15, 0x45, 0x06
# SKF_AD_OFF + SKF_AD_PROTOCOL: the packet's EtherType, whatever the link.
_AD_PROTOCOL = 0xFFFFF000
_INSTRUCTION = struct.Struct("=HBBI")

PRIVILEGE_NEEDED = (
    "capturing packets needs root or CAP_NET_RAW "
    "(run with sudo, or grant it: sudo setcap cap_net_raw+ep {python})"
)
"""What a user without the privilege is told, with how to get it."""


class CaptureUnavailable(Exception):
    """
    Packets cannot be captured here; the message says why, in one line.
    """


def _openPacketSocket() -> socket.socket:
    family = getattr(socket, "AF_PACKET", None)
    if family is None:
        raise CaptureUnavailable(
            f"capturing packets needs Linux's packet sockets ({sys.platform} has none)"
        )
    try:
        sock = socket.socket(family, socket.SOCK_DGRAM, socket.htons(_ETH_P_ALL))
    except PermissionError:
        raise CaptureUnavailable(
            PRIVILEGE_NEEDED.format(python=os.path.realpath(sys.executable))
        ) from None
    except OSError as problem:
        raise CaptureUnavailable(
            f"cannot open a packet socket: {problem.strerror or problem}"
        ) from None
    # Nothing until the connection's own filter replaces this one.
    _attach(sock, _assemble([(_RET, 0, 0, 0)]))
    sock.setblocking(False)
    _drain(sock)
    sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
    return sock


def checkCapture() -> None:
    """
    Check that this process may capture packets.

    :raises CaptureUnavailable: Saying why not, and how to grant it.
    """
    _openPacketSocket().close()


def _drain(sock: socket.socket) -> None:
    # What arrived before the filter was attached; bounded by the queue.
    for _ in range(10_000):
        try:
            sock.recv(1)
        except OSError:
            return


def _attach(sock: socket.socket, program: bytes) -> None:
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; }
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = struct.pack(
        "HP", len(program) // _INSTRUCTION.size, ctypes.addressof(buffer)
    )
    sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)


def _assemble(instructions: list[tuple[int, int | str, int | str, int]]) -> bytes:
    """
    Classic BPF from ``(code, true, false, k)`` rows, where a jump target
    is a label (a string row ``(0, name, 0, 0)`` marks one) or an offset.
    """
    labels: dict[str, int] = {}
    rows: list[tuple[int, int | str, int | str, int]] = []
    for code, true, false, k in instructions:
        if code == -1:
            labels[str(true)] = len(rows)
        else:
            rows.append((code, true, false, k))

    def offset(target: int | str, at: int) -> int:
        return target if isinstance(target, int) else labels[target] - at - 1

    return b"".join(
        _INSTRUCTION.pack(code, offset(true, at), offset(false, at), k)
        for at, (code, true, false, k) in enumerate(rows)
    )


def connectionFilter(
    family: int,
    local: tuple[str | None, int],
    remote: tuple[str | None, int],
) -> bytes:
    """
    A classic BPF program, for a packet socket that reads from the network
    header (``SOCK_DGRAM``), that keeps the TCP segments of one connection
    in both directions and drops everything else.

    :param family: ``AF_INET`` or ``AF_INET6``.
    :param local: The client's address (`None`: any) and port.
    :param remote: The server's address (`None`: any) and port.
    :returns: The program, ready for ``SO_ATTACH_FILTER``.
    """
    v6 = family == socket.AF_INET6
    rows: list[tuple[int, int | str, int | str, int]] = [
        (_LDH_ABS, 0, 0, _AD_PROTOCOL),
        (_JEQ, 0, "drop", _ETH_P_IPV6 if v6 else _ETH_P_IP),
        (_LDB_ABS, 0, 0, 6 if v6 else 9),
        (_JEQ, 0, "drop", 6),
    ]
    if not v6:
        # A fragment other than the first has no TCP header to match.
        rows += [(_LDH_ABS, 0, 0, 6), (_JSET, "drop", 0, 0x1FFF)]
    source, destination = (8, 24) if v6 else (12, 16)
    for name, (fromAddress, fromPort), (toAddress, toPort), otherwise in [
        ("out", local, remote, "in"),
        ("in", remote, local, "drop"),
    ]:
        rows.append((-1, name, 0, 0))
        for address, at in ((fromAddress, source), (toAddress, destination)):
            if address is None:
                continue
            packed = ipaddress.ip_address(address.split("%")[0]).packed
            for word in range(0, len(packed), 4):
                rows += [
                    (_LDW_ABS, 0, 0, at + word),
                    (
                        _JEQ,
                        0,
                        otherwise,
                        int.from_bytes(packed[word : word + 4], "big"),
                    ),
                ]
        if v6:
            rows.append((_LDH_ABS, 0, 0, 40))
        else:
            rows += [(_LDX_MSH, 0, 0, 0), (_LDH_IND, 0, 0, 0)]
        rows.append((_JEQ, 0, otherwise, fromPort))
        rows.append((_LDH_ABS, 0, 0, 42) if v6 else (_LDH_IND, 0, 0, 2))
        rows.append((_JEQ, "keep", otherwise, toPort))
    rows += [
        (-1, "keep", 0, 0),
        (_RET, 0, 0, _SNAPLEN),
        (-1, "drop", 0, 0),
        (_RET, 0, 0, 0),
    ]
    return _assemble(rows)


def _timestamp(ancillary: list[tuple[int, int, bytes]]) -> float:
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS:
            seconds, nanoseconds = _TIMESPEC.unpack_from(data)
            return float(seconds + nanoseconds / 1e9)
    return time.time()


@implementer(IReadDescriptor)
class _PacketReader:
    """
    Read a filtered packet socket from the reactor, handing each packet of
    the connection, with the kernel's timestamp, to a callable.
    """

    def __init__(
        self, sock: socket.socket, received: Callable[[float, bytes], None]
    ) -> None:
        self._socket = sock
        self._received = received

    def fileno(self) -> int:
        """
        The packet socket's descriptor.
        """
        return self._socket.fileno()

    def doRead(self) -> None:
        """
        Read what is queued, a batch at a time.
        """
        self.readQueued(_BATCH)

    def readQueued(self, most: int) -> None:
        """
        Read at most ``most`` queued packets.  On a loopback device every
        packet passes a packet socket twice, going out and coming in; only
        the coming in is kept, as libpcap does.
        """
        space = socket.CMSG_SPACE(_TIMESPEC.size)
        for _ in range(most):
            try:
                data, ancillary, _, address = self._socket.recvmsg(_SNAPLEN, space)
            except OSError:
                return
            if address[2] == _PACKET_OUTGOING and address[3] == _ARPHRD_LOOPBACK:
                continue
            self._received(_timestamp(ancillary), data)

    def connectionLost(self, reason: Failure) -> None:
        """
        Nothing to do: the capture closes the socket.
        """

    def logPrefix(self) -> str:
        """
        How the reactor names this reader in its log.
        """
        return "hellotcp packet capture"


class ConnectionCapture:
    """
    The segments of one connection attempt, read as they pass.

    :ivar client: The client's address (`None` if not known yet) and port.
    :ivar server: The server's address (`None` for a host name not
        resolved yet) and port.
    :ivar conversation: What was captured.
    """

    def __init__(
        self,
        reactor: IReactorFDSet,
        family: int,
        client: tuple[str | None, int],
        server: tuple[str | None, int],
        tls: bool,
    ) -> None:
        """
        Start capturing.

        :raises CaptureUnavailable: A packet socket cannot be opened.
        """
        self.client = client
        self.server = server
        self.conversation = Conversation(client, server, tls)
        self._reactor = reactor
        self._finished: Deferred[None] | None = None
        self._socket = _openPacketSocket()
        try:
            _attach(self._socket, connectionFilter(family, client, server))
        except OSError as problem:
            self._socket.close()
            raise CaptureUnavailable(
                f"cannot filter the capture: {problem.strerror or problem}"
            ) from None
        self._reader = _PacketReader(self._socket, self._received)
        reactor.addReader(self._reader)

    def _received(self, when: float, data: bytes) -> None:
        if len(self.conversation.captured) >= MOST_SEGMENTS:
            return
        packet = parsePacket(data)
        if packet is None or not self.conversation.belongs(packet):
            return
        self.conversation.add(when, packet)
        if self._finished is not None and self.conversation.finished:
            self._finished.callback(None)
            self._finished = None

    def finish(self, clock: IReactorTime, bound: float) -> Deferred[Conversation]:
        """
        Stop once the connection is over on the wire (a FIN each way and the
        last acknowledged, or a reset), or after ``bound`` seconds at most.
        """
        self._reader.readQueued(MOST_SEGMENTS)
        finished: Deferred[None] = Deferred()
        if self.conversation.finished:
            finished.callback(None)
        else:
            self._finished = finished
            finished.addTimeout(bound, clock)

        def stop(result: Failure | None) -> Conversation:
            if isinstance(result, Failure):
                result.trap(TimeoutError)
            self._finished = None
            self.close()
            return self.conversation

        return finished.addBoth(stop)

    def close(self) -> None:
        """
        Stop reading, keep what was queued, close the socket.
        """
        if self._socket.fileno() == -1:
            return
        self._reactor.removeReader(self._reader)
        self._reader.readQueued(MOST_SEGMENTS)
        self._socket.close()


def _sourceAddress(family: int, host: str, port: int) -> str | None:
    # The address the route to the server would use: what connect() would
    # choose, found without sending anything (a UDP socket's connect).
    where: tuple[Any, ...] = (host, port)
    if family == socket.AF_INET6:
        address, _, scope = host.partition("%")
        index = 0
        if scope:
            try:
                index = int(scope) if scope.isdigit() else socket.if_nametoindex(scope)
            except OSError:
                return None
        where = (address, port, 0, index)
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect(where)
            return str(probe.getsockname()[0])
    except OSError:
        return None


class CapturingReactor:
    """
    A reactor that passes everything to the real one, except that each TCP
    connection it makes is bound before it connects and captured from its
    SYN on (`ConnectionCapture`): what ``clientFromString`` is given so that
    any TCP endpoint, plain or TLS, host name or address, can be captured.

    :ivar captures: One per connection attempt, in order.
    :ivar problems: Why an attempt could not be captured, if any could not.
    """

    def __init__(self, reactor: Any, tls: bool) -> None:
        """
        :param reactor: The real reactor.
        :param tls: Whether the connections will carry TLS.
        """
        self._reactor = reactor
        self._tls = tls
        self.captures: list[ConnectionCapture] = []
        self.problems: list[str] = []
        directlyProvides(self, providedBy(reactor))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)

    def connectTCP(
        self,
        host: str,
        port: int,
        factory: Any,
        timeout: float = 30,
        bindAddress: tuple[str, int] | None = None,
    ) -> Any:
        """
        Connect as ``IReactorTCP.connectTCP`` does, capturing the
        connection.
        """
        return self._captured(
            host,
            port,
            bindAddress,
            lambda bind: self._reactor.connectTCP(host, port, factory, timeout, bind),
        )

    def connectSSL(
        self,
        host: str,
        port: int,
        factory: Any,
        contextFactory: Any,
        timeout: float = 30,
        bindAddress: tuple[str, int] | None = None,
    ) -> Any:
        """
        Connect as ``IReactorSSL.connectSSL`` does (an ``ssl:`` endpoint),
        capturing the connection.
        """
        return self._captured(
            host,
            port,
            bindAddress,
            lambda bind: self._reactor.connectSSL(
                host, port, factory, contextFactory, timeout, bind
            ),
        )

    def _captured(
        self,
        host: str,
        port: int,
        bindAddress: tuple[str, int] | None,
        connect: Callable[[tuple[str, int]], Any],
    ) -> Any:
        literal = isIPv6Address(host) or _isIPv4(host)
        family = socket.AF_INET6 if isIPv6Address(host) else socket.AF_INET
        if bindAddress is None:
            # Bound before connecting, so that the port is known before the
            # SYN; to the address the route uses, so that the whole 4-tuple
            # is.
            source = _sourceAddress(family, host, port) if literal else None
            bindAddress = (source or ("::" if family == socket.AF_INET6 else ""), 0)
        connector = connect(bindAddress)
        local = boundAddress(connector)
        if not isinstance(local, (IPv4Address, IPv6Address)) or not local.port:
            self.problems.append(
                "the connection's port was not known before it connected"
            )
            return connector
        localHost = None if local.host in ("0.0.0.0", "::") else local.host
        try:
            self.captures.append(
                ConnectionCapture(
                    self._reactor,
                    family,
                    (localHost, local.port),
                    (host if literal else None, port),
                    self._tls,
                )
            )
        except CaptureUnavailable as problem:
            self.problems.append(str(problem))
        return connector

    def trace(
        self,
        local: str | None,
        clock: IReactorTime,
        kernelRetransmits: int | None = None,
        bound: float = FINISH_BOUND,
    ) -> Deferred[PacketTrace]:
        """
        Finish capturing once the exchange is over: wait (``bound`` seconds
        at most) for the last segments of the attempt that connected from
        ``local`` (the client's address as text; else the first attempt),
        close every capture, and draw up the trace.
        """
        chosen = next(
            (c for c in self.captures if local and local.endswith(f":{c.client[1]}")),
            self.captures[0] if self.captures else None,
        )
        problem = "; ".join(self.problems) or None
        if chosen is None:
            for capture in self.captures:
                capture.close()
            return succeed(PacketTrace(problem=problem or "no TCP connection was made"))

        def done(conversation: Conversation) -> PacketTrace:
            for capture in self.captures:
                capture.close()
            return PacketTrace.of(conversation, kernelRetransmits, problem)

        return chosen.finish(clock, bound).addCallback(done)


def _isIPv4(host: str) -> bool:
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return True
