# -*- test-case-name: tests.test_exchangelog -*-
"""
The record of every exchange, written for almost nothing.

Through `twisted.logger`, one greeting's record costs more than serving
the greeting: an event is published, its format string is flattened, a
timestamp is formatted, ~600 bytes of JSON are written and the file is
flushed, every time.  Web servers keep their per-request record apart from
the event log for this reason (twisted.web's access log caches its
timestamp once a second; nginx buffers ``access_log`` and flushes it every
second).  `ExchangeLogFile` does the same for hellotcp's exchanges, with a
shorter flush interval (under load the buffer fills long before it):

- it is an `ILogObserver`: it takes the same events `twisted.logger`
  would carry, and writes them in the format of ``twist``'s own file
  observers (``--log-format``), text or JSON;
- the text timestamp is formatted once per second;
- JSON records leave out what Twisted derives again when it reads an
  event (``log_flattened``, ``log_logger``, ``log_source``) and the format
  string: every field is there, in about 300 bytes instead of 600;
- whole lines are buffered and written together, at most `FLUSH_INTERVAL`
  seconds after the first of them, in writes of at most `CHUNK_BYTES`
  (a pipe never interleaves another process's bytes into a write of that
  size, and a file opened to append never does), so that records, workers'
  records and ``twist``'s own events interleave by whole lines only.

``twist hellotcp`` writes greetings and health checks this way, to the file
``twist --log-file`` names; the factory hands it each record's fields
(`IExchangeLog.exchange`), so that no event is even built.  Failures go
through `twisted.logger` as ever, so that they are summarised and can be
observed.  An application that embeds
`hellotcp.protocol.HelloServerFactory` gets `twisted.logger` events unless
it passes an `ExchangeLogFile` as the factory's ``exchangeLog``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from json.encoder import encode_basestring_ascii as _string
from typing import Literal

from attrs import frozen
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import (
    ILogObserver,
    LogEvent,
    Logger,
    LogLevel,
    eventAsJSON,
    formatEvent,
    formatTime,
)
from zope.interface import Interface, implementer

__all__ = [
    "CHUNK_BYTES",
    "FLUSH_INTERVAL",
    "ExchangeLogFile",
    "FlushFirst",
    "IExchangeLog",
    "LogFormat",
]

FLUSH_INTERVAL = 0.25
"""Seconds a record may wait in the buffer: what ``tail -f`` lags behind by
at most, and what a crash (not a graceful stop) can lose."""

CHUNK_BYTES = 4096
"""The largest write, at line boundaries: ``PIPE_BUF`` on Linux, the size
up to which a write to a pipe is never interleaved with another's."""

LogFormat = Literal["text", "json"]
"""The formats of ``twist --log-format``."""

# What Twisted's JSON observer writes that Twisted derives again when it
# reads an event back, or that only renders the text; and the level, which
# is written first, in the form that `eventsFromJSONLogFile` makes a
# `LogLevel` of again.
_NOT_WRITTEN = frozenset(
    {"log_flattened", "log_format", "log_level", "log_logger", "log_source"}
)
_LEVEL_JSON = {
    level: json.dumps(
        json.loads(eventAsJSON({"log_level": level}))["log_level"],
        separators=(",", ":"),
    )
    for level in LogLevel.iterconstants()
}

_NAMESPACE = "hellotcp.protocol"

# The JSON record of an exchange, keys in the order of the event the
# factory builds otherwise (see ExchangeLogFile.exchange).
_EXCHANGE_JSON = (
    '\x1e{"log_level":%s,"peer":%s,"outcome":%s,"message":%s,"bytes":%d,'
    '"duration":%s,"client":%s,"reason":%s,"log_time":%s,'
    f'"log_namespace":"{_NAMESPACE}"%s}}\n'
)

_log = Logger()

# Patched by tests, to see each write.
_write: Callable[[int, memoryview], int] = os.write


class IExchangeLog(Interface):
    """
    A log that takes the record of an exchange as its fields, without an
    event being built for it (`ExchangeLogFile` is one).
    """

    def exchange(
        level: LogLevel,
        format: str,
        when: float,
        peer: str,
        outcome: str,
        message: str,
        size: int,
        duration: float,
        client: str | None,
        reason: str | None,
    ) -> None:
        """
        Record one exchange: ``format`` (as `twisted.logger` formats) and
        ``level`` as for a log event at time ``when``, with the fields
        ``peer``, ``outcome``, ``message``, ``bytes`` (``size``),
        ``duration``, ``client`` and ``reason``.
        """


