# -*- test-case-name: tests.test_metrics -*-
"""
What a server counts for Prometheus.

A `HelloServerFactory` reports to a `ServerMetrics`; the default one counts
nothing and costs one method call per event.  The page itself is in
`hellotcp.metricspage`.  `PrometheusMetrics` counts
with ``prometheus_client`` (the optional ``metrics`` extra).  With several
workers each one writes its figures to files in a directory shared with the
parent (``prometheus_client``'s multiprocess mode), and the parent serves
their sum.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from typing import TYPE_CHECKING, Any

__all__ = [
    "DURATION_BUCKETS",
    "NO_METRICS",
    "NO_SUPERVISOR_METRICS",
    "PREFIX",
    "MetricsUnavailableError",
    "PrometheusMetrics",
    "PrometheusSupervisorMetrics",
    "ServerMetrics",
    "SupervisorMetrics",
    "checkAvailable",
    "serverMetrics",
]

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

PREFIX = "hellotcp"
"""The first part of every metric's name."""

DURATION_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
"""The upper bounds, in seconds, of the exchange duration histogram:
exchanges last from a millisecond (a terminated message) through the 40 ms
pause that ends an unterminated one, to the 30 s deadline."""

_MULTIPROCESS_DIRECTORY = "PROMETHEUS_MULTIPROC_DIR"


class ServerMetrics:
    """
    Where a `HelloServerFactory` reports what happens; this one ignores it.
    """

    def accepted(self) -> None:
        """
        A connection was admitted.
        """

    def refused(self, reason: str) -> None:
        """
        A connection was refused (``max-connections``,
        ``max-connections-per-peer`` or ``shutdown``).
        """

    def ended(
        self,
        outcome: str,
        received: int,
        sent: int,
        duration: float,
        tlsFailure: str | None,
    ) -> None:
        """
        An admitted connection closed.

        :param outcome: How it ended (an `Outcome` value).
        :param received: Bytes read from the client.
        :param sent: Bytes of greeting written to it.
        :param duration: Seconds from connection to close.
        :param tlsFailure: Why the TLS handshake failed, if it did.
        """

    def withdrawn(self) -> None:
        """
        An admitted connection was refused after all: behind PROXY, its real
        client turned out to be over the per-address limit.
        """

    def certificateExpires(self, timestamp: float) -> None:
        """
        The TLS certificate now served expires at ``timestamp`` (seconds
        since the epoch).
        """


NO_METRICS = ServerMetrics()
"""The `ServerMetrics` of a factory that counts nothing."""


class SupervisorMetrics:
    """
    Where a `hellotcp.workers.WorkerSupervisor` (the parent of ``--workers``)
    reports the life of its workers; this one ignores it.
    """

    def workersRunning(self, count: int) -> None:
        """
        ``count`` workers are running and ready now.
        """

    def workerStarted(self, reason: str) -> None:
        """
        A worker process was started: ``start`` (the first of its number),
        ``restart`` (its predecessor died), ``roll`` (a rolling restart,
        SIGUSR2) or ``hung`` (its predecessor stopped answering).
        """

    def rollCompleted(self) -> None:
        """
        A rolling restart replaced every worker.
        """


NO_SUPERVISOR_METRICS = SupervisorMetrics()
"""The `SupervisorMetrics` of a supervisor that counts nothing."""


class MetricsUnavailableError(ImportError):
    """
    ``prometheus_client`` (the ``metrics`` extra) is not installed; the
    message says what to install, in one line.
    """


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError:
        raise MetricsUnavailableError(
            "--metrics needs prometheus_client, the metrics extra: "
            "pip install '.[metrics]' in a clone of hellotcp"
        ) from None
    return prometheus_client


def checkAvailable() -> None:
    """
    Check that metrics can be counted here.

    :raises MetricsUnavailableError: If ``prometheus_client`` is not
        installed.
    """
    _prometheus()


