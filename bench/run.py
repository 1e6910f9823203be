"""
Measure hellotcp against what a user would otherwise run, in one run:

    python bench/run.py [--repetitions 3] [--quick] [--out bench/results]

Each server is a separate process started as a user starts it, pinned to
CPU 0; this script is the load generator, pinned to the other CPUs.  The
headline figure is the server's own CPU time per exchange (from
/proc/PID/task/*/schedstat), which does not depend on how fast the load
generator is.  Ratios against the baselines are computed pair by pair within
each repetition, then summarised (median, and the spread from the lowest to
the highest), because absolute figures drift between runs on a shared
machine.

Writes results.json and results.md into --out, and prints the Markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.dirname(sys.executable)
MESSAGE = b"Hello, server!\n"
GREETING = b"Hello, client!"
CONCURRENCIES = (1, 16, 128)
SOURCES = [f"127.0.0.{n}" for n in range(1, 11)]


def serverCPU() -> set[int]:
    """
    The CPU servers run on.
    """
    return {0}


def loadCPUs() -> set[int]:
    """
    The CPUs the load generator runs on: all but the servers' where there
    are more than one.
    """
    cpus = os.sched_getaffinity(0)
    return (cpus - serverCPU()) or cpus


@dataclass
class Server:
    """
    A server to measure and how to start it.
    """

    name: str
    tls: bool
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    port: int = 0
    cpus: set[int] = field(default_factory=serverCPU)

    def start(self, folder: str, attempts: int = 5) -> None:
        """
        Start it pinned to its CPUs, and wait until it accepts; on a
        port taken in the meantime, try again on another.
        """
        for attempt in range(attempts):
            try:
                self._start(folder)
                return
            except RuntimeError:
                if attempt == attempts - 1:
                    raise
                port = freePort()
                self.argv = [a.replace(str(self.port), str(port)) for a in self.argv]
                self.port = port

    def _start(self, folder: str) -> None:
        errors = os.path.join(folder, f"{self.port}.err")
        with open(errors, "wb") as stderr:
            self.process = subprocess.Popen(
                self.argv,
                cwd=folder,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                preexec_fn=lambda: os.sched_setaffinity(0, self.cpus),
            )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        with open(errors) as stderr:
            raise RuntimeError(f"{self.name} did not start: {stderr.read()[-2000:]}")

    def stop(self) -> None:
        """
        Stop it.
        """
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
            self.process = None

    def cpuSeconds(self) -> float:
        """
        CPU time used by all of its threads so far.
        """
        assert self.process is not None
        total = 0
        for task in os.listdir(f"/proc/{self.process.pid}/task"):
            with open(f"/proc/{self.process.pid}/task/{task}/schedstat") as stat:
                total += int(stat.read().split()[0])
        return total / 1e9

    def residentKiB(self) -> int:
        """
        Its resident memory.
        """
        assert self.process is not None
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS")


def freePort() -> int:
    """
    A free loopback port.
    """
    with socket.create_server(("127.0.0.1", 0)) as sock:
        return int(sock.getsockname()[1])


def listenOverflows() -> int:
    """
    The kernel's count of connections dropped on full listen queues.
    """
    with open("/proc/net/netstat") as netstat:
        lines = netstat.read().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=True):
        if names.startswith("TcpExt:"):
            return int(
                dict(zip(names.split()[1:], values.split()[1:], strict=True))[
                    "ListenOverflows"
                ]
            )
    return 0


def listenArguments(port: int, pki: str | None) -> list[str]:
    """
    ``twist hellotcp`` arguments to listen on 127.0.0.1:``port``, with TLS
    from the files in ``pki`` if given.
    """
    if pki is None:
        return ["--listen", f"tcp:{port}:interface=127.0.0.1"]
    return [
        "--tls-listen",
        f"tcp:{port}:interface=127.0.0.1",
        "--certificate",
        f"{pki}/server.pem",
        "--private-key",
        f"{pki}/server-key.pem",
    ]


def servers(pki: str, idle: bool = False) -> list[Server]:
    """
    Every server of the comparison, plain and TLS.

    hellotcp runs with its shipped defaults, logging to a file as under
    systemd; for the idle-memory runs its idle timeout is raised so that
    10,000 connections can be opened before the first is closed.
    """
    certificate, key = f"{pki}/server.pem", f"{pki}/server-key.pem"
    result = []
    for tls in (False, True):
        for name, extra, options in (
            ("hellotcp", [], []),
            ("hellotcp (warn)", ["--log-level=warn"], []),
            (
                "hellotcp (metrics)",
                [],
                ["--metrics", f"tcp:{freePort()}:interface=127.0.0.1"],
            ),
        ):
            if idle and (extra or options):
                continue
            port = freePort()
            listen = listenArguments(port, pki if tls else None)
            argv = [
                f"{BIN}/twist",
                f"--log-file=hellotcp-{port}.log",
                *extra,
                "hellotcp",
                *listen,
                *options,
                *(["--timeout", "120"] if idle else []),
            ]
            result.append(Server(name, tls, argv, port=port))
        # Over TLS both Twisted servers close alike (with a close alert).
        kinds = ["twisted", "asyncio"]
        if not (tls or idle):
            kinds[1:1] = ["twisted-safe"]
            kinds.append("classic")
        for kind in kinds:
            port = freePort()
            files = [certificate, key] if tls else []
            argv = [sys.executable, f"{HERE}/servers.py", kind, str(port), *files]
            result.append(Server(BASELINES[kind], tls, argv, port=port))
    return result


BASELINES = {
    "twisted": "twisted minimal",
    "twisted-safe": "twisted safe-close",
    "asyncio": "asyncio minimal",
    "classic": "classic blocking",
}
"""The baselines of bench/servers.py, by the names the tables give them."""


@dataclass
class Run:
    """
    One measurement: a server, TLS or not, a concurrency, a repetition.
    """

    server: str
    tls: bool
    concurrency: int
    repetition: int
    exchanges: int
    seconds: float
    cpuUsPerExchange: float
    exchangesPerSecond: float
    p50ms: float
    p99ms: float
    errors: dict[str, int] = field(default_factory=dict)
    listenOverflows: int = 0


def clientContext(pki: str) -> ssl.SSLContext:
    """
    A verifying TLS client context; every exchange makes a full handshake
    (no session is reused).
    """
    context = ssl.create_default_context(cafile=f"{pki}/ca.pem")
    return context


async def exchange(port: int, context: ssl.SSLContext | None) -> tuple[str, float]:
    """
    One exchange as a client: connect, send the message, read to the end.
    """
    started = time.perf_counter()
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                "127.0.0.1",
                port,
                ssl=context,
                server_hostname="localhost" if context else None,
            ),
            10,
        )
        writer.write(MESSAGE)
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
    except ConnectionRefusedError:
        return "refused", time.perf_counter() - started
    except (ConnectionResetError, BrokenPipeError):
        return "reset", time.perf_counter() - started
    except (TimeoutError, asyncio.TimeoutError):
        return "timeout", time.perf_counter() - started
    except ssl.SSLError:
        return "tls", time.perf_counter() - started
    kind = "ok" if answer == GREETING else "wrong reply"
    return kind, time.perf_counter() - started


async def load(
    port: int, context: ssl.SSLContext | None, count: int, concurrency: int
) -> list[tuple[str, float]]:
    """
    ``count`` exchanges, ``concurrency`` at a time.
    """
    results: list[tuple[str, float]] = []
    remaining = count

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            results.append(await exchange(port, context))

    await asyncio.gather(*[worker() for _ in range(concurrency)])
    return results


def measure(
    server: Server,
    concurrency: int,
    repetition: int,
    count: int,
    context: ssl.SSLContext | None,
) -> Run:
    """
    Warm the server up, then time ``count`` exchanges.
    """
    asyncio.run(load(server.port, context, min(200, count), concurrency))
    overflows = listenOverflows()
    cpu = server.cpuSeconds()
    started = time.perf_counter()
    results = asyncio.run(load(server.port, context, count, concurrency))
    seconds = time.perf_counter() - started
    cpu = server.cpuSeconds() - cpu
    latencies = sorted(t for kind, t in results if kind == "ok")
    errors = Counter(kind for kind, _ in results if kind != "ok")

    def percentile(p: float) -> float:
        if not latencies:
            return float("nan")
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

    return Run(
        server=server.name,
        tls=server.tls,
        concurrency=concurrency,
        repetition=repetition,
        exchanges=count,
        seconds=round(seconds, 3),
        cpuUsPerExchange=round(cpu / count * 1e6, 1),
        exchangesPerSecond=round(count / seconds, 1),
        p50ms=round(percentile(0.50), 2),
        p99ms=round(percentile(0.99), 2),
        errors=dict(errors),
        listenOverflows=listenOverflows() - overflows,
    )


async def holdIdle(
    port: int, context: ssl.SSLContext | None, count: int
) -> tuple[list[asyncio.StreamWriter], Counter[str]]:
    """
    Open ``count`` connections (TLS handshakes completed) that send nothing,
    spread over several loopback source addresses.
    """
    writers: list[asyncio.StreamWriter] = []
    errors: Counter[str] = Counter()
    semaphore = asyncio.Semaphore(64)

    async def one(index: int) -> None:
        async with semaphore:
            try:
                _, writer = await asyncio.open_connection(
                    "127.0.0.1",
                    port,
                    ssl=context,
                    server_hostname="localhost" if context else None,
                    local_addr=(SOURCES[index % len(SOURCES)], 0),
                )
                writers.append(writer)
            except OSError as error:
                errors[type(error).__name__] += 1

    await asyncio.gather(*[one(index) for index in range(count)])
    return writers, errors


def idleMemory(
    server: Server, count: int, context: ssl.SSLContext | None
) -> dict[str, Any]:
    """
    Server memory per idle connection while it holds ``count`` of them.
    """

    async def main() -> dict[str, Any]:
        await load(server.port, context, 100, 4)
        before = server.residentKiB()
        writers, errors = await holdIdle(server.port, context, count)
        await asyncio.sleep(1)
        after = server.residentKiB()
        held = len(writers)
        for writer in writers:
            writer.transport.abort()
        return {
            "server": server.name,
            "tls": server.tls,
            "connections": count,
            "held": held,
            "errors": dict(errors),
            "rss_before_kib": before,
            "rss_after_kib": after,
            "kib_per_connection": round((after - before) / max(held, 1), 2),
        }

    return asyncio.run(main())


def logVolume(folder: str, format: str, count: int = 200) -> dict[str, Any]:
    """
    The size of the record ``twist hellotcp`` writes per exchange with the
    default message, in ``format``: ``count`` exchanges, then SIGTERM (a
    graceful stop writes out every record), then the log is read.
    """
    port = freePort()
    path = os.path.join(folder, f"volume-{format}.log")
    server = Server(
        "hellotcp",
        False,
        [
            f"{BIN}/twist",
            f"--log-format={format}",
            f"--log-file={path}",
            "hellotcp",
            *listenArguments(port, None),
        ],
        port=port,
    )
    server.start(folder)
    try:
        asyncio.run(load(port, None, count, 4))
    finally:
        server.stop()
    with open(path, "rb") as log:
        sizes = [len(line) for line in log if b"Hello, server!" in line]
    return {
        "format": format,
        "records": len(sizes),
        "mean_bytes": round(statistics.mean(sizes), 1) if sizes else None,
        "max_bytes": max(sizes, default=0),
        "target": {"text": 120, "json": 300}[format],
    }


def summarise(values: list[float]) -> dict[str, float]:
    """
    Median and spread.
    """
    return {
        "median": round(statistics.median(values), 2),
        "min": round(min(values), 2),
        "max": round(max(values), 2),
    }


CPU, P99 = "cpuUsPerExchange", "p99ms"
CHECKS: list[tuple[str, str, bool, str, float | None, int | None]] = [
    # (ours, baseline, TLS, measure, target, at this concurrency only)
    ("hellotcp", "hellotcp (warn)", False, CPU, 1.10, None),
    ("hellotcp", "twisted minimal", False, CPU, 1.4, None),
    ("hellotcp", "asyncio minimal", False, CPU, 1.2, None),
    ("hellotcp (warn)", "twisted safe-close", False, CPU, 1.15, None),
    ("hellotcp", "twisted minimal", True, CPU, 1.10, None),
    ("hellotcp", "twisted minimal", True, P99, 1.2, 128),
    ("hellotcp", "hellotcp (warn)", True, CPU, None, None),
    ("twisted safe-close", "twisted minimal", False, CPU, None, None),
    ("hellotcp (metrics)", "hellotcp", False, CPU, None, None),
    ("hellotcp (metrics)", "hellotcp", True, CPU, None, None),
]
"""What is compared: issue 16's targets, then figures that explain them."""

