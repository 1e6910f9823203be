"""
Tests for `hellotcp.client`: the one-line reasons of ``hellotcp-client``.
"""

from __future__ import annotations

import io
import sys

from twisted.internet import defer, error
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from hellotcp.client import ClientOptions, describeFailure, endpointHost
from hellotcp.greet import NoGreetingError


class DescribeFailureTests(SynchronousTestCase):
    """
    `describeFailure` says what went wrong in words, on one line.
    """

    def setUp(self) -> None:
        self.options = ClientOptions()
        self.options.parseOptions(["--connect", "tcp:example.test:5000", "-t", "2"])

    def describe(self, exception: BaseException) -> str:
        """
        Describe ``exception`` as the client would.
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


class ClientOptionsTests(SynchronousTestCase):
    """
    `ClientOptions` refuses TLS options that cannot work together.
    """

    def assertRefused(self, argv: list[str], expected: str) -> None:
        """
        Parsing ``argv`` exits 2 with ``expected`` on one line.
        """
        err = io.StringIO()
        self.patch(sys, "stderr", err)
        with self.assertRaises(SystemExit) as raised:
            ClientOptions().parseOptions(argv)
        self.assertEqual(raised.exception.code, 2)
        self.assertEqual(err.getvalue(), f"hellotcp-client: error: {expected}\n")

    def test_refusals(self) -> None:
        """
        TLS options without ``--tls``, ``--tls`` around a ``tls:`` endpoint,
        half a client certificate, and no name to verify.
        """
        self.assertRefused(
            ["--server-name", "x", "--ca", "c"], "--ca, --server-name go with --tls"
        )
        self.assertRefused(
            ["--tls", "--connect", "tls:localhost:5001"],
            "--tls wraps a plain endpoint; a tls: endpoint is TLS already",
        )
        self.assertRefused(
            ["--tls", "--certificate", "c.pem"],
            "--certificate and --private-key go together",
        )
        self.assertRefused(
            ["--tls", "--connect", "unix:/tmp/s"],
            "--tls needs --server-name for unix:/tmp/s",
        )

    def test_serverNameDefault(self) -> None:
        """
        The name verified defaults to the endpoint's host.
        """
        options = ClientOptions()
        options.parseOptions(["--tls", "--connect", "tcp:host=example.test:port=5"])
        self.assertEqual(options["server-name"], "example.test")


class EndpointHostTests(SynchronousTestCase):
    """
    `endpointHost` finds the host of TCP client endpoint descriptions.
    """

    def test_hosts(self) -> None:
        """
        Positional and keyword forms, IPv6, and endpoints without a host.
        """
        self.assertEqual(endpointHost("tcp:localhost:5000"), "localhost")
        self.assertEqual(endpointHost("tcp:host=127.0.0.1:port=5000"), "127.0.0.1")
        self.assertEqual(endpointHost(r"tcp6:host=\:\:1:port=5000"), "::1")
        self.assertIsNone(endpointHost("unix:/tmp/s"))
        self.assertIsNone(endpointHost("tcp"))


class VersionTests(SynchronousTestCase):
    """
    ``--version`` names hellotcp's version, not Twisted's.
    """

    def test_version(self) -> None:
        """
        It prints ``hellotcp VERSION`` and exits 0.
        """
        import hellotcp

        out = io.StringIO()
        self.patch(sys, "stdout", out)
        with self.assertRaises(SystemExit) as raised:
            ClientOptions().parseOptions(["--version"])
        self.assertEqual(raised.exception.code, 0)
        self.assertEqual(out.getvalue(), f"hellotcp {hellotcp.__version__}\n")