class PrometheusMetrics(ServerMetrics):
    """
    Count with ``prometheus_client``.

    :ivar registry: Where the metrics are registered (`None` in a worker,
        whose figures reach the parent through files).
    """

    def __init__(self, registry: CollectorRegistry | None) -> None:
        client = _prometheus()
        Counter, Gauge, Histogram = client.Counter, client.Gauge, client.Histogram
        self.registry = registry
        self._accepted = Counter(
            f"{PREFIX}_connections_accepted",
            "Connections admitted.",
            registry=registry,
        )
        self._refused = Counter(
            f"{PREFIX}_connections_refused",
            "Connections refused, by the limit that refused them.",
            ["reason"],
            registry=registry,
        )
        self._exchanges = Counter(
            f"{PREFIX}_exchanges",
            "Admitted connections, by how they ended.",
            ["outcome"],
            registry=registry,
        )
        self._received = Counter(
            f"{PREFIX}_received_bytes",
            "Bytes read from clients (after TLS, if any).",
            registry=registry,
        )
        self._sent = Counter(
            f"{PREFIX}_sent_bytes",
            "Greeting bytes written to clients.",
            registry=registry,
        )
        self._tlsFailures = Counter(
            f"{PREFIX}_tls_handshake_failures",
            "TLS handshakes that failed, by OpenSSL's reason.",
            ["reason"],
            registry=registry,
        )
        self._active = Gauge(
            f"{PREFIX}_connections_active",
            "Connections open now.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self._duration = Histogram(
            f"{PREFIX}_exchange_duration_seconds",
            "Seconds from connection to close.",
            registry=registry,
            buckets=DURATION_BUCKETS,
        )
        # Made when there is a certificate: a server without TLS shows none.
        self._expiry: Any = None
        # Labelled children looked up once, not per connection.
        self._byOutcome: dict[str, Any] = {}

    def accepted(self) -> None:
        """
        Count an admitted connection.
        """
        self._accepted.inc()
        self._active.inc()

    def refused(self, reason: str) -> None:
        """
        Count a refused connection.
        """
        self._refused.labels(reason).inc()

    def ended(
        self,
        outcome: str,
        received: int,
        sent: int,
        duration: float,
        tlsFailure: str | None,
    ) -> None:
        """
        Count a closed connection: its outcome, bytes and duration.
        """
        counter = self._byOutcome.get(outcome)
        if counter is None:
            counter = self._byOutcome[outcome] = self._exchanges.labels(outcome)
        counter.inc()
        self._active.dec()
        if received:
            self._received.inc(received)
        if sent:
            self._sent.inc(sent)
        self._duration.observe(duration)
        if tlsFailure is not None:
            self._tlsFailures.labels(tlsFailure).inc()

    def withdrawn(self) -> None:
        """
        Count an admitted connection refused late as an exchange whose
        outcome is ``refused``; it is no longer open.
        """
        self._exchanges.labels("refused").inc()
        self._active.dec()

    def certificateExpires(self, timestamp: float) -> None:
        """
        Show when the served certificate expires.
        """
        if self._expiry is None:
            self._expiry = _prometheus().Gauge(
                f"{PREFIX}_tls_certificate_expiry_timestamp_seconds",
                "When the TLS certificate being served expires (Unix time).",
                registry=self.registry,
                multiprocess_mode="livemin",
            )
        self._expiry.set(timestamp)


class PrometheusSupervisorMetrics(SupervisorMetrics):
    """
    Count the life of the workers with ``prometheus_client``, in the
    parent's own registry, beside the series its workers write.

    :ivar registry: Where the series are registered.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        """
        :param registry: The registry the parent serves at ``/metrics``.
        """
        client = _prometheus()
        self.registry = registry
        self._running = client.Gauge(
            f"{PREFIX}_workers_running",
            "Worker processes running and ready now.",
            registry=registry,
        )
        self._started = client.Counter(
            f"{PREFIX}_worker_starts",
            "Worker processes started, by reason: start, restart (the one "
            "before died), roll (SIGUSR2) or hung (the one before stopped "
            "answering).",
            ["reason"],
            registry=registry,
        )
        for reason in ("start", "restart", "roll", "hung"):
            # Every reason shows from the start, at 0, so that rate() and
            # increase() see the first one.
            self._started.labels(reason)
        self._rolls = client.Counter(
            f"{PREFIX}_rolls_completed",
            "Rolling restarts (SIGUSR2) that replaced every worker.",
            registry=registry,
        )

    def workersRunning(self, count: int) -> None:
        """
        Show how many workers run now.
        """
        self._running.set(count)

    def workerStarted(self, reason: str) -> None:
        """
        Count a worker started for ``reason``.
        """
        self._started.labels(reason).inc()

    def rollCompleted(self) -> None:
        """
        Count a completed rolling restart.
        """
        self._rolls.inc()


def inMultiprocessMode() -> bool:
    """
    Whether this process writes its metrics to the directory a supervising
    parent reads (set by the parent for its workers).
    """
    return bool(os.environ.get(_MULTIPROCESS_DIRECTORY))


def serverMetrics() -> PrometheusMetrics:
    """
    The metrics of this process: in a registry it serves itself, or, in a
    worker, in files its parent sums.
    """
    if inMultiprocessMode():
        return PrometheusMetrics(None)
    return PrometheusMetrics(_prometheus().CollectorRegistry())


def workersRegistry(directory: str) -> CollectorRegistry:
    """
    A registry that sums the metrics the workers write to ``directory``.
    """
    client = _prometheus()
    from prometheus_client import multiprocess

    registry: CollectorRegistry = client.CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)
    return registry


def workerEnvironment(directory: str) -> dict[str, str]:
    """
    The environment a worker needs to write its metrics to ``directory``.
    """
    return {_MULTIPROCESS_DIRECTORY: directory}


FOLDER_PREFIX = "hellotcp-metrics-"
"""The name of every workers' metrics folder starts with this."""

