# -*- test-case-name: tests.test_service -*-
"""
The open-file limit of a server process: each connection holds a
descriptor, so the limit is raised to fit the connection limit, or the
connection limit lowered to fit what the hard limit allows.
"""

from __future__ import annotations

import resource

from attrs import evolve
from twisted.logger import Logger

from .protocol import ServerSettings

_log = Logger()


RESERVED_DESCRIPTORS = 64
"""Descriptors a server keeps for its own use beyond its listeners: log
files, TLS files, the reactor's own (its poller, wakers, the one Twisted
reserves for recovering from EMFILE) and a worker parent's pipes."""


def raiseFileLimit(needed: int) -> int:
    """
    Raise the soft limit on open files towards ``needed``, as far as the hard
    limit allows: each connection holds a descriptor.

    :returns: The soft limit now in force.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        soft = wanted
    return soft


def fitFileLimit(
    settings: ServerSettings, own: int, log: Logger = _log
) -> ServerSettings:
    """
    Raise the open-file limit to fit ``settings.maxConnections`` and ``own``
    descriptors for the server's own use; where the hard limit does not
    allow it, lower the connection limit to fit instead, so that running out
    of descriptors (EMFILE) is a refusal like any other.

    :param log: Where the warning goes when the limits are lowered.
    :returns: ``settings``, or a copy with the limits lowered.
    """
    needed = settings.maxConnections + own
    available = raiseFileLimit(needed)
    if available >= needed:
        return settings
    usable = max(available - own, 1)
    log.warn(
        "The open-file limit ({available}) is below --max-connections "
        "({configured}) plus {reserved} for the server itself (listeners, "
        "metrics, files): serving at most {usable} connections at once.",
        available=available,
        configured=settings.maxConnections,
        reserved=own,
        usable=usable,
    )
    return evolve(
        settings,
        maxConnections=usable,
        maxConnectionsPerPeer=min(settings.maxConnectionsPerPeer, usable),
    )
