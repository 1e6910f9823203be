# -*- test-case-name: tests.test_protocol -*-
"""
What both ends of the hellotcp exchange share: the default message and
greeting, whether a transport can half-close, and how an address is
written.

The server (`hellotcp.protocol`) and the client side (`hellotcp.greet`,
`hellotcp.probe`, `hellotcp.client`) import this module; the client side
never imports the server's.
"""

from __future__ import annotations

import socket

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import IAddress, ISSLTransport, ITransport

from ._escape import escape, escapeText

__all__ = [
    "DEFAULT_GREETING",
    "DEFAULT_MESSAGE",
    "canHalfClose",
    "endedByReset",
    "formatAddress",
    "socketOf",
]

DEFAULT_GREETING = b"Hello, client!"
"""What the server answers unless told otherwise (the classic server's reply)."""

DEFAULT_MESSAGE = b"Hello, server!"
"""What the client sends unless told otherwise (the classic client's message)."""


def formatAddress(address: IAddress) -> str:
    """
    Format a peer or host address the way people write it, escaped as every
    field a client controls is (a PROXY header chooses the addresses).

    :returns: ``host:port``, ``[v6-host]:port``, a UNIX socket path, or the
        address's own ``str`` for anything else.
    """
    if isinstance(address, IPv4Address):
        return f"{escapeText(address.host)}:{address.port}"
    if isinstance(address, IPv6Address):
        return f"[{escapeText(address.host)}]:{address.port}"
    if isinstance(address, UNIXAddress):
        name = address.name
        if isinstance(name, bytes):
            return escape(name) or "unix"
        return escapeText(name) if name else "unix"
    return escapeText(str(address))


def canHalfClose(transport: ITransport) -> bool:
    """
    Whether ``transport`` can close its writing side and go on reading.

    TLS transports pass ``loseWriteConnection`` through to the TCP connection
    beneath them, which would cut the TLS stream mid-record, so they count as
    unable (they close with a TLS close alert instead).  Only Twisted's
    interface is consulted here, never a TLS library.
    """
    return hasattr(transport, "loseWriteConnection") and not (
        ISSLTransport.providedBy(transport)
    )


def socketOf(transport: object) -> socket.socket | None:
    """
    The socket beneath ``transport`` (under TLS, beneath the TLS layer), or
    `None` for a transport without one (in memory).
    """
    for _ in range(4):
        handle = getattr(transport, "getHandle", lambda: None)()
        if isinstance(handle, socket.socket):
            return handle
        transport = getattr(transport, "transport", None)
    return None


def endedByReset(transport: object) -> bool:
    """
    Whether a stream that Twisted reported as ended (``readConnectionLost``)
    was in fact reset, with no end of stream from the peer.

    Twisted's poll-based reactors take a descriptor that polls as hung up
    and in error but not readable for a clean end of stream, and a reset
    that lands just after a read polls that way while the kernel is still
    updating the socket.  The kernel knows better: a read after a FIN gives
    an empty result (even if a reset came after it), a read after a reset
    alone gives the reset.  The read peeks, so it takes nothing.
    """
    sock = socketOf(transport)
    if sock is None:
        return False
    try:
        sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True
    return False
