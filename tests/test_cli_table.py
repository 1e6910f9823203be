"""
Command-line robustness as a table: every numeric option of ``twist
hellotcp``, ``hellotcp-client`` and ``hellotcp-certs`` given huge, negative,
zero, non-numeric, NaN, infinite and overflowing values, and every file
option given a missing file, a directory, a special file, a FIFO, a huge
file, an empty file, a block cut short and a file of the wrong kind.

Each bad value must end the command with exactly one line on standard
error naming the option, no traceback, and the documented exit status (2
for a mistake on the command line, 1 where ``hellotcp-certs`` cannot
write).  Most rows run the option parsing in this process, exactly as the
command runs it; a few rows per program run the installed command as a
subprocess, under a timeout.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import sys
from collections.abc import Callable, Sequence

from twisted.internet.defer import Deferred, DeferredSemaphore, gatherResults
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from hellotcp import certs, client, tap
from hellotcp._options import MAX_COUNT, MAX_SECONDS

from .pki import chainPKI
from .support import CommandTestCase, command, freePort

HUGE = "9" * 400
"""A number no option takes: 400 digits."""

BAD_VALUES = {
    "huge": HUGE,
    "huge negative": "-" + HUGE,
    "past int()'s digit limit": "1" * 5000,
    "2**64": str(2**64),
    "overflowing float": "1e400",
    "negative": "-1",
    "negative float": "-0.5",
    "zero": "0",
    "not a number": "abc",
    "empty": "",
    "NaN": "nan",
    "infinity": "inf",
    "negative infinity": "-inf",
    "hexadecimal": "0x10",
}
"""Values every numeric option refuses (zero only where it means nothing)."""

# option: (whole number?, zero allowed?, the largest value accepted)
TWIST_NUMBERS: dict[str, tuple[bool, bool, float]] = {
    "timeout": (False, False, MAX_SECONDS),
    "deadline": (False, False, MAX_SECONDS),
    "message-gap": (False, False, MAX_SECONDS),
    "shutdown-timeout": (False, True, MAX_SECONDS),
    "max-message-bytes": (True, False, tap.MAX_MESSAGE_BYTES),
    "max-connections": (True, False, tap.MAX_CONNECTIONS),
    "max-connections-per-peer": (True, False, tap.MAX_CONNECTIONS),
    "backlog": (True, False, tap.MAX_BACKLOG),
}

CLIENT_NUMBERS: dict[str, tuple[bool, bool, float]] = {
    "timeout": (False, False, MAX_SECONDS),
    "interval": (False, True, MAX_SECONDS),
    "count": (True, True, MAX_COUNT),
    "concurrency": (True, False, client.MAX_CONCURRENCY),
}

Outcome = tuple[int, str]
"""A command's exit status (0: it went on) and what it wrote to stderr."""


def _captured(run: Callable[[], object]) -> Outcome:
    """
    Run ``run`` with standard error (and output) captured.
    """
    err = io.StringIO()
    saved = sys.stderr, sys.stdout
    sys.stderr, sys.stdout = err, io.StringIO()
    try:
        run()
    except SystemExit as exit:
        return int(exit.code or 0), err.getvalue()
    finally:
        sys.stderr, sys.stdout = saved
    return 0, err.getvalue()


def runTwist(argv: Sequence[str]) -> Outcome:
    """
    What ``twist hellotcp ARGV`` does with its command line before serving:
    `tap.Options` parse it (endpoints against a memory reactor).
    """
    options = tap.Options()
    options.reactor = MemoryReactorClock()
    previous = signal.getsignal(signal.SIGHUP)
    try:
        return _captured(lambda: options.parseOptions(list(argv)))
    finally:
        signal.signal(signal.SIGHUP, previous)


def runClient(argv: Sequence[str]) -> Outcome:
    """
    What ``hellotcp-client ARGV`` does before connecting: parse the options,
    then make the endpoint and load the TLS files (the start of its
    exchange, which refuses a file with status 2 before any connection;
    a memory reactor never connects).
    """

    def run() -> None:
        options = client.ClientOptions()
        options.parseOptions(list(argv))
        exchange = Deferred.fromCoroutine(
            client._exchange(MemoryReactorClock(), options)
        )
        failures: list[Failure] = []
        exchange.addErrback(failures.append)
        if failures:
            failures[0].raiseException()

    return _captured(run)


