# -*- test-case-name: tests.test_systemd -*-
"""
systemd's service notifications (``sd_notify(3)``), for ``Type=notify``:
``READY=1`` once the server answers, ``RELOADING=1`` and ``READY=1``
around a reload (SIGHUP), ``STOPPING=1`` when a stop begins.

Only the process systemd started speaks (``NotifyAccess=main``): workers
are started without ``NOTIFY_SOCKET``, and the parent speaks for them.
Without ``NOTIFY_SOCKET`` (not under systemd), nothing is sent.
"""

from __future__ import annotations

import os
import socket
import time

NOTIFY_VARIABLE = "NOTIFY_SOCKET"
"""The environment variable in which systemd names its notification socket."""


def notify(*states: str) -> bool:
    """
    Send ``states`` (``"READY=1"``, ...) to systemd, if it listens.

    :returns: Whether they were sent.
    """
    address = os.environ.get(NOTIFY_VARIABLE)
    if not address or address[0] not in "/@":
        return False
    if address[0] == "@":  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto("\n".join(states).encode(), address)
    except OSError:  # systemd went away: nothing to tell
        return False
    return True


def reloading() -> bool:
    """
    Tell systemd that a reload begins (``READY=1`` ends it).
    """
    return notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
