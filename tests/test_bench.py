"""
The benchmarks run as documented: the downtime benchmark finds nothing
lost, and a short run of the performance benchmark measures every figure.
"""

from __future__ import annotations

import json
import os
import re
import sys

from twisted.internet import reactor

from .support import CHECKOUT, TIMEOUT, CommandTestCase


class DowntimeBenchTests(CommandTestCase):
    """
    ``python bench/downtime.py``, short.
    """

    async def test_printsEveryEventNoneLost(self) -> None:
        """
        The table has a row per event (HAProxy's too, which .ci/run
        installs), each with exchanges greeted and none lost.
        """
        process = self.spawn(
            [
                sys.executable,
                os.path.join(CHECKOUT, "bench", "downtime.py"),
                "--clients",
                "2",
                "--seconds",
                "0.5",
            ]
        )
        # Each event waits for its servers: about 15 s in all here.
        status = await process.ended.addTimeout(6 * TIMEOUT, reactor)
        out, err = process.out.decode(), process.err.decode()
        self.assertEqual(status, 0, err)
        rows = re.findall(r"^\| (.+?) \| (\d+) \| (\d+) \| (\d+) \|$", out, re.M)
        self.assertEqual(
            [row[0].split(" (")[0] for row in rows],
            ["rolling restart", "socket-activation restart", "HAProxy failover"],
            out,
        )
        for name, attempted, greeted, lost in rows:
            self.assertGreater(int(greeted), 0, name)
            self.assertEqual((int(lost), attempted), (0, greeted), name)


class RunBenchTests(CommandTestCase):
    """
    ``python bench/run.py --quick``: every figure issue 16 names is measured
    and printed, in one run.
    """

    async def test_quickRun(self) -> None:
        """
        A short run prints the ratios against both Twisted baselines and
        bare asyncio, with their targets, and the size of a record: at most
        120 bytes in text and 300 in JSON (the one figure a short run can
        hold to its target: it does not depend on the machine).
        """
        out = os.path.join(self.folder, "results")
        process = self.spawn(
            [
                sys.executable,
                os.path.join(CHECKOUT, "bench", "run.py"),
                "--quick",
                "--repetitions",
                "1",
                "--plain-only",
                "--skip-idle",
                "--concurrency",
                "16",
                *("--only", "hellotcp", "--only", "hellotcp (warn)"),
                *("--only", "twisted minimal", "--only", "twisted safe-close"),
                *("--only", "asyncio minimal"),
                "--out",
                out,
            ]
        )
        status = await process.ended.addTimeout(12 * TIMEOUT, reactor)
        self.assertEqual(status, 0, process.err.decode()[-3000:])
        with open(os.path.join(out, "results.json")) as file:
            report = json.load(file)
        compared = {(r["ours"], r["baseline"], r["target"]) for r in report["ratios"]}
        self.assertLessEqual(
            {
                ("hellotcp", "hellotcp (warn)", 1.1),
                ("hellotcp", "twisted minimal", 1.4),
                ("hellotcp", "asyncio minimal", 1.2),
                ("hellotcp (warn)", "twisted safe-close", 1.15),
            },
            compared,
        )
        volume = {row["format"]: row for row in report["log_volume"]}
        self.assertEqual(set(volume), {"text", "json"})
        for format, limit in (("text", 120), ("json", 300)):
            self.assertGreater(volume[format]["records"], 0)
            self.assertLessEqual(volume[format]["max_bytes"], limit, format)
        self.assertIn("### Log volume", process.out.decode())
