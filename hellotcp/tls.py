# -*- test-case-name: tests.test_tls -*-
"""
TLS for hellotcp: loading certificates and keys with clear errors, the
server's reloadable TLS settings, and the client's verified ones.

The protocols know nothing of this module: TLS wraps their factories from
outside (`TLSServerFactory` on the server, Twisted's ``wrapClientTLS``
in `hellotcp.greet.greet`), and `HalfCloseableTLS` reports what the handshake
settles, or why TLS failed, through `hellotcp.protocol.IConnectionReport`.
Why a TLS connection failed is put in words in one place,
`describeTLSError`.
"""

from __future__ import annotations

import datetime
import itertools
import os
import re
import ssl as stdlibSSL
import stat
from collections.abc import Mapping, Sequence

from attrs import frozen
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from OpenSSL import SSL, crypto
from service_identity import VerificationError
from twisted.internet import ssl
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
    IProtocolFactory,
    IReactorTime,
)
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from ._refusals import KeepsRefusals, halfCloseable
from ._twistedcompat import (
    TLSProtocolBase,
    canSetGroupsList,
    setGroupsList,
    writeSideClosed,
)
from .protocol import IConnectionReport

__all__ = [
    "CA",
    "CERTIFICATE",
    "CIPHERS",
    "CLIENT_CA",
    "GROUPS",
    "MAX_PEM_BYTES",
    "MINIMUM_VERSION",
    "PRIVATE_KEY",
    "CertificateFiles",
    "HalfCloseableTLS",
    "ReloadableServerTLS",
    "ServerTLSFiles",
    "TLSFileError",
    "TLSServerFactory",
    "VerifiedClientTLS",
    "clientTLS",
    "describeTLSError",
    "explainClientTLSFailure",
    "loadCertificates",
    "loadPrivateKey",
    "restrictGroups",
    "serveTLS",
    "serverGroups",
    "serverTLS",
]

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

GROUPS = ("X25519", "P-256", "P-384")
"""The key-exchange groups the server accepts, in its order of preference:
those of Mozilla's intermediate profile (X25519, prime256v1, secp384r1).
OpenSSL's default list also admits X448, P-521 and finite-field groups."""


def serverGroups() -> tuple[str, ...]:
    """
    The key-exchange groups that `restrictGroups` leaves the server: all of
    `GROUPS` where this cryptography (47 or later) can set a group list,
    P-256 alone before that.
    """
    return GROUPS if canSetGroupsList() else ("P-256",)


def restrictGroups(context: SSL.Context) -> None:
    """
    Limit the key-exchange groups that ``context`` accepts to
    `serverGroups`.
    """
    # Every OpenSSL that cryptography 42 and later builds on (1.1.1 and up,
    # and LibreSSL) knows the three names, so the list cannot be refused.
    if canSetGroupsList():
        status = setGroupsList(context, ":".join(GROUPS))
        assert status == 1, "OpenSSL refused the group list"
    else:  # pragma: no cover - cryptography before 47 (the floors job)
        try:
            context.set_tmp_ecdh(ec.SECP256R1())
        except AttributeError:  # pyOpenSSL before 24.3 wants its own curve
            context.set_tmp_ecdh(crypto.get_elliptic_curve("prime256v1"))


CERTIFICATE = "certificate"
"""`TLSFileError.what` of a certificate (chain) file."""

PRIVATE_KEY = "private key"
"""`TLSFileError.what` of a private key file."""

CA = "CA file"
"""`TLSFileError.what` of the file of CAs a client trusts."""

CLIENT_CA = "client CA file"
"""`TLSFileError.what` of the file of CAs a server's clients must come from."""


class TLSFileError(Exception):
    """
    A certificate, key or CA file cannot be used.

    ``str()`` gives one line naming the file and the problem, such as
    ``CA file ca.pem: No such file or directory``; a command names the
    file by its option instead (`describe`).

    :ivar what: Which file: `CERTIFICATE`, `PRIVATE_KEY`, `CA` or
        `CLIENT_CA`.
    :ivar path: The file, as it was given.
    :ivar problem: What is wrong with it, in a few words.
    """

    def __init__(self, what: str, path: str, problem: str) -> None:
        super().__init__(what, path, problem)
        self.what = what
        self.path = path
        self.problem = problem

    def __str__(self) -> str:
        return self.describe()

    def describe(self, names: Mapping[str, str] | None = None) -> str:
        """
        The problem in one line, the file named as ``names`` says (for
        example ``{CA: "--ca"}``), else by `what`.
        """
        name = (names or {}).get(self.what, self.what)
        return f"{name} {self.path}: {self.problem}"


