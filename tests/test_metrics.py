"""
Tests for `hellotcp.metrics`: what the factory counts, and ``/metrics`` as
Prometheus scrapes it from a real ``twist hellotcp``, read with
``prometheus_client``'s own parser.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile

from OpenSSL import SSL
from prometheus_client import CollectorRegistry
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from hellotcp.certs import issue, writeIssued
from hellotcp.metrics import (
    FOLDER_PREFIX,
    PrometheusMetrics,
    PrometheusSupervisorMetrics,
    forgetWorker,
    removeStaleFolders,
    workersFolder,
    workersRegistry,
)
from hellotcp.metricspage import DEADLINE as METRICS_DEADLINE
from hellotcp.metricspage import IDLE_TIMEOUT as METRICS_IDLE_TIMEOUT
from hellotcp.metricspage import MAX_CONNECTIONS as METRICS_MAX_CONNECTIONS
from hellotcp.metricspage import metricsSite
from hellotcp.protocol import HelloServerFactory, ServerSettings
from hellotcp.tls import describeTLSError

from .pki import pki, tlsListen
from .support import (
    PEER,
    TIMEOUT,
    CommandTestCase,
    HalfCloseableTransport,
    Process,
    ServerHarness,
    classicClient,
    command,
    exchangesUntilRefused,
    expires,
    freePort,
    inThread,
    scrapeUntil,
)


class CountingTests(SynchronousTestCase):
    """
    `PrometheusMetrics` counts each thing a `HelloServerFactory` does.
    """

    def setUp(self) -> None:
        self.registry = CollectorRegistry()
        self.metrics = PrometheusMetrics(self.registry)

    def value(self, name: str, **labels: str) -> float | None:
        """
        One sample now.
        """
        return self.registry.get_sample_value(name, labels)

    def test_exchanges(self) -> None:
        """
        Accepted, open, by outcome, bytes both ways and durations.
        """
        greeted = ServerHarness(self, metrics=self.metrics)
        self.assertEqual(self.value("hellotcp_connections_active"), 1)
        greeted.send(b"hi\n")
        greeted.clock.advance(0.25)
        greeted.close()
        tooLong = ServerHarness(
            self, ServerSettings(maxMessageBytes=4), metrics=self.metrics
        )
        tooLong.send(b"much too long")
        tooLong.close()
        silent = ServerHarness(self, metrics=self.metrics)
        silent.clock.advance(10)
        silent.close()
        reset = ServerHarness(self, metrics=self.metrics)
        reset.send(b"par")
        reset.close(Failure(ConnectionLost()))
        self.assertEqual(self.value("hellotcp_connections_accepted_total"), 4)
        self.assertEqual(self.value("hellotcp_connections_active"), 0)
        for outcome in ("greeted", "too-long", "timeout", "lost"):
            self.assertEqual(
                self.value("hellotcp_exchanges_total", outcome=outcome), 1, outcome
            )
        self.assertEqual(self.value("hellotcp_received_bytes_total"), 3 + 13 + 3)
        self.assertEqual(self.value("hellotcp_sent_bytes_total"), 2 * 14)
        self.assertEqual(self.value("hellotcp_exchange_duration_seconds_count"), 4)
        self.assertEqual(
            self.value("hellotcp_exchange_duration_seconds_bucket", le="0.1"), 2
        )
        self.assertEqual(
            self.value("hellotcp_exchange_duration_seconds_bucket", le="0.25"), 3
        )

    def test_refusals(self) -> None:
        """
        Refusals are counted by the limit that refused them, and while
        stopping.
        """
        factory = HelloServerFactory(
            ServerSettings(maxConnections=2, maxConnectionsPerPeer=1),
            Clock(),
            metrics=self.metrics,
        )
        connected = []
        for host in ("10.0.0.1", "10.0.0.1", "10.0.0.2", "10.0.0.3"):
            address = IPv4Address("TCP", host, 5000)
            protocol = factory.buildProtocol(address)
            if protocol is not None:
                protocol.makeConnection(HalfCloseableTransport(peerAddress=address))
                connected.append(protocol)
        factory.stopGracefully(1)
        self.assertIsNone(factory.buildProtocol(PEER))
        self.assertEqual(
            self.value(
                "hellotcp_connections_refused_total", reason="max-connections-per-peer"
            ),
            1,
        )
        self.assertEqual(
            self.value("hellotcp_connections_refused_total", reason="max-connections"),
            1,
        )
        self.assertEqual(
            self.value("hellotcp_connections_refused_total", reason="shutdown"), 1
        )
        self.assertEqual(self.value("hellotcp_connections_accepted_total"), 2)
        self.assertEqual(self.value("hellotcp_connections_active"), 2)

    def test_tlsFailure(self) -> None:
        """
        A failed TLS handshake is an exchange outcome and a failure counted
        by OpenSSL's reason.
        """
        harness = ServerHarness(self, metrics=self.metrics)
        reason = [("SSL routines", "", "wrong version number")]
        # Reported as the TLS wrapper (hellotcp.tls.HalfCloseableTLS) does.
        harness.protocol.tlsFailed(describeTLSError(SSL.Error(reason)))
        harness.close(Failure(SSL.Error(reason)))
        self.assertEqual(
            self.value("hellotcp_exchanges_total", outcome="tls-failed"), 1
        )
        self.assertEqual(
            self.value(
                "hellotcp_tls_handshake_failures_total", reason="wrong version number"
            ),
            1,
        )

    def test_certificateExpiry(self) -> None:
        """
        The expiry gauge appears with a certificate, and follows it.
        """
        self.assertIsNone(
            self.value("hellotcp_tls_certificate_expiry_timestamp_seconds")
        )
        self.metrics.certificateExpires(1.5e9)
        self.metrics.certificateExpires(2e9)
        self.assertEqual(
            self.value("hellotcp_tls_certificate_expiry_timestamp_seconds"), 2e9
        )


class SupervisorCountingTests(SynchronousTestCase):
    """
    `PrometheusSupervisorMetrics` counts the workers' lives.
    """

    def test_counts(self) -> None:
        """
        Workers running is a gauge; starts are counted by reason, every
        reason shown from the start; completed rolls are counted.
        """
        registry = CollectorRegistry()
        counted = PrometheusSupervisorMetrics(registry)
        for reason in ("start", "start", "roll", "roll", "hung"):
            counted.workerStarted(reason)
        counted.workersRunning(2)
        counted.rollCompleted()
        value = registry.get_sample_value
        self.assertEqual(value("hellotcp_workers_running"), 2)
        starts = {
            reason: value("hellotcp_worker_starts_total", {"reason": reason})
            for reason in ("start", "restart", "roll", "hung")
        }
        self.assertEqual(starts, {"start": 2, "restart": 0, "roll": 2, "hung": 1})
        self.assertEqual(value("hellotcp_rolls_completed_total"), 1)


class ScrapeTests(CommandTestCase):
    """
    ``twist hellotcp --metrics``, scraped over HTTP.
    """

    async def test_scrape(self) -> None:
        """
        A scrape shows the exchanges served, the TLS handshake that failed,
        and the served certificate's expiry; SIGHUP after the certificate
        changes moves the expiry.
        """
        plain, secure, metricsPort = freePort(), freePort(), freePort()
        names = ["localhost", "127.0.0.1"]
        first = issue(pki().authority, "localhost", names, days=90)
        certificate, key = writeIssued(self.folder, "server", first)
        server = await self.startServer(
            [
                command("twist"),
                "hellotcp",
                "--listen",
                f"tcp:{plain}:interface=127.0.0.1",
                *tlsListen(secure, certificate, key),
                "--metrics",
                f"tcp:{metricsPort}:interface=127.0.0.1",
            ],
            plain,
        )
        for _ in range(3):
            answer, _ = await inThread(classicClient, plain)
            self.assertEqual(answer, b"Hello, client!")
        # A plain-text client on the TLS port: a failed handshake.
        await inThread(classicClient, secure)
        figures = await scrapeUntil(
            metricsPort,
            lambda f: f.get(("hellotcp_connections_active", ())) == 0,
        )
        # The readiness probe connected and closed at once: greeted, empty.
        self.assertEqual(
            figures[("hellotcp_exchanges_total", (("outcome", "greeted"),))], 4
        )
        self.assertEqual(
            figures[("hellotcp_exchanges_total", (("outcome", "tls-failed"),))], 1
        )
        failures = [
            labels
            for (name, labels), value in figures.items()
            if name == "hellotcp_tls_handshake_failures_total" and value == 1
        ]
        self.assertEqual(len(failures), 1, figures)
        self.assertEqual(figures[("hellotcp_connections_accepted_total", ())], 5)
        self.assertEqual(figures[("hellotcp_sent_bytes_total", ())], 4 * 14)
        # Message bytes: the plain-text client's never got past TLS.
        self.assertEqual(figures[("hellotcp_received_bytes_total", ())], 3 * 14)
        expiry = "hellotcp_tls_certificate_expiry_timestamp_seconds"
        self.assertEqual(figures[(expiry, ())], expires(first))

        later = issue(pki().authority, "localhost", names, days=30)
        writeIssued(self.folder, "server", later)
        server.transport.signalProcess("HUP")  # type: ignore[union-attr]
        figures = await scrapeUntil(
            metricsPort, lambda f: f[(expiry, ())] != expires(first)
        )
        self.assertEqual(figures[(expiry, ())], expires(later))
        server.transport.signalProcess("TERM")  # type: ignore[union-attr]
        self.assertEqual(await server.ended.addTimeout(TIMEOUT, reactor), 0)


class LimitedConnectionsTests(SynchronousTestCase):
    """
    The ``/metrics`` listener has its own connection limit and idle
    timeout.
    """

    def test_deadline(self) -> None:
        """
        A connection that keeps trickling a request is aborted at the
        deadline, however active it is.
        """
        clock = Clock()
        # An idle timeout beyond the deadline: only the deadline is at work.
        factory = metricsSite(CollectorRegistry(), idleTimeout=2 * METRICS_DEADLINE)
        factory.wrappedFactory.reactor = clock
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        assert protocol is not None
        transport = StringTransport()
        protocol.makeConnection(transport)
        for _ in range(int(METRICS_DEADLINE) - 1):
            protocol.dataReceived(b"G")
            clock.advance(1)
        self.assertFalse(transport.disconnecting)
        clock.advance(1.1)
        self.assertTrue(transport.disconnecting)
        protocol.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_oldestMakesRoom(self) -> None:
        """
        When full, the oldest connection (a second old or more) is aborted so
        that a scraper gets in; one aborted so is no longer counted.
        """
        clock = Clock()
        factory = metricsSite(CollectorRegistry(), maxConnections=2)
        factory.wrappedFactory.reactor = clock
        address = IPv4Address("TCP", "127.0.0.1", 40000)
        transports = []
        for _ in range(2):
            protocol = factory.buildProtocol(address)
            assert protocol is not None
            transports.append(StringTransport())
            protocol.makeConnection(transports[-1])
            clock.advance(0.6)
        newcomer = factory.buildProtocol(address)
        assert newcomer is not None
        self.assertTrue(transports[0].disconnecting)
        self.assertFalse(transports[1].disconnecting)
        newcomer.makeConnection(StringTransport())
        # Both left are younger than a second: the next is refused.
        self.assertIsNone(factory.buildProtocol(address))

    def test_limit(self) -> None:
        """
        Past the limit a connection gets no protocol (Twisted closes it as
        soon as it is accepted) while the others are young; a closed one
        makes room.
        """
        factory = metricsSite(CollectorRegistry(), maxConnections=2)
        factory.wrappedFactory.reactor = Clock()
        address = IPv4Address("TCP", "127.0.0.1", 40000)
        protocols = []
        for _ in range(2):
            protocol = factory.buildProtocol(address)
            assert protocol is not None
            protocol.makeConnection(StringTransport())
            protocols.append(protocol)
        self.assertIsNone(factory.buildProtocol(address))
        protocols[0].connectionLost(Failure(ConnectionLost()))
        self.assertIsNotNone(factory.buildProtocol(address))

    def test_idleTimeout(self) -> None:
        """
        A connection that sends nothing is closed after the idle timeout.
        """
        clock = Clock()
        factory = metricsSite(CollectorRegistry(), idleTimeout=METRICS_IDLE_TIMEOUT)
        self.assertEqual(factory.wrappedFactory.timeOut, METRICS_IDLE_TIMEOUT)
        factory.wrappedFactory.reactor = clock
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        assert protocol is not None
        transport = StringTransport()
        protocol.makeConnection(transport)
        clock.advance(METRICS_IDLE_TIMEOUT - 0.1)
        self.assertFalse(transport.disconnecting)
        clock.advance(0.2)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(METRICS_MAX_CONNECTIONS, 16)


def deadProcess() -> int:
    """
    The id of a process that has ended (and been reaped).
    """
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


class DeadWorkerFilesTests(SynchronousTestCase):
    """
    A dead worker's files are folded into an archive: the sums the parent
    serves stay what they were, and the folder stays small.
    """

    def writeWorker(self, directory: str, pid: int, greeted: float) -> None:
        """
        Write the files a worker ``pid`` leaves: a counter, a histogram
        bucket and a live gauge, as prometheus_client's multiprocess mode
        does.
        """
        from prometheus_client.mmap_dict import MmapedDict, mmap_key

        for name, kind, sample, labels, value in [
            (
                "hellotcp_exchanges",
                "counter",
                "hellotcp_exchanges_total",
                {"outcome": "greeted"},
                greeted,
            ),
            (
                "hellotcp_exchange_duration_seconds",
                "histogram",
                "hellotcp_exchange_duration_seconds_bucket",
                {"le": "+Inf"},
                greeted,
            ),
            (
                "hellotcp_connections_active",
                "gauge_livesum",
                "hellotcp_connections_active",
                {},
                1.0,
            ),
        ]:
            values = MmapedDict(os.path.join(directory, f"{kind}_{pid}.db"))
            key = mmap_key(name, sample, list(labels), list(labels.values()), "help")
            values.write_value(key, value, 0.0)
            values.close()

    def test_foldedIntoArchive(self) -> None:
        """
        Three workers die one after another, one lives: the served counter
        and histogram are the sums of all four, the gauge only the living
        one's, and only the living worker's files and one archive per kind
        remain.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        for pid, greeted in [(101, 5), (102, 7), (103, 11), (104, 13)]:
            self.writeWorker(directory, pid, greeted)
        for pid in (101, 102, 103):
            forgetWorker(pid, directory)
        registry = workersRegistry(directory)
        value = registry.get_sample_value
        self.assertEqual(value("hellotcp_exchanges_total", {"outcome": "greeted"}), 36)
        self.assertEqual(
            value("hellotcp_exchange_duration_seconds_bucket", {"le": "+Inf"}), 36
        )
        self.assertEqual(value("hellotcp_connections_active"), 1)
        self.assertEqual(
            sorted(os.listdir(directory)),
            [
                "counter_104.db",
                "counter_archive.db",
                "gauge_livesum_104.db",
                "histogram_104.db",
                "histogram_archive.db",
            ],
        )