def runCerts(argv: Sequence[str]) -> Outcome:
    """
    ``hellotcp-certs ARGV``, all of it (it needs no reactor).
    """
    return _captured(lambda: certs.main(list(argv)))


class TableTestCase(SynchronousTestCase):
    """
    Check many rows, and report every row that fails, not just the first.
    """

    def setUp(self) -> None:
        self.failed: list[str] = []

    def check(
        self,
        row: str,
        outcome: Outcome,
        program: str,
        option: str | None,
        status: int = 2,
        mentions: Sequence[str] = (),
    ) -> None:
        """
        The row ended with ``status`` and one line on standard error from
        ``program``, naming ``option`` (and each of ``mentions``), without a
        traceback; else it is noted as failed.
        """
        code, err = outcome
        problems = []
        if code != status:
            problems.append(f"status {code}, not {status}")
        if len(err.splitlines()) != 1 or not err.endswith("\n"):
            problems.append(f"{len(err.splitlines())} lines")
        if "Traceback" in err:
            problems.append("a traceback")
        if not err.startswith(f"{program}: error: "):
            problems.append("not the program's error line")
        for text in ([f"--{option}"] if option else []) + list(mentions):
            if text not in err:
                problems.append(f"{text!r} not said")
        if problems:
            self.failed.append(f"{row}: {', '.join(problems)}: {err[:300]!r}")

    def accepted(self, row: str, outcome: Outcome) -> None:
        """
        The row was accepted: no exit, nothing on standard error.
        """
        if outcome != (0, ""):
            self.failed.append(f"{row}: refused: {outcome!r}")

    def tearDown(self) -> None:
        if self.failed:
            self.fail(
                f"{len(self.failed)} rows failed:\n" + "\n".join(self.failed[:60])
            )


def _badValues(integer: bool, zeroAllowed: bool) -> dict[str, str]:
    values = dict(BAD_VALUES)
    if zeroAllowed:
        del values["zero"]
    if integer:
        values["fraction"] = "1.5"
        values["exponent"] = "1e3"
    return values


def _atMost(integer: bool, maximum: float) -> tuple[str, str]:
    """
    The largest value accepted, and the next one, as text.
    """
    if integer:
        return str(int(maximum)), str(int(maximum) + 1)
    return f"{maximum:g}", f"{maximum + 0.5:g}"


