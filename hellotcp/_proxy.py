# -*- test-case-name: tests.test_proxy -*-
"""
The PROXY protocol (HAProxy's) in front of hellotcp's factories.

Twisted's `HAProxyWrappingFactory` reads the header and makes the wrapped
transport name the real client; this subclass is stricter and keeps what
hellotcp needs working through it:

- a header is accepted only if it is whole and well formed: version 1 with
  real IPv4 or IPv6 addresses (no zone) of its family and decimal ports from
  0 to 65535, nothing else on the line; or version 2 as Twisted parses it.
  Anything else (junk, ``999.1.1.1``, a bad port, a header cut short by the
  client's half-close or close) closes the connection at once, and the
  wrapped protocol is told why (``headerRefused`` of
  `hellotcp.protocol.IConnectionReport`): it logs one contained failure,
  and never greets;
- once the header is read, the wrapped protocol is told that the transport
  now names the real client (``peerRevealed``);
- a header may arrive in pieces, however small;
- a client's half-close after the header (the end of its message) reaches
  the protocol;
- a factory's refusal (`None`) stays a refusal instead of a wrapped `None`.
"""

from __future__ import annotations

import ipaddress
import re
import struct

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol, IProtocolFactory
from twisted.internet.protocol import connectionDone
from twisted.protocols.policies import WrappingFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from ._escape import escape
from ._refusals import KeepsRefusals, halfCloseable
from ._twistedcompat import (
    HAProxyWrappingFactory,
    InvalidProxyHeader,
    ProxyInfo,
    ProxyWrapperBase,
    V1Parser,
    V2Parser,
)
from .protocol import IConnectionReport

_V1_SIGNATURE = b"PROXY "
_V2_SIGNATURE: bytes = V2Parser.PREFIX
# The longest header quoted in a log line (a whole v1 header fits).
_QUOTED = 108
# A port: decimal, no sign, no leading zero, at most five digits.
_PORT = re.compile(rb"(?:0|[1-9][0-9]{0,4})\Z")


class BadProxyHeader(Exception):
    """
    The PROXY header of a connection was malformed or cut short; the text
    says how, and is safe to log as it is: whatever it quotes of what the
    client sent was escaped by whoever raised it.  It is also the reason the
    wrapped protocol's ``connectionLost`` is given.
    """


def _quote(header: bytes) -> str:
    shown = escape(header[:_QUOTED])
    return f'"{shown}..."' if len(header) > _QUOTED else f'"{shown}"'


def checkV1(line: bytes) -> None:
    """
    Check a PROXY v1 header line (without its CR LF) beyond what Twisted's
    parser does: addresses that exist in their family, ports from 0 to
    65535, and exactly the six fields.

    :raises BadProxyHeader: Saying what is wrong.
    """
    fields = line.split(b" ")
    if len(fields) > 1 and fields[1] == b"UNKNOWN":
        return  # the balancer does not know the client; the line says no more
    if len(fields) != 6 or fields[1] not in (b"TCP4", b"TCP6"):
        raise BadProxyHeader(f"malformed PROXY header {_quote(line)}")
    tcp4 = fields[1] == b"TCP4"
    family = ipaddress.IPv4Address if tcp4 else ipaddress.IPv6Address
    for host in fields[2:4]:
        try:
            if b"%" in host:
                raise ValueError("zone")
            family(host.decode("ascii"))
        except ValueError:
            raise BadProxyHeader(
                f"malformed PROXY header {_quote(line)}: "
                f"{escape(host)} is not an IPv{4 if tcp4 else 6} address"
            ) from None
    for port in fields[4:6]:
        if not _PORT.match(port) or int(port) > 65535:
            raise BadProxyHeader(
                f"malformed PROXY header {_quote(line)}: {escape(port)} is not a port"
            )


@implementer(IHalfCloseableProtocol)
class _ProxyProtocol(ProxyWrapperBase):
    _refusal: Failure | None = None
    # What has arrived of a header not yet complete.
    _head = b""
    # The parser of the header's version, once its signature has arrived.
    _reader: V1Parser | V2Parser | None = None

    def dataReceived(self, data: bytes) -> None:
        if self.proxyInfo is not None:
            self.wrappedProtocol.dataReceived(data)
            return
        if self._refusal is not None:
            return
        self._head += data
        head = self._head
        if self._reader is None:
            if head.startswith(_V2_SIGNATURE) and len(head) >= 16:
                self._reader = V2Parser()
            elif head.startswith(_V1_SIGNATURE):
                self._reader = V1Parser()
            elif _V2_SIGNATURE.startswith(head[:12]) or _V1_SIGNATURE.startswith(head):
                return  # a signature's first bytes: wait for the rest
            else:
                self._refuse(f"no PROXY header: {_quote(head)}")
                return
            data = head
        info: ProxyInfo | None
        try:
            info, remaining = self._reader.feed(data)
            if info is not None and isinstance(self._reader, V1Parser):
                checkV1(info.header)
        except BadProxyHeader as error:
            self._refuse(str(error))
            return
        except (InvalidProxyHeader, ValueError, struct.error):
            # Twisted's parsers let a bad port (ValueError) through.
            self._refuse(f"malformed PROXY header {_quote(head)}")
            return
        if info is None:
            return
        self._head = b""
        self.proxyInfo = info
        # The wrapped protocol was connected before the header was read: the
        # peer this transport names has changed, once.
        report = IConnectionReport(self.wrappedProtocol, None)
        if report is not None:
            report.peerRevealed()
        if remaining:
            self.wrappedProtocol.dataReceived(remaining)

    def _refuse(self, why: str) -> None:
        self._refusal = Failure(BadProxyHeader(why))
        self._head = b""
        self.loseConnection()  # type: ignore[no-untyped-call]

    def readConnectionLost(self) -> None:
        if self.proxyInfo is None:
            # The client ended before its header was whole: nothing to greet.
            # (One that sent nothing at all is only lost, as anywhere else.)
            if self._refusal is None and self._head:
                self._refuse(self._incomplete())
            else:
                self.loseConnection()  # type: ignore[no-untyped-call]
            return
        wrapped = halfCloseable(self.wrappedProtocol)
        if wrapped is not None:
            wrapped.readConnectionLost()
        else:
            self.loseConnection()  # type: ignore[no-untyped-call]

    def writeConnectionLost(self) -> None:
        wrapped = halfCloseable(self.wrappedProtocol)
        if wrapped is not None:
            wrapped.writeConnectionLost()

    def _incomplete(self) -> str:
        return f"incomplete PROXY header {_quote(self._head)}"

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._refusal is not None:
            reason = self._refusal
        elif self.proxyInfo is None and self._head and reason.check(ConnectionDone):
            reason = Failure(BadProxyHeader(self._incomplete()))
        report = IConnectionReport(self.wrappedProtocol, None)
        if report is not None and reason.check(BadProxyHeader):
            report.headerRefused(str(reason.value))
        super().connectionLost(reason)  # type: ignore[no-untyped-call]


class ProxyFactory(KeepsRefusals, HAProxyWrappingFactory):  # type: ignore[misc]
    """
    Read a PROXY header (v1 or v2) before handing the connection to the
    wrapped factory's protocol; see this module's rules.
    """

    # Twisted's generic annotations of WrappingFactory do not follow a
    # subclass of its protocol; these two lines are what its own code does.
    protocol = _ProxyProtocol  # type: ignore[assignment]

    # The wrapped factory's own lines say all there is to say.
    noisy = False

    def __init__(self, wrappedFactory: IProtocolFactory) -> None:
        WrappingFactory.__init__(self, wrappedFactory)  # type: ignore[arg-type]
