"""
Tests for L{hellotcp.client}: the one-line reasons of C{hellotcp-client}.
"""

from __future__ import annotations

from twisted.internet import defer, error
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from hellotcp.client import ClientOptions, describeFailure
from hellotcp.protocol import NoGreetingError


class DescribeFailureTests(SynchronousTestCase):
    """
    L{describeFailure} says what went wrong in words, on one line.
    """

    def setUp(self) -> None:
        self.options = ClientOptions()
        self.options.parseOptions(["--connect", "tcp:example.test:5000", "-t", "2"])

    def describe(self, exception: BaseException) -> str:
        """
        Describe C{exception} as the client would.
        """
        return describeFailure(Failure(exception), self.options)

    def test_reasons(self) -> None:
        """
        Each kind of failure has its own sentence.
        """
        where = "tcp:example.test:5000"
        cases = {
            error.ConnectionRefusedError(): f"connection refused by {where}",
            defer.TimeoutError(): f"no answer from {where} within 2 seconds",
            error.DNSLookupError("example.test"): f"cannot resolve the host of {where}",
            NoGreetingError("no greeting"): (
                f"{where}: no greeting (if it is a TLS port, use --tls)"
            ),
            error.ConnectionLost(): (
                f"{where}: the connection was lost before the answer was complete"
            ),
            error.NoRouteError(): (f"cannot connect to {where}: No route to host."),
            ValueError("odd"): f"{where}: odd",
            ValueError(): f"{where}: ValueError",
        }
        for exception, expected in cases.items():
            described = self.describe(exception)
            self.assertEqual(described, expected)
            self.assertNotIn("\n", described)