class NumberTableTests(TableTestCase):
    """
    Every numeric option, every kind of bad value.
    """

    def numbers(
        self,
        program: str,
        run: Callable[[Sequence[str]], Outcome],
        table: dict[str, tuple[bool, bool, float]],
        base: Sequence[str] = (),
    ) -> None:
        """
        Check every row of ``table`` for ``program``.
        """
        for option, (integer, zeroAllowed, maximum) in table.items():
            for name, value in _badValues(integer, zeroAllowed).items():
                self.check(
                    f"{program} --{option} {name}",
                    run([*base, f"--{option}", value]),
                    program,
                    option,
                )
            largest, tooLarge = _atMost(integer, maximum)
            self.accepted(
                f"{program} --{option} {largest}", run([*base, f"--{option}", largest])
            )
            self.check(
                f"{program} --{option} {tooLarge}",
                run([*base, f"--{option}", tooLarge]),
                program,
                option,
                mentions=[f"at most {largest}"],
            )
            if zeroAllowed:
                self.accepted(
                    f"{program} --{option} 0", run([*base, f"--{option}", "0"])
                )

    def test_twist(self) -> None:
        """
        ``twist hellotcp``'s numbers.
        """
        self.numbers("hellotcp", runTwist, TWIST_NUMBERS)

    def test_workers(self) -> None:
        """
        ``--workers``: the bad values, and far too many (which opened
        20,000 sockets before failing).
        """
        for name, value in _badValues(True, False).items():
            self.check(
                f"--workers {name}",
                runTwist(["--workers", value]),
                "hellotcp",
                "workers",
            )
        self.check(
            "--workers 100000000",
            runTwist(["--workers", "100000000"]),
            "hellotcp",
            "workers",
        )

    def test_client(self) -> None:
        """
        ``hellotcp-client``'s numbers.
        """
        self.numbers("hellotcp-client", runClient, CLIENT_NUMBERS)

    def test_clientPorts(self) -> None:
        """
        A port outside 1 to 65535 in ``--connect`` is a mistake on the
        command line, as a malformed endpoint is.
        """
        for port in ("99999", "65536", "0", "-1", HUGE, "abc", "nan"):
            for description in (f"tcp:127.0.0.1:{port}", f"tcp:host=h:port={port}"):
                self.check(
                    f"--connect {description[:40]}",
                    runClient(["--connect", description]),
                    "hellotcp-client",
                    "connect",
                )
        for description in ("nonsense:x", "tcp:127.0.0.1", "tcp:h:5:timeout=x"):
            self.check(
                f"--connect {description}",
                runClient(["--connect", description]),
                "hellotcp-client",
                "connect",
            )

    def test_clientEndpointTimeout(self) -> None:
        """
        The ``timeout=`` of a ``tcp:`` endpoint: 400 digits overflowed in
        the reactor, an unhandled error in a Deferred and exit status 1.
        """
        for name, value in _badValues(True, False).items():
            description = f"tcp:127.0.0.1:1:timeout={value}"
            self.check(
                f"--connect tcp:...:timeout= {name}",
                runClient(["--connect", description]),
                "hellotcp-client",
                "connect",
                mentions=["timeout="],
            )
        self.check(
            "--connect tcp:...:timeout=86401",
            runClient(["--connect", "tcp:127.0.0.1:1:timeout=86401"]),
            "hellotcp-client",
            "connect",
            mentions=["at most 86400"],
        )
        self.accepted(
            "--connect tcp:...:timeout=86400",
            runClient(["--connect", "tcp:127.0.0.1:1:timeout=86400"]),
        )

    def test_twistEndpointNumbers(self) -> None:
        """
        The port (0 to 65535) and ``backlog=`` (1 to `tap.MAX_BACKLOG`) of
        every ``tcp:`` and ``tcp6:`` listener, under ``haproxy:`` too: a
        port out of range failed to listen (status 1), 400 digits of
        backlog overflowed, and a negative backlog was taken.
        """
        ports = {**_badValues(True, True), "65536": "65536", "99999": "99999"}
        backlogs = {**_badValues(True, False), "-5": "-5", "65536": "65536"}
        for option in ("listen", "metrics"):
            for prefix in ("", "haproxy:"):
                if option == "metrics" and prefix:
                    continue
                for kind in ("tcp", "tcp6"):
                    for name, value in ports.items():
                        for description in (
                            f"{prefix}{kind}:{value}",
                            f"{prefix}{kind}:port={value}",
                        ):
                            self.check(
                                f"--{option} {description[:40]} ({name})",
                                runTwist([f"--{option}", description]),
                                "hellotcp",
                                option,
                                mentions=["the port must be"],
                            )
                    for name, value in backlogs.items():
                        description = f"{prefix}{kind}:5000:backlog={value}"
                        self.check(
                            f"--{option} {description[:40]} ({name})",
                            runTwist([f"--{option}", description]),
                            "hellotcp",
                            option,
                            mentions=["backlog= must be"],
                        )
                    for good in ("0", "65535:backlog=1", "5000:backlog=65535"):
                        description = f"{prefix}{kind}:{good}"
                        self.accepted(
                            f"--listen {description}",
                            runTwist(["--listen", description]),
                        )
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        pki = chainPKI(folder)
        files = ["--certificate", pki["chain"], "--private-key", pki["key"]]
        for description, says in [
            ("tcp:99999", "the port must be"),
            ("haproxy:tcp6:port=-1", "the port must be"),
            (f"tcp:5001:backlog={HUGE}", "backlog= must be"),
            ("haproxy:tcp:5001:backlog=-5", "backlog= must be"),
        ]:
            self.check(
                f"--tls-listen {description[:40]}",
                runTwist(["--tls-listen", description, *files]),
                "hellotcp",
                "tls-listen",
                mentions=[says],
            )
        self.accepted(
            "--tls-listen tcp:5001:backlog=5",
            runTwist(["--tls-listen", "tcp:5001:backlog=5", *files]),
        )
        # A 400-digit mistake is named cut, on one short line.
        code, err = runTwist(["--listen", f"tcp:5000:backlog={HUGE}"])
        self.assertEqual(code, 2)
        self.assertLess(len(err), 300, err)
        self.assertIn("'" + "9" * 40 + "...'", err)


