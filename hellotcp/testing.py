# -*- test-case-name: tests.test_testing -*-
"""
Test an application that embeds hellotcp without sockets: `MemoryEndpoint`
connects any client (`hellotcp.greet` among them) to any server factory in
memory, plain or TLS, and `MemoryEndpoint.flush` moves the bytes.

The transports behave as TCP does where an exchange can tell: they
half-close (``loseWriteConnection``), so `greet` ends its message with a
TCP half-close here as over a socket; the end of one side's data reaches
the other as ``readConnectionLost`` (a half-closeable protocol) or as
``connectionLost`` (any other); data written to a side that has closed
resets the writer; ``abortConnection`` resets both.  Time passes only on
the clock the test gives the server factory and `greet`
(`twisted.internet.task.Clock`), so timeouts are tested by advancing it::

    clock = Clock()
    endpoint = MemoryEndpoint(clock, HelloServerFactory(ServerSettings(), clock))
    answer = greet(clock, endpoint, "Hello, server!")
    endpoint.flush()
    assert self.successResultOf(answer) == b"Hello, client!"

For TLS, serve ``serveTLS(factory, certificate, privateKey, clock=clock)``
and pass ``tls=clientTLS(...)`` to `greet`: the handshake runs in memory.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    IAddress,
    IHalfCloseableProtocol,
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from zope.interface import implementer

__all__ = [
    "CLIENT_ADDRESS",
    "SERVER_ADDRESS",
    "MemoryConnection",
    "MemoryEndpoint",
    "MemoryTransport",
]

CLIENT_ADDRESS = IPv4Address("TCP", "127.0.0.1", 40000)
"""The client's address in memory, unless the test names another."""

SERVER_ADDRESS = IPv4Address("TCP", "127.0.0.1", 5000)
"""The server's address in memory, unless the test names another."""

# A flush that does not settle is a protocol writing forever (or a bug in
# a test double); it is reported, not looped on.
_MAX_ROUNDS = 10_000


class MemoryTransport(StringTransport):
    """
    One side of an in-memory TCP connection: what its protocol writes
    waits here until `MemoryConnection.flush` delivers it to the peer.

    :ivar writeClosed: Whether this side has ended its data (by
        ``loseWriteConnection`` or ``loseConnection``).
    :ivar lost: Whether this side's protocol has been told the connection
        is lost.
    """

    writeClosed = False
    lost = False
    _aborting = False
    _finSent = False
    _readClosed = False
    _unread = False

    def __init__(self, hostAddress: IAddress, peerAddress: IAddress) -> None:
        """
        :param hostAddress: What ``getHost()`` returns.
        :param peerAddress: What ``getPeer()`` returns.
        """
        super().__init__(hostAddress, peerAddress)  # type: ignore[no-untyped-call]
        self.protocol: IProtocol | None = None

    @property
    def _writeDisconnected(self) -> bool:
        # The name Twisted's own transports use for a closed writing side,
        # which hellotcp's TLS layer consults (hellotcp._twistedcompat).
        return self.writeClosed

    def write(self, data: bytes) -> None:
        """
        Queue ``data`` for the peer; nothing is queued once this side has
        ended its data, as a TCP transport drops it.
        """
        if not self.writeClosed and not self.lost:
            super().write(data)  # type: ignore[no-untyped-call]

    def loseWriteConnection(self) -> None:
        """
        End this side's data once what was written is delivered (TCP's
        ``shutdown(SHUT_WR)``); this side goes on reading.
        """
        self.writeClosed = True

    def loseConnection(self) -> None:
        """
        Close once what was written is delivered.
        """
        self.writeClosed = True
        super().loseConnection()  # type: ignore[no-untyped-call]

    def abortConnection(self) -> None:
        """
        Close now, dropping what was not delivered: the peer sees a reset.
        """
        self._aborting = True
        self.writeClosed = True
        self.disconnecting = True

    def _lose(self, reason: Failure) -> None:
        if self.lost:
            return
        self.lost = True
        self.writeClosed = True
        self.clear()  # type: ignore[no-untyped-call]
        assert self.protocol is not None
        self.protocol.connectionLost(reason)


