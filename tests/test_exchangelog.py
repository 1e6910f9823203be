"""
Tests for `hellotcp.exchangelog`: the buffered record of every exchange,
in ``twist``'s own formats, and its use by ``twist hellotcp``.
"""

from __future__ import annotations

import io
import json
import os
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import (
    Logger,
    LogLevel,
    LogPublisher,
    capturedLogs,
    eventsFromJSONLogFile,
    jsonFileLogObserver,
    textFileLogObserver,
)
from twisted.trial.unittest import SynchronousTestCase

from hellotcp import exchangelog, greet
from hellotcp._twistedcompat import TwistLog, twistLog, twistOptions
from hellotcp._wiring import _exchangeLog
from hellotcp.exchangelog import CHUNK_BYTES, ExchangeLogFile, FlushFirst, LogFormat
from hellotcp.protocol import HelloServerFactory, Outcome, ServerSettings
from hellotcp.testing import MemoryEndpoint
from hellotcp.workers import WorkerLogStamp

from .support import (
    TIMEOUT,
    CommandTestCase,
    captureLogs,
    command,
    connect,
    freePort,
    inThread,
    readToEnd,
)


def plainExchange(port: int, message: bytes) -> bytes:
    """
    One exchange from a blocking client: send, read to the end, close.
    """
    with connect(port) as sock:
        sock.sendall(message)
        return readToEnd(sock)


def record(**fields: Any) -> dict[str, Any]:
    """
    A greeting's event as `hellotcp.protocol.HelloServerFactory` makes it.
    """
    event: dict[str, Any] = {
        "log_time": 1796347837.7107103,
        "log_level": LogLevel.info,
        "log_namespace": "hellotcp.protocol",
        "log_format": "{peer} {outcome}: {message}",
        "peer": "127.0.0.1:54321",
        "outcome": "greeted",
        "message": "'Hello, server!'",
        "bytes": 14,
        "duration": 0.000312,
        "client": None,
        "reason": None,
    }
    event.update(fields)
    return event


