"""
TLS on real loopback sockets, against real peers: ``openssl s_client``,
Python's ``ssl`` module as client and server, ``hellotcp-client``, and a
running ``twist hellotcp`` reloading its certificate on SIGHUP.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
from typing import Any

from OpenSSL import SSL
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import IListeningPort
from twisted.internet.task import deferLater
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import Logger
from twisted.trial.unittest import TestCase

from hellotcp import HelloServerFactory, greet
from hellotcp import protocol as protocolModule
from hellotcp.tls import (
    CertificateFiles,
    ReloadableServerTLS,
    ServerTLSFiles,
    TLSServerFactory,
    clientTLS,
)

from .pki import pki, tlsListen, verifiedClient
from .support import TIMEOUT, CommandTestCase, Process, command, freePort, inThread


def stdlibClient(
    port: int, hostname: str, ca: str, certificate: tuple[str, str] | None = None
) -> bytes:
    """
    Python's own TLS client, verifying the certificate and the host name.
    """
    context = ssl.create_default_context(cafile=ca)
    assert context.check_hostname
    if certificate:
        context.load_cert_chain(*certificate)
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw:
        with context.wrap_socket(raw, server_hostname=hostname) as tls:
            tls.sendall(b"Hello, server!\n")
            received = b""
            while chunk := tls.recv(1024):
                received += chunk
            return received


def stdlibServer(certificate: tuple[str, str]) -> tuple[int, Deferred[Any]]:
    """
    Python's own TLS server, answering one client like the classic server.

    :returns: Its port, and what it received (or the error it met).
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(TIMEOUT)

    def serve() -> bytes | Exception:
        try:
            connection, _ = listener.accept()
            with context.wrap_socket(connection, server_side=True) as tls:
                data = tls.recv(1024)
                tls.sendall(b"Hello, client!")
                return data
        except (OSError, ssl.SSLError) as error:
            return error
        finally:
            listener.close()

    return listener.getsockname()[1], inThread(serve)


class TLSServerMixin:
    """
    Start a hellotcp TLS server in the test's process, and read its log.
    """

    events: EventLoggingObserver

    def startTLSServer(
        self,
        certificate: tuple[str, str] | None = None,
        clientCA: str | None = None,
    ) -> int:
        """
        Serve TLS on a loopback port for the length of the test.
        """
        assert isinstance(self, TestCase)
        self.events = EventLoggingObserver()
        self.patch(
            protocolModule,
            "_log",
            Logger(namespace="hellotcp.protocol", observer=self.events),
        )
        settings = ReloadableServerTLS(
            ServerTLSFiles(CertificateFiles(*(certificate or pki().server)), clientCA)
        )
        factory = TLSServerFactory(settings, HelloServerFactory())
        # Twisted's stubs want a ServerFactory; any IProtocolFactory works.
        port: IListeningPort = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[arg-type]
        self.addCleanup(port.stopListening)
        address = port.getHost()
        assert isinstance(address, IPv4Address)
        return address.port

    async def exchanges(self, count: int) -> list[dict[str, Any]]:
        """
        The first ``count`` exchanges the server logs (waiting for them, as
        the server logs when its side of the connection closes).
        """
        for _ in range(int(TIMEOUT / 0.01)):
            found = [dict(e) for e in self.events if "outcome" in e]
            if len(found) >= count:
                return found
            await deferLater(reactor, 0.01)
        raise AssertionError(f"fewer than {count} exchanges logged")


