# -*- test-case-name: tests.test_client -*-
"""
The ``hellotcp-client`` program (also ``python -m hellotcp.client``): send one
message to a greeting server and print its answer.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import NoReturn

from OpenSSL import SSL, crypto
from service_identity import VerificationError
from twisted.internet import defer, error
from twisted.internet.endpoints import _parse, clientFromString
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import react
from twisted.python import usage
from twisted.python.failure import Failure

from ._escape import escape
from ._options import OneLineErrorOptions, number
from ._tlserror import describeTLSError
from .greet import NoGreetingError, ResponseTooLongError, greet
from .protocol import DEFAULT_MESSAGE
from .tls import CertificateFiles, TLSFileError, VerifiedClientTLS, clientTLS

DEFAULT_CONNECT = "tcp:localhost:5000"
"""Where the client connects unless told otherwise: the classic server."""

_PROGRAM = "hellotcp-client"

# A TLS alert record (content type 21, version 3.x): what a TLS server sends
# a client that does not speak TLS to it.
_TLS_ALERT = b"\x15\x03"


class ClientOptions(OneLineErrorOptions):
    """
    Options of ``hellotcp-client``.
    """

    program = _PROGRAM

    synopsis = (
        "Usage: hellotcp-client [--connect ENDPOINT] [--message TEXT] "
        "[--timeout SECONDS] [--tls [--ca PEM] [--server-name NAME] "
        "[--certificate PEM --private-key PEM]]"
    )
    longdesc = (
        "Send one message to a greeting server and print its answer. "
        "Exit status: 0 when answered, 1 when the exchange failed, "
        "2 for a mistake on the command line."
    )

    optFlags = [
        [
            "tls",
            None,
            "Wrap the connection in TLS, verifying the server's certificate "
            "and host name (there is no way to turn verification off).",
        ],
    ]

    optParameters = [
        [
            "connect",
            "c",
            DEFAULT_CONNECT,
            "Twisted client endpoint to connect to, e.g. tcp:HOST:PORT, "
            "unix:PATH, tls:HOST:PORT.",
        ],
        ["message", "m", DEFAULT_MESSAGE.decode(), "The message to send."],
        ["timeout", "t", "10", "Seconds for the whole exchange."],
        [
            "ca",
            None,
            None,
            "With --tls: PEM file of the CAs to trust instead of the system's.",
        ],
        [
            "server-name",
            None,
            None,
            "With --tls: the name the server's certificate must cover "
            "[default: the --connect host].",
        ],
        [
            "certificate",
            None,
            None,
            "With --tls: PEM file of a client certificate (mutual TLS).",
        ],
        ["private-key", None, None, "With --tls: PEM file of its private key."],
    ]

    def postOptions(self) -> None:
        """
        Check the timeout and the TLS options.
        """
        self["timeout"] = number(float, "timeout", self["timeout"])
        tlsOptions = ("ca", "server-name", "certificate", "private-key")
        if not self["tls"]:
            given = [f"--{name}" for name in tlsOptions if self[name]]
            if given:
                raise usage.UsageError(f"{', '.join(given)} go with --tls")
            return
        if self["connect"].startswith("tls:"):
            raise usage.UsageError(
                "--tls wraps a plain endpoint; a tls: endpoint is TLS already"
            )
        if bool(self["certificate"]) != bool(self["private-key"]):
            raise usage.UsageError("--certificate and --private-key go together")
        if not self["server-name"]:
            self["server-name"] = endpointHost(self["connect"])
            if not self["server-name"]:
                raise usage.UsageError(
                    f"--tls needs --server-name for {self['connect']}"
                )

    def tlsSettings(self) -> VerifiedClientTLS | None:
        """
        The client TLS settings the options ask for, if any.

        :raises TLSFileError: A file named by an option cannot be used.
        """
        if not self["tls"]:
            return None
        certificate = (
            CertificateFiles(self["certificate"], self["private-key"])
            if self["certificate"]
            else None
        )
        return clientTLS(self["server-name"], self["ca"], certificate)


def endpointHost(description: str) -> str | None:
    """
    The host of a ``tcp:`` or ``tcp6:`` client endpoint description, which
    TLS verifies the server's certificate against.
    """
    args, kwargs = _parse(description)
    if args and args[0] in ("tcp", "tcp6"):
        host = kwargs.get("host", args[1] if len(args) > 1 else None)
        return str(host) if host else None
    return None


# OpenSSL's reasons for a failed handshake, as a user would put them.
_TLS_PROBLEMS = [
    (
        "certificate required",
        "the server requires a client certificate (--certificate and --private-key)",
    ),
    ("unknown ca", "the server does not trust the CA of this client certificate"),
    ("bad certificate", "the server refused this client certificate"),
    ("certificate expired", "the server refused this client certificate: expired"),
    ("wrong version number", "the server is not speaking TLS (a plain TCP port?)"),
    ("packet length too long", "the server is not speaking TLS (a plain TCP port?)"),
    ("record layer failure", "the server is not speaking TLS (a plain TCP port?)"),
]


def _describeTLS(reason: BaseException | None, tls: VerifiedClientTLS | None) -> str:
    if tls is not None and (problem := tls.problem()):
        return problem
    if isinstance(reason, VerificationError):
        hostname = tls.hostname if tls else "the host"
        return f"the server's certificate is not valid for {hostname}"
    detail = describeTLSError(reason)
    for clue, meaning in _TLS_PROBLEMS:
        if clue in detail:
            return meaning
    return detail


def describeFailure(
    failure: Failure, options: ClientOptions, tls: VerifiedClientTLS | None = None
) -> str:
    """
    Say in one line why an exchange failed.

    :param tls: The TLS settings used, which know why a server certificate
        was rejected.
    """
    where = options["connect"]
    reason = failure.value
    if isinstance(reason, (SSL.Error, VerificationError)) or (
        tls is not None and tls.problem()
    ):
        return f"TLS with {where} failed: {_describeTLS(reason, tls)}"
    if isinstance(reason, error.ConnectionRefusedError):
        return f"connection refused by {where}"
    if isinstance(reason, (defer.TimeoutError, error.TimeoutError)):
        return f"no answer from {where} within {options['timeout']:g} seconds"
    if isinstance(reason, error.DNSLookupError):
        return f"cannot resolve the host of {where}"
    if isinstance(reason, NoGreetingError) and not options["tls"]:
        return f"{where}: {reason} (if it is a TLS port, use --tls)"
    if isinstance(reason, (NoGreetingError, ResponseTooLongError)):
        return f"{where}: {reason}"
    if isinstance(reason, error.ConnectionLost):
        return f"{where}: the connection was lost before the answer was complete"
    if isinstance(reason, error.ConnectError):
        return f"cannot connect to {where}: {reason}"
    return f"{where}: {str(reason) or type(reason).__name__}"


def _fail(message: str, status: int) -> NoReturn:
    sys.stderr.write(f"{_PROGRAM}: error: {message}\n")
    raise SystemExit(status)


async def _exchange(reactor: IReactorTime, options: ClientOptions) -> None:
    try:
        endpoint = clientFromString(reactor, options["connect"])
    except (SSL.Error, crypto.Error) as problem:
        _fail(f"--connect {options['connect']}: {describeTLSError(problem)}", 2)
    except Exception as problem:
        _fail(f"--connect {options['connect']}: {problem}", 2)
    try:
        tls = options.tlsSettings()
    except TLSFileError as problem:
        _fail(str(problem), 2)
    try:
        answer = await greet(
            reactor, endpoint, options["message"], options["timeout"], tls=tls
        )
    except Exception:
        _fail(describeFailure(Failure(), options, tls), 1)
    if answer.startswith(_TLS_ALERT) and not options["tls"]:
        _fail(f"{options['connect']} answered in TLS (a TLS alert); use --tls", 1)
    sys.stdout.write(escape(answer) + "\n")


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """
    Run ``hellotcp-client`` with ``argv`` (the process's arguments by default).
    """
    options = ClientOptions()
    options.parseOptions(sys.argv[1:] if argv is None else argv)
    react(lambda reactor: defer.Deferred.fromCoroutine(_exchange(reactor, options)))


if __name__ == "__main__":
    main()
