"""
A real HAProxy (Debian's package; ``.ci/run`` installs it) in front of two
``twist hellotcp`` instances, with contrib/haproxy/haproxy.cfg as it ships:
PROXY protocol v1 and v2, plain and TLS, round robin, and one instance
stopped mid-run, every way a client ends a connection, and health checks
that are quiet and still take a hung instance out.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
import urllib.request
from collections.abc import Callable
from functools import partial

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.logger import eventsFromJSONLogFile

from hellotcp import greet
from hellotcp.tls import clientTLS

from .pki import PKI
from .support import (
    CLOSE_NOTIFY,
    FULL,
    GREETING,
    HALF_CLOSE,
    RESET,
    TIMEOUT,
    CommandTestCase,
    Process,
    command,
    continuousLoad,
    exchange,
    freePort,
    inThread,
    lostUnder,
)

CONFIG = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "contrib",
    "haproxy",
    "haproxy.cfg",
)
CLIENT = "127.0.0.2"
"""The clients' source address: HAProxy itself connects from 127.0.0.1."""


class HAProxyTests(CommandTestCase):
    """
    hellotcp behind HAProxy.
    """

    async def setUpServers(self, drain: bool = False) -> None:
        """
        Two hellotcp instances (plain and TLS, behind PROXY endpoints), and
        HAProxy in front, all on fresh loopback ports.

        :param drain: Run the instances as haproxy.cfg says to, with
            ``--drain-time 2`` (the tests that stop one need it).
        """
        haproxy = shutil.which("haproxy")
        self.assertTrue(haproxy, "HAProxy is not installed (apt-get install haproxy)")
        self.pki = PKI(self.folder)
        self.instances: dict[str, tuple[Process, str]] = {}
        self.commands: dict[str, tuple[list[str], int]] = {}
        self.metrics: dict[str, int] = {}
        environment = {}
        for name in ("A", "B"):
            plain, secure = freePort(), freePort()
            self.metrics[name] = freePort()
            log = os.path.join(self.folder, f"{name}.log")
            argv = [
                command("twist"),
                f"--log-file={log}",
                "hellotcp",
                "--listen",
                f"haproxy:tcp:{plain}:interface=127.0.0.1",
                "--tls-listen",
                f"haproxy:tcp:{secure}:interface=127.0.0.1",
                "--certificate",
                self.pki.server[0],
                "--private-key",
                self.pki.server[1],
                "--metrics",
                f"tcp:{self.metrics[name]}:interface=127.0.0.1",
                *(["--drain-time", "2"] if drain else []),
            ]
            self.commands[name] = (argv, plain)
            process = await self.startServer(argv, plain)
            self.instances[name] = (process, log)
            environment[f"HELLOTCP_{name}"] = f"127.0.0.1:{plain}"
            environment[f"HELLOTCP_{name}_TLS"] = f"127.0.0.1:{secure}"
        self.front, self.frontTLS = freePort(), freePort()
        environment["HELLOTCP_FRONT"] = f"127.0.0.1:{self.front}"
        environment["HELLOTCP_FRONT_TLS"] = f"127.0.0.1:{self.frontTLS}"
        self.env.update(environment)
        assert haproxy is not None
        self.haproxy = await self.startServer(
            [haproxy, "-db", "-f", CONFIG], self.front
        )
        # Both servers must have passed their health checks (rise 2, every
        # 500 ms) before round robin can use them.
        self.setUpExchanges = await self.greetUntil(
            lambda: self.greetedBy("A") and self.greetedBy("B")
        )

    def greeted(self, name: str) -> list[dict[str, object]]:
        """
        The exchanges instance C{name} has logged for real clients (health
        checks left out).
        """
        _, log = self.instances[name]
        with open(log) as lines:
            return [
                dict(event)
                for event in eventsFromJSONLogFile(lines)
                if event.get("outcome") == "greeted"
                and event.get("message") == "Hello, server!"
            ]

    def greetedBy(self, name: str) -> bool:
        """
        Whether instance C{name} has greeted a client yet.
        """
        return bool(self.greeted(name))

    async def exchange(self, tls: bool = False) -> bytes:
        """
        One exchange through HAProxy, from `CLIENT`.
        """
        endpoint = TCP4ClientEndpoint(
            reactor,
            "127.0.0.1",
            self.frontTLS if tls else self.front,
            timeout=TIMEOUT,
            bindAddress=(CLIENT, 0),
        )
        return await greet(
            reactor,
            endpoint,
            timeout=TIMEOUT,
            tls=clientTLS("localhost", self.pki.ca) if tls else None,
        )

    async def greetUntil(self, condition: object) -> int:
        """
        Greet through HAProxy until C{condition()} holds (10 s at most).

        :returns: How many exchanges it took.
        """
        deadline = time.monotonic() + TIMEOUT
        exchanges = 0
        while not condition():  # type: ignore[operator]
            self.assertLess(time.monotonic(), deadline, "never held")
            self.assertEqual(await self.exchange(), b"Hello, client!")
            exchanges += 1
        return exchanges

    async def test_roundRobinRealClients(self) -> None:
        """
        Both instances answer, plain and TLS, and every exchange they log
        names the real client (127.0.0.2), not HAProxy (127.0.0.1), through
        PROXY v1 (A) and v2 (B).
        """
        await self.setUpServers()
        answers = [await self.exchange() for _ in range(10)]
        answers += [await self.exchange(tls=True) for _ in range(4)]
        self.assertEqual(set(answers), {b"Hello, client!"})
        for name in ("A", "B"):
            events = self.greeted(name)
            self.assertGreaterEqual(len(events), 5)
            peers = {str(event["peer"]).split(":")[0] for event in events}
            self.assertEqual(peers, {CLIENT})

    async def test_instanceStoppedMidRun(self) -> None:
        """
        Stopping one instance in the middle of 100 exchanges (4 at a time)
        loses none: it drains (health checks failing) until HAProxy has
        taken it out, its exchanges in flight finish, and HAProxy sends the
        rest to the other.
        """
        await self.setUpServers(drain=True)
        done = 0
        results: list[bytes] = []

        async def worker() -> None:
            nonlocal done
            for _ in range(25):
                results.append(await self.exchange())
                done += 1

        workers = gatherResults([Deferred.fromCoroutine(worker()) for _ in range(4)])
        stopped: Deferred[int] | None = None
        deadline = time.monotonic() + TIMEOUT
        while not workers.called:
            if stopped is None and done >= 30:
                process, _ = self.instances["A"]
                process.transport.signalProcess("TERM")  # type: ignore[union-attr]
                stopped = process.ended
            self.assertLess(time.monotonic(), deadline)
            await Deferred.fromCoroutine(self._pause())
        await workers
        self.assertIsNotNone(stopped)
        assert stopped is not None
        self.assertEqual(await stopped.addTimeout(TIMEOUT, reactor), 0)
        self.assertEqual(results, [b"Hello, client!"] * 100)
        # Each instance logs an exchange when the client has closed, a moment
        # after the client has its answer: wait (5 s at most) for the last.
        expected = 100 + self.setUpExchanges
        for _ in range(100):
            logged = len(self.greeted("A")) + len(self.greeted("B"))
            if logged >= expected:
                break
            await Deferred.fromCoroutine(self._pause(0.05))
        self.assertEqual(logged, expected)

    async def test_failoverUnderLoad(self) -> None:
        """
        The shipped haproxy.cfg, each backend stopped (SIGTERM) and started
        again in turn under continuous load from two clients: every
        exchange is answered with the greeting.
        """
        await self.setUpServers(drain=True)
        stop = threading.Event()
        loads = [inThread(continuousLoad, self.front, stop) for _ in range(2)]
        try:
            for name in ("A", "B"):
                process, log = self.instances[name]
                process.transport.signalProcess("TERM")  # type: ignore[union-attr]
                self.assertEqual(await process.ended.addTimeout(TIMEOUT, reactor), 0)
                # It greets while it drains: count from its exit on.
                before = len(self.greeted(name))
                argv, port = self.commands[name]
                self.instances[name] = (await self.startServer(argv, port), log)
                # Back in service once HAProxy sends it clients again.
                await self.waitUntil(partial(self.greetedMoreThan, name, before + 5))
        finally:
            stop.set()
        lost = await lostUnder("haproxy failover", loads)
        self.assertEqual(lost, [], self.haproxy.err.decode()[-2000:])

    def greetedMoreThan(self, name: str, count: int) -> bool:
        """
        Whether instance ``name`` has logged more than ``count`` greetings.
        """
        return len(self.greeted(name)) > count

    async def waitUntil(self, condition: Callable[[], bool]) -> None:
        """
        Wait (20 s at most) until ``condition()`` holds.
        """
        deadline = time.monotonic() + 2 * TIMEOUT
        while not condition():
            self.assertLess(time.monotonic(), deadline, "never held")
            await Deferred.fromCoroutine(self._pause(0.1))

    def exchanges(self, name: str) -> dict[str, float]:
        """
        Instance C{name}'s exchanges by outcome, from its metrics page.
        """
        url = f"http://127.0.0.1:{self.metrics[name]}/metrics"
        with urllib.request.urlopen(url, timeout=TIMEOUT) as page:
            text = page.read().decode()
        counts = {}
        prefix = 'hellotcp_exchanges_total{outcome="'
        for line in text.splitlines():
            if line.startswith(prefix):
                outcome, _, value = line[len(prefix) :].partition('"} ')
                counts[outcome] = float(value)
        return counts

    async def test_healthChecksQuiet(self) -> None:
        """
        HAProxy's health checks, plain and TLS, are greeted and counted
        under their own outcome, none as lost, and not one of them reaches
        the log (they are logged at debug level).
        """
        await self.setUpServers()
        before = {name: await inThread(self.exchanges, name) for name in "AB"}
        # Checks run every 500 ms on each of the two backends: wait for a
        # few more on each instance.
        deadline = time.monotonic() + TIMEOUT
        while True:
            after = {name: await inThread(self.exchanges, name) for name in "AB"}
            if all(
                after[n].get("health-check", 0) >= before[n].get("health-check", 0) + 6
                for n in "AB"
            ):
                break
            self.assertLess(time.monotonic(), deadline, after)
            await Deferred.fromCoroutine(self._pause(0.2))
        for name in "AB":
            # Lost connections (the readiness probe's) do not grow with checks.
            self.assertEqual(
                after[name].get("lost", 0), before[name].get("lost", 0), name
            )
            _, log = self.instances[name]
            with open(log) as lines:
                self.assertNotIn("health-check", lines.read())

    async def test_hungInstanceTakenOut(self) -> None:
        """
        An instance that stops greeting (SIGSTOP: it accepts nothing, answers
        nothing) fails its checks and is taken out; clients are all served
        by the other, plain and TLS.
        """
        await self.setUpServers()
        process, _ = self.instances["A"]
        assert process.transport is not None
        process.transport.signalProcess(signal.SIGSTOP)
        self.addCleanup(process.transport.signalProcess, signal.SIGCONT)
        deadline = time.monotonic() + TIMEOUT
        down = (b"Server hellotcp/a is DOWN", b"Server hellotcp_tls/a is DOWN")
        while not all(line in self.haproxy.err for line in down):
            self.assertLess(time.monotonic(), deadline, self.haproxy.err.decode())
            await Deferred.fromCoroutine(self._pause(0.1))
        answers = [await self.exchange() for _ in range(4)]
        answers += [await self.exchange(tls=True) for _ in range(4)]
        self.assertEqual(answers, [GREETING] * 8)

    async def test_everyEnding(self) -> None:
        """
        Through HAProxy, plain and TLS: a client that closes after reading,
        half-closes TCP after its message, sends a TLS close alert after it,
        or resets after reading gets its greeting, and the instance that
        served it logs it greeted.
        """
        await self.setUpServers()
        answers = {}
        for tls, endings in [
            (False, (FULL, HALF_CLOSE, RESET)),
            (True, (FULL, HALF_CLOSE, CLOSE_NOTIFY, RESET)),
        ]:
            for ending in endings:
                for attempt in range(2):
                    message = f"through/{'tls' if tls else 'plain'}/{ending}/{attempt}"
                    answers[message] = await inThread(
                        exchange,
                        self.frontTLS if tls else self.front,
                        self.pki.ca if tls else None,
                        0,
                        ending,
                        message.encode(),
                    )
        self.assertEqual(set(answers.values()), {GREETING}, answers)
        # Each instance logs an exchange once the connection has closed.
        deadline = time.monotonic() + TIMEOUT
        while True:
            logged = {}
            for name in "AB":
                _, log = self.instances[name]
                with open(log) as lines:
                    for event in eventsFromJSONLogFile(lines):
                        if "outcome" in event and event.get("message") in answers:
                            logged[event["message"]] = event["outcome"]
            if len(logged) == len(answers):
                break
            self.assertLess(time.monotonic(), deadline, logged)
            await Deferred.fromCoroutine(self._pause(0.05))
        self.assertEqual(set(logged.values()), {"greeted"}, logged)

    async def _pause(self, seconds: float = 0.01) -> None:
        from twisted.internet.task import deferLater

        await deferLater(reactor, seconds)