class TLSServerTests(TLSServerMixin, TestCase):
    """
    A hellotcp TLS server in this process, greeted by real TLS clients.
    """

    async def test_greet(self) -> None:
        """
        `greet` with verified TLS settings gets the greeting.
        """
        port = self.startTLSServer()
        answer = await greet(
            reactor,
            TCP4ClientEndpoint(reactor, "127.0.0.1", port),
            timeout=TIMEOUT,
            tls=clientTLS("localhost", pki().ca),
        )
        self.assertEqual(answer, b"Hello, client!")
        [event] = await self.exchanges(1)
        self.assertEqual(
            (event["outcome"], event["message"]), ("greeted", "Hello, server!")
        )
        self.assertIsNone(event["client"])

    async def test_opensslClient(self) -> None:
        """
        ``openssl s_client``, verifying the chain and the host name and
        refusing to go on otherwise, gets the greeting.
        """
        port = self.startTLSServer()
        process = Process()
        transport = reactor.spawnProcess(
            process,
            "openssl",
            [
                "openssl",
                "s_client",
                "-connect",
                f"127.0.0.1:{port}",
                "-CAfile",
                pki().ca,
                "-verify_return_error",
                "-verify_hostname",
                "localhost",
                "-servername",
                "localhost",
                "-quiet",
                "-ign_eof",
            ],
            env=os.environ.copy(),
        )
        transport.write(b"Hello, server!\n")
        transport.closeStdin()
        status = await process.ended.addTimeout(TIMEOUT, reactor)
        self.assertEqual(process.out, b"Hello, client!")
        self.assertEqual(status, 0, process.err)

    async def test_stdlibClient(self) -> None:
        """
        Python's ``ssl`` client with ``check_hostname`` gets the greeting, and
        is refused when the name is not the certificate's.
        """
        port = self.startTLSServer()
        self.assertEqual(
            await inThread(stdlibClient, port, "localhost", pki().ca), b"Hello, client!"
        )
        self.assertEqual(
            await inThread(stdlibClient, port, "127.0.0.1", pki().ca), b"Hello, client!"
        )
        with self.assertRaises(ssl.SSLCertVerificationError):
            await inThread(stdlibClient, port, "wrong.example", pki().ca)

    async def test_mutualTLS(self) -> None:
        """
        With a client CA, a client of that CA is greeted and its subject
        logged; a client without a certificate, or with one from another CA,
        is refused, and the refusal is logged.
        """
        port = self.startTLSServer(clientCA=pki().ca)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        answer = await greet(
            reactor,
            endpoint,
            timeout=TIMEOUT,
            tls=clientTLS("localhost", pki().ca, *pki().client),
        )
        self.assertEqual(answer, b"Hello, client!")
        for certificate in [(), pki().foreignClient]:
            refused = greet(
                reactor,
                endpoint,
                timeout=TIMEOUT,
                tls=clientTLS("localhost", pki().ca, *certificate),
            )
            await self.assertFailure(refused, SSL.Error)
        with self.assertRaises(ssl.SSLError):
            await inThread(stdlibClient, port, "localhost", pki().ca)
        events = await self.exchanges(4)
        self.assertEqual(events[0]["outcome"], "greeted")
        self.assertEqual(events[0]["client"], "CN=a client,O=hellotcp")
        self.assertEqual(
            [(e["outcome"], e["reason"]) for e in events[1:]],
            [
                ("tls-failed", "peer did not return a certificate"),
                ("tls-failed", "certificate verify failed"),
                ("tls-failed", "peer did not return a certificate"),
            ],
        )


