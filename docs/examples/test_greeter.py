"""
Tests of an application's greeter, without sockets: run them with
``python -m twisted.trial test_greeter`` (docs/testing.md).
"""

from __future__ import annotations

import tempfile

from twisted.internet.defer import TimeoutError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from hellotcp import HelloServerFactory, ServerSettings, clientTLS, greet, serveTLS
from hellotcp.certs import issue, makeCA, writeIssued
from hellotcp.testing import MemoryEndpoint


def makeGreeter(clock: Clock) -> HelloServerFactory:
    """
    The application's greeter: what these tests are about.
    """
    return HelloServerFactory(ServerSettings(greeting=b"Hi from the app"), clock)


class GreeterTests(SynchronousTestCase):
    """
    The greeter answers in memory, plain and over TLS.
    """

    def setUp(self) -> None:
        self.clock = Clock()

    def test_plain(self) -> None:
        """
        A message gets the application's greeting.
        """
        endpoint = MemoryEndpoint(self.clock, makeGreeter(self.clock))
        answer = greet(self.clock, endpoint, "Hello, server!")
        endpoint.flush()
        self.assertEqual(self.successResultOf(answer), b"Hi from the app")

    def test_tls(self) -> None:
        """
        The same over verified TLS, with certificates made for the test.
        """
        folder = tempfile.mkdtemp()
        authority = makeCA()
        ca, _ = writeIssued(folder, "ca", authority)
        certificate, key = writeIssued(
            folder, "server", issue(authority, "localhost", ["localhost"])
        )
        served = serveTLS(makeGreeter(self.clock), certificate, key, clock=self.clock)
        endpoint = MemoryEndpoint(self.clock, served)
        answer = greet(self.clock, endpoint, "Hello", tls=clientTLS("localhost", ca))
        endpoint.flush()
        self.assertEqual(self.successResultOf(answer), b"Hi from the app")

    def test_silentServer(self) -> None:
        """
        Time passes only when the test says: a server that never answers
        fails the exchange once the clock passes greet's timeout.
        """
        endpoint = MemoryEndpoint(self.clock, Factory.forProtocol(Protocol))
        answer = greet(self.clock, endpoint, "Hello", timeout=5)
        endpoint.flush()
        self.assertNoResult(answer)
        self.clock.advance(5)
        self.failureResultOf(answer, TimeoutError)
