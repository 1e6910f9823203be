"""
What hellotcp's wrapping factories (TLS, the PROXY protocol) need beyond
Twisted's: a factory's refusal stays a refusal, and a half-close is passed
on only to a protocol that really handles it.

A server factory refuses a connection by returning `None` from
``buildProtocol`` (Twisted then closes the connection at once).  Twisted's
`WrappingFactory` subclasses (TLS, the PROXY protocol) would wrap that
`None` in a protocol that fails as soon as it is used.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IAddress, IHalfCloseableProtocol, IProtocol


def halfCloseable(protocol: object) -> IHalfCloseableProtocol | None:
    """
    ``protocol``, if it handles a half-close itself; otherwise `None`.

    Twisted's protocol wrappers copy their transport's interfaces and answer
    any attribute they lack from their transport, so a wrapper may claim
    `IHalfCloseableProtocol` while its ``readConnectionLost`` is its
    transport's own: calling it would call back the caller, forever.  Only
    a ``readConnectionLost`` that the protocol's class defines counts.
    """
    if IHalfCloseableProtocol.providedBy(protocol) and callable(
        getattr(type(protocol), "readConnectionLost", None)
    ):
        return protocol
    return None


class KeepsRefusals:
    """
    Mixin for `WrappingFactory` subclasses, placed before the Twisted class.
    """

    wrappedFactory: Any
    protocol: Any

    def buildProtocol(self, addr: IAddress | None) -> IProtocol | None:
        """
        Wrap the application's protocol, unless it refused the connection.
        """
        wrapped = self.wrappedFactory.buildProtocol(addr)
        if wrapped is None:
            return None
        protocol: IProtocol = self.protocol(self, wrapped)
        return protocol