class TextTableTests(TableTestCase):
    """
    Text options: bytes that are not UTF-8, empty values, bad host names.
    """

    def test_greeting(self) -> None:
        """
        A greeting that is not UTF-8 is taken as the bytes given; an empty
        one is refused.
        """
        options = tap.Options()
        options.reactor = MemoryReactorClock()
        options.parseOptions(["--greeting", "caf\udce9 \udcff"])
        self.assertEqual(options["settings"].greeting, b"caf\xe9 \xff")
        self.check(
            "--greeting ''", runTwist(["--greeting", ""]), "hellotcp", "greeting"
        )

    def test_message(self) -> None:
        """
        A message that is not UTF-8 is taken as the bytes given.
        """
        options = client.ClientOptions()
        options.parseOptions(["--message", "\udcff", "--count", "1"])
        self.assertEqual(options["message-bytes"], b"\xff")

    def test_hostnames(self) -> None:
        """
        ``hellotcp-certs --hostname``: bad names are one line, status 2,
        and nothing written; good ones (an IDN included) work.
        """
        for name in ("", " ", "a" * 64 + ".example", "has space", "x..y", "*.x"):
            folder = self.mktemp()
            self.check(
                f"--hostname {name!r}",
                runCerts([folder, "--hostname", name]),
                "hellotcp-certs",
                "hostname",
            )
            if os.path.exists(folder):
                self.failed.append(f"--hostname {name!r}: {folder} was written")
        for name in ("bücher.example", "a" * 63 + ".example", "10.0.0.1", "::1"):
            code, err = runCerts([self.mktemp(), "--hostname", name])
            if (code, err) != (0, ""):
                self.failed.append(f"--hostname {name!r} refused: {err!r}")

    def test_clientHostNames(self) -> None:
        """
        ``hellotcp-client --server-name``, the ``--connect`` host it
        defaults to, and the host of ``tcp:`` and ``tls:`` endpoints: a
        label of 70 characters or a name of 300 was a traceback (an
        ``idna`` error, or an unhandled error in a Deferred and a wait for
        the whole timeout).
        """
        label = "a" * 70 + ".example"
        bad = {"long label": label, "300 characters": "a" * 300, "dots": "x..y"}
        for name, host in bad.items():
            self.check(
                f"--server-name {name}",
                runClient(["--tls", "--server-name", host]),
                "hellotcp-client",
                "server-name",
                mentions=["is not a valid host name"],
            )
            for description in (f"tcp:{host}:5", f"tcp:host={host}:port=5"):
                for tls in ([], ["--tls"]):
                    self.check(
                        f"{' '.join(tls)} --connect {description[:40]}",
                        runClient([*tls, "--connect", description]),
                        "hellotcp-client",
                        "connect",
                        mentions=["is not a valid host name"],
                    )
            self.check(
                f"--connect tls:{host[:40]}:5",
                runClient(["--connect", f"tls:{host}:5"]),
                "hellotcp-client",
                "connect",
                mentions=["is not a valid host name"],
            )
        for argv in (
            ["--tls", "--server-name", "has space"],
            ["--tls", "--server-name", "*.example"],
            ["--tls", "--connect", "tcp:my_host:5"],
        ):
            self.check(
                " ".join(argv),
                runClient(argv),
                "hellotcp-client",
                argv[1].removeprefix("--"),
                mentions=["not a valid host name"],
            )
        for argv in (
            ["--tls", "--server-name", "a" * 63 + ".example"],
            ["--tls", "--server-name", "bücher.example"],
            ["--tls", "--connect", "tcp:bücher.example:5"],
            ["--connect", "tcp:my_host:5"],
        ):
            self.accepted(" ".join(argv), runClient(argv))


