# -*- test-case-name: tests.test_tls -*-
"""
TLS for hellotcp: loading certificates and keys with clear errors, the
server's reloadable TLS settings, and the client's verified ones.

The protocols know nothing of this module: TLS wraps their factories from
outside (`TLSMemoryBIOFactory` on the server, `wrapClientTLS` in
`hellotcp.protocol.greet`).
"""

from __future__ import annotations

import datetime
import ssl as stdlibSSL
from collections.abc import Sequence

from attrs import frozen
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from OpenSSL import SSL, crypto
from twisted.internet import ssl
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
    IProtocolFactory,
)
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from zope.interface import implementer

from ._refusals import KeepsRefusals

_log = Logger()

MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2
"""The oldest TLS version hellotcp accepts, as server and as client."""

CIPHERS = ssl.AcceptableCiphers.fromOpenSSLCipherString(
    "TLS13-AES-256-GCM-SHA384:TLS13-CHACHA20-POLY1305-SHA256:"
    "TLS13-AES-128-GCM-SHA256:"
    "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!MD5:!SHA1:!DSS"
)
"""Forward-secret AEAD suites only: TLS 1.3's three, and TLS 1.2's ECDHE
with AES-GCM or ChaCha20-Poly1305.  Twisted's default list also admits
RSA key exchange and CBC suites."""


class TLSFileError(Exception):
    """
    A certificate, key or CA file cannot be used; the message names the
    file and the problem in one line.
    """


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as error:
        raise TLSFileError(f"{what} {path}: {error.strerror or error}") from None


def _checkValidity(certificate: x509.Certificate, path: str, what: str) -> None:
    now = datetime.datetime.now(datetime.timezone.utc)
    if certificate.not_valid_after_utc < now:
        expired = certificate.not_valid_after_utc.strftime("%Y-%m-%d %H:%M UTC")
        raise TLSFileError(f"{what} {path}: the certificate expired on {expired}")
    if certificate.not_valid_before_utc > now:
        starts = certificate.not_valid_before_utc.strftime("%Y-%m-%d %H:%M UTC")
        raise TLSFileError(
            f"{what} {path}: the certificate is not valid until {starts}"
        )


def loadCertificates(path: str, what: str = "certificate") -> list[x509.Certificate]:
    """
    Read every PEM certificate in ``path``, in order, and check that each is
    valid now.

    :param what: How error messages name the file (the option's name).
    :raises TLSFileError: The file is missing, unreadable, holds no
        certificate, or one has expired or is not yet valid.
    """
    data = _read(path, what)
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise TLSFileError(f"{what} {path}: no PEM certificate in it") from None
    for certificate in certificates:
        _checkValidity(certificate, path, what)
    return certificates


def loadPrivateKey(path: str, what: str = "private key") -> PrivateKeyTypes:
    """
    Read an unencrypted PEM private key.

    :raises TLSFileError: The file is missing, unreadable, encrypted, or
        holds no private key.
    """
    data = _read(path, what)
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise TLSFileError(
            f"{what} {path}: the key is encrypted; hellotcp needs it unencrypted"
        ) from None
    except (ValueError, crypto.Error):
        raise TLSFileError(f"{what} {path}: no PEM private key in it") from None


def _publicBytes(key: PrivateKeyTypes | x509.Certificate) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@frozen
class CertificateFiles:
    """
    Where a certificate chain and its key live.

    :ivar certificate: PEM: the leaf certificate, then its intermediates.
    :ivar privateKey: PEM: the leaf's unencrypted private key.
    """

    certificate: str
    privateKey: str

    def load(self) -> tuple[list[x509.Certificate], PrivateKeyTypes]:
        """
        Load the chain and the key, checking that they belong together.

        :raises TLSFileError: Naming the file and the problem.
        """
        chain = loadCertificates(self.certificate, "--certificate")
        key = loadPrivateKey(self.privateKey, "--private-key")
        if _publicBytes(key) != _publicBytes(chain[0]):
            raise TLSFileError(
                f"--private-key {self.privateKey} does not match "
                f"--certificate {self.certificate}"
            )
        return chain, key

    def privateCertificate(self) -> ssl.PrivateCertificate:
        """
        The leaf certificate with its key, as Twisted's client TLS wants it.
        """
        chain, key = self.load()
        leaf: ssl.PrivateCertificate = ssl.PrivateCertificate.fromCertificateAndKeyPair(
            ssl.Certificate(crypto.X509.from_cryptography(chain[0])),
            ssl.KeyPair(crypto.PKey.from_cryptography_key(key)),  # type: ignore[arg-type]
        )
        return leaf


@frozen
class ServerTLSFiles:
    """
    The files behind a TLS server: its certificate and key, and the CAs its
    clients' certificates must come from (mutual TLS) if any.
    """

    certificate: CertificateFiles
    clientCA: str | None = None

    def options(self) -> ssl.CertificateOptions:
        """
        Build TLS server settings from the files as they are now.

        :raises TLSFileError: Naming the file and the problem.
        """
        chain, key = self.certificate.load()
        clientCAs = (
            [
                crypto.X509.from_cryptography(ca)
                for ca in loadCertificates(self.clientCA, "--client-ca")
            ]
            if self.clientCA
            else []
        )
        return ssl.CertificateOptions(
            privateKey=crypto.PKey.from_cryptography_key(key),  # type: ignore[arg-type]
            certificate=crypto.X509.from_cryptography(chain[0]),
            extraCertChain=[crypto.X509.from_cryptography(c) for c in chain[1:]],
            verify=bool(clientCAs),
            caCerts=clientCAs or None,
            requireCertificate=bool(clientCAs),
            raiseMinimumTo=MINIMUM_VERSION,
            acceptableCiphers=CIPHERS,
        )