MAX_PEM_BYTES = 1024 * 1024
"""The largest certificate, key or CA file read: 1 MiB holds hundreds of
certificates, and a larger file (or ``/dev/zero``) is a mistake, refused
without reading it."""


def _read(path: str, what: str) -> bytes:
    """
    Read a regular file of at most `MAX_PEM_BYTES`.

    A directory, a device or a FIFO is refused by its type before anything
    is read from it (a FIFO could not be read again on reload anyway), and a
    file too large by its size.
    """

    def refuse(problem: str) -> TLSFileError:
        return TLSFileError(what, path, f"{problem}")

    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer.
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as error:
        raise refuse(error.strerror or str(error)) from None
    try:
        info = os.fstat(descriptor)
        if stat.S_ISDIR(info.st_mode):
            raise refuse("is a directory, not a PEM file")
        if not stat.S_ISREG(info.st_mode):
            raise refuse("is not a regular file")
        tooLarge = refuse(
            f"is larger than {MAX_PEM_BYTES // 1024 // 1024} MiB; "
            "no PEM file hellotcp reads is that large"
        )
        if info.st_size > MAX_PEM_BYTES:
            raise tooLarge
        chunks: list[bytes] = []
        size = 0
        # Bounded: the file may grow while it is read.
        while size <= MAX_PEM_BYTES and (
            chunk := os.read(descriptor, MAX_PEM_BYTES + 1 - size)
        ):
            chunks.append(chunk)
            size += len(chunk)
        if size > MAX_PEM_BYTES:
            raise tooLarge
        return b"".join(chunks)
    except OSError as error:
        raise refuse(error.strerror or str(error)) from None
    finally:
        os.close(descriptor)


_BEGIN = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----")
_END = re.compile(rb"-----END ([A-Z0-9 ]+)-----")
_BASE64 = re.compile(rb"[A-Za-z0-9+/=]*")
_HEADER = re.compile(rb"[A-Za-z-]+: ")


def _pemBlocks(data: bytes, path: str, what: str) -> list[tuple[str, int, bytes]]:
    """
    Split PEM ``data`` into its blocks, strictly: every ``BEGIN`` line has
    its ``END`` line, a block holds nothing but base64 (and RFC 1421
    headers), and no boundary line stands outside a block.  Text between
    blocks (``openssl x509 -text`` output, ``Bag Attributes``) is allowed.

    OpenSSL and ``cryptography`` skip a block that is cut short, so a file
    caught half-written would otherwise load as a shorter one.

    :returns: Each block's label, first line number and PEM text.
    :raises TLSFileError: Naming the file, the line and the problem.
    """
    blocks: list[tuple[str, int, bytes]] = []
    label: bytes | None = None
    first = 0
    body: list[bytes] = []

    def refuse(problem: str) -> TLSFileError:
        return TLSFileError(what, path, f"{problem} (a file still being written?)")

    lines = data.splitlines()
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        begin = _BEGIN.fullmatch(line)
        end = _END.fullmatch(line)
        if label is None:
            if begin:
                label, first, body = begin[1], number, [line]
            elif line.startswith(b"-"):
                # An END line, or a BEGIN line cut short.
                raise refuse(f"line {number} is a PEM boundary outside any block")
            continue
        name = label.decode()
        if begin:
            raise refuse(f"the {name} block of line {first} has no END line")
        if line.startswith(b"-----") and not end:
            raise refuse(
                f"the {name} block of line {first} is cut short at line {number}"
            )
        if end:
            if end[1] != label:
                raise refuse(
                    f"the {name} block of line {first} ends with "
                    f"END {end[1].decode()} on line {number}"
                )
            body.append(line)
            blocks.append((name, first, b"\n".join(body) + b"\n"))
            label = None
            continue
        if not (_BASE64.fullmatch(line) or _HEADER.match(line)):
            raise refuse(
                f"line {number}, in the {name} block of line {first}, is not base64"
            )
        body.append(line)
    if label is not None:
        raise refuse(
            f"the {label.decode()} block of line {first} is cut short: no END line"
        )
    return blocks