class FileTableTests(TableTestCase):
    """
    Every file option, every kind of bad file.
    """

    def setUp(self) -> None:
        super().setUp()
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        self.folder = folder
        self.pki = chainPKI(folder)
        self.clientFiles = certs.writeIssued(
            folder,
            "client",
            certs.issue(
                certs.makeCA(), "a client", client=True
            ),  # from another CA: only loaded here
        )
        huge = os.path.join(folder, "huge.pem")
        with open(huge, "wb") as file:
            file.truncate(100 * 1000 * 1000)  # sparse: no disk used
        empty = os.path.join(folder, "empty.pem")
        open(empty, "wb").close()
        with open(self.pki["chain"], "rb") as file:
            chain = file.read()
        cut = os.path.join(folder, "cut.pem")
        with open(cut, "wb") as file:
            file.write(chain[: len(chain) - 200])
        # /dev/zero and a FIFO, which a regression would read forever or
        # wait on, are the rows of `EndlessFileTests`, in subprocesses.
        self.badFiles = {
            "missing": (os.path.join(folder, "missing.pem"), "No such file"),
            "directory": (folder, "is a directory"),
            "/dev/null": ("/dev/null", "is not a regular file"),
            "100 MB": (huge, "is larger than 1 MiB"),
            "empty": (empty, "no PEM"),
            "cut short": (cut, "cut short"),
        }

    def rows(self, kind: str) -> dict[str, tuple[str, str]]:
        """
        The bad files for an option that wants a ``kind`` (``certificate``
        or ``key``), each with what the error says: the common ones, and
        one of the other kind.
        """
        if kind == "certificate":
            wrong = (self.pki["key"], "no PEM certificate in it, only PRIVATE KEY")
        else:
            wrong = (self.pki["leaf"], "no PEM private key in it, only CERTIFICATE")
        return {**self.badFiles, f"not a {kind}": wrong}

    def test_twist(self) -> None:
        """
        ``--certificate``, ``--private-key`` and ``--client-ca``.
        """
        files = {
            "certificate": self.pki["chain"],
            "private-key": self.pki["key"],
            "client-ca": self.pki["root"],
        }
        for option, kind in [
            ("certificate", "certificate"),
            ("private-key", "key"),
            ("client-ca", "certificate"),
        ]:
            for name, (path, says) in self.rows(kind).items():
                given = {**files, option: path}
                argv = ["--tls-listen", "tcp:5001:interface=127.0.0.1"]
                for each, value in given.items():
                    argv += [f"--{each}", value]
                self.check(
                    f"twist --{option} {name}",
                    runTwist(argv),
                    "hellotcp",
                    option,
                    mentions=[f"{path}: ", says],
                )
        self.accepted(
            "twist, good files",
            runTwist(
                [
                    "--tls-listen",
                    "tcp:5001:interface=127.0.0.1",
                    *[a for o, p in files.items() for a in (f"--{o}", p)],
                ]
            ),
        )

    def test_client(self) -> None:
        """
        ``--ca``, ``--certificate`` and ``--private-key`` of the client.
        """
        certificate, key = self.clientFiles
        files = {"ca": self.pki["root"], "certificate": certificate, "private-key": key}
        for option, kind in [
            ("ca", "certificate"),
            ("certificate", "certificate"),
            ("private-key", "key"),
        ]:
            for name, (path, says) in self.rows(kind).items():
                given = {**files, option: path}
                argv = ["--tls", "--connect", "tcp:localhost:5001"]
                for each, value in given.items():
                    argv += [f"--{each}", value]
                self.check(
                    f"client --{option} {name}",
                    runClient(argv),
                    "hellotcp-client",
                    option,
                    mentions=[f"{path}: ", says],
                )

    def test_certsFolder(self) -> None:
        """
        ``hellotcp-certs DIR`` where DIR cannot be a folder: one line, exit
        status 1 (it could not write).
        """
        for name, path in [
            ("a file", self.pki["root"]),
            ("/dev/zero", "/dev/zero"),
            ("under a file", os.path.join(self.pki["root"], "x")),
        ]:
            self.check(
                f"hellotcp-certs {name}",
                runCerts([path]),
                "hellotcp-certs",
                None,
                status=1,
                mentions=[path.split("/")[-1]],
            )


