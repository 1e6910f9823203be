# -*- test-case-name: tests.test_packets -*-
"""
TLS records named from the record layer that travels in the clear: which
records begin in each segment of a stream (``ClientHello``,
``ChangeCipherSpec``, ``ApplicationData``, ...), for a drawing of the
segments.
"""

from __future__ import annotations

from attrs import define, field

__all__ = ["TLSRecords", "describe"]

# TLS record content types, and the handshake messages a greeting's
# handshake shows in clear (TLS 1.3 encrypts the rest as application data).
_TLS_RECORDS = {
    20: "ChangeCipherSpec",
    21: "Alert",
    22: "Handshake",
    23: "ApplicationData",
}
_TLS_HANDSHAKES = {
    1: "ClientHello",
    2: "ServerHello",
    4: "NewSessionTicket",
    8: "EncryptedExtensions",
    11: "Certificate",
    12: "ServerKeyExchange",
    13: "CertificateRequest",
    14: "ServerHelloDone",
    15: "CertificateVerify",
    16: "ClientKeyExchange",
    20: "Finished",
}


@define
class TLSRecords:
    """
    One direction's byte stream, walked record by record, so that each
    segment can say which records begin in it.
    """

    header: bytearray = field(factory=bytearray)
    remaining: int = 0
    handshakePending: bool = False

    def labels(self, data: bytes) -> list[str]:
        """
        The records that begin in ``data``, the next bytes of the stream:
        their content types, a handshake record by its message.
        """
        names: list[str] = []
        at = 0
        # Every turn consumes at least one byte or ends the loop.
        while at < len(data):
            if self.handshakePending:
                # The byte after a handshake record's header names its
                # message; a record split before it stays "Handshake".
                if names:
                    names[-1] = _TLS_HANDSHAKES.get(data[at], "Handshake")
                self.handshakePending = False
            if self.remaining:
                taken = min(self.remaining, len(data) - at)
                self.remaining -= taken
                at += taken
                continue
            if not self.header:
                # A record begins here: its first byte says what it is.
                names.append(_TLS_RECORDS.get(data[at], f"record {data[at]}"))
            needed = 5 - len(self.header)
            self.header += data[at : at + needed]
            at += needed
            if len(self.header) < 5:
                break
            kind = self.header[0]
            self.remaining = int.from_bytes(self.header[3:5], "big")
            self.header.clear()
            if kind == 22 and self.remaining:
                self.handshakePending = True
        return names


def describe(names: list[str]) -> str:
    """
    ``names`` as one text, runs of one name counted: ``ApplicationData x3``.
    """
    parts: list[str] = []
    count = 0
    for index, name in enumerate(names):
        count += 1
        if index + 1 == len(names) or names[index + 1] != name:
            parts.append(name if count == 1 else f"{name} x{count}")
            count = 0
    return ", ".join(parts)