@implementer(ILogObserver, IExchangeLog)
class ExchangeLogFile:
    """
    A log observer that writes events to a file descriptor as ``twist``'s
    file observer would (text or JSON), buffered.

    Call `flush` when the program stops: ``twist hellotcp`` does after the
    reactor has stopped, and before any other event is written to the same
    log, so that the file stays in order.

    :param descriptor: Where to write (``twist``'s log file; a worker's
        standard output, which is its parent's log file).
    :param format: ``"text"`` or ``"json"``, as ``twist --log-format``.
    :param clock: Schedules the flush.
    :param worker: In a worker of ``--workers``, its number: put in every
        record as ``twist hellotcp`` puts it in every other event (a
        ``worker`` field; ``worker-N`` in front of the text's system).
    :param flushInterval: The most seconds a record waits in the buffer.
    """

    def __init__(
        self,
        descriptor: int,
        format: LogFormat,
        clock: IReactorTime,
        worker: int | None = None,
        flushInterval: float = FLUSH_INTERVAL,
    ) -> None:
        if format not in ("text", "json"):
            raise ValueError(f"no such log format: {format!r} (text or json)")
        self._descriptor = descriptor
        self._isJSON = format == "json"
        self._render = self._json if self._isJSON else self._text
        self._clock = clock
        self._worker = worker
        self._flushInterval = flushInterval
        self._lines: list[str] = []
        self._size = 0
        self._timer: IDelayedCall | None = None
        self._second: int | None = None
        self._stamp = ""
        self._systems: dict[tuple[object, object], str] = {}
        self._plans: dict[tuple[str, ...], _Plan] = {}
        self._failing = False

    def __call__(self, event: LogEvent) -> None:
        """
        Buffer one event as a line; write the buffer first if the line would
        not fit in the same write.
        """
        self._append(self._render(event))

    def exchange(
        self,
        level: LogLevel,
        format: str,
        when: float,
        peer: str,
        outcome: str,
        message: str,
        size: int,
        duration: float,
        client: str | None,
        reason: str | None,
    ) -> None:
        """
        Buffer the record of one exchange: the line this observer writes
        for the event `hellotcp.protocol.HelloServerFactory` would otherwise
        build (namespace ``hellotcp.protocol``, the fields as named in
        `IExchangeLog`), made without building the event: this runs for
        every greeting.
        """
        if self._isJSON:
            line = _EXCHANGE_JSON % (
                _LEVEL_JSON[level],
                _string(peer),
                _string(outcome),
                _string(message),
                size,
                repr(duration),
                "null" if client is None else _string(client),
                "null" if reason is None else _string(reason),
                repr(when),
                "" if self._worker is None else f',"worker":{self._worker}',
            )
        else:
            text = format.format(
                peer=peer,
                outcome=outcome,
                message=message,
                client=client,
                reason=reason,
            )
            if "\n" in text:  # (escaped fields have none; a format might)
                text = text.replace("\n", "\n\t")
            system = self._systemOf(_NAMESPACE, level)
            line = f"{self._stampOf(when)} [{system}] {text}\n"
        self._append(line)

    def _append(self, line: str) -> None:
        if self._size + len(line) > CHUNK_BYTES:
            self.flush()
        self._lines.append(line)
        self._size += len(line)
        if self._timer is None:
            self._timer = self._clock.callLater(self._flushInterval, self._due)

    def flush(self) -> None:
        """
        Write every buffered line now.  A write that fails loses what was
        buffered, with one warning through `twisted.logger` until writes
        succeed again; it never raises.
        """
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
        if not self._lines:
            return
        data = "".join(self._lines).encode("utf-8", "backslashreplace")
        self._lines.clear()
        self._size = 0
        try:
            _writeLines(self._descriptor, data)
        except OSError as error:
            if not self._failing:
                self._failing = True
                _log.warn(
                    "the exchange log cannot be written ({error}): "
                    "records are lost until it can",
                    error=error.strerror or str(error),
                )
            return
        self._failing = False

    def _due(self) -> None:
        self._timer = None
        self.flush()

    def _stampOf(self, when: float) -> str:
        # Formatted once a second, as twisted.web's access log does.
        second = int(when)
        if second != self._second:
            self._stamp = formatTime(second)
            self._second = second
        return self._stamp

    def _systemOf(self, namespace: object, level: object) -> str:
        system = self._systems.get((namespace, level))
        if system is None:
            system = self._systems[namespace, level] = self._system(namespace, level)
        return system

    def _text(self, event: LogEvent) -> str:
        when = event.get("log_time")
        stamp = "-" if when is None else self._stampOf(when)
        system = event.get("log_system")
        if system is None:
            system = self._systemOf(event.get("log_namespace"), event.get("log_level"))
        elif self._worker is not None:
            system = f"worker-{self._worker} {system}"
        try:
            text = event["log_format"].format_map(event)
        except Exception:  # not one of ours: as Twisted renders it
            text = formatEvent(event)
        if "\n" in text:  # as Twisted's text observer: continued lines
            text = text.replace("\n", "\n\t")
        return f"{stamp} [{system}] {text}\n"

    def _system(self, namespace: object, level: object) -> str:
        name = getattr(level, "name", "-")
        system = f"{namespace or '-'}#{name}"
        if self._worker is not None:
            system = f"worker-{self._worker} {system}"
        return system

    def _json(self, event: LogEvent) -> str:
        # As json.dumps would write it (ASCII, compact), but faster: a
        # template per set of keys (a server's records all have the same),
        # filled with each value encoded by its type.
        keys = tuple(event)
        plan = self._plans.get(keys)
        if plan is None:
            plan = self._plans[keys] = _plan(keys, self._worker)
        template, written, comma = plan
        level = _LEVEL_JSON.get(event.get("log_level"))
        # (inline rather than a function per value: calls cost more here)
        return template % (
            "" if level is None else '"log_level":' + level + comma,
            *[
                _string(value)
                if (kind := type(value)) is str
                else "null"
                if value is None
                else repr(value)
                if kind is int or (kind is float and math.isfinite(value))
                else json.dumps(value, default=str)
                for value in map(event.__getitem__, written)
            ],
        )