@implementer(IOpenSSLServerConnectionCreator)
class ReloadableServerTLS:
    """
    TLS server settings that can be read again from their files while
    serving: connections made after a `reload` use the new certificate;
    open ones keep theirs.
    """

    def __init__(self, files: ServerTLSFiles) -> None:
        """
        Load the files now.

        :raises TLSFileError: Naming the file and the problem.
        """
        self.files = files
        self._options = files.options()

    @property
    def expires(self) -> float:
        """
        When the certificate now served expires, in seconds since the epoch.
        """
        certificate = self._options.certificate
        assert certificate is not None  # a server always has one
        return certificate.to_cryptography().not_valid_after_utc.timestamp()

    def serverConnectionForTLS(
        self, tlsProtocol: TLSMemoryBIOProtocol
    ) -> SSL.Connection:
        """
        Start the TLS side of one new connection with the current settings.
        """
        return SSL.Connection(self._options.getContext(), None)

    def reload(self) -> bool:
        """
        Read the files again; on any problem keep the current settings and
        log one error.

        :returns: Whether the new files are now in use.
        """
        try:
            options = self.files.options()
        except TLSFileError as error:
            _log.error(
                "TLS reload failed, still serving the previous certificate: {error}",
                error=str(error),
                outcome="reload-failed",
            )
            return False
        self._options = options
        _log.info(
            "TLS certificate reloaded from {certificate}",
            certificate=self.files.certificate.certificate,
            outcome="reloaded",
        )
        return True


@implementer(IOpenSSLClientConnectionCreator)
class VerifiedClientTLS:
    """
    Twisted's verified client TLS settings, able to say why the server's
    certificate was rejected, if it was.

    :ivar hostname: The name the server's certificate must cover.
    """

    def __init__(
        self,
        hostname: str,
        creator: IOpenSSLClientConnectionCreator,
        trusted: Sequence[x509.Certificate] | None,
    ) -> None:
        self.hostname = hostname
        self._creator = creator
        self._trusted = trusted
        self._connection: SSL.Connection | None = None

    def clientConnectionForTLS(
        self, tlsProtocol: TLSMemoryBIOProtocol
    ) -> SSL.Connection:
        """
        Start the TLS side of a connection (Twisted's verification applies),
        keeping it to diagnose a rejection later.
        """
        self._connection = self._creator.clientConnectionForTLS(tlsProtocol)
        return self._connection

    def problem(self) -> str | None:
        """
        Why the server's certificate chain does not verify, in OpenSSL's
        words, or `None` if it does (or none was received).

        The handshake's own error only says "certificate verify failed";
        verifying the received chain again against the same trust says why.
        """
        chain = self._connection.get_peer_cert_chain() if self._connection else None
        if not chain:
            return None
        store = crypto.X509Store()
        if self._trusted is None:
            system = stdlibSSL.get_default_verify_paths()
            if system.cafile or system.capath:
                store.load_locations(system.cafile, system.capath)
        else:
            for certificate in self._trusted:
                store.add_cert(crypto.X509.from_cryptography(certificate))
        try:
            crypto.X509StoreContext(store, chain[0], chain[1:]).verify_certificate()
        except crypto.X509StoreContextError as error:
            return f"the server's certificate is not trusted: {error}"
        return None


def clientTLS(
    hostname: str,
    ca: str | None = None,
    certificate: CertificateFiles | None = None,
) -> VerifiedClientTLS:
    """
    Verified TLS client settings: the server's certificate must chain to
    ``ca`` (or the system's trust store) and name ``hostname``.

    :param hostname: The name (or IP address) the certificate must cover.
    :param ca: PEM file of the CAs to trust instead of the system's.
    :param certificate: A client certificate to present (mutual TLS).
    :raises TLSFileError: Naming the file and the problem.
    """
    trusted = loadCertificates(ca, "--ca") if ca else None
    trustRoot = (
        ssl.trustRootFromCertificates(
            [ssl.Certificate(crypto.X509.from_cryptography(c)) for c in trusted]
        )
        if trusted is not None
        else ssl.platformTrust()
    )
    return VerifiedClientTLS(
        hostname,
        ssl.optionsForClientTLS(
            hostname,
            trustRoot=trustRoot,
            clientCertificate=certificate.privateCertificate() if certificate else None,
            extraCertificateOptions={
                "raiseMinimumTo": MINIMUM_VERSION,
                "acceptableCiphers": CIPHERS,
            },
        ),
        trusted,
    )


class TLSServerFactory(KeepsRefusals, TLSMemoryBIOFactory):  # type: ignore[misc]
    """
    TLS around a server factory that may refuse a connection.

    `TLSMemoryBIOFactory` would wrap the `None` by which a factory refuses
    a connection (when its limit is reached) in a TLS protocol that then
    fails; here a refusal stays a refusal, and Twisted closes the connection
    at once.
    """

    def __init__(
        self, settings: ReloadableServerTLS, wrappedFactory: IProtocolFactory
    ) -> None:
        super().__init__(settings, False, wrappedFactory)