class EndlessFileTests(CommandTestCase):
    """
    ``/dev/zero`` and a FIFO with no writer for every file option, as
    subprocesses under a timeout and a memory limit: each command ends at
    once with one line and status 2.
    """

    async def test_endlessFiles(self) -> None:
        """
        Every file option of ``twist hellotcp`` and ``hellotcp-client``.
        """
        pki = chainPKI(self.folder)
        fifo = os.path.join(self.folder, "fifo.pem")
        os.mkfifo(fifo)
        clientCertificate, clientKey = certs.writeIssued(
            self.folder, "client", certs.issue(certs.makeCA(), "c", client=True)
        )
        twist = {
            "certificate": pki["chain"],
            "private-key": pki["key"],
            "client-ca": pki["root"],
        }
        hellotcpClient = {
            "ca": pki["root"],
            "certificate": clientCertificate,
            "private-key": clientKey,
        }
        rows: list[tuple[str, list[str], str]] = []
        for path in ("/dev/zero", fifo):
            for option in twist:
                argv = [command("twist"), "hellotcp", "--tls-listen", "tcp:1"]
                for name, value in {**twist, option: path}.items():
                    argv += [f"--{name}", value]
                rows.append((f"twist --{option} {path}", argv, f"--{option} {path}"))
            for option in hellotcpClient:
                argv = [command("hellotcp-client"), "--tls"]
                for name, value in {**hellotcpClient, option: path}.items():
                    argv += [f"--{name}", value]
                rows.append((f"client --{option} {path}", argv, f"--{option} {path}"))
        # A regression that reads /dev/zero must not take the machine's memory.
        limited = [
            ["bash", "-c", 'ulimit -v 4000000 && exec "$@"', "bash", *argv]
            for _, argv, _ in rows
        ]
        # Two at a time: each has `TIMEOUT` to end, even on a busy machine.
        slots = DeferredSemaphore(2)
        results = await gatherResults(
            [
                slots.run(lambda a: Deferred.fromCoroutine(self.runCommand(a)), a)
                for a in limited
            ]
        )
        failed = []
        for (row, _, expected), (code, _, err) in zip(rows, results, strict=True):
            if (
                code != 2
                or len(err.splitlines()) != 1
                or "Traceback" in err
                or f"{expected}: is not a regular file" not in err
            ):
                failed.append(f"{row}: status {code}: {err[:300]!r}")
        self.assertEqual(failed, [])


