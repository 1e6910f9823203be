"""
Who is connected: counts in all and per peer address, and which connections
have sent nothing yet, oldest first, so that a full server can make room by
closing the longest-silent one instead of turning a newcomer away.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

_C = TypeVar("_C", bound=Hashable)


class ConnectionTable(Generic[_C]):
    """
    The open connections of one server.

    Every operation is O(1) but `oldestSilent` for one peer, which walks the
    silent connections in order until it finds one of that peer (only when a
    peer is at its limit).
    """

    def __init__(self) -> None:
        self._peers: dict[_C, str | None] = {}
        self._perPeer: dict[str, int] = {}
        # Dicts keep insertion order: the first key is the oldest silence.
        self._silentSince: dict[_C, float] = {}

    def __len__(self) -> int:
        return len(self._peers)

    def __iter__(self) -> Iterator[_C]:
        return iter(list(self._peers))

    def count(self, peer: str) -> int:
        """
        How many connections ``peer`` has open.
        """
        return self._perPeer.get(peer, 0)

    def add(self, connection: _C, peer: str | None, now: float) -> None:
        """
        Count a new connection, silent until `spoke`.

        :param peer: Its address, or `None` where it has none to limit
            (UNIX sockets).
        """
        self._peers[connection] = peer
        if peer is not None:
            self._perPeer[peer] = self._perPeer.get(peer, 0) + 1
        self._silentSince[connection] = now

    def repeer(self, connection: _C, peer: str | None) -> None:
        """
        Count ``connection`` for ``peer`` from now on (behind a PROXY
        endpoint the real client is known only after the header).
        """
        self._uncount(self._peers[connection])
        self._peers[connection] = peer
        if peer is not None:
            self._perPeer[peer] = self._perPeer.get(peer, 0) + 1

    def _uncount(self, peer: str | None) -> None:
        if peer is not None:
            left = self._perPeer[peer] - 1
            if left:
                self._perPeer[peer] = left
            else:
                del self._perPeer[peer]

    def spoke(self, connection: _C) -> None:
        """
        The connection sent its first bytes: it can no longer be evicted.
        """
        self._silentSince.pop(connection, None)

    def remove(self, connection: _C) -> None:
        """
        Forget a connection; one forgotten already is left alone.
        """
        if connection not in self._peers:
            return
        self._uncount(self._peers.pop(connection))
        self._silentSince.pop(connection, None)

    def oldestSilent(self, before: float, peer: str | None = None) -> _C | None:
        """
        The connection silent the longest, if it has been silent since
        before ``before``; only those of ``peer`` if given.
        """
        for connection, since in self._silentSince.items():
            if since > before:
                return None
            if peer is None or self._peers[connection] == peer:
                return connection
        return None
