"""
The downtime benchmark runs as documented and finds nothing lost.
"""

from __future__ import annotations

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