class StaleFoldersTests(SynchronousTestCase):
    """
    The workers' metrics folder of a parent that was killed is removed by
    the next start, and nothing else is.
    """

    def test_onlyDeadOwners(self) -> None:
        """
        Only folders named as workers' metrics folders, of this user, whose
        recorded owner is dead in this process-id namespace, are removed.
        """
        # Absolute: Python 3.12 and later make mkdtemp's result absolute.
        parent = os.path.abspath(self.mktemp())
        os.makedirs(parent)
        live = workersFolder(parent)
        with open(os.path.join(live, "owner")) as owner:
            pid, namespace = owner.read().split()
        self.assertEqual(int(pid), os.getpid())
        dead = workersFolder(parent)
        gone = deadProcess()
        with open(os.path.join(dead, "owner"), "w") as owner:
            owner.write(f"{gone} {namespace}\n")
        with open(os.path.join(dead, "counter_1.db"), "wb") as figures:
            figures.write(b"\0" * 16)
        elsewhere = workersFolder(parent)
        with open(os.path.join(elsewhere, "owner"), "w") as owner:
            owner.write(f"{gone} pid:[1]\n")
        unowned = tempfile.mkdtemp(prefix=FOLDER_PREFIX, dir=parent)
        garbled = workersFolder(parent)
        with open(os.path.join(garbled, "owner"), "w") as owner:
            owner.write("not a pid\n")
        # A link to a folder elsewhere is not followed.
        outside = self.mktemp()
        os.makedirs(outside)
        target = workersFolder(outside)
        with open(os.path.join(target, "owner"), "w") as owner:
            owner.write(f"{gone} {namespace}\n")
        os.symlink(target, os.path.join(parent, FOLDER_PREFIX + "link"))
        os.makedirs(os.path.join(parent, "unrelated"))
        removed = removeStaleFolders(parent)
        self.assertEqual(removed, [dead])
        kept = [live, elsewhere, unowned, garbled, "unrelated", "x-link"]
        self.assertEqual(
            sorted(os.listdir(parent)),
            sorted(
                os.path.basename(path).replace("x-", FOLDER_PREFIX) for path in kept
            ),
        )
        self.assertTrue(os.path.isdir(target))

    def test_noFolder(self) -> None:
        """
        A parent folder that does not exist removes nothing.
        """
        self.assertEqual(removeStaleFolders(self.mktemp()), [])


