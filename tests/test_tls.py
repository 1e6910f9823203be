"""
Unit tests for `hellotcp.tls`: loading files with clear errors, server
settings and their reload, and the client settings.
"""

from __future__ import annotations

import shutil

from OpenSSL import SSL
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from hellotcp import tls
from hellotcp._tlserror import describeTLSError
from hellotcp.protocol import HelloServerFactory, ServerSettings
from hellotcp.tls import (
    CertificateFiles,
    ReloadableServerTLS,
    ServerTLSFiles,
    TLSFileError,
    TLSServerFactory,
    clientTLS,
    loadCertificates,
    loadPrivateKey,
)

from .pki import PKI

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
            f"certificate {key}: no PEM certificate in it", loadCertificates, key
        )
        self.assertRefused(
            f"private key {certificate}: no PEM private key in it",
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
            f"--private-key {otherKey} does not match --certificate {certificate}",
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
            str(raised.exception), f"--ca {path}: No such file or directory"
        )

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