_Plan = tuple[str, list[str], str]


def _plan(keys: tuple[str, ...], worker: int | None) -> _Plan:
    """
    The template of the JSON records of events with ``keys``, the keys whose
    values fill it after the level (which comes first), and what follows
    the level (a comma, unless nothing does).
    """
    written = [key for key in keys if key not in _NOT_WRITTEN]
    parts = [_string(str(key)).replace("%", "%%") + ":%s" for key in written]
    if worker is not None and "worker" not in keys:
        parts.append(f'"worker":{worker}')
    return "\x1e{%s" + ",".join(parts) + "}\n", written, "," if parts else ""


def _writeLines(descriptor: int, data: bytes) -> None:
    """
    Write ``data`` (whole lines) to ``descriptor`` in writes of at most
    `CHUNK_BYTES` that end at a line's end (a longer line is written whole,
    in as few writes as the kernel takes).
    """
    start, total = 0, len(data)
    while start < total:
        end = total
        if end - start > CHUNK_BYTES:
            cut = data.rfind(b"\n", start, start + CHUNK_BYTES)
            if cut < 0:
                cut = data.find(b"\n", start)
            end = cut + 1 if cut >= 0 else total
        chunk = memoryview(data)[start:end]
        while chunk:
            chunk = chunk[_write(descriptor, chunk) :]
        start = end


@implementer(ILogObserver)
@frozen
class FlushFirst:
    """
    A log observer that writes out an `ExchangeLogFile`'s buffer whenever
    any other event is logged.  Added to a publisher ahead of the observer
    that writes the same file (``twist``'s), it keeps that file in time
    order: no event is written before an exchange that came earlier.

    :ivar exchangeLog: The buffer to write out.
    """

    exchangeLog: ExchangeLogFile

    def __call__(self, event: LogEvent) -> None:
        """
        Flush, whatever the event.
        """
        self.exchangeLog.flush()
