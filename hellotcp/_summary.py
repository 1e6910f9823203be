"""
Keep log volume bounded when the same failure repeats: the first few of a
kind in each interval are logged one by one, the rest are counted and
summarised in one line when the interval ends.

A flood of scanners, idle connections or broken TLS handshakes then costs a
few lines every ten seconds instead of a line per connection.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger, LogLevel


class SummarizingLog:
    """
    Emit events of each kind (a key such as ``"timeout"``) one by one up to
    ``burst`` times per ``interval`` seconds; count the rest, and log one
    summary per kind when the interval ends.

    :ivar suppressed: Events counted but not logged in this interval, by kind.
    """

    def __init__(
        self,
        log: Logger,
        clock: IReactorTime,
        burst: int = 10,
        interval: float = 10.0,
    ) -> None:
        self._log = log
        self._clock = clock
        self._burst = burst
        self._interval = interval
        self._windowStart = -interval
        self._emitted: dict[str, int] = {}
        self.suppressed: dict[str, int] = {}
        self._flushCall: IDelayedCall | None = None

    def emit(self, kind: str, level: LogLevel, format: str, **fields: Any) -> None:
        """
        Log an event of kind ``kind``, unless this interval has had ``burst``
        of them already, in which case count it.
        """
        now = self._clock.seconds()
        if now - self._windowStart >= self._interval:
            self.flush()
            self._windowStart = now
        emitted = self._emitted.get(kind, 0)
        if emitted < self._burst:
            self._emitted[kind] = emitted + 1
            self._log.emit(level, format, **fields)
            return
        self.suppressed[kind] = self.suppressed.get(kind, 0) + 1
        if self._flushCall is None:
            # A timer only while something waits to be summarised, so a
            # quiet server has none.
            delay = max(0.0, self._windowStart + self._interval - now)
            self._flushCall = self._clock.callLater(delay, self.flush)

    def flush(self) -> None:
        """
        Log the summaries of this interval now and start a new one.
        """
        if self._flushCall is not None:
            if self._flushCall.active():
                self._flushCall.cancel()
            self._flushCall = None
        for kind, count in self.suppressed.items():
            self._log.warn(
                "{count} more {kind} events in the last {interval} s, "
                "not logged one by one",
                count=count,
                kind=kind,
                interval=self._interval,
                outcome="summary",
            )
        self.suppressed = {}
        self._emitted = {}
        self._windowStart = self._clock.seconds()