def _checkValidity(certificate: x509.Certificate, path: str, what: str) -> None:
    now = datetime.datetime.now(datetime.timezone.utc)
    if certificate.not_valid_after_utc < now:
        expired = certificate.not_valid_after_utc.strftime("%Y-%m-%d %H:%M UTC")
        raise TLSFileError(what, path, f"the certificate expired on {expired}")
    if certificate.not_valid_before_utc > now:
        starts = certificate.not_valid_before_utc.strftime("%Y-%m-%d %H:%M UTC")
        raise TLSFileError(what, path, f"the certificate is not valid until {starts}")


def _describeLabels(blocks: list[tuple[str, int, bytes]]) -> str:
    return ", only " + " and ".join(sorted({label for label, _, _ in blocks}))


def loadCertificates(path: str, what: str = CERTIFICATE) -> list[x509.Certificate]:
    """
    Read every PEM certificate in ``path``, in order, and check that each is
    valid now.  Blocks of other kinds (a private key kept in the same file)
    are skipped, but every block must be whole.

    :param what: Which file it is (`CERTIFICATE`, `CA`, ...), for errors.
    :raises TLSFileError: The file is missing, unreadable, not a regular
        file, too large, holds a block cut short or that does not parse,
        holds no certificate, or one has expired or is not yet valid.
    """
    blocks = _pemBlocks(_read(path, what), path, what)
    certificates = []
    for label, line, text in blocks:
        if label not in ("CERTIFICATE", "X509 CERTIFICATE"):
            continue
        try:
            certificates.append(x509.load_pem_x509_certificate(text))
        except ValueError:
            raise TLSFileError(
                what, path, f"the certificate of line {line} does not parse"
            ) from None
    if not certificates:
        found = _describeLabels(blocks) if blocks else ""
        raise TLSFileError(what, path, f"no PEM certificate in it{found}")
    for certificate in certificates:
        _checkValidity(certificate, path, what)
    return certificates


def _checkChain(chain: Sequence[x509.Certificate], path: str, what: str) -> None:
    """
    Check that each certificate of a chain file was issued by the next one,
    as TLS sends them: leaf first.
    """
    for number, (certificate, issuer) in enumerate(itertools.pairwise(chain), 1):
        try:
            certificate.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature):
            raise TLSFileError(
                what,
                path,
                f"certificate {number + 1} did not issue certificate "
                f"{number}; put the leaf first, then each issuer in turn",
            ) from None


def loadPrivateKey(path: str, what: str = PRIVATE_KEY) -> PrivateKeyTypes:
    """
    Read an unencrypted PEM private key.

    :raises TLSFileError: The file is missing, unreadable, not a regular
        file, too large, holds a block cut short, is encrypted, or holds no
        private key or more than one.
    """
    blocks = _pemBlocks(_read(path, what), path, what)
    keys = [(label, text) for label, _, text in blocks if label.endswith("PRIVATE KEY")]
    if not keys:
        found = _describeLabels(blocks) if blocks else ""
        raise TLSFileError(what, path, f"no PEM private key in it{found}")
    if len(keys) > 1:
        raise TLSFileError(what, path, f"{len(keys)} private keys in it; give one")
    [(label, text)] = keys
    try:
        return serialization.load_pem_private_key(text, password=None)
    except TypeError:
        raise TLSFileError(
            what, path, "the key is encrypted; hellotcp needs it unencrypted"
        ) from None
    except (ValueError, crypto.Error):
        raise TLSFileError(what, path, f"the {label} does not parse") from None


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
        chain = loadCertificates(self.certificate, CERTIFICATE)
        _checkChain(chain, self.certificate, CERTIFICATE)
        key = loadPrivateKey(self.privateKey, PRIVATE_KEY)
        if _publicBytes(key) != _publicBytes(chain[0]):
            raise TLSFileError(
                PRIVATE_KEY,
                self.privateKey,
                f"does not match the certificate {self.certificate}",
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

    :ivar certificate: The certificate chain and key.
    :ivar clientCA: PEM file of the CAs whose client certificates are
        accepted; `None` for no client certificates (plain server TLS).
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
                for ca in loadCertificates(self.clientCA, CLIENT_CA)
            ]
            if self.clientCA
            else []
        )
        options = ssl.CertificateOptions(
            privateKey=crypto.PKey.from_cryptography_key(key),  # type: ignore[arg-type]
            certificate=crypto.X509.from_cryptography(chain[0]),
            extraCertChain=[crypto.X509.from_cryptography(c) for c in chain[1:]],
            verify=bool(clientCAs),
            caCerts=clientCAs or None,
            requireCertificate=bool(clientCAs),
            raiseMinimumTo=MINIMUM_VERSION,
            acceptableCiphers=CIPHERS,
        )
        # The options make their context once and keep it: restrict it now.
        restrictGroups(options.getContext())
        return options