IDLE_TARGETS_KIB = {False: 2, True: 30}
"""The most memory hellotcp may hold per idle connection, plain and TLS."""


def ratios(runs: list[Run]) -> list[dict[str, Any]]:
    """
    hellotcp's CPU per exchange over each baseline's, pair by pair within a
    repetition, against the targets.
    """
    table = {(r.server, r.tls, r.concurrency, r.repetition): r for r in runs}
    result = []
    repetitions = sorted({r.repetition for r in runs})
    for ours, theirs, tls, measure, target, only in CHECKS:
        for concurrency in CONCURRENCIES if only is None else (only,):
            values = [
                getattr(table[(ours, tls, concurrency, n)], measure)
                / getattr(table[(theirs, tls, concurrency, n)], measure)
                for n in repetitions
                if (ours, tls, concurrency, n) in table
                and (theirs, tls, concurrency, n) in table
            ]
            if not values:
                continue
            summary = summarise(values)
            result.append(
                {
                    "ours": ours,
                    "baseline": theirs,
                    "tls": tls,
                    "concurrency": concurrency,
                    "measure": "p99 latency" if measure == "p99ms" else "CPU",
                    "ratio": summary,
                    "target": target,
                    "met": None if target is None else summary["median"] <= target,
                }
            )
    return result


