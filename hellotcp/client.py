# -*- test-case-name: tests.test_client -*-
"""
The ``hellotcp-client`` program (also ``python -m hellotcp.client``): send one
message to a greeting server and print its answer.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any, NoReturn, cast

from OpenSSL import SSL, crypto
from service_identity import VerificationError
from twisted.internet import defer, error
from twisted.internet.endpoints import clientFromString
from twisted.internet.interfaces import (
    IReactorCore,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.task import deferLater, react
from twisted.python import usage
from twisted.python.failure import Failure

from ._capture import CaptureUnavailable, CapturingReactor, checkCapture
from ._escape import escape
from ._options import (
    MAX_SECONDS,
    OneLineErrorOptions,
    cut,
    describeEndpointError,
    describeTLSFileError,
    hostName,
    number,
)
from ._twistedcompat import parseEndpoint
from ._wire import DEFAULT_MESSAGE
from .greet import AnswerCutShortError, NoGreetingError, ResponseTooLongError, greet
from .packets import drawSegments
from .probe import Statistics, drawExchange, pingLine, probe
from .tls import (
    TLSFileError,
    VerifiedClientTLS,
    clientTLS,
    describeTLSError,
    explainClientTLSFailure,
)

__all__ = [
    "DEFAULT_CONNECT",
    "MAX_CONCURRENCY",
    "ClientOptions",
    "checkEndpoint",
    "checkHost",
    "checkPacketsEndpoint",
    "describeFailure",
    "main",
]

DEFAULT_CONNECT = "tcp:localhost:5000"
"""Where the client connects unless told otherwise: the classic server."""

_PROGRAM = "hellotcp-client"

MAX_CONCURRENCY = 10_000
"""The most exchanges ``--concurrency`` runs at once: each holds a
descriptor."""

# How much of a long host name an error shows.
_SHOWN_AT_MOST = 40

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
        "[--certificate PEM --private-key PEM]] [--trace [--packets]] "
        "[--count N [--interval SECONDS] [--concurrency N]] [--json]"
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
        [
            "trace",
            None,
            "Draw each exchange as a sequence diagram with what was measured "
            "at each step.",
        ],
        [
            "packets",
            None,
            "With --trace: capture the connection's own TCP segments and draw "
            "each with its real Seq and Ack (needs root or CAP_NET_RAW; "
            "without it, the ordinary drawing).",
        ],
        [
            "json",
            None,
            "Print one JSON object per exchange and one for the summary.",
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
        [
            "count",
            "n",
            None,
            "Repeat the exchange this many times (0: until interrupted), one "
            "line each and a summary, as ping does. Exit status: 0 if all were "
            "greeted, 1 if some failed, 2 if none was greeted.",
        ],
        ["interval", "i", "1", "Seconds between the starts of repeated exchanges."],
        ["concurrency", None, "1", "Repeated exchanges in flight at most."],
    ]

    def postOptions(self) -> None:
        """
        Check the timeout and the TLS options.
        """
        self["timeout"] = number(float, "timeout", self["timeout"])
        self["interval"] = number(float, "interval", self["interval"], zeroAllowed=True)
        self["concurrency"] = number(
            int, "concurrency", self["concurrency"], maximum=MAX_CONCURRENCY
        )
        if self["count"] is not None:
            self["count"] = number(int, "count", self["count"], zeroAllowed=True)
        # The bytes given on the command line, whatever they are: os.fsencode
        # undoes the surrogateescape decoding of argv, so a message that is
        # not UTF-8 is sent as it was given (and text as UTF-8).
        self["message-bytes"] = os.fsencode(self["message"])
        checkEndpoint(self["connect"])
        if self["packets"]:
            checkPacketsEndpoint(self["trace"], self["connect"])
        tlsOptions = ("ca", "server-name", "certificate", "private-key")
        if not self["tls"]:
            given = [f"--{name}" for name in tlsOptions if self[name]]
            if given:
                named = " and ".join([", ".join(given[:-1]), given[-1]][-len(given) :])
                verb = "goes" if len(given) == 1 else "go"
                raise usage.UsageError(f"{named} {verb} with --tls")
            return
        if self["connect"].startswith("tls:"):
            raise usage.UsageError(
                "--tls wraps a plain endpoint; a tls: endpoint is TLS already"
            )
        if bool(self["certificate"]) != bool(self["private-key"]):
            raise usage.UsageError("--certificate and --private-key go together")
        if self["server-name"]:
            try:
                hostName(self["server-name"], _SHOWN_AT_MOST)
            except ValueError as problem:
                raise usage.UsageError(f"--server-name: {problem}") from None
        else:
            self["server-name"] = endpointHost(self["connect"])
            if not self["server-name"]:
                raise usage.UsageError(
                    f"--tls needs --server-name for {cut(self['connect'], 80)}"
                )
            try:
                hostName(self["server-name"], _SHOWN_AT_MOST)
            except ValueError as problem:
                raise usage.UsageError(
                    f"--connect {cut(self['connect'], 80)}: {problem} "
                    "(the name --tls verifies; give --server-name)"
                ) from None

    @property
    def probing(self) -> bool:
        """
        Whether the exchange is measured (``--trace``, ``--json``, ``--count``)
        rather than just printed.
        """
        return bool(self["trace"] or self["json"] or self["count"] is not None)

    def tlsSettings(self) -> VerifiedClientTLS | None:
        """
        The client TLS settings the options ask for, if any.

        :raises TLSFileError: A file named by an option cannot be used.
        """
        if not self["tls"]:
            return None
        return clientTLS(
            self["server-name"],
            self["ca"],
            self["certificate"] or None,
            self["private-key"] or None,
        )


def checkPacketsEndpoint(trace: bool, description: str) -> None:
    """
    Check that ``--packets`` comes with ``--trace`` and a TCP endpoint.

    :raises usage.UsageError: Saying which is missing.
    """
    if not trace:
        raise usage.UsageError("--packets goes with --trace")
    args, _ = parseEndpoint(description)
    if not args or args[0].lower() not in ("tcp", "tls", "ssl"):
        raise usage.UsageError(
            f"--packets draws TCP segments; --connect {cut(description, 80)} "
            "is not a tcp:, tls: or ssl: endpoint"
        )


def checkEndpoint(description: str, option: str | None = "connect") -> None:
    """
    Check what Twisted would only refuse when connecting, or not at all, in
    a ``tcp:`` or ``tls:`` client endpoint description: the port, the host
    (a host name the resolver cannot encode failed inside Twisted's
    resolver, unhandled, and the exchange waited for its timeout; a
    ``tls:`` host is also the name TLS verifies, checked as
    `hellotcp._options.hostName` checks it) and the ``timeout=``
    parameter (an overflowing one failed inside the reactor).

    :param option: The option that gave ``description``, which the error
        names with the description; `None` to say only the problem.
    :raises usage.UsageError: Naming the endpoint (cut if long) and the
        problem.
    """
    args, kwargs = parseEndpoint(description)
    if not args or args[0] not in ("tcp", "tls"):
        return
    where = f"--{option} {cut(description, 80)}: " if option else ""
    port = kwargs.get("port", args[2] if len(args) > 2 else None)
    host = kwargs.get("host", args[1] if len(args) > 1 else None)
    missing = [
        name for name, value in (("host", host), ("port", port)) if value is None
    ]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise usage.UsageError(
            f"{where}the {' and '.join(missing)} {verb} missing ({args[0]}:HOST:PORT)"
        )
    if port is not None:
        try:
            valid = 1 <= int(port) <= 65535
        except ValueError:
            valid = False
        if not valid:
            raise usage.UsageError(
                f"{where}the port must be a whole number "
                f"from 1 to 65535, not {cut(str(port))!r}"
            )
    if host is not None:
        try:
            checkHost(str(host), tls=args[0] == "tls")
        except ValueError as problem:
            raise usage.UsageError(f"{where}{problem}") from None
    if "timeout" in kwargs:
        try:
            number(
                int,
                "timeout",
                str(kwargs["timeout"]),
                maximum=int(MAX_SECONDS),
                label="timeout=",
            )
        except usage.UsageError as problem:
            raise usage.UsageError(f"{where}{problem}") from None


def checkHost(host: str, tls: bool = False) -> None:
    """
    Check that ``host`` is an IP address or a host name the resolver can
    look up: each label at most 63 characters once encoded, the whole at
    most 253.  A name TLS verifies (``tls``) must also be a valid host name
    by `hellotcp._options.hostName` (which refuses, say, ``_`` that a
    local resolver may know).

    :raises ValueError: With a sentence saying what is wrong with ``host``.
    """
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return
    if tls:
        hostName(host, _SHOWN_AT_MOST)
    bare = host.removesuffix(".")
    shown = repr(cut(host, _SHOWN_AT_MOST))
    if not bare:
        raise ValueError(f"{shown} is not a host name: it is empty")
    try:
        encoded = bare.encode("idna")
    except UnicodeError:
        raise ValueError(
            f"{shown} is not a valid host name: a label is empty or longer "
            "than 63 characters, or a character cannot be in a host name"
        ) from None
    if len(encoded) > 253:
        raise ValueError(
            f"{shown} is not a valid host name: longer than 253 characters"
        )


def endpointHost(description: str) -> str | None:
    """
    The host of a ``tcp:`` or ``tcp6:`` client endpoint description, which
    TLS verifies the server's certificate against.
    """
    args, kwargs = parseEndpoint(description)
    if args and args[0] in ("tcp", "tcp6"):
        host = kwargs.get("host", args[1] if len(args) > 1 else None)
        return str(host) if host else None
    return None


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
        return f"TLS with {where} failed: {explainClientTLSFailure(reason, tls)}"
    if isinstance(reason, error.ConnectionRefusedError):
        return f"connection refused by {where}"
    if isinstance(reason, (defer.TimeoutError, error.TimeoutError)):
        return f"no answer from {where} within {options['timeout']:g} seconds"
    if isinstance(reason, error.DNSLookupError):
        return f"cannot resolve the host of {where}"
    if isinstance(reason, NoGreetingError) and not options["tls"]:
        return f"{where}: {reason} (if it is a TLS port, use --tls)"
    if isinstance(reason, AnswerCutShortError):
        return f'{where}: {reason}: "{escape(reason.received)}"'
    if isinstance(reason, (NoGreetingError, ResponseTooLongError)):
        return f"{where}: {reason}"
    if isinstance(reason, error.ConnectionLost):
        return f"{where}: the connection was lost before the answer was complete"
    if isinstance(reason, error.ConnectError):
        return f"cannot connect to {where}: {reason}"
    return f"{where}: {str(reason) or type(reason).__name__}"


def failureKind(failure: Failure) -> str:
    """
    A short name for the kind of a failure, for statistics and JSON.
    """
    reason = failure.value
    for kinds, name in [
        ((error.ConnectionRefusedError,), "refused"),
        ((defer.TimeoutError, error.TimeoutError), "timeout"),
        ((error.DNSLookupError,), "dns"),
        ((NoGreetingError,), "no-greeting"),
        ((ResponseTooLongError,), "too-long"),
        ((AnswerCutShortError,), "reset"),
        ((SSL.Error, VerificationError), "tls"),
        ((error.ConnectionLost,), "lost"),
        ((error.ConnectError,), "connect"),
    ]:
        if isinstance(reason, kinds):
            return name
    return "error"


def _fail(message: str, status: int) -> NoReturn:
    sys.stderr.write(f"{_PROGRAM}: error: {message}\n")
    raise SystemExit(status)


def _onStopSignals(
    reactor: object, handler: Callable[[int, FrameType | None], None]
) -> Callable[[], None]:
    """
    Handle SIGINT and SIGTERM with ``handler`` instead of stopping the
    reactor, from when the reactor runs (it installs its own handlers as it
    starts, after `react` has called the program's function).

    :returns: A function that puts the previous handlers back.
    """
    previous: dict[int, Any] = {}

    def install() -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, handler)

    cast(IReactorCore, reactor).callWhenRunning(install)

    def restore() -> None:
        for signum, old in previous.items():
            signal.signal(signum, old)
        previous.clear()

    return restore


async def _exchange(reactor: IReactorTime, options: ClientOptions) -> None:
    try:
        endpoint = clientFromString(reactor, options["connect"])
    except (SSL.Error, crypto.Error) as problem:
        _fail(f"--connect {options['connect']}: {describeTLSError(problem)}", 2)
    except Exception as problem:
        _fail(f"--connect {options['connect']}: {describeEndpointError(problem)}", 2)
    try:
        tls = options.tlsSettings()
    except TLSFileError as problem:
        _fail(describeTLSFileError(problem), 2)
    if options["packets"]:
        try:
            checkCapture()
        except CaptureUnavailable as problem:
            sys.stderr.write(f"{_PROGRAM}: {problem}; drawing without packets\n")
            sys.stderr.flush()
            options["packets"] = False
    if options.probing:
        status = await Repeater(reactor, options, endpoint, tls).run()
        raise SystemExit(status)
    exchange = greet(
        reactor, endpoint, options["message-bytes"], options["timeout"], tls=tls
    )
    stoppedBy: list[str] = []

    def stop(signum: int, frame: FrameType | None) -> None:
        # Without this, the reactor would stop and the command exit 0 with
        # no answer and nothing said.
        stoppedBy.append(signal.Signals(signum).name)
        reactor.callFromThread(exchange.cancel)  # type: ignore[attr-defined]

    restore = _onStopSignals(reactor, stop)
    try:
        answer = await exchange
    except Exception:
        if stoppedBy:
            _fail(f"stopped by {stoppedBy[0]} before {options['connect']} answered", 1)
        _fail(describeFailure(Failure(), options, tls), 1)
    finally:
        restore()
    if answer.startswith(_TLS_ALERT) and not options["tls"]:
        _fail(f"{options['connect']} answered in TLS (a TLS alert); use --tls", 1)
    sys.stdout.write(escape(answer) + "\n")


class Repeater:
    """
    Run measured exchanges as ``--count``, ``--interval`` and
    ``--concurrency`` ask, print each (a ``ping`` line, a drawing, or JSON)
    and the summary, and stop early, quietly, on Ctrl-C or when standard
    output is closed.
    """

    def __init__(
        self,
        reactor: Any,
        options: ClientOptions,
        endpoint: IStreamClientEndpoint,
        tls: VerifiedClientTLS | None,
    ) -> None:
        self._reactor = reactor
        self._options = options
        self._endpoint = endpoint
        self._tls = tls
        self._stopping = False
        self._outputClosed = False
        self._pause: defer.Deferred[None] | None = None
        self.statistics = Statistics()

    async def run(self) -> int:
        """
        Run the exchanges; return the exit status.
        """
        options = self._options
        count = 1 if options["count"] is None else options["count"]
        # SIGTERM stops the run as Ctrl-C does: the exchanges in flight end,
        # and the summary and the exit status say how it went.
        restore = _onStopSignals(self._reactor, self._interrupted)
        slots = defer.DeferredSemaphore(options["concurrency"])
        running: list[defer.Deferred[None]] = []
        sequence = 0
        try:
            while not self._stopping and (count == 0 or sequence < count):
                sequence += 1
                await slots.acquire()
                if self._stopping:
                    slots.release()
                    break
                one = defer.Deferred.fromCoroutine(self._one(sequence))
                running.append(one.addBoth(self._release, slots))
                if (count == 0 or sequence < count) and options["interval"]:
                    self._pause = deferLater(self._reactor, options["interval"])
                    try:
                        await self._pause
                    except defer.CancelledError:
                        break
            await defer.gatherResults(running, consumeErrors=True)
        finally:
            restore()
        if options["json"]:
            self._emit(json.dumps(self.statistics.asJSON()))
        elif options["count"] is not None:
            self._emit(self.statistics.render(options["connect"]))
        return self.statistics.exitStatus()

    async def _one(self, sequence: int) -> None:
        options = self._options

        def describe(failure: Failure) -> tuple[str, str]:
            return failureKind(failure), describeFailure(failure, options, self._tls)

        endpoint, capturing = self._endpoint, None
        if options["packets"]:
            tls = self._tls is not None or options["connect"].startswith(
                ("tls:", "ssl:")
            )
            capturing = CapturingReactor(self._reactor, tls)
            endpoint = clientFromString(capturing, options["connect"])
        record = await probe(
            self._reactor,
            endpoint,
            sequence,
            options["message-bytes"],
            options["timeout"],
            self._tls,
            describe,
        )
        if capturing is not None:
            record.packets = await capturing.trace(
                record.local, self._reactor, record.retransmits
            )
        self.statistics.add(record)
        if options["json"]:
            self._emit(json.dumps(record.asJSON()))
        elif options["trace"]:
            colour = sys.stdout.isatty() and "NO_COLOR" not in os.environ
            drawing = drawExchange(record, colour)
            if record.packets is not None:
                drawing += "\n\n" + drawSegments(record.packets)
            self._emit(drawing + "\n")
        else:
            self._emit(pingLine(record, options["connect"]))

    @staticmethod
    def _release(result: object, slots: defer.DeferredSemaphore) -> object:
        # Pass any failure on: an exchange that cannot run must not vanish
        # from the summary.
        slots.release()
        return result

    def _emit(self, text: str) -> None:
        if self._outputClosed:
            return
        try:
            sys.stdout.write(text + "\n")
            sys.stdout.flush()
        except BrokenPipeError:
            # The reader is gone (``| head -1``): stop, and make sure the
            # interpreter's last flush has nowhere to fail.
            self._outputClosed = True
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
            self._stop()

    def _interrupted(self, number: int, frame: FrameType | None) -> None:
        self._reactor.callFromThread(self._stop)

    def _stop(self) -> None:
        self._stopping = True
        if self._pause is not None and not self._pause.called:
            self._pause.cancel()


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """
    Run ``hellotcp-client`` with ``argv`` (the process's arguments by default).
    """
    options = ClientOptions()
    options.parseOptions(sys.argv[1:] if argv is None else argv)
    react(lambda reactor: defer.Deferred.fromCoroutine(_exchange(reactor, options)))


if __name__ == "__main__":
    main()
