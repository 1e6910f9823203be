# -*- test-case-name: tests.test_service -*-
"""
The signals of a server process: SIGTERM and SIGINT as a graceful stop,
SIGHUP as a reload, and none of them deadly while the interpreter exits.

Only programs take signals (``twist hellotcp`` and its workers): a
`hellotcp.service.HelloService` embedded in another application leaves
them to that application unless asked.
"""

from __future__ import annotations

import atexit
import signal
from collections.abc import Callable
from types import FrameType
from typing import cast

from twisted.internet.interfaces import IReactorCore, IReactorFromThreads


class StopSignals:
    """
    SIGTERM and SIGINT as a request to stop, handed to the reactor's loop.

    Twisted's own handlers make ``twist`` and ``twistd`` die by the signal
    (exit status 143 or 130); a requested stop is a success, so a service
    handles them itself and stops the reactor, and the process exits 0.

    :param onSignal: Called in the reactor's loop with the signal's name
        (``"SIGTERM"``).
    :param interrupt: Handle SIGINT too; without, it is ignored (a worker,
        whose parent passes Ctrl-C on as SIGTERM: the terminal's own SIGINT
        to the whole process group would otherwise count twice).
    """

    def __init__(
        self,
        reactor: IReactorCore,
        onSignal: Callable[[str], object],
        interrupt: bool = True,
    ) -> None:
        self._reactor = reactor
        self._onSignal = onSignal
        self._interrupt = interrupt

    def takeOver(self) -> None:
        """
        Handle the signals now, and again once the reactor runs (it installs
        its own handlers as it starts): one that comes before the reactor
        runs is a graceful stop as soon as it does, not death by the signal.

        Until the reactor runs they are held blocked: Python calls whichever
        handler is installed when it gets round to a signal, not the one
        installed when it came, so one arriving between the reactor's
        handlers and ours would still reach Twisted's (which makes ``twist``
        die by it).  Blocked, it waits and is delivered to ours.
        """
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        self._setHandlers()
        self._reactor.callWhenRunning(self._install)

    def _setHandlers(self) -> None:
        signal.signal(signal.SIGTERM, self.handler)
        signal.signal(
            signal.SIGINT, self.handler if self._interrupt else signal.SIG_IGN
        )
        ignoreAtExit(signal.SIGTERM, signal.SIGINT)

    def _install(self) -> None:
        self._setHandlers()
        # Held since takeOver (and, in a worker, since its parent started
        # it: see hellotcp.workers): one that came meanwhile is handled now.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})

    def handler(self, number: int, frame: FrameType | None) -> None:
        """
        The signal handler: a signal handler may run between any two
        bytecodes of the reactor, so the work is handed to its own loop.
        """
        fromThreads = cast(IReactorFromThreads, self._reactor)
        fromThreads.callFromThread(self._onSignal, signal.Signals(number).name)


_ignoredAtExit: set[signal.Signals] = set()


def ignoreAtExit(*signals: signal.Signals) -> None:
    """
    Ignore ``signals`` once the interpreter begins to exit.  Python then
    puts back the default action of every signal it handles (death), so one
    arriving after a clean stop, such as the second copy of a SIGTERM sent
    both to a worker and to its parent, would turn exit status 0 into death
    by that signal.
    """
    new = set(signals) - _ignoredAtExit
    if not new:
        return
    _ignoredAtExit.update(new)

    def ignore() -> None:
        for number in new:
            signal.signal(number, signal.SIG_IGN)

    atexit.register(ignore)


# A worker gets the SIGTERM sent to its whole process group and, a moment
# later, the copy its parent passes on: within this many seconds a second
# one is the same request, not a second one that aborts.
SAME_REQUEST = 1.0


_hungUpEarly = False


def _noteHangUp(number: int, frame: FrameType | None) -> None:
    global _hungUpEarly
    _hungUpEarly = True


def noteHangUps() -> None:
    """
    Note a SIGHUP from now until `holdHangUps` takes it over, which then
    handles it: ``twist hellotcp`` calls this before it reads its TLS files,
    so that files replaced after that first read are read again.  (Before
    it, the plugin has SIGHUP ignored: nothing is loaded yet.)  Only where
    SIGHUP has no handler of Python's, and only in the main thread.
    """
    if signal.getsignal(signal.SIGHUP) not in (signal.SIG_DFL, signal.SIG_IGN):
        return
    try:
        signal.signal(signal.SIGHUP, _noteHangUp)
    except ValueError:  # not the main thread: signals are not ours to take
        return
    ignoreAtExit(signal.SIGHUP)


def holdHangUps(
    reactor: IReactorFromThreads, onHangUp: Callable[[], object]
) -> Callable[[], None]:
    """
    Make SIGHUP safe in this process from now until it exits: each one
    calls ``onHangUp`` in the reactor's loop (at once if the reactor runs,
    else as soon as it does), and nothing else happens.

    ``twist hellotcp`` calls this when it builds its service, before it
    listens and before the reactor runs; one noted since it read its files
    (`noteHangUps`) is handled as if it came now.  A SIGHUP that a parent held back
    while it started this process (see `hellotcp.workers`) is let through
    here, and handled.  Signals that arrive while one is waiting for the
    reactor count once.  When the process exits, SIGHUP is ignored:
    otherwise Python would restore its default action (death, status 129)
    while the interpreter shuts down, after a clean stop.

    :returns: A function that restores the previous handler (for tests).
    """
    waiting = False

    def handled() -> None:
        nonlocal waiting
        waiting = False
        onHangUp()

    def onSignal(number: int, frame: FrameType | None) -> None:
        # A signal handler may run between any two bytecodes of the reactor;
        # the work is handed to the reactor's own loop.
        nonlocal waiting
        if not waiting:
            waiting = True
            reactor.callFromThread(handled)

    global _hungUpEarly
    previous = signal.signal(signal.SIGHUP, onSignal)
    ignoreAtExit(signal.SIGHUP)
    if previous is _noteHangUp and _hungUpEarly:
        _hungUpEarly = False
        onSignal(signal.SIGHUP, None)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})

    def restore() -> None:
        signal.signal(signal.SIGHUP, previous)

    return restore


def callOnSignal(
    reactor: IReactorFromThreads, number: signal.Signals, onSignal: Callable[[], object]
) -> Callable[[], None]:
    """
    From now until the process exits, each signal ``number`` calls
    ``onSignal`` in the reactor's loop (the reactor leaves this signal
    alone, unlike SIGTERM and SIGINT); one held back while this process
    started is let through, and handled.  At exit, the signal is ignored.

    :returns: A function that restores the previous handler (for tests).
    """

    def handler(signum: int, frame: FrameType | None) -> None:
        # A signal handler may run between any two bytecodes of the reactor.
        reactor.callFromThread(onSignal)

    previous = signal.signal(number, handler)
    ignoreAtExit(number)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {number})

    def restore() -> None:
        signal.signal(number, previous)

    return restore


def ignoreSignal(number: signal.Signals) -> None:
    """
    Ignore signal ``number`` in this process from now on (one held back
    while it started is dropped).
    """
    signal.signal(number, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {number})
