"""
The PROXY protocol (HAProxy's) in front of hellotcp's factories.

Twisted's `HAProxyWrappingFactory` reads the header and makes the wrapped
transport name the real client; this subclass also keeps two things
hellotcp needs working through it: a client's half-close (the end of its
message) reaches the protocol, and a factory's refusal (`None`) stays a
refusal instead of a wrapped `None`.
"""

from __future__ import annotations

from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IProtocolFactory,
)
from twisted.protocols.haproxy._wrapper import (
    HAProxyProtocolWrapper,
    HAProxyWrappingFactory,
)
from twisted.protocols.policies import WrappingFactory
from zope.interface import implementer

from ._refusals import KeepsRefusals


@implementer(IHalfCloseableProtocol)
class _ProxyProtocol(HAProxyProtocolWrapper):
    # The wrapped protocol is connected before the header is read, so the
    # peer this transport names changes, once, when it has been.
    peerKnownLate = True

    def readConnectionLost(self) -> None:
        if IHalfCloseableProtocol.providedBy(self.wrappedProtocol):
            self.wrappedProtocol.readConnectionLost()
        else:
            self.loseConnection()  # type: ignore[no-untyped-call]

    def writeConnectionLost(self) -> None:
        if IHalfCloseableProtocol.providedBy(self.wrappedProtocol):
            self.wrappedProtocol.writeConnectionLost()


class ProxyFactory(KeepsRefusals, HAProxyWrappingFactory):  # type: ignore[misc]
    """
    Read a PROXY header (v1 or v2) before handing the connection to the
    wrapped factory's protocol.
    """

    # Twisted's generic annotations of WrappingFactory do not follow a
    # subclass of its protocol; these two lines are what its own code does.
    protocol = _ProxyProtocol  # type: ignore[assignment]

    # The wrapped factory's own lines say all there is to say.
    noisy = False

    def __init__(self, wrappedFactory: IProtocolFactory) -> None:
        WrappingFactory.__init__(self, wrappedFactory)  # type: ignore[arg-type]
