"""
The documentation's commands and examples, run: every command of the
tutorial with its output checked, and every embedding example.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from twisted.trial.unittest import SynchronousTestCase

from hellotcp._capture import CaptureUnavailable, checkCapture

from .support import TIMEOUT, classicClient, command, freePort

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")
EXAMPLES = os.path.join(DOCS, "examples")

# What the tutorial installs with is what .ci/run does in a fresh clone.
INSTALL = ["python3 -m venv .venv", ". .venv/bin/activate", "pip install ."]


def consoleCommands(path: str) -> list[tuple[str, list[str]]]:
    """
    The commands of the ``console`` blocks of a Markdown file, each with the
    output shown after it.
    """
    with open(path) as file:
        text = file.read()
    commands: list[tuple[str, list[str]]] = []
    for block in re.findall(r"```console\n(.*?)```", text, re.DOTALL):
        for line in block.splitlines():
            if line.startswith("$ "):
                commands.append((line[2:], []))
            elif commands:
                commands[-1][1].append(line)
    return commands


def normalised(lines: list[str]) -> list[str]:
    """
    C{lines} with every number written N, and runs of spaces and of dashes
    as one: timings, ports, sequence numbers and the padding that depends on
    them change from run to run.
    """
    return [
        " ".join(re.sub(r"-+", "-", re.sub(r"\d+(\.\d+)?", "N", line)).split())
        for line in lines
    ]


def packetsShape(lines: list[str]) -> list[str]:
    """
    What a ``--trace --packets`` drawing shows whatever the timing,
    normalised: the ordinary drawing up to the client's half-close, the
    segments' heading, the handshake and the message, the flags of the
    server's last segment, and the summary's wording.  The rest depends on
    a race: the classic server answers as soon as its one ``recv`` returns,
    before or after the client's FIN arrives.
    """
    blank = lines.index("")
    packets = lines[blank + 1 :]
    arrows = [line for line in packets if line.startswith("|")]
    last = [re.sub(r"^\|<-+ (\S+) .*", r"\1", a) for a in arrows if a.startswith("|<")]
    return normalised(lines[:5] + packets[:2] + arrows[:4] + last[-1:] + packets[-1:])


def canCapture() -> bool:
    """
    Whether this process may capture packets (``--packets``).
    """
    try:
        checkCapture()
    except CaptureUnavailable:
        return False
    return True


def waitForPort(port: int, process: subprocess.Popen[bytes] | None = None) -> None:
    """
    Wait until something accepts on loopback C{port}, for at most
    `TIMEOUT` seconds.
    """
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"exited with {process.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listened on {port}")


class DocTestCase(SynchronousTestCase):
    """
    Run commands in a scratch folder with the installed commands first on
    the path.
    """

    def setUp(self) -> None:
        self.folder = tempfile.mkdtemp(prefix="hellotcp-docs-")
        self.addCleanup(shutil.rmtree, self.folder, True)
        self.env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        self.env["PATH"] = f"{os.path.dirname(sys.executable)}:{self.env['PATH']}"
        self.background: list[subprocess.Popen[bytes]] = []
        self.addCleanup(self.stopBackground)

    def start(self, argv: list[str], port: int, **env: str) -> subprocess.Popen[bytes]:
        """
        Start a server and wait until C{port} accepts.
        """
        process = subprocess.Popen(
            argv,
            cwd=self.folder,
            env={**self.env, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.background.append(process)
        waitForPort(port, process)
        return process

    def stopBackground(self) -> None:
        """
        SIGTERM every background server; each must exit 0.
        """
        statuses = []
        for process in self.background:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                statuses.append(process.wait(TIMEOUT))
            except subprocess.TimeoutExpired:
                process.kill()
                statuses.append(process.wait())
        self.background = []
        self.assertEqual(statuses, [0] * len(statuses))


class TutorialTests(DocTestCase):
    """
    docs/tutorial.md, command by command.
    """

    def test_tutorial(self) -> None:
        """
        Every command prints what the tutorial shows; servers started in the
        background serve until the end and exit 0 on SIGTERM.
        """
        self.assertTrue(shutil.which("nc"), "the tutorial uses nc (netcat-openbsd)")
        commands = consoleCommands(os.path.join(DOCS, "tutorial.md"))
        self.assertEqual([c for c, _ in commands[:3]], INSTALL)
        # The tutorial runs in a clone: docs/examples is where it says.
        os.symlink(DOCS, os.path.join(self.folder, "docs"))
        capturing = canCapture()
        ran = 0
        for line, expected in commands[3:]:
            if line.endswith(" &"):
                ports = re.findall(r"(?:tcp:|tcp_server\.py )(\d+)", line) or ["5000"]
                self.start(["bash", "-c", f"exec {line[:-2]}"], int(ports[-1]))
                continue
            result = subprocess.run(
                ["bash", "-c", line],
                cwd=self.folder,
                env=self.env,
                capture_output=True,
                timeout=TIMEOUT,
            )
            output = (result.stdout + result.stderr).decode().strip().splitlines()
            if "--packets" in line and not capturing:
                # One line says why, after the ordinary drawing.
                self.assertIn("needs root or CAP_NET_RAW", output[-1])
                drawn = expected[: expected.index("")]
                self.assertEqual(normalised(output[:5]), normalised(drawn[:5]), line)
            elif "--packets" in line:
                self.assertEqual(packetsShape(output), packetsShape(expected), line)
            else:
                self.assertEqual(normalised(output), normalised(expected), line)
            ran += 1
        self.assertEqual(ran, 11)


class PerformancePageTests(SynchronousTestCase):
    """
    The performance page quotes the committed benchmark run.
    """

    def test_quotedMediansAreCommitted(self) -> None:
        """
        The medians that "Against the targets" quotes are cells of the
        committed table, and its ratio is theirs.
        """
        with open(os.path.join(DOCS, "performance.md"), encoding="utf-8") as page:
            text = page.read()
        section = text.split("## Against the targets", 1)[1].split("| target", 1)[0]
        with open(
            os.path.join(os.path.dirname(DOCS), "bench", "results", "results.md"),
            encoding="utf-8",
        ) as results:
            table = results.read()
        quoted = re.findall(r"\b(\d{2,3}\.\d)\b", section)
        self.assertEqual(len(quoted), 6)
        # The first TLS table repeats the server names: keep the plain one.
        plain = table.split("### TLS", 1)[0]
        cells: dict[str, dict[str, str]] = {}
        for server, concurrency, median in re.findall(
            r"^\| (hellotcp|twisted minimal) \| (\d+) \| (\d+\.\d) \(", plain, re.M
        ):
            cells.setdefault(server, {})[concurrency] = median
        hellotcp = [cells["hellotcp"][c] for c in ("1", "16", "128")]
        twisted = [cells["twisted minimal"][c] for c in ("1", "16", "128")]
        self.assertEqual(quoted, hellotcp + twisted)
        ratios = [float(h) / float(t) for h, t in zip(hellotcp, twisted, strict=True)]
        shown = f"{min(ratios):.2f}\u2013{max(ratios):.2f} \u00d7"
        self.assertIn(shown, " ".join(section.split()))


class ExampleTests(DocTestCase):
    """
    The embedding examples of docs/embedding.md.
    """

    def test_webAndGreeter(self) -> None:
        """
        The web site and the greeter answer side by side.
        """
        web, greeter = freePort(), freePort()
        self.start(
            [
                sys.executable,
                os.path.join(EXAMPLES, "web_and_greeter.py"),
                str(web),
                str(greeter),
            ],
            greeter,
        )
        waitForPort(web)
        with urllib.request.urlopen(
            f"http://127.0.0.1:{web}/", timeout=TIMEOUT
        ) as page:
            self.assertEqual(page.read(), b"The greeter listens beside this page.\n")
        self.assertEqual(classicClient(greeter)[0], b"Hello from beside a web site!")

    def test_tac(self) -> None:
        """
        ``twistd -ny greeter.tac`` serves both services and stops cleanly.
        """
        port, plain = freePort(), freePort()
        self.start(
            [
                command("twistd"),
                "--nodaemon",
                "--pidfile=",
                "--logfile=-",
                "-y",
                os.path.join(EXAMPLES, "greeter.tac"),
            ],
            port,
            HELLOTCP_PORT=str(port),
            HELLOTCP_PLAIN_PORT=str(plain),
        )
        waitForPort(plain)
        self.assertEqual(classicClient(port)[0], b"Hello from a .tac file!")
        self.assertEqual(classicClient(plain)[0], b"Hello, client!")

    def test_testingExample(self) -> None:
        """
        The example of docs/testing.md passes under trial, as a user runs
        it, every one of its tests.
        """
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "twisted.trial",
                os.path.join(EXAMPLES, "test_greeter.py"),
            ],
            cwd=self.folder,
            env=self.env,
            capture_output=True,
            timeout=TIMEOUT,
        )
        output = result.stdout.decode()
        self.assertEqual(result.returncode, 0, output)
        self.assertIn("PASSED (successes=3)", output)

    def test_greetOnce(self) -> None:
        """
        The client example prints the greeting.
        """
        port = freePort()
        self.start(
            [
                command("twist"),
                "hellotcp",
                "--listen",
                f"tcp:{port}:interface=127.0.0.1",
            ],
            port,
        )
        result = subprocess.run(
            [
                sys.executable,
                os.path.join(EXAMPLES, "greet_once.py"),
                f"tcp:127.0.0.1:{port}",
            ],
            cwd=self.folder,
            env=self.env,
            capture_output=True,
            timeout=TIMEOUT,
        )
        self.assertEqual((result.returncode, result.stdout), (0, b"Hello, client!\n"))

    def test_greetOnceNoServer(self) -> None:
        """
        With no server to greet, the client example says why in one line
        and exits 1, without a traceback.
        """
        result = subprocess.run(
            [
                sys.executable,
                os.path.join(EXAMPLES, "greet_once.py"),
                f"tcp:127.0.0.1:{freePort()}",
            ],
            cwd=self.folder,
            env=self.env,
            capture_output=True,
            timeout=TIMEOUT,
        )
        self.assertEqual((result.returncode, result.stdout), (1, b""))
        self.assertEqual(len(result.stderr.splitlines()), 1, result.stderr)
        self.assertIn(b"refused", result.stderr)
        self.assertNotIn(b"Traceback", result.stderr)

    def test_greetOnceBadHost(self) -> None:
        """
        A host name Twisted's resolver cannot encode (a label of 70
        characters) is one line and exit status 1 from the client example,
        not an unhandled error in a Deferred.
        """
        host = "a" * 70 + ".example"
        result = subprocess.run(
            [
                sys.executable,
                os.path.join(EXAMPLES, "greet_once.py"),
                f"tcp:{host}:5000",
            ],
            cwd=self.folder,
            env=self.env,
            capture_output=True,
            timeout=TIMEOUT,
        )
        self.assertEqual((result.returncode, result.stdout), (1, b""))
        self.assertEqual(len(result.stderr.splitlines()), 1, result.stderr)
        self.assertIn(b"is not a valid host name", result.stderr)
        self.assertNotIn(b"Unhandled error", result.stderr)
        self.assertNotIn(b"Traceback", result.stderr)