_OWNER_FILE = "owner"


def _pidNamespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def workersFolder(parent: str | None = None) -> str:
    """
    Make the private folder where workers write their metrics, in
    ``parent`` (the system's temporary folder by default), with a record of
    its owner: this process's id and process-id namespace.  A folder whose
    owner died without removing it is removed by the next start
    (`removeStaleFolders`).
    """
    directory = tempfile.mkdtemp(prefix=FOLDER_PREFIX, dir=parent)
    with open(os.path.join(directory, _OWNER_FILE), "w") as owner:
        owner.write(f"{os.getpid()} {_pidNamespace()}\n")
    return directory


def removeStaleFolders(parent: str | None = None) -> list[str]:
    """
    Remove the workers' metrics folders in ``parent`` (the system's
    temporary folder by default) left behind by a parent that was killed:
    only folders of this user, not symbolic links, whose recorded owner is
    a process of this process-id namespace that no longer runs.  Anything
    else (another user's folder, a live owner, no owner record, another
    namespace, where the same number may be a live process) is left alone.

    :returns: The folders removed.
    """
    parent = parent or tempfile.gettempdir()
    removed: list[str] = []
    namespace = _pidNamespace()
    try:
        names = os.listdir(parent)
    except OSError:
        return removed
    for name in names:
        if not name.startswith(FOLDER_PREFIX):
            continue
        path = os.path.join(parent, name)
        try:
            status = os.lstat(path)
            if not stat.S_ISDIR(status.st_mode) or status.st_uid != os.getuid():
                continue
            with open(os.path.join(path, _OWNER_FILE)) as owner:
                pidText, _, ownerNamespace = owner.read().strip().partition(" ")
            pid = int(pidText)
        except (OSError, ValueError):
            continue
        if pid <= 0 or ownerNamespace != namespace or _alive(pid):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def forgetWorker(pid: int, directory: str) -> None:
    """
    Drop the gauges of a worker that has exited, and fold its counters and
    histograms into one archive file per kind: what it counted did happen,
    so the sums stay monotonic, but its files (64 KiB each, per kind) do not
    pile up over months of restarts.
    """
    from prometheus_client import multiprocess
    from prometheus_client.mmap_dict import MmapedDict

    multiprocess.mark_process_dead(pid, directory)
    for kind in _ARCHIVED_KINDS:
        dead = os.path.join(directory, f"{kind}_{pid}.db")
        if not os.path.exists(dead):
            continue
        # The collector reads the kind from the name before the first "_"
        # and sums every file of a counter or histogram, whatever follows.
        archive = MmapedDict(os.path.join(directory, f"{kind}_archive.db"))
        try:
            for key, value, timestamp, _ in MmapedDict.read_all_values_from_file(dead):
                total, latest = archive.read_value(key)
                archive.write_value(key, total + value, max(timestamp, latest))
        finally:
            archive.close()
        # Removed only once archived: a parent killed in between counts this
        # worker twice, never loses it.
        os.remove(dead)


_ARCHIVED_KINDS = ("counter", "histogram", "summary")