@implementer(IOpenSSLServerConnectionCreator)
class ReloadableServerTLS:
    """
    TLS server settings that can be read again from their files while
    serving: connections made after a `reload` use the new certificate;
    open ones keep theirs.
    """

    def __init__(self, files: ServerTLSFiles, keepIntermediates: bool = False) -> None:
        """
        Load the files now.

        :param files: The certificate, key and client CAs to serve with.
        :param keepIntermediates: Refuse a certificate file without
            intermediates, as a reload does when intermediates were served
            until then: a ``--workers`` parent asks this of a worker it
            starts while the other workers serve intermediates, so that a
            worker started while the file is half written does not serve a
            broken chain.
        :raises TLSFileError: Naming the file and the problem.
        """
        self.files = files
        options = files.options()
        if keepIntermediates:
            self._checkKeepsIntermediates(options)
        self._options = options

    @property
    def servesIntermediates(self) -> bool:
        """
        Whether the chain served now holds intermediate certificates.
        """
        return bool(self._options.extraCertChain)

    def _checkKeepsIntermediates(self, options: ssl.CertificateOptions) -> None:
        if not options.extraCertChain:
            path = self.files.certificate.certificate
            raise TLSFileError(
                CERTIFICATE,
                path,
                "now holds the certificate without "
                "the intermediates served until now (a file still being "
                "written?); complete it and send SIGHUP again, or restart "
                "to serve the certificate alone",
            )

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

    def reload(self, quiet: bool = False) -> bool:
        """
        Read the files again; on any problem keep the current settings and
        log one error (no line at all if ``quiet``: a ``--workers`` parent
        keeps its view of what its workers serve this way, and each worker
        logs its own reload).

        Besides what a start refuses (a block cut short, a chain out of
        order, a key that does not match), a reload refuses a certificate
        file that has lost the intermediate certificates served until now:
        that is what a chain file caught between the leaf and the rest looks
        like.

        :returns: Whether the new files are now in use.
        """
        try:
            options = self.files.options()
            if self.servesIntermediates:
                self._checkKeepsIntermediates(options)
        except TLSFileError as error:
            if quiet:
                return False
            _log.error(
                "TLS reload failed, still serving the previous certificate: {error}",
                error=str(error),
                outcome="reload-failed",
            )
            return False
        self._options = options
        if quiet:
            return True
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
        """
        :param hostname: The name the server's certificate must cover.
        :param creator: Twisted's verified settings
            (``optionsForClientTLS``), which do the work.
        :param trusted: The CA certificates trusted in place of the
            system's, to explain a rejection by; `None` for the system's.
        """
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


def describeTLSError(error: BaseException | None) -> str:
    """
    The reasons OpenSSL gives for ``error``, joined into one short line: how
    the server logs a failed TLS connection, and what the client says of a
    failure it has no better words for.
    """
    reasons = None
    if isinstance(error, (SSL.Error, crypto.Error)) and error.args:
        reasons = error.args[0]
    if isinstance(reasons, list):
        texts = [str(entry[-1]) for entry in reasons if isinstance(entry, tuple)]
        if texts:
            return "; ".join(texts)
    return str(error) or "TLS error"