class MemoryConnection:
    """
    A client protocol and a server protocol connected in memory.

    :ivar client: The client's protocol.
    :ivar server: The server's protocol, or `None` if the server factory
        refused the connection: the client then sees the end of the
        server's data at once, or a reset if it had sent anything, as
        from a socket accepted and closed.
    :ivar clientTransport: The client's side.
    :ivar serverTransport: The server's side.
    """

    def __init__(
        self,
        client: IProtocol,
        server: IProtocol | None,
        clientAddress: IAddress = CLIENT_ADDRESS,
        serverAddress: IAddress = SERVER_ADDRESS,
    ) -> None:
        """
        Connect ``client`` and ``server``: each is given its transport,
        the server first, as a listening port accepts before the client
        hears that it has connected.

        :param client: The client's protocol.
        :param server: The server's protocol; `None` for a refusal.
        :param clientAddress: The client's address, as both sides see it.
        :param serverAddress: The server's address, as both sides see it.
        """
        self.client = client
        self.server = server
        self.clientTransport = MemoryTransport(clientAddress, serverAddress)
        self.serverTransport = MemoryTransport(serverAddress, clientAddress)
        self.clientTransport.protocol = client
        if server is None:
            # A refused connection is accepted and closed at once: a bare
            # protocol stands for the socket the server closes.
            self.serverTransport.protocol = Protocol()
            self.serverTransport.loseConnection()
        else:
            self.serverTransport.protocol = server
            server.makeConnection(self.serverTransport)
        client.makeConnection(self.clientTransport)

    @property
    def closed(self) -> bool:
        """
        Whether both sides have been told the connection is lost.
        """
        return self.clientTransport.lost and (
            self.server is None or self.serverTransport.lost
        )

    def flush(self) -> bool:
        """
        Deliver what each side has written, and each side's end, until
        neither has anything more to deliver.

        :returns: Whether anything was delivered.
        :raises RuntimeError: If the two sides go on writing to each other
            for 10,000 rounds.
        """
        moved = False
        for _ in range(_MAX_ROUNDS):
            progress = self._step(self.clientTransport, self.serverTransport)
            progress |= self._step(self.serverTransport, self.clientTransport)
            if not progress:
                return moved
            moved = True
        raise RuntimeError(f"the connection did not settle in {_MAX_ROUNDS} rounds")

    def _step(self, side: MemoryTransport, peer: MemoryTransport) -> bool:
        """
        Deliver one round from ``side`` to ``peer``.
        """
        if side.lost:
            return False
        if side._aborting:
            side._lose(Failure(ConnectionAborted()))
            peer._lose(Failure(ConnectionLost("Connection reset by peer")))
            return True
        data: bytes = side.value()  # type: ignore[no-untyped-call]
        if data:
            side.clear()  # type: ignore[no-untyped-call]
            if peer.lost:
                # Bytes to a closed socket: the kernel answers with a reset.
                side._lose(Failure(ConnectionLost("Connection reset by peer")))
                return True
            if peer.disconnecting:
                # A closing side reads no more; closing with these bytes
                # unread, its kernel resets the connection.
                peer._unread = True
                return True
            assert peer.protocol is not None
            peer.protocol.dataReceived(data)
            return True
        if side.writeClosed and not side._finSent:
            side._finSent = True
            if side.disconnecting:
                side._lose(Failure(ConnectionDone()))
                if side._unread:
                    peer._lose(Failure(ConnectionLost("Connection reset by peer")))
                    return True
            else:
                _writeEnded(side)
            _readEnded(peer)
            return True
        if side.disconnecting and side._finSent:
            # Closed after its half-close (as a client does once the answer
            # has ended): its FIN is out already, nothing more to send.
            side._lose(Failure(ConnectionDone()))
            return True
        return False


def _readEnded(side: MemoryTransport) -> None:
    """
    The peer has ended its data: tell ``side``'s protocol as a reactor
    would, by ``readConnectionLost`` if it can half-close, or else by
    closing the connection.
    """
    if side.lost or side._readClosed:
        return
    side._readClosed = True
    halfCloseable = IHalfCloseableProtocol(side.protocol, None)
    if halfCloseable is None:
        side._lose(Failure(ConnectionDone()))
    else:
        halfCloseable.readConnectionLost()


def _writeEnded(side: MemoryTransport) -> None:
    """
    ``side``'s half-close has been delivered: a half-closeable protocol
    hears it, as from a reactor.
    """
    halfCloseable = IHalfCloseableProtocol(side.protocol, None)
    if halfCloseable is not None:
        halfCloseable.writeConnectionLost()


@implementer(IStreamClientEndpoint)
class MemoryEndpoint:
    """
    A client endpoint that connects to a server factory in memory: every
    ``connect`` makes a `MemoryConnection`, kept in `connections`.

    :ivar connections: Every connection made, oldest first.
    """

    def __init__(
        self,
        clock: Clock,
        serverFactory: IProtocolFactory,
        clientAddress: IAddress = CLIENT_ADDRESS,
        serverAddress: IAddress = SERVER_ADDRESS,
    ) -> None:
        """
        :param clock: The test's clock, the one given to the server factory
            and to `hellotcp.greet`: `flush` runs what is due on it now
            (TLS batches small writes to the next turn of the clock), and
            never moves it on.
        :param serverFactory: The server to connect to: a
            `hellotcp.HelloServerFactory`, the same served over TLS
            (`hellotcp.serveTLS`), or any factory of your own.
        :param clientAddress: The client's address, as the server sees it
            (its ``buildProtocol`` argument and ``getPeer()``).
        :param serverAddress: The server's address, as the client sees it.
        """
        self._clock = clock
        self._serverFactory = serverFactory
        self._clientAddress = clientAddress
        self._serverAddress = serverAddress
        self.connections: list[MemoryConnection] = []

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        """
        Connect a client protocol from ``protocolFactory`` to a new server
        protocol; nothing is delivered until `flush`.

        :returns: A `Deferred` that has fired with the client's protocol.
        """
        client = protocolFactory.buildProtocol(self._serverAddress)
        assert client is not None, "the client factory refused to connect"
        server = self._serverFactory.buildProtocol(self._clientAddress)
        self.connections.append(
            MemoryConnection(client, server, self._clientAddress, self._serverAddress)
        )
        return succeed(client)

    def flush(self) -> bool:
        """
        Deliver everything every connection has to deliver, including what
        one delivery makes the other side write, and run what is due on the
        clock now (without moving it on) until nothing more moves.

        :returns: Whether anything was delivered.
        :raises RuntimeError: If the connections do not settle in 10,000
            rounds.
        """
        moved = False
        for _ in range(_MAX_ROUNDS):
            self._clock.advance(0)
            progress = False
            for connection in self.connections:
                progress |= connection.flush()
            if not progress:
                return moved
            moved = True
        raise RuntimeError(f"the connections did not settle in {_MAX_ROUNDS} rounds")