class ClientCommandTLSTests(TLSServerMixin, CommandTestCase):
    """
    ``hellotcp-client --tls``: greeted by TLS servers, and one clear line for
    each way TLS can fail.
    """

    async def client(self, *argv: str) -> tuple[int, str, str]:
        """
        Run ``hellotcp-client`` with ``argv``.
        """
        return await self.runCommand([command("hellotcp-client"), *argv])

    async def test_stdlibServer(self) -> None:
        """
        A Python ``ssl`` server is greeted by ``hellotcp-client --tls``, and
        receives the message ended by a line feed.
        """
        port, received = stdlibServer(pki().server)
        result = await self.client(
            "--tls", "--connect", f"tcp:localhost:{port}", "--ca", pki().ca
        )
        self.assertEqual(result, (0, "Hello, client!\n", ""))
        self.assertEqual(await received, b"Hello, server!\n")

    async def test_tlsEndpointString(self) -> None:
        """
        Twisted's own ``tls:`` endpoint strings work as Twisted defines them.
        """
        port = self.startTLSServer()
        trust = os.path.join(self.folder, "trust")
        os.mkdir(trust)
        shutil.copy(pki().ca, trust)
        result = await self.client(
            "--connect", f"tls:localhost:{port}:trustRoots={trust}"
        )
        self.assertEqual(result, (0, "Hello, client!\n", ""))

    async def assertClientFails(self, expected: str, *argv: str) -> None:
        """
        ``hellotcp-client argv`` fails with exit status 1 and one line ending
        in ``expected``.
        """
        status, out, err = await self.client(*argv)
        self.assertOneLine(status, err, expected)
        self.assertEqual((status, out), (1, ""))

    async def test_untrustedIssuer(self) -> None:
        """
        A server certificate from a CA the client does not trust.
        """
        port = self.startTLSServer(certificate=pki().foreignServer)
        await self.assertClientFails(
            "the server's certificate is not trusted: unable to get local issuer certificate",
            *verifiedClient(port),
        )

    async def test_hostnameMismatch(self) -> None:
        """
        A trusted certificate for another name.
        """
        port = self.startTLSServer(certificate=pki().wrongHost)
        await self.assertClientFails(
            "the server's certificate is not valid for localhost",
            *verifiedClient(port),
        )

    async def test_serverNameOption(self) -> None:
        """
        ``--server-name`` is the name verified, whatever the address.
        """
        port = self.startTLSServer(certificate=pki().wrongHost)
        status, out, _ = await self.client(
            "--tls",
            "--connect",
            f"tcp:127.0.0.1:{port}",
            "--ca",
            pki().ca,
            "--server-name",
            "example.com",
        )
        self.assertEqual((status, out), (0, "Hello, client!\n"))

    async def test_expired(self) -> None:
        """
        An expired server certificate (hellotcp will not serve one, so a
        Python ``ssl`` server does).
        """
        port, _ = stdlibServer(pki().expired)
        await self.assertClientFails(
            "the server's certificate is not trusted: certificate has expired",
            *verifiedClient(port),
        )

    async def test_clientCertificateRequired(self) -> None:
        """
        A server that requires a client certificate, and none given.
        """
        port = self.startTLSServer(clientCA=pki().ca)
        await self.assertClientFails(
            "the server requires a client certificate (--certificate and --private-key)",
            *verifiedClient(port),
        )

    async def test_clientCertificateFromAnotherCA(self) -> None:
        """
        A client certificate the server's CA did not issue.
        """
        port = self.startTLSServer(clientCA=pki().ca)
        certificate, key = pki().foreignClient
        await self.assertClientFails(
            "the server does not trust the CA of this client certificate",
            *verifiedClient(port),
            "--certificate",
            certificate,
            "--private-key",
            key,
        )

    async def test_mutualTLS(self) -> None:
        """
        With its certificate, the client is greeted by a mutual-TLS server.
        """
        port = self.startTLSServer(clientCA=pki().ca)
        certificate, key = pki().client
        status, out, _ = await self.client(
            *verifiedClient(port),
            "--certificate",
            certificate,
            "--private-key",
            key,
        )
        self.assertEqual((status, out), (0, "Hello, client!\n"))

    async def test_serverNotTLS(self) -> None:
        """
        A plain TCP server where TLS was expected.
        """
        factory = HelloServerFactory()
        listening = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[arg-type]
        self.addCleanup(listening.stopListening)
        port = listening.getHost().port  # type: ignore[attr-defined]
        await self.assertClientFails(
            "the server is not speaking TLS (a plain TCP port?)",
            *verifiedClient(port),
        )

    async def test_plainClientToTLSPort(self) -> None:
        """
        Plain TCP to a TLS port: no greeting, and a hint to use ``--tls``.
        OpenSSL 3.2 (cryptography 42, the floor) answers the plain text with
        an alert; OpenSSL 4 closes without one: each has its own hint.
        """
        port = self.startTLSServer()
        status, out, err = await self.client("--connect", f"tcp:localhost:{port}")
        self.assertEqual((status, out), (1, ""))
        hints = [
            "the server closed the connection without answering (if it is a TLS port, use --tls)",
            f"tcp:localhost:{port} answered in TLS (a TLS alert); use --tls",
        ]
        self.assertOneLine(status, err, next((h for h in hints if h in err), hints[0]))

    async def test_badFiles(self) -> None:
        """
        Unusable TLS files are one line and exit status 2.
        """
        missing = os.path.join(self.folder, "missing.pem")
        status, _, err = await self.client("--tls", "--ca", missing)
        self.assertOneLine(status, err, f"--ca {missing}: No such file or directory")
        self.assertEqual(status, 2)
        status, _, err = await self.client("--ca", pki().ca)
        self.assertOneLine(status, err, "--ca goes with --tls")