# OpenSSL's reasons for a failed handshake, as a user would put them.
_TLS_PROBLEMS = [
    (
        "certificate required",
        "the server requires a client certificate (--certificate and --private-key)",
    ),
    ("unknown ca", "the server does not trust the CA of this client certificate"),
    ("bad certificate", "the server refused this client certificate"),
    ("certificate expired", "the server refused this client certificate: expired"),
    ("wrong version number", "the server is not speaking TLS (a plain TCP port?)"),
    ("packet length too long", "the server is not speaking TLS (a plain TCP port?)"),
    ("record layer failure", "the server is not speaking TLS (a plain TCP port?)"),
]


def explainClientTLSFailure(
    error: BaseException | None, settings: VerifiedClientTLS | None = None
) -> str:
    """
    Why a client's TLS connection failed, as a user would put it: why the
    server's certificate was rejected, if it was, else what OpenSSL's
    reasons (`describeTLSError`) mean for the client.

    :param settings: The TLS settings used, which know why a server
        certificate was rejected; `None` if unknown.
    """
    if settings is not None and (problem := settings.problem()):
        return problem
    if isinstance(error, VerificationError):
        hostname = settings.hostname if settings else "the host"
        return f"the server's certificate is not valid for {hostname}"
    detail = describeTLSError(error)
    for clue, meaning in _TLS_PROBLEMS:
        if clue in detail:
            return meaning
    return detail


def clientTLS(
    hostname: str,
    ca: str | None = None,
    certificate: str | None = None,
    privateKey: str | None = None,
) -> VerifiedClientTLS:
    """
    Verified TLS client settings, for `hellotcp.greet.greet`'s ``tls``: the
    server's certificate must chain to ``ca`` (or the system's trust store)
    and name ``hostname``.

    :param hostname: The name (or IP address) the certificate must cover.
    :param ca: PEM file of the CAs to trust instead of the system's.
    :param certificate: PEM file of a client certificate to present (mutual
        TLS), then its intermediates.
    :param privateKey: PEM file of that certificate's unencrypted key;
        without, the key is read from ``certificate``.
    :raises TLSFileError: Naming the file and the problem.
    """
    if privateKey is not None and certificate is None:
        raise ValueError("a client private key needs its certificate")
    trusted = loadCertificates(ca, CA) if ca else None
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
            clientCertificate=(
                CertificateFiles(
                    certificate, privateKey or certificate
                ).privateCertificate()
                if certificate is not None
                else None
            ),
            extraCertificateOptions={
                "raiseMinimumTo": MINIMUM_VERSION,
                "acceptableCiphers": CIPHERS,
            },
        ),
        trusted,
    )


