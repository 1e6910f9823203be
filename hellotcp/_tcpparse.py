# -*- test-case-name: tests.test_packets -*-
"""
IP packets that carry TCP, parsed: the fixed headers of IPv4 or IPv6, then
TCP's and the options a drawing shows, read with `struct`.  What the kernel
hands a packet socket (from the network header on) needs no more.
"""

from __future__ import annotations

import ipaddress
import struct

from attrs import frozen

__all__ = ["ACK", "FIN", "RST", "SYN", "Packet", "flagNames", "parsePacket"]

# TCP header flags, in the order they are named ("FIN-PSH-ACK"), which is
# the order tcpdump and Wireshark list them in after SYN.
_FLAGS = [
    (0x02, "SYN"),
    (0x01, "FIN"),
    (0x04, "RST"),
    (0x08, "PSH"),
    (0x10, "ACK"),
    (0x20, "URG"),
    (0x40, "ECE"),
    (0x80, "CWR"),
]
# The flag bits a conversation follows.
SYN, FIN, RST, ACK = 0x02, 0x01, 0x04, 0x10

_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_IPV6 = struct.Struct("!IHBB16s16s")
_TCP = struct.Struct("!HHIIBBHHH")
_TCP_PROTOCOL = 6


@frozen
class Packet:
    """
    One TCP segment as it was on the wire, with absolute numbers.

    :ivar source: The sender's address and port.
    :ivar destination: The receiver's address and port.
    :ivar seq: The sequence number.
    :ivar ack: The acknowledgement number (meaningful with the ACK flag).
    :ivar flags: The flag bits of the TCP header.
    :ivar window: The window field, unscaled.
    :ivar payload: The data carried.
    :ivar mss: The maximum segment size option, if present.
    :ivar windowScale: The window scale option, if present.
    """

    source: tuple[str, int]
    destination: tuple[str, int]
    seq: int
    ack: int
    flags: int
    window: int
    payload: bytes
    mss: int | None = None
    windowScale: int | None = None


def parsePacket(data: bytes) -> Packet | None:
    """
    Parse an IPv4 or IPv6 packet that carries TCP (its first byte is the IP
    header's).

    :returns: The segment, or `None` for anything else (another protocol,
        an IPv6 extension header, a fragment, a truncated header).
    """
    if len(data) < 1:
        return None
    version = data[0] >> 4
    if version == 4 and len(data) >= _IPV4.size:
        (first, _, total, _, fragment, _, protocol, _, source, destination) = (
            _IPV4.unpack_from(data)
        )
        headerLength = (first & 0x0F) * 4
        if protocol != _TCP_PROTOCOL or fragment & 0x1FFF or fragment & 0x2000:
            return None
        end = min(len(data), total) if total else len(data)
        addresses = (
            str(ipaddress.IPv4Address(source)),
            str(ipaddress.IPv4Address(destination)),
        )
    elif version == 6 and len(data) >= _IPV6.size:
        (_, payloadLength, nextHeader, _, source, destination) = _IPV6.unpack_from(data)
        if nextHeader != _TCP_PROTOCOL:
            return None
        headerLength = _IPV6.size
        end = min(len(data), headerLength + payloadLength)
        addresses = (
            str(ipaddress.IPv6Address(source)),
            str(ipaddress.IPv6Address(destination)),
        )
    else:
        return None
    return _parseTCP(data[headerLength:end], addresses)


def _parseTCP(tcp: bytes, addresses: tuple[str, str]) -> Packet | None:
    if len(tcp) < _TCP.size:
        return None
    sourcePort, destinationPort, seq, ack, offset, flags, window, _, _ = (
        _TCP.unpack_from(tcp)
    )
    dataOffset = (offset >> 4) * 4
    if dataOffset < _TCP.size or dataOffset > len(tcp):
        return None
    mss = windowScale = None
    options = tcp[_TCP.size : dataOffset]
    at = 0
    # Bounded by the options' length: every step moves on by at least one.
    while at < len(options):
        kind = options[at]
        if kind == 0:
            break
        if kind == 1:
            at += 1
            continue
        if at + 1 >= len(options) or options[at + 1] < 2:
            break
        length = options[at + 1]
        body = options[at + 2 : at + length]
        if kind == 2 and len(body) == 2:
            mss = int.from_bytes(body, "big")
        elif kind == 3 and len(body) == 1:
            windowScale = min(body[0], 14)
        at += length
    return Packet(
        source=(addresses[0], sourcePort),
        destination=(addresses[1], destinationPort),
        seq=seq,
        ack=ack,
        flags=flags,
        window=window,
        payload=bytes(tcp[dataOffset:]),
        mss=mss,
        windowScale=windowScale,
    )


def flagNames(flags: int) -> str:
    """
    The flags of a TCP header as the figure names them: ``SYN-ACK``,
    ``PSH-ACK``, ``FIN-ACK``, ``RST``.
    """
    return "-".join(name for bit, name in _FLAGS if flags & bit) or "none"
