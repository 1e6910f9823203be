"""
How ``twist hellotcp --workers N`` scales with N, in one run:

    python bench/scaling.py [--repetitions 3] [--quick] [--out bench/results]

For each N from 1 to the CPUs this process may use, the server (parent and
workers) is pinned to the first N CPUs and the load generator to the rest;
where no CPU is left, the load generator shares the server's, and the report
says so.  The load generator runs one asyncio process per CPU it has.

Reported per N: exchanges per second, the server's CPU time per exchange
(parent and workers together, from /proc), how busy the server's CPUs and
the load generator's CPUs were, and each worker's share of the server's CPU
time (how evenly the kernel spread the connections).

Writes scaling.json and scaling.md into --out, and prints the Markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from run import (
    BIN,
    HERE,
    Server,
    clientContext,
    freePort,
    listenArguments,
    load,
    machine,
)

CONCURRENCY = 64


def processTree(pid: int) -> list[int]:
    """
    ``pid`` and every process descended from it.
    """
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                # The command name, in parentheses, may hold spaces.
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry))
    tree, waiting = [], [pid]
    while waiting:
        current = waiting.pop()
        tree.append(current)
        waiting += children.get(current, [])
    return tree


def cpuSeconds(pids: list[int]) -> dict[int, float]:
    """
    CPU time used so far by each of ``pids`` (all threads), by pid.
    """
    result = {}
    for pid in pids:
        total = 0
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/schedstat") as stat:
                    total += int(stat.read().split()[0])
        except OSError:
            continue
        result[pid] = total / 1e9
    return result


def generate(
    port: int, pki: str | None, count: int, concurrency: int
) -> tuple[list[tuple[str, float]], float]:
    """
    One load process: ``count`` exchanges.

    :returns: Each exchange's result and time, and this process's CPU time.
    """
    context = clientContext(pki) if pki else None
    started = time.process_time()
    results = asyncio.run(load(port, context, count, concurrency))
    return results, time.process_time() - started


def measure(
    workers: int,
    tls: bool,
    pki: str,
    folder: str,
    count: int,
    serverCPUs: set[int],
    loadCPUs: set[int],
) -> dict[str, Any]:
    """
    Start ``twist hellotcp --workers N`` on ``serverCPUs`` and drive it from
    ``loadCPUs``.
    """
    port = freePort()
    argv = [
        f"{BIN}/twist",
        "--log-file=hellotcp.log",
        "hellotcp",
        "--workers",
        str(workers),
        *listenArguments(port, pki if tls else None),
    ]
    server = Server(f"{workers} workers", tls, argv, port=port, cpus=serverCPUs)
    server.start(folder)
    assert server.process is not None
    pid = server.process.pid
    processes = len(loadCPUs)
    try:
        with ProcessPoolExecutor(processes) as pool:
            share = max(1, CONCURRENCY // processes)
            warm = [
                pool.submit(generate, port, pki if tls else None, 100, share)
                for _ in range(processes)
            ]
            for future in warm:
                future.result()
            tree = processTree(pid)
            before = cpuSeconds(tree)
            started = time.perf_counter()
            futures = [
                pool.submit(
                    generate, port, pki if tls else None, count // processes, share
                )
                for _ in range(processes)
            ]
            outcomes = [future.result() for future in futures]
            seconds = time.perf_counter() - started
            after = cpuSeconds(tree)
    finally:
        server.stop()
    results = [result for chunk, _ in outcomes for result in chunk]
    done = len(results)
    serverCPU = sum(after.values()) - sum(before.values())
    loadCPU = sum(cpu for _, cpu in outcomes)
    perProcess = sorted(
        round((after[child] - before.get(child, 0)) / serverCPU * 100)
        for child in after
        if child != pid
    )
    parent = after.get(pid, 0) - before.get(pid, 0)
    return {
        "workers": workers,
        "tls": tls,
        "server_cpus": sorted(serverCPUs),
        "load_cpus": sorted(loadCPUs),
        "load_processes": processes,
        "exchanges": done,
        "errors": dict(Counter(kind for kind, _ in results if kind != "ok")),
        "exchanges_per_second": round(done / seconds, 1),
        "server_cpu_us_per_exchange": round(serverCPU / done * 1e6, 1),
        # One worker is a single process: no parent.
        "parent_cpu_us_per_exchange": round(parent / done * 1e6, 1)
        if workers > 1
        else None,
        "server_cpu_busy_percent": round(serverCPU / seconds / len(serverCPUs) * 100),
        "load_cpu_busy_percent": round(loadCPU / seconds / len(loadCPUs) * 100),
        "worker_cpu_shares_percent": perProcess,
        "shared_cpus": bool(serverCPUs & loadCPUs),
    }


def markdown(report: dict[str, Any]) -> str:
    """
    The report as a Markdown table of medians.
    """
    lines = [
        f"Machine: {report['machine']['cpus']} CPUs ({report['machine']['model']}), "
        f"Linux {report['machine']['kernel']}, Python {report['machine']['python']}, "
        f"Twisted {report['machine']['twisted']}; concurrency {CONCURRENCY}; "
        f"{report['repetitions']} repetitions (medians; exchanges/s min–max).",
        "",
        "| TLS | workers | server CPUs | load CPUs | exchanges/s | server CPU µs/exchange "
        "| of which the parent | server CPUs busy | load CPUs busy "
        "| workers' shares of server CPU | errors |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    rows = report["runs"]
    keys = list(dict.fromkeys((r["tls"], r["workers"]) for r in rows))
    for tls, workers in keys:
        chosen = [r for r in rows if (r["tls"], r["workers"]) == (tls, workers)]

        def median(name: str, chosen: list[dict[str, Any]] = chosen) -> float:
            return round(float(statistics.median(r[name] for r in chosen)), 1)

        rates = [r["exchanges_per_second"] for r in chosen]
        errors: Counter[str] = Counter()
        for r in chosen:
            errors.update(r["errors"])
        first = chosen[0]
        shared = " (shared)" if first["shared_cpus"] else ""
        lines.append(
            f"| {'yes' if tls else 'no'} | {workers} | {first['server_cpus']} "
            f"| {first['load_cpus']}{shared} "
            f"| {median('exchanges_per_second'):.0f} ({min(rates):.0f}–{max(rates):.0f}) "
            f"| {median('server_cpu_us_per_exchange')} "
            f"| {median('parent_cpu_us_per_exchange') if workers > 1 else '(one process)'} "
            f"| {median('server_cpu_busy_percent'):.0f} % "
            f"| {median('load_cpu_busy_percent'):.0f} % "
            f"| {' / '.join(f'{p} %' for p in first['worker_cpu_shares_percent'])} "
            f"| {dict(errors) or 0} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    """
    Run the scaling benchmark.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a smoke test")
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    parser.add_argument("--plain-only", action="store_true", help="skip TLS")
    arguments = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, set(cpus[1:]) or set(cpus))
    folder = tempfile.mkdtemp(prefix="hellotcp-scaling-")
    pki = os.path.join(folder, "pki")
    subprocess.run(
        [f"{BIN}/hellotcp-certs", pki], check=True, stdout=subprocess.DEVNULL
    )
    runs = []
    try:
        for repetition in range(arguments.repetitions):
            for tls in (False,) if arguments.plain_only else (False, True):
                count = (
                    (400 if tls else 2000)
                    if arguments.quick
                    else (1500 if tls else 8000)
                )
                for workers in range(1, len(cpus) + 1):
                    serverCPUs = set(cpus[:workers])
                    loadCPUs = set(cpus[workers:]) or set(cpus)
                    os.sched_setaffinity(0, loadCPUs)
                    run = measure(
                        workers, tls, pki, folder, count, serverCPUs, loadCPUs
                    )
                    run["repetition"] = repetition
                    runs.append(run)
                    print(json.dumps(run), file=sys.stderr)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    report = {"machine": machine(), "repetitions": arguments.repetitions, "runs": runs}
    os.makedirs(arguments.out, exist_ok=True)
    with open(os.path.join(arguments.out, "scaling.json"), "w") as file:
        json.dump(report, file, indent=1)
    text = markdown(report)
    with open(os.path.join(arguments.out, "scaling.md"), "w") as file:
        file.write(text)
    print(text)


if __name__ == "__main__":
    main()
