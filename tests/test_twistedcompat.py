"""
Tests for `hellotcp._twistedcompat`: the private shape of Twisted (and of
pyOpenSSL and cryptography) that hellotcp relies on is still there.

Each failure names the versions installed and what is missing, so that a
new Twisted release that moves a private name fails here, in one line,
rather than somewhere deep in a connection.
"""

from __future__ import annotations

import importlib
import inspect
from types import ModuleType
from typing import cast

import cryptography
import OpenSSL
from OpenSSL import SSL
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import ClientFactory, Factory, Protocol, ServerFactory
from twisted.internet.ssl import optionsForClientTLS
from twisted.internet.task import deferLater
from twisted.internet.testing import StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

import twisted

VERSIONS = (
    f"Twisted {twisted.__version__}, pyOpenSSL {OpenSSL.__version__}, "
    f"cryptography {cryptography.__version__}"
)


class ShapeTestCase(SynchronousTestCase):
    """
    Fails loudly, naming the versions and the missing private names.
    """

    def compat(self) -> ModuleType:
        """
        `hellotcp._twistedcompat`, or a failure that says which private
        import broke.
        """
        try:
            return importlib.import_module("hellotcp._twistedcompat")
        except ImportError as error:  # pragma: no cover - a changed Twisted
            self.fail(f"{VERSIONS}: hellotcp._twistedcompat cannot import: {error}")

    def assertShape(self, missing: list[str]) -> None:
        """
        Fail, naming the versions, if any private name is ``missing``.
        """
        if missing:
            self.fail(
                f"{VERSIONS} changed the private shape hellotcp relies on "
                f"(see hellotcp/_twistedcompat.py): missing {', '.join(missing)}"
            )


class PrivateShapeTests(ShapeTestCase):
    """
    Every private name listed in `PRIVATE_SHAPE` exists.
    """

    def test_listedNames(self) -> None:
        """
        Each (module, dotted name) of `PRIVATE_SHAPE` resolves.
        """
        missing = []
        shape = self.compat().PRIVATE_SHAPE
        self.assertTrue(shape)
        for moduleName, dotted in shape:
            try:
                found: object = importlib.import_module(moduleName)
                for part in dotted.split("."):
                    found = getattr(found, part)
            except (ImportError, AttributeError):
                missing.append(f"{moduleName}.{dotted}")
        self.assertShape(missing)

    def test_assertShapeNamesVersions(self) -> None:
        """
        A missing name fails with the versions installed and the name.
        """
        failure = self.assertRaises(
            self.failureException, self.assertShape, ["twisted.x._gone"]
        )
        self.assertIn(f"Twisted {twisted.__version__}", str(failure))
        self.assertIn("twisted.x._gone", str(failure))


class ProxyShapeTests(ShapeTestCase):
    """
    The PROXY wrapper's header record, set on instances only.
    """

    def test_proxyInfo(self) -> None:
        """
        The wrapper keeps the header in ``_proxyInfo``, and its ``getPeer``
        and ``getHost`` answer from it.
        """
        compat = self.compat()
        factory = compat.HAProxyWrappingFactory(Factory.forProtocol(Protocol))
        wrapper = compat.ProxyWrapperBase(factory, Protocol())
        self.assertShape(
            []
            if "_proxyInfo" in vars(wrapper)
            else ["HAProxyProtocolWrapper._proxyInfo"]
        )
        self.assertIsNone(wrapper.proxyInfo)
        wrapper.makeConnection(StringTransport())
        source = IPv4Address("TCP", "192.0.2.1", 1234)
        destination = IPv4Address("TCP", "192.0.2.2", 5000)
        wrapper.proxyInfo = compat.ProxyInfo(b"PROXY ...", source, destination)
        self.assertEqual(wrapper.getPeer(), source)
        self.assertEqual(wrapper.getHost(), destination)

    def test_parsers(self) -> None:
        """
        The v1 parser's ``feed`` returns the header's record and what
        follows it.
        """
        parser = self.compat().V1Parser()
        info, rest = parser.feed(b"PROXY TCP4 192.0.2.1 192.0.2.2 1234 5000\r\nHi")
        self.assertEqual(info.source, IPv4Address("TCP", "192.0.2.1", 1234))
        self.assertEqual(rest, b"Hi")


def _clientTLS() -> TLSMemoryBIOProtocol:
    factory = TLSMemoryBIOFactory(
        optionsForClientTLS("example.com"), True, Factory.forProtocol(Protocol)
    )
    protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
    assert protocol is not None
    return protocol