class TwistTLSTests(CommandTestCase):
    """
    ``twist hellotcp --tls-listen``, running.
    """

    def copyFiles(self) -> tuple[str, str]:
        """
        The server's certificate and key, copied where the test can change
        them.
        """
        certificate = os.path.join(self.folder, "server.pem")
        key = os.path.join(self.folder, "server-key.pem")
        shutil.copy(pki().server[0], certificate)
        shutil.copy(pki().server[1], key)
        return certificate, key

    async def test_reloadOnSIGHUP(self) -> None:
        """
        SIGHUP swaps the certificate for new connections without dropping an
        open one; a reload that fails keeps the certificate in use and logs
        one error.
        """
        certificate, key = self.copyFiles()
        port = freePort()
        log = os.path.join(self.folder, "server.log")
        server = await self.startServer(
            [
                command("twist"),
                f"--log-file={log}",
                "--log-format=text",
                "hellotcp",
                *tlsListen(port, certificate, key),
                "--message-gap",
                "5",
            ],
            port,
        )
        server.allowedErrors = ["TLS reload failed"]

        def servedCertificate() -> bytes:
            context = ssl.create_default_context(cafile=pki().ca)
            context.check_hostname = False
            with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw:
                with context.wrap_socket(raw) as tls:
                    der = tls.getpeercert(binary_form=True)
                    assert der is not None
                    return der

        def pem(path: str) -> bytes:
            return ssl.PEM_cert_to_DER_cert(open(path).read())

        self.assertEqual(await inThread(servedCertificate), pem(pki().server[0]))
        # An exchange left open across the reload.
        context = ssl.create_default_context(cafile=pki().ca)
        raw = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        held = context.wrap_socket(raw, server_hostname="localhost")
        self.addCleanup(held.close)
        held.sendall(b"Hello")
        shutil.copy(pki().wrongHost[0], certificate)
        shutil.copy(pki().wrongHost[1], key)
        server.transport.signalProcess("HUP")  # type: ignore[union-attr]
        for _ in range(int(TIMEOUT / 0.05)):
            if await inThread(servedCertificate) == pem(pki().wrongHost[0]):
                break
            await deferLater(reactor, 0.05)
        else:
            self.fail("the new certificate was never served")
        held.sendall(b", server!\n")
        self.assertEqual(await inThread(held.recv, 1024), b"Hello, client!")
        # A broken key: the reload fails, the certificate in use stays.
        shutil.copy(pki().client[1], key)
        server.transport.signalProcess("HUP")  # type: ignore[union-attr]
        for _ in range(int(TIMEOUT / 0.05)):
            with open(log) as lines:
                if "TLS reload failed" in lines.read():
                    break
            await deferLater(reactor, 0.05)
        else:
            self.fail("the failed reload was never logged")
        self.assertEqual(await inThread(servedCertificate), pem(pki().wrongHost[0]))
        server.transport.signalProcess("TERM")  # type: ignore[union-attr]
        self.assertEqual(await server.ended.addTimeout(TIMEOUT, reactor), 0)
        with open(log) as lines:
            text = lines.read()
        self.assertEqual(text.count("TLS reload failed"), 1)
        self.assertIn(
            f"private key {key}: does not match the certificate {certificate}", text
        )

    async def test_plainAndTLSBesideEachOther(self) -> None:
        """
        ``--listen`` and ``--tls-listen`` serve side by side.
        """
        certificate, key = self.copyFiles()
        plain, secure = freePort(), freePort()
        await self.startServer(
            [
                command("twist"),
                "hellotcp",
                "--listen",
                f"tcp:{plain}:interface=127.0.0.1",
                *tlsListen(secure, certificate, key),
            ],
            secure,
        )
        status, out, err = await self.runCommand(
            [command("hellotcp-client"), "--connect", f"tcp:127.0.0.1:{plain}"]
        )
        self.assertEqual((status, out), (0, "Hello, client!\n"), err)
        status, out, _ = await self.runCommand(
            [
                command("hellotcp-client"),
                "--tls",
                "--connect",
                f"tcp:localhost:{secure}",
                "--ca",
                pki().ca,
            ]
        )
        self.assertEqual((status, out), (0, "Hello, client!\n"))

    async def test_sslEndpointInListen(self) -> None:
        """
        Twisted's own ``ssl:`` server endpoint strings work in ``--listen``.
        """
        certificate, key = self.copyFiles()
        port = freePort()
        await self.startServer(
            [
                command("twist"),
                "hellotcp",
                "--listen",
                f"ssl:{port}:interface=127.0.0.1:certKey={certificate}:privateKey={key}",
            ],
            port,
        )
        status, out, _ = await self.runCommand(
            [
                command("hellotcp-client"),
                "--tls",
                "--connect",
                f"tcp:localhost:{port}",
                "--ca",
                pki().ca,
            ]
        )
        self.assertEqual((status, out), (0, "Hello, client!\n"))

    async def test_startupErrors(self) -> None:
        """
        A missing file, a key that does not match, or an expired
        certificate: one line naming the file and the problem.
        """
        missing = os.path.join(self.folder, "missing.pem")
        certificate, key = pki().server
        expired, expiredKey = pki().expired
        _, otherKey = pki().client
        for files, expected in [
            ((missing, key), f"--certificate {missing}: No such file or directory"),
            (
                (certificate, otherKey),
                f"--private-key {otherKey}: does not match the certificate "
                f"{certificate}",
            ),
            (
                (expired, expiredKey),
                f"--certificate {expired}: the certificate expired on",
            ),
        ]:
            status, _, err = await self.runCommand(
                [
                    command("twist"),
                    "hellotcp",
                    "--tls-listen",
                    "tcp:0",
                    "--certificate",
                    files[0],
                    "--private-key",
                    files[1],
                ]
            )
            self.assertOneLine(status, err, expected)