@implementer(IHalfCloseableProtocol, IConnectionReport)
class HalfCloseableTLS(TLSProtocolBase):
    """
    Server-side TLS that serves a client which half-closes TCP, and reports
    to the wrapped protocol what TLS settles.

    A client may end its message by shutting down its TCP writing side
    without a TLS close alert (``shutdown(SHUT_WR)`` under TLS).  Twisted's
    `TLSMemoryBIOProtocol` is not half-closeable, so the reactor closed the
    socket at that end of file, throwing away the greeting still waiting to
    be written.  Here the end of the client's data is passed on to the
    wrapped protocol (its ``readConnectionLost``), which answers and closes;
    the TCP connection is then closed only once the greeting and the TLS
    close alert have been handed to the kernel.

    A client's close alert that arrives before the answer is passed on the
    same way (TLS 1.3 half-close).  After its own close alert this side
    shuts down the TCP writing side too (FIN), as a plain connection does
    after its answer: the transport's ``writeConnectionLost``, passed on to
    the wrapped protocol, then says that the greeting has been handed to
    the kernel, and the client's close (or reset) ends the rest.  A TCP
    connection that closes cleanly after this side's close alert is a clean
    end (`ConnectionDone`) whether or not the client answered the alert.

    The wrapped protocol, if it provides
    `hellotcp.protocol.IConnectionReport`, is told the subject of a client
    certificate the handshake verified (``clientIdentified``) and, just
    before the connection is lost because TLS failed, why
    (``tlsFailed``, in `describeTLSError`'s words).  What a PROXY wrapper
    outside reports is passed on to it.

    Beneath a PROXY wrapper, this class's own ``readConnectionLost`` is
    also what stops the wrapper from calling its own method back through
    Twisted's attribute forwarding (endless recursion).
    """

    _peerEnded = False
    _endDelivered = False
    _headerRefused = False

    def _report(self) -> IConnectionReport | None:
        report: IConnectionReport | None = IConnectionReport(self.wrappedProtocol, None)
        return report

    def readConnectionLost(self) -> None:
        """
        The client will send nothing more: pass the end of its data on, then
        close the TCP connection once everything written is flushed.
        """
        self._peerEnded = True
        if self.tlsLost or self.aborted or not self.handshakeDone or self.disconnecting:
            # TLS is over, never got going, or this side has closed already.
            self._closeTransport()
            return
        self._deliverEnd()
        if not self.disconnecting:
            # The wrapped protocol can do nothing more with this connection.
            self.loseConnection()  # type: ignore[no-untyped-call]

    def _deliverEnd(self) -> None:
        if self._endDelivered:
            return
        self._endDelivered = True
        wrapped = halfCloseable(self.wrappedProtocol)
        if wrapped is not None:
            wrapped.readConnectionLost()

    def handshakeFinished(self) -> None:
        """
        Tell the wrapped protocol whom a client certificate, if the client
        presented one, names.
        """
        report = self._report()
        certificate = self.getPeerCertificate()  # type: ignore[no-untyped-call]
        if report is not None and certificate is not None:
            report.clientIdentified(
                certificate.to_cryptography().subject.rfc4514_string()
            )

    def shutdownTLS(self) -> None:
        """
        Start, or answer, the TLS close handshake; then end the TCP stream
        as a plain connection would.
        """
        connection = self.tlsConnection
        if (
            not self.disconnecting
            and not self.aborted
            and connection is not None
            and connection.get_shutdown() & SSL.RECEIVED_SHUTDOWN
        ):
            # The client's close alert arrived before this side closed:
            # its message is complete; let the protocol answer first.
            self._deliverEnd()
            if self.disconnecting:
                return  # the answer's own loseConnection shut TLS down
        super().shutdownTLS()
        if self.aborted:
            return
        if self._peerEnded:
            # No close alert will come back from a client that has ended its
            # side: the socket closes as soon as ours is flushed.
            self._closeTransport()
        elif connection is not None and connection.get_shutdown() & SSL.SENT_SHUTDOWN:
            # Our close alert is written: end the TCP stream after it, as a
            # plain connection half-closes after its answer.  The transport
            # says when all of it has been handed to the kernel
            # (writeConnectionLost), and the client's close ends the rest.
            transport = self.transport
            if not getattr(transport, "disconnecting", False) and not (
                writeSideClosed(transport)
            ):
                loseWriteConnection = getattr(transport, "loseWriteConnection", None)
                if loseWriteConnection is not None:
                    loseWriteConnection()

    def flushSendBIO(self) -> None:
        """
        Write out what OpenSSL has to send, unless the TLS connection is
        gone already.
        """
        # Closing a transport whose writing side is already closed ends the
        # connection at once: connectionLost runs (and lets the TLS
        # connection go) in the middle of Twisted's own handling of the
        # client's close alert, which then flushes again.  Nothing is left.
        if self.tlsConnection is not None:
            super().flushSendBIO()

    def writeConnectionLost(self) -> None:
        """
        The TCP stream's writing side has closed after our close alert:
        everything written has been handed to the kernel.
        """
        wrapped = halfCloseable(self.wrappedProtocol)
        if wrapped is not None:
            wrapped.writeConnectionLost()

    def _closeTransport(self) -> None:
        transport = self.transport
        assert transport is not None
        transport.loseConnection()

    def peerRevealed(self) -> None:
        """
        Pass on that a PROXY header outside named the real client.
        """
        report = self._report()
        if report is not None:
            report.peerRevealed()

    def headerRefused(self, reason: str) -> None:
        """
        A PROXY header outside was refused before any TLS byte was read:
        nothing to diagnose at the TLS level.  Pass it on.
        """
        self._headerRefused = True
        report = self._report()
        if report is not None:
            report.headerRefused(reason)

    def clientIdentified(self, subject: str) -> None:
        """
        Pass on a client's identity (nothing outside TLS reports one).
        """
        report = self._report()
        if report is not None:
            report.clientIdentified(subject)

    def tlsFailed(self, reason: str) -> None:
        """
        Pass on a TLS failure (of a TLS layer outside this one).
        """
        report = self._report()
        if report is not None:
            report.tlsFailed(reason)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        A TCP connection closed cleanly after this side's close alert was
        flushed is a clean end, whatever the client sent (or did not send)
        in reply.  A connection lost because TLS failed is reported as
        such to the wrapped protocol first.
        """
        if (
            self.disconnecting
            and not self.aborted
            and self.handshakeDone
            and reason.check(ConnectionDone)
        ) or self._headerRefused:
            # Nothing to diagnose at the TLS level: a clean end, or a PROXY
            # header refused before any TLS byte was read.
            self.markTLSLost()
        final = self.finalReason(reason)
        report = self._report()
        if report is not None and final.check(SSL.Error):
            report.tlsFailed(describeTLSError(final.value))
        super().connectionLost(reason)  # type: ignore[no-untyped-call]


class TLSServerFactory(KeepsRefusals, TLSMemoryBIOFactory):  # type: ignore[misc]
    """
    TLS around a server factory that may refuse a connection, with
    `HalfCloseableTLS` connections.

    `TLSMemoryBIOFactory` would wrap the `None` by which a factory refuses
    a connection (when its limit is reached) in a TLS protocol that then
    fails; here a refusal stays a refusal, and Twisted closes the connection
    at once.
    """

    protocol = HalfCloseableTLS

    def __init__(
        self,
        settings: ReloadableServerTLS,
        wrappedFactory: IProtocolFactory,
        clock: IReactorTime | None = None,
    ) -> None:
        """
        :param settings: The server's TLS settings.
        :param wrappedFactory: The factory to serve over TLS.
        :param clock: What TLS batches small writes on (to the next turn of
            the clock); the global reactor if `None`.
        """
        super().__init__(settings, False, wrappedFactory, clock=clock)


def serverTLS(
    certificate: str, privateKey: str | None = None, clientCAs: str | None = None
) -> ReloadableServerTLS:
    """
    TLS server settings read from files now (so that a problem shows at
    once), for `hellotcp.service.HelloService`'s ``tls`` or `serveTLS`;
    `ReloadableServerTLS.reload` reads the files again.

    :param certificate: PEM file of the server's certificate, then its
        intermediates.
    :param privateKey: PEM file of its unencrypted key; without, the key is
        read from ``certificate``.
    :param clientCAs: PEM file of the CAs whose client certificates are
        accepted; given, every client must present one (mutual TLS).
    :raises TLSFileError: Naming the file and the problem.
    """
    files = CertificateFiles(certificate, privateKey or certificate)
    return ReloadableServerTLS(ServerTLSFiles(files, clientCAs))


def serveTLS(
    factory: IProtocolFactory,
    certificate: str,
    privateKey: str | None = None,
    clientCAs: str | None = None,
    clock: IReactorTime | None = None,
) -> TLSServerFactory:
    """
    ``factory`` (a `hellotcp.protocol.HelloServerFactory`) served over TLS,
    for any server endpoint's ``listen``: the settings of `serverTLS`, and
    connections that half-close as plain ones do.

    :param factory: The factory to serve.
    :param certificate: As for `serverTLS`.
    :param privateKey: As for `serverTLS`.
    :param clientCAs: As for `serverTLS`.
    :param clock: What TLS batches small writes on: the global reactor
        unless given; a test's `twisted.internet.task.Clock` in memory
        (`hellotcp.testing`).
    :raises TLSFileError: Naming the file and the problem.
    """
    return TLSServerFactory(
        serverTLS(certificate, privateKey, clientCAs), factory, clock=clock
    )
