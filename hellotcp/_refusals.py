"""
Keep a factory's refusal a refusal when another factory wraps it.

A server factory refuses a connection by returning `None` from
``buildProtocol`` (Twisted then closes the connection at once).  Twisted's
`WrappingFactory` subclasses (TLS, the PROXY protocol) would wrap that
`None` in a protocol that fails as soon as it is used.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IAddress, IProtocol


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