class TLSShapeTests(ShapeTestCase):
    """
    `TLSMemoryBIOProtocol`'s private state and hooks behind `TLSProtocolBase`.
    """

    def test_tlsConnection(self) -> None:
        """
        A connected TLS protocol keeps its OpenSSL connection in
        ``_tlsConnection``.
        """
        protocol = _clientTLS()
        protocol.makeConnection(StringTransport())
        self.assertShape(
            []
            if isinstance(vars(protocol).get("_tlsConnection"), SSL.Connection)
            else ["TLSMemoryBIOProtocol._tlsConnection"]
        )

    def test_connectionLostShape(self) -> None:
        """
        `TLSProtocolBase.finalReason` runs what Twisted's ``connectionLost``
        runs first (reading what is left, once) and picks the reason as it
        does: a stored TLS failure, else the one given.
        """
        source = inspect.getsource(TLSMemoryBIOProtocol.connectionLost)
        self.assertShape(
            [
                f"{text!r} in TLSMemoryBIOProtocol.connectionLost"
                for text in [
                    "if not self._lostTLSConnection:",
                    "self._tlsConnection.bio_shutdown()",
                    "self._flushReceiveBIO()",
                    "self._lostTLSConnection = True",
                    "reason = self._reason or reason",
                ]
                if text not in source
            ]
        )

    def test_finalReason(self) -> None:
        """
        `TLSProtocolBase.finalReason` returns a TLS failure stored before
        the loss, and reads nothing more afterwards.
        """
        compat = self.compat()
        factory = TLSMemoryBIOFactory(
            optionsForClientTLS("example.com"), True, Factory.forProtocol(Protocol)
        )
        factory.protocol = compat.TLSProtocolBase
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        protocol.makeConnection(StringTransport())
        self.assertFalse(protocol.tlsLost)
        self.assertFalse(protocol.handshakeDone)
        self.assertFalse(protocol.aborted)
        clean = Failure(ConnectionDone())
        stored = Failure(SSL.Error([("SSL routines", "", "bad record")]))
        protocol._reason = stored
        self.assertIs(protocol.finalReason(clean), stored)
        self.assertTrue(protocol.tlsLost)
        protocol._reason = None
        self.assertIs(protocol.finalReason(clean), clean)

    def test_groupsList(self) -> None:
        """
        pyOpenSSL keeps the SSL_CTX pointer in ``Context._context``; where
        cryptography binds ``SSL_CTX_set1_curves_list``, a group list is
        set through it.
        """
        compat = self.compat()
        context = SSL.Context(SSL.TLS_METHOD)
        self.assertShape([] if hasattr(context, "_context") else ["Context._context"])
        if compat.canSetGroupsList():
            self.assertEqual(compat.setGroupsList(context, "X25519:P-256"), 1)

    def test_writeSideClosed(self) -> None:
        """
        A transport that has not closed its writing side says so; one
        without the private flag counts as open.
        """
        compat = self.compat()
        self.assertFalse(compat.writeSideClosed(StringTransport()))
        transport = StringTransport()
        transport._writeDisconnected = True  # type: ignore[attr-defined]
        self.assertTrue(compat.writeSideClosed(transport))


class EndpointShapeTests(ShapeTestCase):
    """
    Endpoint descriptions, TCP endpoints' settings, listener services.
    """

    def test_parseEndpoint(self) -> None:
        """
        `parseEndpoint` splits a description as ``clientFromString`` does,
        escapes included.
        """
        self.assertEqual(
            self.compat().parseEndpoint("tcp:host\\:x:80:timeout=3"),
            (["tcp", "host:x", "80"], {"timeout": "3"}),
        )

    def test_tcpEndpointAddress(self) -> None:
        """
        A TCP server endpoint keeps its interface, port and backlog in
        ``_interface``, ``_port`` and ``_backlog``.
        """
        from twisted.internet.endpoints import serverFromString
        from twisted.internet.testing import MemoryReactor

        compat = self.compat()
        for description, expected in [
            ("tcp:5000:interface=127.0.0.1:backlog=7", ("127.0.0.1", 5000, 7)),
            ("tcp6:5001:interface=\\:\\:1:backlog=9", ("::1", 5001, 9)),
        ]:
            endpoint = serverFromString(MemoryReactor(), description)
            self.assertShape(
                [
                    f"{type(endpoint).__name__}.{name}"
                    for name in ("_interface", "_port", "_backlog")
                    if name not in vars(endpoint)
                ]
            )
            self.assertEqual(compat.tcpEndpointAddress(endpoint), expected)

    def test_raiseListenErrors(self) -> None:
        """
        `raiseListenErrors` makes a listener service raise when it cannot
        listen; without it, the failure is only logged.
        """
        from twisted.application.internet import StreamServerEndpointService
        from twisted.internet.defer import fail
        from twisted.internet.error import CannotListenError

        class Refusing:
            def listen(self, factory: object) -> object:
                return fail(CannotListenError("", 1, OSError("in use")))

        factory = Factory.forProtocol(Protocol)
        raising = StreamServerEndpointService(Refusing(), factory)
        self.compat().raiseListenErrors(raising)
        self.assertRaises(CannotListenError, raising.startService)
        logging = StreamServerEndpointService(Refusing(), factory)
        logging.startService()
        self.assertEqual(len(self.flushLoggedErrors(CannotListenError)), 1)


