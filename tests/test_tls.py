"""
Unit tests for `hellotcp.tls`: loading files with clear errors, server
settings and their reload, and the client settings.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable

from OpenSSL import SSL
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import ensureDeferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.interfaces import IProtocolFactory
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import Logger
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from hellotcp import tls
from hellotcp.greet import greet
from hellotcp.protocol import HelloServerFactory, ServerSettings
from hellotcp.tls import (
    CertificateFiles,
    ReloadableServerTLS,
    ServerTLSFiles,
    TLSFileError,
    TLSServerFactory,
    VerifiedClientTLS,
    clientTLS,
    describeTLSError,
    loadCertificates,
    loadPrivateKey,
    serverTLS,
    serveTLS,
)

from .pki import PKI, chainPKI, rootOnlyClient, tlsListen
from .support import TIMEOUT, CommandTestCase, command, freePort, inThread

_pki: PKI | None = None


def pki() -> PKI:
    """
    One set of certificates for this module's tests (making them is the slow
    part).
    """
    global _pki
    if _pki is None:
        _pki = PKI()
    return _pki


class LoadingTests(SynchronousTestCase):
    """
    Files that cannot be used are refused with the file and the reason.
    """

    def assertRefused(self, expected: str, load: object, *args: str) -> None:
        """
        Calling ``load`` raises `TLSFileError` whose message is ``expected``.
        """
        with self.assertRaises(TLSFileError) as raised:
            load(*args)  # type: ignore[operator]
        self.assertEqual(str(raised.exception), expected)

    def test_missing(self) -> None:
        """
        A missing file is named with the system's reason.
        """
        path = pki().path("nope.pem")
        self.assertRefused(
            f"certificate {path}: No such file or directory", loadCertificates, path
        )
        self.assertRefused(
            f"private key {path}: No such file or directory", loadPrivateKey, path
        )

    def test_notPEM(self) -> None:
        """
        A key where a certificate belongs, and the reverse, are told apart.
        """
        certificate, key = pki().server
        self.assertRefused(
            f"certificate {key}: no PEM certificate in it, only PRIVATE KEY",
            loadCertificates,
            key,
        )
        self.assertRefused(
            f"private key {certificate}: no PEM private key in it, only CERTIFICATE",
            loadPrivateKey,
            certificate,
        )

    def test_expired(self) -> None:
        """
        An expired certificate is refused with its expiry date.
        """
        certificate, _ = pki().expired
        self.assertRefused(
            f"certificate {certificate}: the certificate expired on 2020-01-02 00:00 UTC",
            loadCertificates,
            certificate,
        )

    def test_notYetValid(self) -> None:
        """
        A certificate from the future is refused too.
        """
        import datetime

        from hellotcp.certs import issue, writeIssued

        future = datetime.datetime(2999, 1, 1, tzinfo=datetime.timezone.utc)
        path, _ = writeIssued(
            pki().folder, "future", issue(pki().authority, "x", ["x"], start=future)
        )
        self.assertRefused(
            f"certificate {path}: the certificate is not valid until 2999-01-01 00:00 UTC",
            loadCertificates,
            path,
        )

    def test_encryptedKey(self) -> None:
        """
        An encrypted key is refused with a hint.
        """
        from cryptography.hazmat.primitives import serialization

        key = loadPrivateKey(pki().server[1])
        path = pki().path("encrypted-key.pem")
        with open(path, "wb") as file:
            file.write(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.BestAvailableEncryption(b"secret"),
                )
            )
        self.assertRefused(
            f"private key {path}: the key is encrypted; hellotcp needs it unencrypted",
            loadPrivateKey,
            path,
        )

    def test_mismatch(self) -> None:
        """
        A key that does not belong to the certificate is refused.
        """
        certificate, _ = pki().server
        _, otherKey = pki().client
        files = CertificateFiles(certificate, otherKey)
        self.assertRefused(
            f"private key {otherKey}: does not match the certificate {certificate}",
            files.load,
        )

    def test_chain(self) -> None:
        """
        Every certificate of a chain file is read, leaf first.
        """
        path = pki().path("chain.pem")
        with open(path, "wb") as chain:
            for part in (pki().server[0], pki().ca):
                with open(part, "rb") as file:
                    chain.write(file.read())
        certificates = loadCertificates(path)
        self.assertEqual(len(certificates), 2)
        self.assertEqual(certificates[1].subject, pki().authority.certificate.subject)


class ServerSettingsTests(SynchronousTestCase):
    """
    `ServerTLSFiles` and `ReloadableServerTLS`.
    """

    def files(self, clientCA: str | None = None) -> ServerTLSFiles:
        """
        Server files in a folder of this test's own, so they can change.
        """
        folder = self.mktemp()
        shutil.copytree(pki().folder, folder)
        self.folder = folder
        return ServerTLSFiles(
            CertificateFiles(f"{folder}/server.pem", f"{folder}/server-key.pem"),
            clientCA,
        )

    def test_options(self) -> None:
        """
        The options require TLS 1.2 at least, only forward-secret AEAD
        ciphers, and client certificates when a client CA is given.
        """
        options = self.files().options()
        context = options.getContext()
        self.assertTrue(context.set_options(0) & SSL.OP_NO_TLSv1_1)
        self.assertTrue(context.set_options(0) & SSL.OP_NO_TLSv1)
        self.assertEqual(context.get_verify_mode(), SSL.VERIFY_NONE)
        connection = SSL.Connection(context, None)
        ciphers = connection.get_cipher_list()
        self.assertTrue(ciphers)
        for cipher in ciphers:
            self.assertTrue(
                cipher.startswith("TLS_") or cipher.startswith("ECDHE-"), cipher
            )
            self.assertTrue("GCM" in cipher or "CHACHA20" in cipher, cipher)
        mutual = self.files(pki().ca).options().getContext()
        required = SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT
        self.assertEqual(mutual.get_verify_mode() & required, required)

    def test_reload(self) -> None:
        """
        A reload picks up new files; a failed one keeps the old settings
        and logs one error.
        """
        events = EventLoggingObserver()
        self.patch(tls, "_log", Logger(observer=events))
        settings = ReloadableServerTLS(self.files())
        before = settings._options
        shutil.copy(f"{self.folder}/wrong-host.pem", f"{self.folder}/server.pem")
        shutil.copy(
            f"{self.folder}/wrong-host-key.pem", f"{self.folder}/server-key.pem"
        )
        self.assertTrue(settings.reload())
        after = settings._options
        self.assertIsNot(after, before)
        shutil.copy(f"{self.folder}/client-key.pem", f"{self.folder}/server-key.pem")
        self.assertFalse(settings.reload())
        self.assertIs(settings._options, after)
        [ok, failed] = events
        self.assertEqual(ok["outcome"], "reloaded")
        self.assertEqual(failed["outcome"], "reload-failed")
        self.assertIn("does not match", failed["error"])

    def test_refusalStaysRefusal(self) -> None:
        """
        When the wrapped factory refuses a connection, so does the TLS one.
        """
        factory = HelloServerFactory(ServerSettings(maxConnections=1), Clock())
        secure = TLSServerFactory(ReloadableServerTLS(self.files()), factory)
        peer = IPv4Address("TCP", "127.0.0.1", 1)
        self.assertIsNotNone(secure.buildProtocol(peer))
        factory.connections.add(object(), None, 0)  # type: ignore[arg-type]
        self.assertIsNone(secure.buildProtocol(peer))


class StrictPEMTests(SynchronousTestCase):
    """
    A file whose PEM blocks are not all whole is refused, naming the file
    and the line: OpenSSL alone would skip a block cut short and load what
    is left.
    """

    def setUp(self) -> None:
        self.folder = self.mktemp()
        os.makedirs(self.folder)
        self.paths = chainPKI(self.folder)
        with open(self.paths["chain"], "rb") as file:
            self.chain = file.read()
        with open(self.paths["leaf"], "rb") as file:
            self.leaf = file.read()

    def write(self, data: bytes) -> str:
        """
        Write ``data`` to a new file of this test.
        """
        path = os.path.join(self.folder, f"case-{len(os.listdir(self.folder))}.pem")
        with open(path, "wb") as file:
            file.write(data)
        return path

    def assertRefused(
        self, data: bytes, expected: str, what: str = "certificate"
    ) -> None:
        """
        ``data`` as a certificate (or key) file is refused with one line
        holding ``expected`` and the path.
        """
        path = self.write(data)
        load = loadCertificates if what == "certificate" else loadPrivateKey
        with self.assertRaises(TLSFileError) as raised:
            load(path)
        message = str(raised.exception)
        self.assertIn(expected, message)
        self.assertIn(path, message)
        self.assertEqual(len(message.splitlines()), 1)

    def test_wholeChainLoads(self) -> None:
        """
        The whole chain loads, leaf first, with text around the blocks
        (as ``openssl`` writes it) allowed.
        """
        [leaf, intermediate] = loadCertificates(
            self.write(b"subject=CN = localhost\n" + self.chain + b"\n\n")
        )
        self.assertEqual(leaf.issuer, intermediate.subject)
        chain = loadCertificates(self.write(self.chain.replace(b"\n", b"\r\n")))
        self.assertEqual(len(chain), 2)

    def test_cutInsideSecondBlock(self) -> None:
        """
        A chain cut inside its second block (the leaf whole, the
        intermediate's base64 partly written), which OpenSSL would load as
        the leaf alone, is refused.
        """
        from cryptography import x509

        cut = self.chain[: len(self.leaf) + 100]
        self.assertEqual(len(x509.load_pem_x509_certificates(cut)), 1)
        self.assertRefused(cut, "the CERTIFICATE block of line 12 is cut short")

    def test_cutEveryWhere(self) -> None:
        """
        Cut at any byte inside the second block, the file is refused.
        """
        for end in range(len(self.leaf) + 1, len(self.chain) - 1, 7):
            path = self.write(self.chain[:end])
            try:
                loadCertificates(path)
            except TLSFileError:
                pass
            else:
                self.fail(f"cut at {end}: {self.chain[end - 30 : end]!r}")

    def test_cutEndLine(self) -> None:
        """
        An END line cut short is not an END line.
        """
        self.assertRefused(self.chain[:-10], "cut short")

    def test_beginWithoutEnd(self) -> None:
        """
        A block that starts before the previous one ended is refused.
        """
        broken = self.leaf[:200] + b"\n" + self.chain[len(self.leaf) :]
        self.assertRefused(broken, "has no END line")

    def test_strayBoundary(self) -> None:
        """
        An END line, or half a boundary, outside any block is refused.
        """
        self.assertRefused(
            self.leaf + b"-----END CERTIFICATE-----\n", "outside any block"
        )
        self.assertRefused(self.leaf + b"-----BEGIN CERT\n", "outside any block")

    def test_mismatchedEnd(self) -> None:
        """
        A block that ends with another kind's END line is refused.
        """
        self.assertRefused(
            self.leaf.replace(b"END CERTIFICATE", b"END PRIVATE KEY"),
            "ends with END PRIVATE KEY",
        )

    def test_notBase64(self) -> None:
        """
        Text that is not base64 inside a block is refused.
        """
        lines = self.leaf.splitlines()
        lines.insert(3, b"this is not base64!")
        self.assertRefused(b"\n".join(lines), "line 4")

    def test_blockDoesNotParse(self) -> None:
        """
        A whole block whose content is not a certificate is refused.
        """
        lines = self.leaf.splitlines()
        lines[1] = b"A" * len(lines[1])
        self.assertRefused(b"\n".join(lines) + b"\n", "line 1 does not parse")

    def test_keyCut(self) -> None:
        """
        A key file cut short is refused as well.
        """
        with open(self.paths["key"], "rb") as file:
            key = file.read()
        self.assertRefused(key[:-30], "cut short", what="key")

    def test_keyDoesNotParse(self) -> None:
        """
        A whole key block whose content is not a key is refused.
        """
        with open(self.paths["key"], "rb") as file:
            lines = file.read().splitlines()
        lines[1] = b"A" * len(lines[1])
        self.assertRefused(
            b"\n".join(lines) + b"\n", "the PRIVATE KEY does not parse", what="key"
        )

    def test_twoKeys(self) -> None:
        """
        A key file holding two keys is refused: which one is meant?
        """
        with open(self.paths["key"], "rb") as file:
            key = file.read()
        self.assertRefused(key + key, "2 private keys", what="key")

    def test_keyBesideCertificate(self) -> None:
        """
        A certificate file that also holds the key (one file for both)
        loads; the key file may hold the certificate too.
        """
        with open(self.paths["key"], "rb") as file:
            key = file.read()
        both = self.write(self.chain + key)
        self.assertEqual(len(loadCertificates(both)), 2)
        loadPrivateKey(both)
        CertificateFiles(both, both).load()

    def test_chainOutOfOrder(self) -> None:
        """
        A chain whose second certificate did not issue the first is refused
        when loaded as a server's certificate.
        """
        with open(self.paths["intermediate"], "rb") as file:
            intermediate = file.read()
        path = self.write(intermediate + self.leaf)
        with self.assertRaises(TLSFileError) as raised:
            CertificateFiles(path, self.paths["key"]).load()
        self.assertIn(
            "certificate 2 did not issue certificate 1", str(raised.exception)
        )
        with open(pki().server[0], "rb") as file:
            other = file.read()
        path = self.write(self.leaf + other)
        with self.assertRaises(TLSFileError) as raised:
            CertificateFiles(path, self.paths["key"]).load()
        self.assertIn("did not issue", str(raised.exception))


class FileKindTests(SynchronousTestCase):
    """
    What is not a PEM file of sensible size is refused by its kind or size
    before it is read: a directory, a device, a FIFO, a huge file.
    """

    def assertRefused(self, path: str, expected: str) -> None:
        """
        Both loaders refuse ``path`` with one line holding ``expected``.
        """
        for load in (loadCertificates, loadPrivateKey):
            with self.assertRaises(TLSFileError) as raised:
                load(path)
            self.assertIn(f"{path}: {expected}", str(raised.exception))

    def test_directory(self) -> None:
        """
        A directory is named as one.
        """
        self.assertRefused(pki().folder, "is a directory")

    def test_devZero(self) -> None:
        """
        ``/dev/zero``, which never ends, is refused at once.
        """
        self.assertRefused("/dev/zero", "is not a regular file")

    def test_fifo(self) -> None:
        """
        A FIFO with no writer is refused without waiting for one.
        """
        path = self.mktemp()
        os.mkfifo(path)
        self.assertTrue(stat.S_ISFIFO(os.stat(path).st_mode))
        self.assertRefused(path, "is not a regular file")

    def test_huge(self) -> None:
        """
        A 100 MB file (sparse: it takes no disk) is refused by its size.
        """
        path = self.mktemp()
        with open(path, "wb") as file:
            file.truncate(100 * 1000 * 1000)
        self.assertRefused(path, "is larger than 1 MiB")

    def test_justLargeEnough(self) -> None:
        """
        A certificate followed by text up to 1 MiB in all still loads.
        """
        path = self.mktemp()
        with open(pki().ca, "rb") as file:
            data = file.read()
        with open(path, "wb") as file:
            file.write(data + b"#" * (tls.MAX_PEM_BYTES - len(data)))
        self.assertEqual(len(loadCertificates(path)), 1)
        with open(path, "ab") as file:
            file.write(b"#")
        self.assertRefused(path, "is larger than 1 MiB")

    def test_grewWhileRead(self) -> None:
        """
        A file that grows past 1 MiB after its size was checked is still
        read no further than that, and refused.
        """
        path = self.mktemp()
        with open(path, "wb") as file:
            file.truncate(tls.MAX_PEM_BYTES * 3)
        real = os.fstat

        def smaller(descriptor: int) -> os.stat_result:
            fields = list(real(descriptor))
            fields[stat.ST_SIZE] = 100
            return os.stat_result(fields)

        self.patch(os, "fstat", smaller)
        self.assertRefused(path, "is larger than 1 MiB")

    def test_readError(self) -> None:
        """
        An error while reading (EIO) is named like one while opening.
        """
        import errno

        def failing(descriptor: int, size: int) -> bytes:
            raise OSError(errno.EIO, os.strerror(errno.EIO))

        self.patch(os, "read", failing)
        self.assertRefused(pki().ca, "Input/output error")

    def test_unreadable(self) -> None:
        """
        A file that cannot be opened is named with the system's reason.
        """
        if os.geteuid() == 0:
            raise SkipTest("root reads every file")
        path = self.mktemp()
        with open(path, "wb"):
            pass
        os.chmod(path, 0)
        self.assertRefused(path, "Permission denied")


class ChainReloadTests(SynchronousTestCase):
    """
    A reload refuses a chain file caught half-written, keeping what it
    serves, and takes it once it is whole.
    """

    def test_halfWrittenChain(self) -> None:
        """
        Rewritten in place (truncated, the leaf written, the intermediate
        not yet), the chain file is refused at each stage, with one error
        each; once whole again, it reloads.
        """
        events = EventLoggingObserver()
        self.patch(tls, "_log", Logger(observer=events))
        folder = self.mktemp()
        os.makedirs(folder)
        paths = chainPKI(folder)
        with open(paths["chain"], "rb") as file:
            chain = file.read()
        with open(paths["leaf"], "rb") as file:
            leaf = file.read()
        settings = ReloadableServerTLS(
            ServerTLSFiles(CertificateFiles(paths["chain"], paths["key"]))
        )
        served = settings._options
        self.assertEqual(len(served.extraCertChain), 1)
        for stage in (b"", leaf[:300], leaf, chain[: len(leaf) + 64]):
            with open(paths["chain"], "wb") as file:
                file.write(stage)
            self.assertFalse(settings.reload(), stage)
            self.assertIs(settings._options, served)
        with open(paths["chain"], "wb") as file:
            file.write(chain)
        self.assertTrue(settings.reload())
        self.assertEqual(len(settings._options.extraCertChain), 1)
        outcomes = [event["outcome"] for event in events]
        self.assertEqual(outcomes, ["reload-failed"] * 4 + ["reloaded"])
        errors = [event["error"] for event in events[:4]]
        self.assertIn("no PEM certificate in it", errors[0])
        self.assertIn("cut short", errors[1])
        self.assertIn("without the intermediates served until now", errors[2])
        self.assertIn("cut short", errors[3])
        for error in errors:
            self.assertEqual(len(error.splitlines()), 1)
            self.assertIn(paths["chain"], error)

    def test_workerKeepsIntermediates(self) -> None:
        """
        Asked to keep intermediates (a worker started while the others
        serve them), loading refuses the leaf alone and takes the chain;
        otherwise the leaf alone is a certificate like any other.
        """
        folder = self.mktemp()
        os.makedirs(folder)
        paths = chainPKI(folder)
        leafOnly = ServerTLSFiles(CertificateFiles(paths["leaf"], paths["key"]))
        with self.assertRaises(TLSFileError) as caught:
            ReloadableServerTLS(leafOnly, keepIntermediates=True)
        self.assertIn(
            "without the intermediates served until now", str(caught.exception)
        )
        self.assertFalse(ReloadableServerTLS(leafOnly).servesIntermediates)
        whole = ServerTLSFiles(CertificateFiles(paths["chain"], paths["key"]))
        self.assertTrue(
            ReloadableServerTLS(whole, keepIntermediates=True).servesIntermediates
        )

    def test_quietReload(self) -> None:
        """
        A quiet reload (a ``--workers`` parent's) applies the same rules and
        logs nothing.
        """
        events = EventLoggingObserver()
        self.patch(tls, "_log", Logger(observer=events))
        folder = self.mktemp()
        os.makedirs(folder)
        paths = chainPKI(folder)
        settings = ReloadableServerTLS(
            ServerTLSFiles(CertificateFiles(paths["chain"], paths["key"]))
        )
        with open(paths["leaf"], "rb") as leaf, open(paths["chain"], "wb") as file:
            file.write(leaf.read())
        self.assertFalse(settings.reload(quiet=True))
        self.assertTrue(settings.servesIntermediates)
        self.assertEqual(list(events), [])


class ClientSettingsTests(SynchronousTestCase):
    """
    `clientTLS`.
    """

    def test_badCA(self) -> None:
        """
        A CA file that cannot be used is named.
        """
        path = pki().path("missing-ca.pem")
        with self.assertRaises(TLSFileError) as raised:
            clientTLS("localhost", path)
        self.assertEqual(
            str(raised.exception), f"CA file {path}: No such file or directory"
        )
        self.assertEqual(raised.exception.what, "CA file")
        self.assertEqual(raised.exception.path, path)
        self.assertEqual(raised.exception.problem, "No such file or directory")

    def test_noProblemBeforeConnecting(self) -> None:
        """
        Before any handshake there is nothing to diagnose.
        """
        self.assertIsNone(clientTLS("localhost", pki().ca).problem())


class DescribeTLSErrorTests(SynchronousTestCase):
    """
    `describeTLSError` keeps OpenSSL's reasons and drops the rest.
    """

    def test_reasons(self) -> None:
        """
        The reason strings of OpenSSL's error list are joined.
        """
        error = SSL.Error([("SSL routines", "", "certificate verify failed")])
        self.assertEqual(describeTLSError(error), "certificate verify failed")
        self.assertEqual(describeTLSError(SSL.Error()), "TLS error")
        self.assertEqual(describeTLSError(ValueError("odd")), "odd")


class ChainRewrittenInPlaceTests(CommandTestCase):
    """
    ``twist hellotcp`` whose chain file is rewritten in place, a SIGHUP
    arriving between the leaf and the intermediate.
    """

    async def waitForLog(self, log: str, text: str, count: int) -> None:
        """
        Wait until ``text`` appears ``count`` times in the file ``log``.
        """
        for _ in range(int(TIMEOUT / 0.05)):
            if os.path.exists(log):
                with open(log, errors="replace") as file:
                    if file.read().count(text) >= count:
                        return
            await deferLater(reactor, 0.05)
        self.fail(f"{text!r} never logged {count} times")

    async def test_halfWrittenChainRefused(self) -> None:
        """
        The reload is refused in one line, clients that trust only the root
        keep being greeted, and a SIGHUP once the file is whole reloads it.
        """
        paths = chainPKI(self.folder)
        port = freePort()
        log = os.path.join(self.folder, "server.log")
        server = await self.startServer(
            [
                command("twist"),
                "--log-format=text",
                f"--log-file={log}",
                "hellotcp",
                *tlsListen(port, paths["chain"], paths["key"]),
            ],
            port,
        )
        server.allowedErrors = ["TLS reload failed"]
        self.assertEqual(
            await inThread(rootOnlyClient, port, paths["root"]), b"Hello, client!"
        )
        with open(paths["chain"], "rb") as file:
            chain = file.read()
        with open(paths["leaf"], "rb") as file:
            leaf = file.read()
        with open(paths["chain"], "r+b") as file:
            file.truncate(0)
            file.write(leaf)
            file.flush()
            server.transport.signalProcess("HUP")  # type: ignore[union-attr]
            await self.waitForLog(log, "TLS reload failed", 1)
            for _ in range(3):
                self.assertEqual(
                    await inThread(rootOnlyClient, port, paths["root"]),
                    b"Hello, client!",
                )
            file.write(chain[len(leaf) :])
        server.transport.signalProcess("HUP")  # type: ignore[union-attr]
        await self.waitForLog(log, "TLS certificate reloaded", 1)
        self.assertEqual(
            await inThread(rootOnlyClient, port, paths["root"]), b"Hello, client!"
        )
        server.transport.signalProcess("TERM")  # type: ignore[union-attr]
        self.assertEqual(await server.ended.addTimeout(TIMEOUT, reactor), 0)
        with open(log) as file:
            text = file.read()
        [refused] = [line for line in text.splitlines() if "TLS reload" in line]
        self.assertIn(paths["chain"], refused)
        self.assertIn("without the intermediates served until now", refused)
        self.assertEqual(text.count("TLS certificate reloaded"), 1)


class OneCallTests(TestCase):
    """
    `serveTLS` and `clientTLS`: TLS for an embedding application in one call
    each way, with errors that name files, not options.
    """

    async def exchange(
        self,
        factory: Callable[[HelloServerFactory], IProtocolFactory],
        client: VerifiedClientTLS,
    ) -> bytes:
        """
        One exchange over loopback TCP with ``factory`` serving; the
        connection is closed on both sides before the test ends.
        """
        hello = HelloServerFactory()
        server = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        port = await server.listen(factory(hello))
        self.addCleanup(port.stopListening)
        self.addCleanup(hello.stopGracefully, TIMEOUT)
        address = port.getHost()
        assert isinstance(address, IPv4Address)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", address.port)
        return await greet(reactor, endpoint, timeout=TIMEOUT, tls=client)

    async def test_serveAndConnect(self) -> None:
        """
        A certificate and its key serve TLS; a client that trusts its CA
        gets the greeting.
        """
        answer = await self.exchange(
            lambda hello: serveTLS(hello, *pki().server),
            clientTLS("localhost", ca=pki().ca),
        )
        self.assertEqual(answer, b"Hello, client!")

    async def test_mutual(self) -> None:
        """
        With ``clientCAs``, a client certificate from those CAs is accepted
        and one from elsewhere is refused.
        """
        serve = lambda hello: serveTLS(hello, *pki().server, clientCAs=pki().ca)  # noqa: E731
        answer = await self.exchange(
            serve, clientTLS("localhost", pki().ca, *pki().client)
        )
        self.assertEqual(answer, b"Hello, client!")
        refused = self.exchange(
            serve, clientTLS("localhost", pki().ca, *pki().foreignClient)
        )
        await self.assertFailure(ensureDeferred(refused), SSL.Error)

    async def test_keyInCertificateFile(self) -> None:
        """
        Without a key file, the key is read from the certificate's file, on
        both sides.
        """
        folder = self.mktemp()
        os.mkdir(folder)
        joined = {}
        for name, (certificate, key) in [
            ("server", pki().server),
            ("client", pki().client),
        ]:
            joined[name] = os.path.join(folder, f"{name}.pem")
            with open(joined[name], "wb") as out:
                for path in (certificate, key):
                    with open(path, "rb") as part:
                        out.write(part.read())
        answer = await self.exchange(
            lambda hello: serveTLS(hello, joined["server"], clientCAs=pki().ca),
            clientTLS("localhost", pki().ca, joined["client"]),
        )
        self.assertEqual(answer, b"Hello, client!")

    def test_errorsNameFiles(self) -> None:
        """
        A file that cannot be used is named with what it is and the
        problem, in words an embedding application's user reads.
        """
        missing = pki().path("missing.pem")
        certificate, key = pki().server
        _, otherKey = pki().client
        for call, expected in [
            (
                lambda: serverTLS(missing, key),
                f"certificate {missing}: No such file or directory",
            ),
            (
                lambda: serverTLS(certificate, otherKey),
                f"private key {otherKey}: does not match the certificate {certificate}",
            ),
            (
                lambda: serverTLS(certificate, key, clientCAs=missing),
                f"client CA file {missing}: No such file or directory",
            ),
            (
                lambda: clientTLS("localhost", ca=missing),
                f"CA file {missing}: No such file or directory",
            ),
        ]:
            with self.assertRaises(TLSFileError) as raised:
                call()
            self.assertEqual(str(raised.exception), expected)
            self.assertNotIn("--", str(raised.exception))

    def test_keyWithoutCertificate(self) -> None:
        """
        A client key without its certificate is a programming error.
        """
        self.assertRaises(
            ValueError, clientTLS, "localhost", pki().ca, privateKey=pki().client[1]
        )

    def test_exportedFromPackage(self) -> None:
        """
        The one-call functions and their error are importable from
        ``hellotcp``.
        """
        import hellotcp

        for name in ("serveTLS", "serverTLS", "clientTLS", "TLSFileError"):
            self.assertIs(getattr(hellotcp, name), getattr(tls, name))
