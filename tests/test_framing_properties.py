"""
Property-based tests of the framing (8. of the proof suite): however a byte
stream is split into chunks, the server logs the same message and answers
once, exactly as for the unsplit stream.
"""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from hellotcp.protocol import HelloServerFactory, ServerSettings

from .support import PEER, HalfCloseableTransport, captureLogs

SETTINGS = ServerSettings(maxMessageBytes=64)


def splits(data: bytes, cuts: list[int]) -> list[bytes]:
    """
    ``data`` cut at the positions ``cuts``.
    """
    points = sorted({cut % (len(data) + 1) for cut in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


class FramingPropertyTests(SynchronousTestCase):
    """
    Chunking never changes the message, the outcome, or the single answer.
    """

    def exchange(self, chunks: list[bytes], ending: str) -> tuple[bytes, list[str]]:
        """
        Feed ``chunks`` (without pauses longer than the message gap), then
        end the stream by a half-close or by a pause.

        :returns: What the server wrote, and the (outcome, message) it
            logged.
        """
        events = captureLogs(self)
        clock = Clock()
        # Health checks logged too (not by default), so that every exchange
        # is: Hypothesis finds the health-check message in the source.
        factory = HelloServerFactory(SETTINGS, clock, logHealthChecks=True)
        protocol = factory.buildProtocol(PEER)
        assert protocol is not None
        transport = HalfCloseableTransport(peerAddress=PEER)
        protocol.makeConnection(transport)
        for chunk in chunks:
            protocol.dataReceived(chunk)
            clock.advance(SETTINGS.messageGap / 10)
        if ending == "half-close":
            protocol.readConnectionLost()
        else:
            clock.advance(SETTINGS.messageGap)
        protocol.connectionLost()
        logged = [f"{e['outcome']}:{e['message']}" for e in events if "outcome" in e]
        return transport.value(), logged

    @settings(max_examples=300, deadline=None)
    @given(
        data=st.binary(max_size=200),
        cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=20),
        ending=st.sampled_from(["half-close", "pause"]),
    )
    def test_anySplit(self, data: bytes, cuts: list[int], ending: str) -> None:
        """
        Any split of any byte stream gives the same logged message and the
        same single answer as the unsplit stream.
        """
        whole = self.exchange([data] if data else [], ending)
        split = self.exchange(splits(data, cuts), ending)
        self.assertEqual(split, whole)
        written, logged = split
        self.assertEqual(len(logged), 1)
        if data or ending == "half-close":
            self.assertEqual(written, SETTINGS.greeting)
