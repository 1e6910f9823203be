"""
Count the exchanges lost while hellotcp restarts, under load, in one run:

    python bench/downtime.py [--clients 4] [--seconds 2]

Three events, each while ``--clients`` classic clients greet the server one
exchange after another (message, then read to the end), every exchange
counted:

- a rolling restart: SIGUSR2 to the parent of ``twist hellotcp --workers 2``;
- a socket-activation restart: the listening socket held as systemd holds
  it, the server stopped with SIGTERM and a new one started on the socket;
- a HAProxy failover: the shipped contrib/haproxy/haproxy.cfg in front of
  two servers run with ``--drain-time 2``, each stopped with SIGTERM and
  started again in turn (skipped if ``haproxy`` is not installed).

Prints a Markdown table: exchanges attempted, greeted and lost during each
event (the target is 0 lost).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
GREETING = b"Hello, client!"
TIMEOUT = 10.0


class Load:
    """
    Clients greeting a port until stopped, counting every exchange.
    """

    def __init__(self, port: int, clients: int) -> None:
        self.attempted = self.greeted = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._client, args=(port,)) for _ in range(clients)
        ]
        for thread in self._threads:
            thread.start()

    def _client(self, port: int) -> None:
        while not self._stop.is_set():
            answer = b""
            try:
                with socket.create_connection(("127.0.0.1", port), TIMEOUT) as sock:
                    sock.sendall(b"Hello, server!\n")
                    while chunk := sock.recv(1024):
                        answer += chunk
            except OSError:
                pass
            with self._lock:
                self.attempted += 1
                self.greeted += answer == GREETING

    def stop(self) -> tuple[int, int]:
        """
        Stop the clients; return the exchanges attempted and greeted.
        """
        self._stop.set()
        for thread in self._threads:
            thread.join(2 * TIMEOUT)
        return self.attempted, self.greeted


def freePort() -> int:
    """
    A loopback port free now.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def waitFor(condition: Callable[[], bool], what: str) -> None:
    """
    Wait until ``condition()`` holds, 30 s at most.
    """
    deadline = time.monotonic() + 3 * TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"downtime: {what} did not happen within 30 s")
        time.sleep(0.05)


def answers(port: int) -> bool:
    """
    Whether a server greets on ``port``.
    """
    try:
        with socket.create_connection(("127.0.0.1", port), 1) as sock:
            sock.sendall(b"x\n")
            return sock.recv(1024) == GREETING
    except OSError:
        return False