class SubprocessTableTests(CommandTestCase):
    """
    Representative rows run as the installed commands, each under a
    timeout: the in-process rows above are what these commands run.
    """

    async def assertOneLineExit(
        self, argv: Sequence[str], status: int, *mentions: str
    ) -> None:
        """
        ``argv`` ends (within `TIMEOUT`) with ``status`` and one line on
        standard error holding each of ``mentions``.
        """
        code, _, err = await self.runCommand(argv)
        self.assertEqual(code, status, err)
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertNotIn("Traceback", err)
        for text in mentions:
            self.assertIn(text, err)

    async def test_twist(self) -> None:
        """
        ``twist hellotcp`` with a 400-digit limit, a NaN, and
        ``--certificate /dev/zero`` (which used to read forever).
        """
        twist = [command("twist"), "hellotcp"]
        await self.assertOneLineExit(
            [*twist, "--max-connections", HUGE], 2, "--max-connections"
        )
        await self.assertOneLineExit([*twist, "--backlog", "nan"], 2, "--backlog")
        pki = chainPKI(self.folder)
        await self.assertOneLineExit(
            [
                *twist,
                "--tls-listen",
                f"tcp:{freePort()}:interface=127.0.0.1",
                "--certificate",
                "/dev/zero",
                "--private-key",
                pki["key"],
            ],
            2,
            "--certificate /dev/zero: is not a regular file",
        )

    async def test_twistWorkers(self) -> None:
        """
        ``--workers`` far too many, and ``--workers 2`` with ``--metrics``
        on a port in use: one line and a non-zero status each.
        """
        twist = [command("twist"), "hellotcp"]
        await self.assertOneLineExit([*twist, "--workers", "100000000"], 2, "--workers")
        with socket.create_server(("127.0.0.1", 0)) as busy:
            port = busy.getsockname()[1]
            code, out, err = await self.runCommand(
                [
                    *twist,
                    "--listen",
                    f"tcp:{freePort()}:interface=127.0.0.1",
                    "--workers",
                    "2",
                    "--metrics",
                    f"tcp:{port}:interface=127.0.0.1",
                ]
            )
        self.assertNotEqual(code, 0)
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertNotIn("Traceback", err + out)

    async def test_twistSystemd(self) -> None:
        """
        A ``systemd:`` endpoint with no inherited socket: one line that
        says so, not ``list index out of range``.
        """
        env = {k: v for k, v in self.env.items() if not k.startswith("LISTEN_")}
        self.env = env
        code, _, err = await self.runCommand(
            [
                command("twist"),
                "hellotcp",
                "--listen",
                "systemd:domain=INET:index=0",
            ]
        )
        self.assertEqual(code, 2, err)
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertIn("--listen systemd:domain=INET:index=0", err)
        self.assertNotIn("list index out of range", err)

    async def test_client(self) -> None:
        """
        ``hellotcp-client`` with a 400-digit count, a port out of range and
        ``--ca /dev/zero``.
        """
        hellotcpClient = command("hellotcp-client")
        await self.assertOneLineExit([hellotcpClient, "--count", HUGE], 2, "--count")
        await self.assertOneLineExit(
            [hellotcpClient, "--connect", "tcp:127.0.0.1:99999"],
            2,
            "--connect tcp:127.0.0.1:99999",
        )
        await self.assertOneLineExit(
            [hellotcpClient, "--tls", "--ca", "/dev/zero"],
            2,
            "--ca /dev/zero: is not a regular file",
        )

    async def test_clientHosts(self) -> None:
        """
        ``hellotcp-client`` with a TLS name, a host and an endpoint
        ``timeout=`` that Twisted failed on with a traceback (an ``idna``
        error, or an unhandled error in a Deferred after waiting for the
        whole timeout): one line, status 2, at once.
        """
        hellotcpClient = command("hellotcp-client")
        label = "a" * 70 + ".example"
        for argv in (
            ["--tls", "--server-name", label, "--connect", "tcp:localhost:1"],
            ["--tls", "--server-name", "a" * 300, "--connect", "tcp:localhost:1"],
            ["--connect", f"tcp:{label}:1"],
            ["--connect", f"tcp:{'a' * 300}:1"],
            ["--connect", f"tcp:127.0.0.1:1:timeout={HUGE}"],
        ):
            code, out, err = await self.runCommand([hellotcpClient, *argv])
            self.assertEqual(code, 2, err)
            self.assertEqual(len(err.splitlines()), 1, err)
            self.assertNotIn("Traceback", err + out)
            self.assertNotIn("Unhandled error", err + out)

    async def test_twistEndpoints(self) -> None:
        """
        ``twist hellotcp --listen`` with a port out of range (which failed
        to listen, status 1) and 400 digits of backlog (an overflow).
        """
        twist = [command("twist"), "hellotcp"]
        await self.assertOneLineExit(
            [*twist, "--listen", "tcp:99999"], 2, "--listen tcp:99999", "port"
        )
        await self.assertOneLineExit(
            [*twist, "--listen", f"tcp:{freePort()}:backlog={HUGE}"],
            2,
            "--listen tcp:",
            "backlog=",
        )

    async def test_certs(self) -> None:
        """
        ``hellotcp-certs`` with an empty host name: one line, status 2,
        nothing written.
        """
        folder = os.path.join(self.folder, "pki")
        await self.assertOneLineExit(
            [command("hellotcp-certs"), folder, "--hostname", ""], 2, "--hostname"
        )
        self.assertFalse(os.path.exists(folder))
