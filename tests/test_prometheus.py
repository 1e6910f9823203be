"""
contrib/prometheus against the real Prometheus (Debian's ``prometheus``
package, which .ci/run installs): promtool accepts the configuration and
the rules and passes their tests, and Prometheus scrapes the parent of
``twist hellotcp --workers 2 --metrics ...`` with the shipped scrape
configuration.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.parse
import urllib.request

from twisted.internet import reactor
from twisted.internet.task import deferLater

from .support import (
    CHECKOUT,
    TIMEOUT,
    CommandTestCase,
    classicClient,
    command,
    freePort,
    installed,
    inThread,
)

CONTRIB = os.path.join(CHECKOUT, "contrib", "prometheus")


def tool(name: str) -> str:
    """
    The path of a Prometheus program, which must be installed.
    """
    return installed(name, "apt-get install prometheus")


def query(port: int, expression: str) -> list[dict[str, object]]:
    """
    The result of an instant query of the Prometheus on ``port``.
    """
    address = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode(
        {"query": expression}
    )
    with urllib.request.urlopen(address, timeout=TIMEOUT) as answer:
        body = json.load(answer)
    assert body["status"] == "success", body
    result: list[dict[str, object]] = body["data"]["result"]
    return result


class PromtoolTests(CommandTestCase):
    """
    The shipped files, as promtool reads them.
    """

    async def test_rulesAndConfig(self) -> None:
        """
        ``promtool check config`` (which checks the rules it names),
        ``check rules`` and ``test rules`` all pass; the tests cover every
        alert of the rules.
        """
        promtool = tool("promtool")
        for argv in (
            [promtool, "check", "config", os.path.join(CONTRIB, "prometheus.yml")],
            [promtool, "check", "rules", os.path.join(CONTRIB, "hellotcp.rules.yml")],
            [
                promtool,
                "test",
                "rules",
                os.path.join(CONTRIB, "hellotcp.rules.test.yml"),
            ],
        ):
            status, out, err = await self.runCommand(argv)
            self.assertEqual(status, 0, out + err)
            self.assertIn("SUCCESS", out + err)
        with open(os.path.join(CONTRIB, "hellotcp.rules.yml")) as rules:
            alerts = [
                line.split(":", 1)[1].strip()
                for line in rules
                if line.strip().startswith("- alert:")
            ]
        with open(os.path.join(CONTRIB, "hellotcp.rules.test.yml")) as tests:
            tested = tests.read()
        self.assertEqual(len(alerts), 5)
        for alert in alerts:
            self.assertIn(f"alertname: {alert}\n", tested)


class ScrapeTests(CommandTestCase):
    """
    Prometheus scrapes a hellotcp with workers.
    """

    async def test_scrapesParentAndWorkers(self) -> None:
        """
        With the shipped scrape configuration pointed at the parent's
        ``/metrics``, Prometheus's HTTP API returns the parent's series
        (two workers running, two started) and the workers' summed
        exchanges.
        """
        prometheus = tool("prometheus")
        port, metricsPort, apiPort = freePort(), freePort(), freePort()
        await self.startServer(
            [
                command("twist"),
                "hellotcp",
                "--listen",
                f"tcp:{port}:interface=127.0.0.1",
                "--workers",
                "2",
                "--metrics",
                f"tcp:{metricsPort}:interface=127.0.0.1",
            ],
            port,
        )
        for _ in range(3):
            self.assertEqual(
                (await inThread(classicClient, port))[0], b"Hello, client!"
            )
        with open(os.path.join(CONTRIB, "prometheus.yml")) as shipped:
            config = shipped.read()
        self.assertIn('"localhost:9100"', config)
        config = config.replace('"localhost:9100"', f'"127.0.0.1:{metricsPort}"')
        config = config.replace("scrape_interval: 15s", "scrape_interval: 1s")
        for name in ("hellotcp.rules.yml",):
            shutil.copy(os.path.join(CONTRIB, name), self.folder)
        path = os.path.join(self.folder, "prometheus.yml")
        with open(path, "w") as written:
            written.write(config)
        server = self.spawn(
            [
                prometheus,
                f"--config.file={path}",
                f"--storage.tsdb.path={os.path.join(self.folder, 'data')}",
                f"--web.listen-address=127.0.0.1:{apiPort}",
            ]
        )
        clock = reactor
        deadline = clock.seconds() + 6 * TIMEOUT
        expected = {
            "hellotcp_workers_running": 2.0,
            'hellotcp_worker_starts_total{reason="start"}': 2.0,
            'sum(hellotcp_exchanges_total{outcome="greeted"}) >= 3': None,
            'up{job="hellotcp"}': 1.0,
        }
        seen: dict[str, object] = {}
        while len(seen) < len(expected):
            self.assertFalse(server.ended.called, server.err.decode()[-2000:])
            self.assertLess(clock.seconds(), deadline, f"only {seen} after 60 s")
            for expression, value in expected.items():
                try:
                    result = await inThread(query, apiPort, expression)
                except OSError:
                    break  # not serving its API yet
                if result and (
                    value is None or float(result[0]["value"][1]) == value  # type: ignore[index]
                ):
                    seen[expression] = result
            await deferLater(clock, 0.5)
        server.transport.signalProcess("TERM")  # type: ignore[union-attr]
        self.assertEqual(await server.ended.addTimeout(TIMEOUT, reactor), 0)