class PortShapeTests(ShapeTestCase):
    """
    A real listening port: `closeAfterAccepting` accepts what is queued,
    then closes the socket in the same call.
    """

    def test_closeAfterAccepting(self) -> None:
        """
        A connection queued when the port is closed is accepted, and the
        port refuses new ones at once.
        """
        import socket
        from typing import Any, cast

        from twisted.internet import reactor

        accepted: list[object] = []

        class Accepting(Factory):
            def buildProtocol(self, addr: object) -> None:
                # Counted, and closed at once: nothing is left open.
                accepted.append(addr)

        port: Any = cast(Any, reactor).listenTCP(0, Accepting(), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.assertShape([] if port.connected else ["tcp.Port.connected"])
        number = port.getHost().port
        queued = socket.create_connection(("127.0.0.1", number), timeout=5)
        self.addCleanup(queued.close)
        self.compat().closeAfterAccepting(port)
        self.assertEqual(len(accepted), 1)
        self.assertFalse(port.connected)
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", number), timeout=5).close()


class TwistShapeTests(ShapeTestCase):
    """
    The keys ``twist`` and ``twistd`` keep their logging options under.
    """

    def test_twist(self) -> None:
        """
        ``twist``'s options keep the log level, format, file and reactor in
        ``logLevel``, ``logFormat``, ``logFile`` and ``reactorName``.
        """
        import os
        import tempfile

        from twisted.logger import LogLevel

        compat = self.compat()
        options = compat.twistOptions()
        options.opt_log_level("warn")
        options.opt_log_format("json")
        # (opt_reactor installs the reactor at once: the key is set here.)
        self.assertEqual(options["reactorName"], "default")
        options["reactorName"] = "poll"
        folder = tempfile.mkdtemp()
        options.opt_log_file(os.path.join(folder, "twist.log"))
        self.addCleanup(options["logFile"].close)
        self.assertShape(
            [
                f"TwistOptions[{key!r}]"
                for key in ("logLevel", "logFormat", "logFile", "reactorName")
                if key not in options
            ]
        )
        self.assertIs(options["logLevel"], LogLevel.warn)
        self.assertFalse(compat.logsInfo(options))
        self.assertEqual(
            compat.parentLogging(options),
            compat.ParentLogging(
                ["--log-format=json", "--log-level=warn", "--reactor=poll"],
                options["logFile"].fileno(),
            ),
        )

    def test_twistd(self) -> None:
        """
        ``twistd``'s options keep ``--logfile`` and ``--nodaemon`` in
        ``logfile`` and ``nodaemon``.
        """
        import os

        # twistd's public module re-exports its platform's options.
        from twisted.scripts.twistd import ServerOptions  # type: ignore[attr-defined]

        compat = self.compat()
        options = ServerOptions()
        options.parseOptions(["--nodaemon", "--logfile=hellotcp.log"])
        self.assertShape(
            [
                f"ServerOptions[{key!r}]"
                for key in ("logfile", "nodaemon")
                if key not in options
            ]
        )
        path = os.path.abspath("hellotcp.log")
        self.assertEqual(
            compat.parentLogging(options),
            compat.ParentLogging(["--log-format=text", f"--log-file={path}"], 1, path),
        )
        self.assertTrue(compat.logsInfo(options))
        daemon = ServerOptions()
        daemon.parseOptions([])
        self.assertEqual(
            compat.parentLogging(daemon).appendTo, os.path.abspath("twistd.log")
        )


class BoundAddressTests(TestCase):
    """
    `boundAddress` reads a connector's local port before the SYN leaves.
    """

    async def test_beforeConnecting(self) -> None:
        """
        Right after ``connectTCP`` with a ``bindAddress``, the port is known
        and nothing is connected yet; it is the port the connection uses.
        """
        server = ServerFactory()
        server.protocol = Protocol
        listening = reactor.listenTCP(0, server, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        made: list[int] = []

        class Note(Protocol):
            def connectionMade(self) -> None:
                assert self.transport is not None
                made.append(cast(IPv4Address, self.transport.getHost()).port)
                self.transport.loseConnection()

        client = ClientFactory()
        client.protocol = Note
        connector = reactor.connectTCP(
            "127.0.0.1",
            cast(IPv4Address, listening.getHost()).port,
            client,
            bindAddress=("127.0.0.1", 0),
        )
        boundAddress = importlib.import_module("hellotcp._twistedcompat").boundAddress
        local = boundAddress(connector)
        # Fails loudly if a release moves the connector's transport.
        self.assertIsInstance(local, IPv4Address, VERSIONS)
        assert isinstance(local, IPv4Address)
        self.assertNotEqual(local.port, 0)
        self.assertEqual(made, [])
        for _ in range(200):
            if made:
                break
            await deferLater(reactor, 0.01)
        self.assertEqual(made, [local.port])
