# -*- test-case-name: tests.test_timeouts -*-
"""
Countdowns for many connections on one reactor timer.

Every connection of a server counts down to the same few delays (the idle
timeout, the pause that ends a message, the linger after the answer, the
overall deadline).  A reactor timer per connection costs a heap insertion
and a cancellation on every exchange, a noticeable part of a greeting.  With
one delay for all, countdowns end in the order they started: a queue in
that order, watched by one timer for its head, does the same work at the
cost of a dictionary insertion and removal.

Moving a reactor timer sooner costs a new one, so the timer is never armed
further ahead than a horizon (the shortest usual delay): a countdown of at
least that length, started later, then never ends before the time the
timer is armed for.  It is cancelled when no countdown is running, so a
server with no connections has none pending.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from twisted.internet.interfaces import IDelayedCall, IReactorTime

_T = TypeVar("_T", bound=Hashable)

# A countdown due this close to now has ended (a timer set for a due time
# may fire a rounding error before it).
_EPSILON = 1e-6


class Countdowns:
    """
    A set of `Countdown` queues sharing one reactor timer, armed for the
    earliest of their heads.
    """

    def __init__(self, clock: IReactorTime, horizon: float) -> None:
        """
        :param clock: Where the timer runs.
        :param horizon: The furthest ahead the timer is armed.
        """
        self._clock = clock
        self._horizon = horizon
        self._queues: list[Countdown[object]] = []
        self._timer: IDelayedCall | None = None
        self._armedFor = 0.0
        self._running = 0

    def countdown(self, delay: float, ended: Callable[[_T], object]) -> Countdown[_T]:
        """
        A new queue of countdowns of ``delay`` seconds; ``ended`` is called
        with each item whose countdown ends.
        """
        queue: Countdown[_T] = Countdown(self, delay, ended)
        self._queues.append(queue)  # type: ignore[arg-type]
        return queue

    def _arm(self, due: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        now = self._clock.seconds()
        self._armedFor = min(due, now + self._horizon)
        self._timer = self._clock.callLater(max(self._armedFor - now, 0), self._fire)

    def _fire(self) -> None:
        self._timer = None
        now = self._clock.seconds()
        for queue in self._queues:
            queue.expire(now)
        heads = [queue.head() for queue in self._queues if queue]
        if heads and (self._timer is None or min(heads) < self._armedFor):
            self._arm(min(heads))


class Countdown(Generic[_T]):
    """
    Countdowns of one length, in the order they end.
    """

    def __init__(
        self, group: Countdowns, delay: float, ended: Callable[[_T], object]
    ) -> None:
        """
        :param group: The queues sharing this one's timer.
        :param delay: How long each countdown lasts.
        :param ended: Called with each item whose countdown ends.
        """
        self._group = group
        self._clock = group._clock
        self.delay = delay
        self._ended = ended
        self._due: OrderedDict[_T, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._due)

    def start(self, item: _T) -> None:
        """
        Start ``item``'s countdown from now (again, if it was running).
        """
        # (Countdowns' bookkeeping done here: this runs a few times for
        # every exchange, and a call costs more than the work.)
        group = self._group
        due = self._clock.seconds() + self.delay
        if self._due.pop(item, None) is None:
            group._running += 1
        self._due[item] = due
        # Arm the timer if it is the first countdown, or ends before the one
        # the timer is armed for.
        if group._timer is None or due < group._armedFor:
            group._arm(due)

    def stop(self, item: _T) -> None:
        """
        Stop ``item``'s countdown, if it is running.
        """
        if self._due.pop(item, None) is not None:
            group = self._group
            group._running -= 1
            if not group._running and group._timer is not None:
                # None left: none pending on the reactor.
                group._timer.cancel()
                group._timer = None

    def head(self) -> float:
        """
        When the first countdown ends.
        """
        return next(iter(self._due.values()))

    def expire(self, now: float) -> None:
        """
        End every countdown due by ``now``, first to last.
        """
        due = self._due
        while due:
            item, when = next(iter(due.items()))
            if when > now + _EPSILON:
                return
            del due[item]
            self._group._running -= 1
            self._ended(item)
