"""
Integration tests on real loopback sockets: hellotcp against blocking-socket
peers, and against itself at scale.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, DeferredList, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import IListeningPort, IReactorTCP, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from hellotcp import HelloServerFactory, ServerSettings, greet

from .support import TIMEOUT, classicClient, connect, inThread, readToEnd


class HeldClient(Protocol):
    """
    A client that sends only when told, and collects the answer.

    :ivar answer: Fires with everything received once the server closes.
    """

    def __init__(self) -> None:
        self.received = b""
        self.answer: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        """
        Keep the answer.
        """
        self.received += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Deliver the answer.
        """
        self.answer.callback(self.received)


class LoopbackServerTests(TestCase):
    """
    `HelloServerFactory` on a real loopback port.
    """

    def startServer(self, settings: ServerSettings = ServerSettings()) -> int:
        """
        Listen on an ephemeral loopback port for the length of the test.
        """
        self.factory = HelloServerFactory(settings)
        # Twisted's stubs want a ServerFactory of a protocol typed loosely.
        port: IListeningPort = reactor.listenTCP(0, self.factory, 1024, "127.0.0.1")  # type: ignore[arg-type]
        self.addCleanup(port.stopListening)
        address = port.getHost()
        assert isinstance(address, IPv4Address)
        return address.port

    async def test_classicClient(self) -> None:
        """
        The classic client (no terminator, no half-close, one ``recv``)
        receives exactly the greeting within 100 ms.
        """
        port = self.startServer()
        answer, seconds = await inThread(classicClient, port)
        self.assertEqual(answer, b"Hello, client!")
        self.assertLess(seconds, 0.1)

    async def test_lineThenEOF(self) -> None:
        """
        A client sending a line and reading to EOF gets the greeting, then
        EOF.
        """
        port = self.startServer()

        def client() -> bytes:
            with connect(port) as sock:
                sock.sendall(b"Hello, server!\n")
                return readToEnd(sock)

        self.assertEqual(await inThread(client), b"Hello, client!")

    async def test_trickle(self) -> None:
        """
        A message written a byte at a time, a few ms apart, then a line
        feed, is answered once.
        """
        port = self.startServer()

        def client() -> bytes:
            with connect(port) as sock:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                for byte in b"Hello, server!\n":
                    sock.sendall(bytes([byte]))
                    time.sleep(0.005)
                return readToEnd(sock)

        self.assertEqual(await inThread(client), b"Hello, client!")

    async def test_halfClose(self) -> None:
        """
        A client that sends and shuts down its writing side is greeted.
        """
        port = self.startServer()

        def client() -> bytes:
            with connect(port) as sock:
                sock.sendall(b"Hello, server!")
                sock.shutdown(socket.SHUT_WR)
                return readToEnd(sock)

        self.assertEqual(await inThread(client), b"Hello, client!")

    async def test_keepsSending(self) -> None:
        """
        A client that goes on sending after its message still reads the
        whole greeting: the server does not reset a connection that holds
        unread bytes.
        """
        port = self.startServer()

        def client() -> bytes:
            with connect(port) as sock:
                sock.sendall(b"Hello, server!\n")
                received = b""
                deadline = time.monotonic() + 0.5
                sock.settimeout(0.01)
                while time.monotonic() < deadline:
                    try:
                        sock.send(b"x" * 4096)
                    except OSError:
                        break
                    try:
                        chunk = sock.recv(1024)
                    except TimeoutError:
                        continue
                    if not chunk:
                        break
                    received += chunk
                return received

        self.assertEqual(await inThread(client), b"Hello, client!")

    async def test_tooLongThenOthersServed(self) -> None:
        """
        A message far beyond the maximum is cut, answered, and the server
        goes on serving the next client.
        """
        port = self.startServer(ServerSettings(maxMessageBytes=1024))

        def client() -> bytes:
            with connect(port) as sock:
                sock.sendall(b"A" * 100_000 + b"\n")
                sock.shutdown(socket.SHUT_WR)
                return readToEnd(sock)

        self.assertEqual(await inThread(client), b"Hello, client!")
        self.assertEqual((await inThread(classicClient, port))[0], b"Hello, client!")

    async def test_idleClosed(self) -> None:
        """
        A client that sends nothing is closed by the server after the
        timeout, with no greeting.
        """
        port = self.startServer(ServerSettings(timeout=0.2))

        def client() -> tuple[bytes, float]:
            started = time.monotonic()
            with connect(port) as sock:
                return readToEnd(sock), time.monotonic() - started

        received, seconds = await inThread(client)
        self.assertEqual(received, b"")
        self.assertGreaterEqual(seconds, 0.15)
        self.assertLess(seconds, 5)

    async def test_binary(self) -> None:
        """
        Random binary bytes are answered like any message.
        """
        port = self.startServer()

        def client() -> bytes:
            with connect(port) as sock:
                sock.sendall(bytes(range(256))[11:] + b"\x00\xff")
                sock.shutdown(socket.SHUT_WR)
                return readToEnd(sock)

        self.assertEqual(await inThread(client), b"Hello, client!")

    async def test_resetMidMessage(self) -> None:
        """
        A client that resets the connection mid-message costs the server
        nothing: its connection leaves the table, and the next client is
        served.
        """
        port = self.startServer()

        def client() -> None:
            sock = connect(port)
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            sock.sendall(b"Hel")
            sock.close()

        await inThread(client)
        await self.waitFor(lambda: len(self.factory.connections) == 0)
        self.assertEqual((await inThread(classicClient, port))[0], b"Hello, client!")
        await self.waitFor(lambda: len(self.factory.connections) == 0)

    async def test_maxConnections(self) -> None:
        """
        Beyond ``--max-connections``, a new connection is closed at once
        without an answer; the open ones are still served.
        """
        port = self.startServer(ServerSettings(maxConnections=2))
        holders = [await inThread(connect, port) for _ in range(2)]
        for sock in holders:
            self.addCleanup(sock.close)
        await self.waitFor(lambda: len(self.factory.connections) == 2)

        def refused() -> bytes:
            with connect(port) as sock:
                try:
                    return readToEnd(sock)
                except ConnectionResetError:
                    return b""

        self.assertEqual(await inThread(refused), b"")
        holders[0].sendall(b"Hello\n")
        self.assertEqual(await inThread(readToEnd, holders[0]), b"Hello, client!")

    async def waitFor(self, condition: Callable[[], bool]) -> None:
        """
        Let the reactor run until ``condition`` holds, for at most
        `TIMEOUT` seconds.
        """
        clock: IReactorTime = reactor
        deadline = clock.seconds() + TIMEOUT
        while not condition():
            self.assertLess(clock.seconds(), deadline, "condition never held")
            pause: Deferred[None] = Deferred()
            clock.callLater(0.01, pause.callback, None)
            await pause

    async def test_thousandConcurrentClients(self) -> None:
        """
        With the default settings, 1,000 clients from one address connected
        at the same time are all answered.
        """
        port = self.startServer()
        tcp: IReactorTCP = reactor
        endpoint = TCP4ClientEndpoint(tcp, "127.0.0.1", port, timeout=TIMEOUT)
        protocols = [HeldClient() for _ in range(1000)]
        # Connect all of them first, so that all 1,000 are open at once.
        connected = await DeferredList(
            [connectProtocol(endpoint, protocol) for protocol in protocols],
            fireOnOneErrback=True,
            consumeErrors=True,
        )
        self.assertEqual(len(connected), 1000)
        # The kernel completes handshakes before Twisted accepts them.
        await self.waitFor(lambda: len(self.factory.connections) == 1000)
        for protocol in protocols:
            protocol.transport.write(b"Hello, server!\n")  # type: ignore[union-attr]
        answers = [protocol.answer for protocol in protocols]
        results = await gatherResults(answers).addTimeout(60, reactor)
        self.assertEqual(results, [b"Hello, client!"] * 1000)