def markdown(report: dict[str, Any]) -> str:
    """
    The report as Markdown tables.
    """
    lines = [
        f"Machine: {report['machine']['cpus']} CPUs ({report['machine']['model']}), "
        f"Linux {report['machine']['kernel']}, Python {report['machine']['python']}, "
        f"Twisted {report['machine']['twisted']}; servers on CPU "
        f"{report['machine']['server_cpus']}, load generator on CPU "
        f"{report['machine']['load_cpus']}; {report['repetitions']} repetitions.",
        "",
    ]
    runs = [Run(**r) for r in report["runs"]]
    for tls in (False, True):
        lines += [
            f"### {'TLS (a full handshake per exchange)' if tls else 'Plain TCP'}",
            "",
            "| server | concurrency | server CPU µs/exchange (median, min–max) "
            "| exchanges/s | p50 ms | p99 ms | errors | listen overflows |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        names = list(dict.fromkeys(r.server for r in runs if r.tls == tls))
        for name in names:
            for concurrency in CONCURRENCIES:
                chosen = [
                    r
                    for r in runs
                    if (r.server, r.tls, r.concurrency) == (name, tls, concurrency)
                ]
                if not chosen:
                    continue
                cpu = summarise([r.cpuUsPerExchange for r in chosen])
                errors: Counter[str] = Counter()
                for r in chosen:
                    errors.update(r.errors)
                lines.append(
                    f"| {name} | {concurrency} | {cpu['median']} ({cpu['min']}–{cpu['max']}) "
                    f"| {statistics.median(r.exchangesPerSecond for r in chosen):.0f} "
                    f"| {statistics.median(r.p50ms for r in chosen):.2f} "
                    f"| {statistics.median(r.p99ms for r in chosen):.2f} "
                    f"| {dict(errors) or 0} "
                    f"| {sum(r.listenOverflows for r in chosen)} |"
                )
        lines.append("")
    lines += [
        "### Ratios, pair by pair within each repetition",
        "",
        "| server | baseline | TLS | measure | concurrency "
        "| ratio (median, min–max) | target | met |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in report["ratios"]:
        ratio = row["ratio"]
        target = "" if row["target"] is None else f"≤ {row['target']}"
        met = {None: "", True: "yes", False: "no"}[row["met"]]
        lines.append(
            f"| {row['ours']} | {row['baseline']} | {'yes' if row['tls'] else 'no'} "
            f"| {row.get('measure', 'CPU')} "
            f"| {row['concurrency']} | {ratio['median']} ({ratio['min']}–{ratio['max']}) "
            f"| {target} | {met} |"
        )
    volume = report.get("log_volume")
    if volume:
        lines += [
            "",
            "### Log volume (`twist hellotcp`, the default message)",
            "",
            "| format | records | bytes per record (mean, max) | target | met |",
            "| --- | --- | --- | --- | --- |",
        ]
        for row in volume:
            lines.append(
                f"| {row['format']} | {row['records']} | {row['mean_bytes']}, "
                f"{row['max_bytes']} | ≤ {row['target']} "
                f"| {'yes' if row['max_bytes'] <= row['target'] else 'no'} |"
            )
    lines += [
        "",
        "### Idle connections",
        "",
        "| server | TLS | held | errors | RSS before KiB | RSS after KiB "
        "| KiB per connection | target |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in report["idle"]:
        target = ""
        if row["server"] == "hellotcp":
            limit = IDLE_TARGETS_KIB[row["tls"]]
            met = "met" if row["kib_per_connection"] <= limit else "not met"
            target = f"≤ {limit} ({met})"
        lines.append(
            f"| {row['server']} | {'yes' if row['tls'] else 'no'} | {row['held']} "
            f"| {row['errors'] or 0} | {row['rss_before_kib']} | {row['rss_after_kib']} "
            f"| {row['kib_per_connection']} | {target} |"
        )
    return "\n".join(lines) + "\n"


def machine() -> dict[str, Any]:
    """
    What the figures were measured on.
    """
    import twisted

    model = "unknown CPU"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "twisted": twisted.__version__,
        "server_cpus": sorted(serverCPU()),
        "load_cpus": sorted(loadCPUs()),
    }


def main() -> None:
    """
    Run the benchmark.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument(
        "--quick", action="store_true", help="fewer exchanges, for a smoke test"
    )
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    parser.add_argument("--idle-connections", type=int, default=10_000)
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        help="measure only these servers (repeatable)",
    )
    parser.add_argument("--plain-only", action="store_true", help="skip the TLS runs")
    parser.add_argument(
        "--skip-idle", action="store_true", help="skip the idle-memory runs"
    )
    parser.add_argument("--concurrency", type=int, action="append", default=[])
    arguments = parser.parse_args()

    def wanted(server: Server) -> bool:
        return (not arguments.only or server.name in arguments.only) and not (
            arguments.plainOnly and server.tls
        )

    arguments.plainOnly = arguments.plain_only
    concurrencies = arguments.concurrency or list(CONCURRENCIES)
    os.sched_setaffinity(0, loadCPUs())
    folder = tempfile.mkdtemp(prefix="hellotcp-bench-")
    pki = os.path.join(folder, "pki")
    subprocess.run(
        [f"{BIN}/hellotcp-certs", pki], check=True, stdout=subprocess.DEVNULL
    )
    context = clientContext(pki)
    plainCount, tlsCount = (500, 100) if arguments.quick else (4000, 1500)
    runs: list[Run] = []
    everything = [server for server in servers(pki) if wanted(server)]
    try:
        for server in everything:
            server.start(folder)
        for repetition in range(arguments.repetitions):
            for concurrency in concurrencies:
                # Alternate the order so that no server always goes first.
                order = everything if repetition % 2 == 0 else everything[::-1]
                for server in order:
                    count = tlsCount if server.tls else plainCount
                    run = measure(
                        server,
                        concurrency,
                        repetition,
                        count,
                        context if server.tls else None,
                    )
                    runs.append(run)
                    print(
                        f"{run.server:18} tls={run.tls!s:5} c={concurrency:<3} "
                        f"rep={repetition} cpu={run.cpuUsPerExchange:7.1f} µs "
                        f"{run.exchangesPerSecond:7.0f}/s p99={run.p99ms:7.2f} ms "
                        f"errors={run.errors}",
                        file=sys.stderr,
                    )
    finally:
        for server in everything:
            server.stop()

    volume = [logVolume(folder, format) for format in ("text", "json")]
    for row in volume:
        print(row, file=sys.stderr)

    def write(idle: list[dict[str, Any]]) -> str:
        report = {
            "machine": machine(),
            "repetitions": arguments.repetitions,
            "runs": [run.__dict__ for run in runs],
            "ratios": ratios(runs),
            "log_volume": volume,
            "idle": idle,
        }
        os.makedirs(arguments.out, exist_ok=True)
        with open(os.path.join(arguments.out, "results.json"), "w") as file:
            json.dump(report, file, indent=1)
        text = markdown(report)
        with open(os.path.join(arguments.out, "results.md"), "w") as file:
            file.write(text)
        return text

    idle: list[dict[str, Any]] = []
    write(idle)  # the throughput figures are kept even if an idle run fails
    idleCount = 1000 if arguments.quick else arguments.idle_connections
    for server in servers(pki, idle=True):
        if arguments.skip_idle or not wanted(server):
            continue
        server.start(folder)
        try:
            idle.append(idleMemory(server, idleCount, context if server.tls else None))
            print(idle[-1], file=sys.stderr)
        finally:
            server.stop()
    shutil.rmtree(folder, ignore_errors=True)
    text = write(idle)
    print(text)


if __name__ == "__main__":
    main()
