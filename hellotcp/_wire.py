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

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import IAddress, ISSLTransport, ITransport

from ._escape import escape, escapeText

__all__ = ["DEFAULT_GREETING", "DEFAULT_MESSAGE", "canHalfClose", "formatAddress"]

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