class ClassicServerTests(TestCase):
    """
    `greet` against the classic blocking-socket server.
    """

    async def test_greetClassicServer(self) -> None:
        """
        The classic server receives exactly ``Hello, server!``, and `greet`
        returns exactly its answer.
        """
        listener = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(listener.close)
        listener.settimeout(TIMEOUT)
        port = listener.getsockname()[1]
        received: list[bytes] = []

        def classicServer() -> None:
            connection, _ = listener.accept()
            with connection:
                received.append(connection.recv(1024))
                connection.sendall(b"Hello, client!")

        serving = threading.Thread(target=classicServer, daemon=True)
        serving.start()
        tcp: IReactorTCP = reactor
        answer = await greet(
            reactor,
            TCP4ClientEndpoint(tcp, "127.0.0.1", port),
            timeout=TIMEOUT,
        )
        serving.join(TIMEOUT)
        self.assertEqual(answer, b"Hello, client!")
        self.assertEqual(received, [b"Hello, server!"])

    async def test_serverClosesWithoutAnswer(self) -> None:
        """
        A server that closes without a byte makes `greet` fail with
        `hellotcp.NoGreetingError`.
        """
        from hellotcp import NoGreetingError

        listener = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(listener.close)
        listener.settimeout(TIMEOUT)
        port = listener.getsockname()[1]

        def silentServer() -> None:
            connection, _ = listener.accept()
            connection.recv(1024)
            connection.close()

        serving = inThread(silentServer)
        tcp: IReactorTCP = reactor
        answer = greet(
            reactor,
            TCP4ClientEndpoint(tcp, "127.0.0.1", port),
            timeout=TIMEOUT,
        )
        await self.assertFailure(answer, NoGreetingError)
        await serving