class Pipe:
    """
    A pipe the log writes to, read back without blocking.
    """

    def __init__(self, testCase: SynchronousTestCase) -> None:
        self.read, self.write = os.pipe()
        os.set_blocking(self.read, False)
        testCase.addCleanup(os.close, self.read)
        testCase.addCleanup(os.close, self.write)

    def drain(self) -> bytes:
        """
        Everything written so far.
        """
        chunks = []
        while True:
            try:
                chunk = os.read(self.read, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def asTwistWrites(observer: Any, *events: dict[str, Any]) -> str:
    """
    What one of Twisted's file observers writes for ``events``.
    """
    out = io.StringIO()
    write = observer(out)
    for event in events:
        write(dict(event))
    return out.getvalue()


class FormatTests(SynchronousTestCase):
    """
    Records are written as ``twist``'s file observers write events.
    """

    def setUp(self) -> None:
        self.pipe = Pipe(self)
        self.clock = Clock()

    def written(self, format: Any, *events: dict[str, Any], **kw: Any) -> str:
        log = ExchangeLogFile(self.pipe.write, format, self.clock, **kw)
        for event in events:
            log(dict(event))
        log.flush()
        return self.pipe.drain().decode()

    def test_textAsTwist(self) -> None:
        """
        Text records are character for character what ``twist
        --log-format=text`` writes: a greeting, one with a client subject,
        two in the same second and one in the next, a multi-line event, one
        without a namespace or level, one with a system of its own, and one
        whose format only Twisted's formatter understands.
        """
        events = [
            record(),
            record(log_format="{peer} ({client}) {outcome}: {message}", client="CN=x"),
            record(log_time=1796347837.9),
            record(log_time=1796347838.01),
            record(log_format="two\nlines"),
            {"log_time": 1796347838.5, "log_format": "bare"},
            record(log_system="my-system"),
            record(log_format="{peer!r:>30}", peer="[::1]:1"),
            record(log_format="{callable()}", callable=lambda: "called"),
        ]
        self.assertEqual(
            self.written("text", *events), asTwistWrites(textFileLogObserver, *events)
        )

    def test_jsonReadsBack(self) -> None:
        """
        `eventsFromJSONLogFile` reads a JSON record back with every field,
        the level as a `LogLevel`; the keys Twisted derives again and the
        format string are left out.  Values of other types are written as
        ``json`` writes them.
        """
        event = record(extra=[1, "two"], flag=True, ratio=float("inf"))
        text = self.written("json", event)
        self.assertTrue(text.startswith("\x1e{") and text.endswith("}\n"), text)
        [back] = eventsFromJSONLogFile(io.StringIO(text))
        expected = {k: v for k, v in event.items() if k != "log_format"}
        self.assertEqual(back, expected)
        self.assertIs(back["log_level"], LogLevel.info)

    def test_jsonWithoutLevel(self) -> None:
        """
        An event without a level, or without any field, is still one JSON
        object.
        """
        text = self.written("json", {"a": 1}, {})
        self.assertEqual(list(eventsFromJSONLogFile(io.StringIO(text))), [{"a": 1}, {}])

    def test_jsonAsTwistReads(self) -> None:
        """
        Twisted's own JSON records and these, in one file, read back alike
        (but for the keys these leave out).
        """
        event = record()
        ours = self.written("json", event)
        theirs = asTwistWrites(jsonFileLogObserver, event)
        [a, b] = eventsFromJSONLogFile(io.StringIO(ours + theirs))
        for key in ("log_flattened", "log_format", "log_logger", "log_source"):
            b.pop(key, None)
        self.assertEqual(a, b)

    def test_worker(self) -> None:
        """
        In a worker, records carry its number as every other event of the
        worker does (`hellotcp.workers.WorkerLogStamp`).
        """
        stamped = record()
        WorkerLogStamp(2)(stamped)
        self.assertEqual(
            self.written("text", record(), worker=2),
            asTwistWrites(textFileLogObserver, stamped),
        )
        self.assertEqual(
            self.written("text", record(log_system="own"), worker=2),
            asTwistWrites(textFileLogObserver, record(log_system="worker-2 own")),
        )
        [back] = eventsFromJSONLogFile(
            io.StringIO(self.written("json", record(), worker=2))
        )
        self.assertEqual(back["worker"], 2)

    def test_exchangeAsEvent(self) -> None:
        """
        `ExchangeLogFile.exchange` writes, from the fields, exactly the line
        it writes for the event the factory would otherwise build: in both
        formats, in a worker or not, with and without a client and reason.
        """
        cases = [
            ("{peer} {outcome}: {message}", None, None),
            ("{peer} ({client}) {outcome}: {message}", "CN=a\\nb", None),
            ("{peer} {outcome}: {reason}", None, "reset by peer"),
        ]
        for format in ("text", "json"):
            for worker in (None, 3):
                for template, client, reason in cases:
                    event = record(
                        log_format=template,
                        client=client,
                        reason=reason,
                        log_level=LogLevel.debug,
                    )
                    log = ExchangeLogFile(self.pipe.write, format, self.clock, worker)
                    log.exchange(
                        LogLevel.debug,
                        template,
                        event["log_time"],
                        event["peer"],
                        event["outcome"],
                        event["message"],
                        event["bytes"],
                        event["duration"],
                        client,
                        reason,
                    )
                    log.flush()
                    fast = self.pipe.drain().decode()
                    # The event as HelloServerFactory.logExchange builds it.
                    ordered = {
                        k: v for k, v in event.items() if not k.startswith("log_")
                    }
                    ordered.update(
                        log_time=event["log_time"],
                        log_level=LogLevel.debug,
                        log_namespace="hellotcp.protocol",
                        log_format=template,
                    )
                    self.assertEqual(fast, self.written(format, ordered, worker=worker))

    def test_noSuchFormat(self) -> None:
        """
        Only ``twist``'s two formats.
        """
        with self.assertRaises(ValueError):
            ExchangeLogFile(self.pipe.write, "xml", self.clock)  # type: ignore[arg-type]


class BufferTests(SynchronousTestCase):
    """
    Records wait at most the flush interval, and are written in whole lines
    of at most `CHUNK_BYTES` per write.
    """

    def setUp(self) -> None:
        self.pipe = Pipe(self)
        self.clock = Clock()
        self.writes: list[bytes] = []

        def write(descriptor: int, data: memoryview) -> int:
            self.writes.append(bytes(data))
            return os.write(descriptor, data)

        self.patch(exchangelog, "_write", write)

    def test_flushInterval(self) -> None:
        """
        A record is written once the flush interval has passed since the
        first buffered one, not before; one timer at a time.
        """
        log = ExchangeLogFile(self.pipe.write, "text", self.clock, flushInterval=1.0)
        log(record())
        self.clock.advance(0.5)
        log(record())
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.assertEqual(self.pipe.drain(), b"")
        self.clock.advance(0.5)
        self.assertEqual(self.pipe.drain().count(b"greeted"), 2)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        log.flush()  # nothing buffered: nothing written
        self.assertEqual(len(self.writes), 1)

    def test_chunks(self) -> None:
        """
        Many records go out in writes of at most `CHUNK_BYTES`, each ending
        at a line's end, nothing lost or reordered; a line longer than that
        is written whole.
        """
        log = ExchangeLogFile(self.pipe.write, "json", self.clock)
        events = [record(bytes=n) for n in range(200)]
        events.insert(100, record(message="x" * (2 * CHUNK_BYTES)))
        read = b""
        for event in events:
            log(event)
            read += self.pipe.drain()
        log.flush()
        read += self.pipe.drain()
        self.assertGreater(len(self.writes), 10)
        for data in self.writes:
            self.assertTrue(data.endswith(b"\n"))
            if len(data) > CHUNK_BYTES:
                self.assertEqual(data.count(b"\n"), 1)
        back = list(eventsFromJSONLogFile(io.StringIO(read.decode())))
        self.assertEqual([e["bytes"] for e in back], [e["bytes"] for e in events])

    def test_longLinesSplitAtLineEnds(self) -> None:
        """
        Written out at once, a buffer longer than `CHUNK_BYTES` (a line too
        long to wait with others) is split at line ends.
        """
        exchangelog._writeLines(
            self.pipe.write, b"a" * 3000 + b"\n" + b"b" * 3000 + b"\n"
        )
        self.assertEqual([len(w) for w in self.writes], [3001, 3001])

    def test_partialWrites(self) -> None:
        """
        A write the kernel takes only part of is continued.
        """

        def short(descriptor: int, data: memoryview) -> int:
            return os.write(descriptor, data[:7])

        self.patch(exchangelog, "_write", short)
        log = ExchangeLogFile(self.pipe.write, "text", self.clock)
        log(record())
        log.flush()
        self.assertIn(b"greeted: 'Hello, server!'\n", self.pipe.drain())

    def test_writeFails(self) -> None:
        """
        A log that cannot be written to loses what was buffered, warns once
        through `twisted.logger` (not again while writes keep failing, again
        once one has succeeded), and never raises.
        """
        log = ExchangeLogFile(self.pipe.write, "text", self.clock)

        def broken(descriptor: int, data: memoryview) -> int:
            raise OSError(28, "No space left on device")

        with capturedLogs() as events:
            self.patch(exchangelog, "_write", broken)
            for _ in range(3):
                log(record())
                log.flush()
            self.patch(exchangelog, "_write", os.write)
            log(record())
            log.flush()
            self.patch(exchangelog, "_write", broken)
            log(record())
            log.flush()
        warnings = [e for e in events if e["log_level"] is LogLevel.warn]
        self.assertEqual(len(warnings), 2)
        self.assertEqual(warnings[0]["error"], "No space left on device")
        self.assertEqual(self.pipe.drain().count(b"greeted"), 1)


class FlushFirstTests(SynchronousTestCase):
    """
    `FlushFirst` keeps a shared log file in time order.
    """

    def test_recordsBeforeLaterEvents(self) -> None:
        """
        An event logged after a buffered record is written after it.
        """
        pipe = Pipe(self)
        log = ExchangeLogFile(pipe.write, "text", Clock())
        out = os.fdopen(os.dup(pipe.write), "w")
        self.addCleanup(out.close)
        publisher = LogPublisher(FlushFirst(log), textFileLogObserver(out))
        log(record())
        Logger(observer=publisher).warn("later")
        lines = pipe.drain().decode().splitlines()
        self.assertEqual(len(lines), 2)
        self.assertIn("greeted", lines[0])
        self.assertIn("later", lines[1])


class FactoryTests(SynchronousTestCase):
    """
    `HelloServerFactory` sends greetings and health checks to its
    ``exchangeLog``, failures to `twisted.logger`.
    """

    def exchange(self, exchangeLog: Any, message: str) -> None:
        clock = Clock()
        factory = HelloServerFactory(
            ServerSettings(), clock, exchangeLog=exchangeLog, logHealthChecks=True
        )
        endpoint = MemoryEndpoint(clock, factory)
        greet(clock, endpoint, message).addErrback(lambda f: None)
        endpoint.flush()

    def test_greetingsToTheExchangeLog(self) -> None:
        """
        A greeting's record goes to the exchange log only, as the event
        `Logger.emit` would make (at info; a health check at debug); a
        failure's to `twisted.logger` only.
        """
        logged = captureLogs(self)
        records: list[dict[str, Any]] = []
        self.exchange(records.append, "Hello, server!")
        self.exchange(records.append, "health-check")
        self.exchange(records.append, "x" * 2000)
        self.assertEqual(
            [(r["outcome"], r["log_level"]) for r in records],
            [("greeted", LogLevel.info), ("health-check", LogLevel.debug)],
        )
        self.assertEqual(records[0]["log_namespace"], "hellotcp.protocol")
        self.assertEqual(records[0]["log_format"], "{peer} {outcome}: {message}")
        self.assertEqual([e["outcome"] for e in logged], [Outcome.TOO_LONG.value])

    def test_recordsWithoutEvents(self) -> None:
        """
        Given an `ExchangeLogFile`, the factory hands it each greeting's
        fields (`IExchangeLog.exchange`) rather than an event; failures
        still go to `twisted.logger`.
        """
        logged = captureLogs(self)
        calls: list[tuple[Any, ...]] = []

        class Recording(ExchangeLogFile):
            def __call__(self, event: Any) -> None:
                calls.append(("event", event))

            def exchange(self, *fields: Any) -> None:
                calls.append(fields)

        pipe = Pipe(self)
        self.exchange(Recording(pipe.write, "json", Clock()), "Hello, server!")
        self.exchange(Recording(pipe.write, "json", Clock()), "x" * 2000)
        self.exchange(Recording(pipe.write, "json", Clock()), "health-check")
        health = calls.pop()
        self.assertEqual((health[0], health[4]), (LogLevel.debug, "health-check"))
        [fields] = calls
        self.assertEqual(
            fields[:2] + fields[4:7],
            (
                LogLevel.info,
                "{peer} {outcome}: {message}",
                "greeted",
                "Hello, server!",
                14,
            ),
        )
        self.assertEqual([e["outcome"] for e in logged], [Outcome.TOO_LONG.value])

    def test_withoutAnExchangeLog(self) -> None:
        """
        Embedded without one, greetings are `twisted.logger` events.
        """
        logged = captureLogs(self)
        self.exchange(None, "Hello, server!")
        self.assertEqual([e["outcome"] for e in logged], ["greeted"])

    def test_volume(self) -> None:
        """
        For the default message, from a client with a five-digit port, a
        text record is at most 120 bytes and a JSON record at most 300
        (through `twisted.logger`: 92 and about 600).
        """
        pipe = Pipe(self)
        sizes = {}
        limits: list[tuple[LogFormat, int]] = [("text", 120), ("json", 300)]
        for format, limit in limits:
            log = ExchangeLogFile(pipe.write, format, Clock())
            self.exchange(log, "Hello, server!")
            log.flush()
            [line] = pipe.drain().splitlines(keepends=True)
            self.assertLessEqual(len(line), limit, line)
            sizes[format] = len(line)
        self.assertLess(sizes["text"], sizes["json"])


class WiringTests(SynchronousTestCase):
    """
    What ``twist hellotcp`` sets up around its exchange log.
    """

    def test_twistLog(self) -> None:
        """
        Under ``twist``, its log file's descriptor and format; under
        ``twistd`` (a log file object of its own that rotates) or outside
        either, none.
        """
        options = twistOptions()
        options.opt_log_format("json")
        self.assertEqual(twistLog(options), TwistLog(1, "json"))
        options.opt_log_format("text")
        self.assertEqual(twistLog(options), TwistLog(1, "text"))
        self.assertIsNone(twistLog({"logfile": "twistd.log", "nodaemon": True}))
        self.assertIsNone(twistLog(None))
        self.assertIsNone(twistLog({"logFormat": "json", "logFile": object()}))

    def test_flushedFirstAndAtShutdown(self) -> None:
        """
        The exchange log is flushed before every other event and once the
        reactor has stopped.
        """
        memory = MemoryReactorClock()
        added: list[Any] = []
        self.patch(
            exchangelog.ExchangeLogFile, "flush", lambda self: added.append("flush")
        )
        from twisted.logger import globalLogPublisher

        self.patch(globalLogPublisher, "addObserver", added.append)
        log = _exchangeLog(memory, TwistLog(1, "text"), None)
        [observer] = added
        self.assertIsInstance(observer, FlushFirst)
        self.assertIs(observer.exchangeLog, log)
        [(flush, _, _)] = memory.triggers["after"]["shutdown"]
        flush()
        self.assertEqual(added[-1], "flush")


class CommandTests(CommandTestCase):
    """
    ``twist hellotcp`` writes its records into ``twist``'s log, in its
    format, in time, and all of them on a graceful stop.
    """

    async def serve(
        self, logOption: str = "--log-format=text", *options: str
    ) -> tuple[Any, int, str]:
        port = freePort()
        path = os.path.join(self.folder, "hellotcp.log")
        server = await self.startServer(
            [
                command("twist"),
                f"--log-file={path}",
                logOption,
                "hellotcp",
                "--listen",
                f"tcp:{port}:interface=127.0.0.1",
                *options,
            ],
            port,
        )
        return server, port, path

    async def stop(self, server: Any) -> None:
        server.transport.signalProcess("TERM")
        self.assertEqual(await server.ended.addTimeout(TIMEOUT, reactor), 0)

    async def test_tailFollows(self) -> None:
        """
        A record reaches the file within the flush interval of the exchange,
        while the server runs and nothing else is logged.
        """
        server, port, path = await self.serve("--log-format=text")
        await inThread(plainExchange, port, b"Hello, server!\n")
        clock: IReactorTime = reactor
        deadline = clock.seconds() + TIMEOUT
        while True:
            with open(path) as file:
                if "greeted: Hello, server!" in file.read():
                    break
            self.assertLess(clock.seconds(), deadline, "the record never came")
            await deferLater(clock, 0.05)
        self.assertFalse(server.ended.called)
        await self.stop(server)

    async def test_nothingLostOnStop(self) -> None:
        """
        SIGTERM right after a burst of exchanges: every one is in the log,
        each JSON record whole and at most 300 bytes, in time order with
        ``twist``'s own events.
        """
        server, port, path = await self.serve("--log-format=json")

        def burst() -> None:
            for _ in range(50):
                plainExchange(port, b"Hello, server!\n")

        await inThread(burst)
        await self.stop(server)
        with open(path) as file:
            text = file.read()
        events = list(eventsFromJSONLogFile(io.StringIO(text)))
        # (startServer's own connection, which sends nothing, is greeted too)
        greeted = [e for e in events if e.get("message") == "Hello, server!"]
        self.assertEqual(len(greeted), 50)
        times = [e["log_time"] for e in events]
        self.assertEqual(times, sorted(times))
        # (not splitlines: it splits at the record separator too)
        records = [line for line in text.split("\n") if "Hello, server!" in line]
        self.assertEqual(len(records), 50)
        self.assertLessEqual(max(len(line) + 1 for line in records), 300)

    async def test_nothingLostOnInterrupt(self) -> None:
        """
        SIGINT (Ctrl-C) is a graceful stop too: every record is written.
        """
        server, port, path = await self.serve("--log-format=text")

        def burst() -> None:
            for _ in range(20):
                plainExchange(port, b"Hello, server!\n")

        await inThread(burst)
        server.transport.signalProcess("INT")
        self.assertEqual(await server.ended.addTimeout(TIMEOUT, reactor), 0)
        with open(path) as file:
            self.assertEqual(file.read().count("greeted: Hello, server!"), 20)

    async def test_workersShareTheLog(self) -> None:
        """
        Two workers writing their records into one log under concurrent
        load, then SIGTERM: every exchange has its record, from both
        workers, and every line of the log is one whole record.
        """
        server, port, path = await self.serve("--log-format=json", "--workers", "2")
        perClient, clients = 150, 8

        def client() -> None:
            for _ in range(perClient):
                plainExchange(port, b"Hello, server!\n")

        await gatherResults([inThread(client) for _ in range(clients)])
        await self.stop(server)
        with open(path) as file:
            # (not splitlines: it splits at the record separator too)
            lines = file.read().split("\n")
        self.assertEqual(lines.pop(), "")
        records = [json.loads(line.lstrip("\x1e")) for line in lines]
        greeted = [r for r in records if r.get("message") == "Hello, server!"]
        self.assertEqual(len(greeted), perClient * clients)
        self.assertEqual({r["worker"] for r in greeted}, {1, 2})

    async def test_warnWritesNone(self) -> None:
        """
        At ``--log-level=warn`` no greeting is written.
        """
        server, port, path = await self.serve("--log-level=warn")
        await inThread(plainExchange, port, b"Hello, server!\n")
        await self.stop(server)
        with open(path) as file:
            self.assertNotIn("greeted", file.read())
