"""
Tests for `hellotcp.service`.
"""

from __future__ import annotations

import resource
import signal
import socket

from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase

from hellotcp.protocol import HelloServerFactory
from hellotcp.service import HelloService, raiseFileLimit


class ListenErrorTests(SynchronousTestCase):
    """
    A listener that cannot start ends the program with one line.
    """

    def test_addressInUse(self) -> None:
        """
        An address in use raises `SystemExit` naming the endpoint as the
        user wrote it and the system's reason, with no traceback.
        """
        taken = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(taken.close)
        port = taken.getsockname()[1]
        service = HelloService(
            HelloServerFactory(),
            reactor,
            handleSignals=False,
        )
        description = f"tcp:{port}:interface=127.0.0.1"
        service.listen(description)
        with self.assertRaises(SystemExit) as raised:
            service.privilegedStartService()
        self.assertEqual(
            raised.exception.code,
            f"hellotcp: error: cannot listen on {description}: Address already in use",
        )

    def test_badUnixPath(self) -> None:
        """
        A UNIX socket in a folder that does not exist is named as well.
        """
        service = HelloService(
            HelloServerFactory(),
            reactor,
            handleSignals=False,
        )
        service.listen("unix:/nonexistent/folder/hello.sock")
        with self.assertRaises(SystemExit) as raised:
            service.startService()
        self.assertIn(
            "cannot listen on unix:/nonexistent/folder/hello.sock: ",
            str(raised.exception.code),
        )


class SignalTests(SynchronousTestCase):
    """
    SIGTERM and SIGINT stop the reactor, so the process exits 0; a second
    one aborts open exchanges.
    """

    def test_takesOverSignals(self) -> None:
        """
        Once the reactor runs, SIGTERM and SIGINT are the service's.
        """
        memory = MemoryReactorClock()
        service = HelloService(HelloServerFactory(clock=Clock()), memory)
        for number in (signal.SIGTERM, signal.SIGINT):
            self.addCleanup(signal.signal, number, signal.getsignal(number))
        service.startService()
        memory.run()
        self.assertEqual(signal.getsignal(signal.SIGTERM), service._stopOnSignal)
        self.assertEqual(signal.getsignal(signal.SIGINT), service._stopOnSignal)

    def test_stopThenAbort(self) -> None:
        """
        The first signal stops the reactor; the second, while stopping,
        aborts the open connections at once.
        """
        memory = MemoryReactorClock()
        memory.running = True
        factory = HelloServerFactory(clock=Clock())
        protocol = factory.buildProtocol(None)
        assert protocol is not None
        transport = StringTransport()
        protocol.makeConnection(transport)
        service = HelloService(factory, memory)
        service._stopRequested("SIGTERM")
        self.assertTrue(memory.hasStopped)
        service.stopService()
        service._stopRequested("SIGTERM")
        self.assertTrue(transport.disconnected)


class FileLimitTests(SynchronousTestCase):
    """
    `raiseFileLimit` makes room for the connections.
    """

    def test_raises(self) -> None:
        """
        The soft limit rises towards what is needed, capped by the hard one.
        """
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard))
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        self.assertEqual(raiseFileLimit(300), 300)
        self.assertEqual(resource.getrlimit(resource.RLIMIT_NOFILE)[0], 300)
        self.assertEqual(raiseFileLimit(100), 300)


class AcceptPendingTests(SynchronousTestCase):
    """
    Stopping accepts what waits in the listen queues before closing them.
    """

    def test_acceptsBeforeStopping(self) -> None:
        """
        The ports listened on are recorded, and each is read (accepting its
        queue) while it still listens, before the service stops them.
        """
        memory = MemoryReactorClock()
        service = HelloService(HelloServerFactory(clock=Clock()), memory)
        service.listen("tcp:7000")
        service.startService()
        [recorded] = service._ports
        self.assertEqual(recorded.getHost().port, 7000)  # type: ignore[attr-defined]
        accepted: list[bool] = []

        class Port:
            def doRead(self) -> None:
                accepted.append(bool(memory.tcpServers) and bool(service.running))

        service._ports.append(Port())
        self.successResultOf(service.stopService())
        self.assertTrue(accepted)
        self.assertTrue(all(accepted))


class CloseAfterAcceptingTests(TestCase):
    """
    On a real port: stopping accepts the queued connections and closes the
    listening socket in the same call.
    """

    async def test_queuedConnectionServed(self) -> None:
        """
        A connection queued by the kernel when the service stops is accepted
        (and then served), and the port refuses new connections at once.
        """
        service = HelloService(HelloServerFactory(), reactor, handleSignals=False)
        service.listen("tcp:0:interface=127.0.0.1")
        service.startService()
        [port] = service._ports
        number = port.getHost().port  # type: ignore[attr-defined]
        queued = socket.create_connection(("127.0.0.1", number), timeout=5)
        self.addCleanup(queued.close)
        queued.sendall(b"Hello, server!\n")
        stopping = service.stopService()
        self.assertEqual(len(service.factory.connections), 1)
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", number), timeout=5)
        await stopping
        queued.settimeout(5)
        self.assertEqual(queued.recv(100), b"Hello, client!")