@contextmanager
def server(argv: list[str], **options: object) -> Iterator[subprocess.Popen[bytes]]:
    """
    Run ``argv``, stopping it with SIGTERM (then SIGKILL) at the end.
    """
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, **options)  # type: ignore[call-overload]
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(3 * TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def twist(*arguments: str) -> list[str]:
    """
    The command line of ``twist hellotcp`` with ``arguments``.
    """
    return [os.path.join(BIN, "twist"), "hellotcp", *arguments]


def rollingRestart(clients: int, seconds: float, folder: str) -> tuple[int, int]:
    """
    SIGUSR2 to the parent of two workers, under load.
    """
    port = freePort()
    log = os.path.join(folder, "roll.log")
    argv = twist("--listen", f"tcp:{port}:interface=127.0.0.1", "--workers", "2")
    argv.insert(1, f"--log-file={log}")
    with server(argv) as parent:
        waitFor(lambda: answers(port), "the server's start")
        load = Load(port, clients)
        time.sleep(seconds)
        parent.send_signal(signal.SIGUSR2)

        def rolled() -> bool:
            with open(log) as lines:
                return "rolling restart complete" in lines.read()

        waitFor(rolled, "the rolling restart")
        time.sleep(seconds)
        return load.stop()


def socketActivation(clients: int, seconds: float, folder: str) -> tuple[int, int]:
    """
    SIGTERM to a server on a socket held for it, then a new one on it.
    """
    listener = socket.create_server(("127.0.0.1", 0), backlog=4096)
    port = listener.getsockname()[1]
    activate = (
        "import os, sys;"
        "os.environ.update(LISTEN_FDS='1', LISTEN_FDNAMES='hellotcp.socket',"
        " LISTEN_PID=str(os.getpid()));"
        "os.dup2(int(sys.argv[1]), 3);"
        "os.execv(sys.argv[2], sys.argv[2:])"
    )
    argv = [
        sys.executable,
        "-c",
        activate,
        str(listener.fileno()),
        *twist("--listen", "systemd:domain=INET:index=0"),
    ]
    with listener:
        first = server(argv, pass_fds=[listener.fileno()], cwd=folder)
        with first as process:
            waitFor(lambda: answers(port), "the first server's start")
            load = Load(port, clients)
            time.sleep(seconds)
            process.send_signal(signal.SIGTERM)
            process.wait(3 * TIMEOUT)
        with server(argv, pass_fds=[listener.fileno()], cwd=folder):
            time.sleep(seconds)
            return load.stop()


def haproxyFailover(clients: int, seconds: float, folder: str) -> tuple[int, int]:
    """
    Each of two servers behind the shipped HAProxy configuration stopped
    and started again in turn.
    """
    haproxy = shutil.which("haproxy")
    assert haproxy is not None
    environment = dict(os.environ)
    backends: dict[str, list[str]] = {}
    for name in ("A", "B"):
        plain, secure = freePort(), freePort()
        environment[f"HELLOTCP_{name}"] = f"127.0.0.1:{plain}"
        environment[f"HELLOTCP_{name}_TLS"] = f"127.0.0.1:{secure}"
        backends[name] = twist(
            "--listen", f"haproxy:tcp:{plain}:interface=127.0.0.1", "--drain-time", "2"
        )
    front = freePort()
    environment["HELLOTCP_FRONT"] = f"127.0.0.1:{front}"
    environment["HELLOTCP_FRONT_TLS"] = f"127.0.0.1:{freePort()}"
    config = os.path.join(ROOT, "contrib", "haproxy", "haproxy.cfg")
    balancer = [haproxy, "-db", "-f", config]
    running = {
        name: subprocess.Popen(argv, stdout=subprocess.DEVNULL)
        for name, argv in backends.items()
    }
    try:
        with server(balancer, env=environment, stderr=subprocess.DEVNULL):
            time.sleep(2)  # both backends pass their health checks (rise 2)
            waitFor(lambda: answers(front), "HAProxy's start")
            load = Load(front, clients)
            for name, argv in backends.items():
                time.sleep(seconds)
                running[name].send_signal(signal.SIGTERM)
                running[name].wait(3 * TIMEOUT)
                running[name] = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
                time.sleep(2)  # back in service (rise 2, a check every 500 ms)
            time.sleep(seconds)
            return load.stop()
    finally:
        for process in running.values():
            process.send_signal(signal.SIGTERM)
            process.wait(3 * TIMEOUT)


def main() -> None:
    """
    Run every event and print the table.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=2.0)
    options = parser.parse_args()
    events: list[tuple[str, Callable[[int, float, str], tuple[int, int]]]] = [
        ("rolling restart (--workers 2, SIGUSR2)", rollingRestart),
        ("socket-activation restart (SIGTERM, new server)", socketActivation),
    ]
    if shutil.which("haproxy"):
        events.append(
            ("HAProxy failover (each backend, --drain-time 2)", haproxyFailover)
        )
    print("| event | attempted | greeted | lost |")
    print("| --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory(prefix="hellotcp-downtime-") as folder:
        for name, event in events:
            attempted, greeted = event(options.clients, options.seconds, folder)
            print(f"| {name} | {attempted} | {greeted} | {attempted - greeted} |")


if __name__ == "__main__":
    main()
