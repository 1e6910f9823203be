"""
Tests for `hellotcp._timeouts`: many countdowns on one reactor timer.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from hellotcp._timeouts import Countdown, Countdowns


class CountdownTests(SynchronousTestCase):
    """
    Countdowns end at their due times, in order, on one timer.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.ended: list[tuple[str, float]] = []
        self.group = Countdowns(self.clock, horizon=2.0)

        def record(name: str) -> None:
            self.ended.append((name, self.clock.seconds()))

        self.long = self.group.countdown(10.0, record)
        self.short = self.group.countdown(0.5, record)

    def test_endInOrder(self) -> None:
        """
        Each countdown ends exactly its delay after it started, whatever
        the other queue holds.
        """
        self.long.start("a")
        self.clock.advance(1)
        self.long.start("b")
        self.short.start("c")
        self.clock.pump([0.25] * 60)
        self.assertEqual(self.ended, [("c", 1.5), ("a", 10.0), ("b", 11.0)])

    def test_oneTimer(self) -> None:
        """
        A thousand countdowns keep one reactor timer; none is left once
        they have all been stopped.
        """
        for n in range(1000):
            self.long.start(str(n))
            self.clock.advance(0.001)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        for n in range(1000):
            self.long.stop(str(n))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(20)
        self.assertEqual(self.ended, [])

    def test_restart(self) -> None:
        """
        Starting a running countdown again starts it from now.
        """
        self.long.start("a")
        self.long.start("b")
        self.clock.advance(5)
        self.long.start("a")
        self.clock.pump([1] * 16)
        self.assertEqual(self.ended, [("b", 10.0), ("a", 15.0)])

    def test_horizon(self) -> None:
        """
        The timer is never armed further ahead than the horizon, so a
        countdown at least that long, started later, keeps the same timer;
        a shorter one arms it sooner.
        """
        self.long.start("a")
        [timer] = self.clock.getDelayedCalls()
        self.assertEqual(timer.getTime(), 2.0)
        self.clock.advance(1)
        self.long.start("b")
        self.assertEqual(self.clock.getDelayedCalls(), [timer])
        self.short.start("c")
        [sooner] = self.clock.getDelayedCalls()
        self.assertEqual(sooner.getTime(), 1.5)

    def test_startedWhileEnding(self) -> None:
        """
        A countdown started by another's end (a pause that ends a message
        starts the linger) runs as any other.
        """
        self.short.start("c")
        group = self.group
        followUp: Countdown[str] = group.countdown(
            1.0, lambda name: self.ended.append((name, -1))
        )

        def chain(name: str) -> None:
            followUp.start(name + "!")
            self.ended.append((name, 0))

        chained = group.countdown(0.25, chain)
        chained.start("x")
        self.clock.pump([0.05] * 40)
        self.assertEqual([name for name, _ in self.ended], ["x", "c", "x!"])

    def test_roundingError(self) -> None:
        """
        A timer that fires a rounding error before a countdown's due time
        ends it, rather than arming itself again for nothing.
        """
        self.clock.advance(1_796_347_837.123)
        self.short.start("c")
        self.clock.advance(0.5 - 1e-9)
        self.assertEqual([name for name, _ in self.ended], ["c"])
        self.assertEqual(self.clock.getDelayedCalls(), [])