class MetricsListenerCommandTests(CommandTestCase):
    """
    The ``--metrics`` listener as an operator meets it.
    """

    async def test_idleConnectionsCannotStarveGreetings(self) -> None:
        """
        Under ``ulimit -n 400`` with ``--max-connections 300``, 420 idle
        connections to ``--metrics`` hold at most its own limit of
        descriptors, and every greeting is still served.
        """
        port, metricsPort = freePort(), freePort()
        server = await self.startServer(
            [
                "/bin/sh",
                "-c",
                'ulimit -n 400 && exec "$@"',
                "sh",
                command("twist"),
                "hellotcp",
                "--listen",
                f"tcp:{port}:interface=127.0.0.1",
                "--max-connections",
                "300",
                "--metrics",
                f"tcp:{metricsPort}:interface=127.0.0.1",
            ],
            port,
        )
        pid = server.transport.pid  # type: ignore[union-attr]
        baseline = len(os.listdir(f"/proc/{pid}/fd"))
        idle: list[socket.socket] = []

        def closeAll() -> None:
            for sock in idle:
                sock.close()

        self.addCleanup(closeAll)

        def flood() -> None:
            for _ in range(420):
                idle.append(
                    socket.create_connection(("127.0.0.1", metricsPort), timeout=5)
                )

        await inThread(flood)
        # Let the server accept (or shut) all of them.  Within one pass of
        # its loop it may hold an evicted connection and its newcomer both
        # (the evicted one closes on the next pass), and a loaded machine
        # can pause it there: what it holds is what it settles at, so wait
        # (for 5 s at most) for two samples in a row within the limit.
        limit = baseline + METRICS_MAX_CONNECTIONS + 2
        counts: list[int] = []
        for _ in range(100):
            await deferLater(reactor, 0.05)
            counts.append(len(os.listdir(f"/proc/{pid}/fd")))
            if counts[-2:] == [counts[-1]] * 2 and counts[-1] <= limit:
                break
        self.assertLessEqual(counts[-1], limit, f"descriptors sampled: {counts}")
        greeted, lost = await inThread(exchangesUntilRefused, port, 50)
        self.assertEqual((greeted, lost), (50, []))
        closeAll()
        server.transport.signalProcess("TERM")  # type: ignore[union-attr]
        self.assertEqual(await server.ended.addTimeout(TIMEOUT, reactor), 0)

    async def test_workersMetricsPortInUse(self) -> None:
        """
        ``--workers 2 --metrics`` on a port in use: one line, exit status 1,
        as for any listener.
        """
        taken = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(taken.close)
        busy = taken.getsockname()[1]
        status, out, err = await self.runCommand(
            [
                command("twist"),
                "hellotcp",
                "--workers",
                "2",
                "--listen",
                f"tcp:{freePort()}:interface=127.0.0.1",
                "--metrics",
                f"tcp:{busy}:interface=127.0.0.1",
            ]
        )
        self.assertEqual(status, 1)
        self.assertOneLine(
            status,
            err,
            f"hellotcp: error: cannot listen on tcp:{busy}:interface=127.0.0.1 "
            "(metrics): Address already in use",
        )
        self.assertNotIn("worker", out)

    async def test_staleFolderRemovedAtNextStart(self) -> None:
        """
        A ``--workers`` parent killed with SIGKILL leaves its metrics folder;
        the next start removes it, and its own is removed when it stops.
        """
        temporary = os.path.join(self.folder, "tmp")
        os.makedirs(temporary)
        environment = dict(self.env, TMPDIR=temporary)

        async def start() -> tuple[Process, list[str]]:
            port = freePort()
            before = set(os.listdir(temporary))
            process = self.spawn(
                [
                    command("twist"),
                    "hellotcp",
                    "--workers",
                    "2",
                    "--listen",
                    f"tcp:{port}:interface=127.0.0.1",
                    "--metrics",
                    f"tcp:{freePort()}:interface=127.0.0.1",
                ],
                env=environment,
                server=True,
            )
            for _ in range(200):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except ConnectionRefusedError:
                    await deferLater(reactor, 0.05)
            return process, sorted(set(os.listdir(temporary)) - before)

        first, [folder] = await start()
        self.assertTrue(folder.startswith(FOLDER_PREFIX))
        first.transport.signalProcess("KILL")  # type: ignore[union-attr]
        self.assertEqual(await first.ended.addTimeout(TIMEOUT, reactor), -9)
        self.assertIn(folder, os.listdir(temporary))
        second, [own] = await start()
        self.assertEqual(os.listdir(temporary), [own])
        second.transport.signalProcess("TERM")  # type: ignore[union-attr]
        self.assertEqual(await second.ended.addTimeout(TIMEOUT, reactor), 0)
        self.assertIn(b"Removed the metrics folder of a parent that died", second.out)
        self.assertEqual(os.listdir(temporary), [])
