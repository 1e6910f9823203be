"""
Tests for `hellotcp.client`: the one-line reasons of ``hellotcp-client``.
"""

from __future__ import annotations

import io
import sys

from twisted.internet import defer, error
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from hellotcp.client import (
    ClientOptions,
    checkEndpoint,
    checkHost,
    describeFailure,
    endpointHost,
    failureKind,
)
from hellotcp.greet import AnswerCutShortError, NoGreetingError


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

    def test_incompleteEndpoints(self) -> None:
        """
        An endpoint description without its host or port, or with a
        parameter its kind does not take, is named with what is wrong, not
        with the Python exception of Twisted's parser.
        """
        self.assertRefused(
            ["-c", "tcp:localhost"],
            "--connect tcp:localhost: the port is missing (tcp:HOST:PORT)",
        )
        self.assertRefused(
            ["-c", "tls:localhost"],
            "--connect tls:localhost: the port is missing (tls:HOST:PORT)",
        )
        self.assertRefused(
            ["-c", "tcp"],
            "--connect tcp: the host and port are missing (tcp:HOST:PORT)",
        )

    def test_synopsisNamesEveryOption(self) -> None:
        """
        The usage line names every option but --help and --version.
        """
        options = ClientOptions()
        names = [str(flag[0]) for flag in options.optFlags]
        names += [str(parameter[0]) for parameter in options.optParameters]  # type: ignore[index]
        for name in set(names) - {"help", "version"}:
            self.assertRegex(options.synopsis, rf"--{name}\b(?!-)")

    def test_refusals(self) -> None:
        """
        TLS options without ``--tls``, ``--tls`` around a ``tls:`` endpoint,
        half a client certificate, and no name to verify.
        """
        self.assertRefused(
            ["--server-name", "x", "--ca", "c"], "--ca and --server-name go with --tls"
        )
        self.assertRefused(["--ca", "c"], "--ca goes with --tls")
        self.assertRefused(
            ["--ca", "c", "--server-name", "x", "--certificate", "c.pem"],
            "--ca, --server-name and --certificate go with --tls",
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

    def test_numbers(self) -> None:
        """
        Every number is bounded as it is parsed: a 400-digit count or
        concurrency, NaN, infinity, a negative or too large value are each
        one line.
        """
        huge = "9" * 400
        self.assertRefused(
            ["--count", huge],
            f"--count must be a whole number 0 or more and at most 1000000000, "
            f"not '{huge[:40]}...'",
        )
        self.assertRefused(
            ["--concurrency", huge],
            "--concurrency must be a whole number greater than 0 and at most "
            f"10000, not '{huge[:40]}...'",
        )
        self.assertRefused(
            ["--interval", "nan"], "--interval must be a number 0 or more, not 'nan'"
        )
        self.assertRefused(
            ["--timeout", "inf"],
            "--timeout must be a number greater than 0 and at most 86400, not 'inf'",
        )
        self.assertRefused(
            ["--interval", "-1"], "--interval must be a number 0 or more, not '-1'"
        )

    def test_ports(self) -> None:
        """
        A port out of range in ``--connect`` is a mistake on the command
        line (exit status 2), found before connecting.
        """
        for description, port in [
            ("tcp:127.0.0.1:99999", "99999"),
            ("tcp:127.0.0.1:0", "0"),
            ("tcp:host=127.0.0.1:port=-1", "-1"),
            ("tls:localhost:70000", "70000"),
            ("tcp:localhost:five", "five"),
        ]:
            self.assertRefused(
                ["--connect", description],
                f"--connect {description}: the port must be a whole number "
                f"from 1 to 65535, not '{port}'",
            )
        checkEndpoint("tcp:127.0.0.1:65535")
        checkEndpoint("unix:/tmp/s")

    def test_messageBytes(self) -> None:
        """
        A message that is not UTF-8 (argv holds it as surrogates) is sent
        as the bytes given; text as UTF-8.
        """
        options = ClientOptions()
        options.parseOptions(["--message", "\udcff\udcfe"])
        self.assertEqual(options["message-bytes"], b"\xff\xfe")
        options = ClientOptions()
        options.parseOptions(["--message", "héllo"])
        self.assertEqual(options["message-bytes"], "héllo".encode())

    def test_serverNameDefault(self) -> None:
        """
        The name verified defaults to the endpoint's host.
        """
        options = ClientOptions()
        options.parseOptions(["--tls", "--connect", "tcp:host=example.test:port=5"])
        self.assertEqual(options["server-name"], "example.test")

    def test_serverNames(self) -> None:
        """
        ``--server-name``, or the ``--connect`` host it defaults to, must be
        a host name as ``hellotcp-certs`` takes them: a label of 70
        characters or a name of 300 was an ``idna`` traceback.
        """
        label = "a" * 70 + ".example"
        shown = "'" + "a" * 40 + "...'"
        self.assertRefused(
            ["--tls", "--server-name", label],
            f"--server-name: {shown} is not a valid host name: Label too long",
        )
        # Labels of 50 (each valid), 306 characters in all.
        long = ("a" * 50 + ".") * 6
        self.assertRefused(
            ["--tls", "--server-name", long],
            f"--server-name: {shown} is not a valid host name: Domain too long",
        )
        self.assertRefused(
            ["--tls", "--server-name", "."],
            "--server-name: '.' is not a host name: it is empty",
        )
        self.assertRefused(
            ["--tls", "--connect", "tcp:my_host:5"],
            "--connect tcp:my_host:5: 'my_host' is not a valid host name: "
            "Codepoint U+005F at position 3 of 'my_host' not allowed "
            "(the name --tls verifies; give --server-name)",
        )
        # A name the server's certificate may cover is kept as given.
        for name in ("bücher.example", "a" * 63 + ".example", "::1", "localhost."):
            options = ClientOptions()
            options.parseOptions(["--tls", "--server-name", name])
            self.assertEqual(options["server-name"], name)

    def test_endpointHosts(self) -> None:
        """
        A ``tcp:`` or ``tls:`` host that Twisted's resolver cannot encode
        (it failed unhandled, and the exchange waited for its timeout) is
        a mistake on the command line, named cut.
        """
        label = "a" * 70 + ".example"
        for kind in ("tcp", "tls"):
            err = io.StringIO()
            self.patch(sys, "stderr", err)
            with self.assertRaises(SystemExit) as raised:
                ClientOptions().parseOptions(["--connect", f"{kind}:{label}:5"])
            self.assertEqual(raised.exception.code, 2)
            line = err.getvalue()
            self.assertEqual(len(line.splitlines()), 1, line)
            self.assertIn(f"--connect {kind}:{'a' * 70}.examp...: ", line)
            self.assertIn("is not a valid host name", line)
        # Plain TCP leaves a name a local resolver may know to it.
        options = ClientOptions()
        options.parseOptions(["--connect", "tcp:my_host:5"])
        self.assertEqual(options["connect"], "tcp:my_host:5")

    def test_endpointTimeout(self) -> None:
        """
        The ``timeout=`` of a ``tcp:`` endpoint is a whole number of seconds
        from 1 to a day: 400 digits overflowed in the reactor.
        """
        for value, expected in [
            ("9" * 400, "at most 86400, not '" + "9" * 40 + "...'"),
            ("0", "greater than 0, not '0'"),
            ("-1", "greater than 0, not '-1'"),
            ("86401", "at most 86400, not '86401'"),
        ]:
            description = f"tcp:127.0.0.1:1:timeout={value}"
            err = io.StringIO()
            self.patch(sys, "stderr", err)
            with self.assertRaises(SystemExit):
                ClientOptions().parseOptions(["--connect", description])
            self.assertIn("timeout= must be a whole number", err.getvalue())
            self.assertIn(expected, err.getvalue())
        checkEndpoint("tcp:127.0.0.1:1:timeout=86400")


class CheckHostTests(SynchronousTestCase):
    """
    `checkHost` takes what a resolver can look up, and, for TLS, what a
    certificate can name.
    """

    def test_hosts(self) -> None:
        """
        Addresses and names within the DNS limits are taken; longer ones,
        empty ones and (for TLS) characters no host name has are refused.
        """
        for host in ("127.0.0.1", "::1", "localhost", "bücher.example", "a" * 63):
            checkHost(host)
            checkHost(host, tls=True)
        checkHost("my_host")
        for host in ("a" * 64, "a" * 300, ".", "", "x..y", ("a" * 60 + ".") * 5):
            self.assertRaises(ValueError, checkHost, host)
            self.assertRaises(ValueError, checkHost, host, tls=True)
        self.assertRaises(ValueError, checkHost, "my_host", tls=True)


class CutShortTests(SynchronousTestCase):
    """
    An answer cut short by a reset is a failure of its own kind.
    """

    def test_reset(self) -> None:
        """
        It is counted as ``reset`` and described with what arrived.
        """
        from twisted.internet.error import ConnectionLost

        options = ClientOptions()
        options.parseOptions(["--connect", "tcp:example.test:5000"])
        failure = Failure(
            AnswerCutShortError(b"Hello, cl\x1b", Failure(ConnectionLost()))
        )
        self.assertEqual(failureKind(failure), "reset")
        self.assertEqual(
            describeFailure(failure, options),
            "tcp:example.test:5000: the connection was reset after 10 bytes of "
            'the answer: "Hello, cl\\x1b"',
        )


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
