"""
Certificates made at test time (no private key is ever shipped): a CA with
server and client certificates, a foreign CA, an expired certificate, and
one for the wrong host; a chain through an intermediate CA (`chainPKI`);
and the command-line arguments and clients that use them.
"""

from __future__ import annotations

import datetime
import os
import tempfile

from hellotcp.certs import Issued, issue, makeCA, writeIssued

from .support import TIMEOUT, readToEnd

LONG_AGO = datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)


class PKI:
    """
    A folder of PEM files for one test.

    :ivar folder: Where the files are.
    :ivar ca: PEM path of the trusted CA.
    :ivar server: (certificate, key) paths for localhost, 127.0.0.1 and ::1.
    :ivar client: (certificate, key) paths of a client of that CA.
    :ivar foreignCA: PEM path of a CA nobody trusts.
    :ivar foreignServer: (certificate, key) for localhost from the foreign CA.
    :ivar foreignClient: (certificate, key) of a client of the foreign CA.
    :ivar expired: (certificate, key) for localhost, expired in 2020.
    :ivar wrongHost: (certificate, key) for example.com only.
    """

    def __init__(self, folder: str | None = None) -> None:
        self.folder = folder or tempfile.mkdtemp(prefix="hellotcp-pki-")
        authority = makeCA()
        foreign = makeCA("someone else's CA")
        self.authority = authority
        self.ca = self._write("ca", authority)[0]
        self.foreignCA = self._write("foreign-ca", foreign)[0]
        names = ["localhost", "127.0.0.1", "::1"]
        self.server = self._write("server", issue(authority, "localhost", names))
        self.client = self._write("client", issue(authority, "a client", client=True))
        self.foreignServer = self._write(
            "foreign-server", issue(foreign, "localhost", names)
        )
        self.foreignClient = self._write(
            "foreign-client", issue(foreign, "intruder", client=True)
        )
        self.expired = self._write(
            "expired", issue(authority, "localhost", names, days=1, start=LONG_AGO)
        )
        self.wrongHost = self._write(
            "wrong-host", issue(authority, "example.com", ["example.com"])
        )

    def _write(self, stem: str, issued: Issued) -> tuple[str, str]:
        return writeIssued(self.folder, stem, issued)

    def path(self, name: str) -> str:
        """
        A path in the folder.
        """
        return os.path.join(self.folder, name)


_pki: PKI | None = None


def pki() -> PKI:
    """
    One set of certificates for the tests that need no folder of their own,
    made once per test run (never shipped: made here).
    """
    global _pki
    if _pki is None:
        _pki = PKI()
    return _pki


def tlsListen(port: int, certificate: str, key: str) -> list[str]:
    """
    ``twist hellotcp`` arguments that serve TLS on 127.0.0.1:``port``.
    """
    return [
        "--tls-listen",
        f"tcp:{port}:interface=127.0.0.1",
        "--certificate",
        certificate,
        "--private-key",
        key,
    ]


def verifiedClient(port: int, ca: str | None = None) -> list[str]:
    """
    ``hellotcp-client`` arguments for TLS with localhost:``port``, verified
    against ``ca`` (by default this module's test CA).
    """
    return ["--tls", "--connect", f"tcp:localhost:{port}", "--ca", ca or pki().ca]


def chainPKI(folder: str) -> dict[str, str]:
    """
    A root CA, an intermediate CA it issued, and a server certificate for
    localhost and 127.0.0.1 the intermediate issued, written into ``folder``.

    :returns: Paths: ``root`` (the root alone, what clients trust), ``chain``
        (leaf then intermediate), ``leaf`` (the leaf alone), ``intermediate``
        (the intermediate alone) and ``key`` (the leaf's key).
    """
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    from hellotcp.certs import Issued, issue, writeFile

    now = datetime.datetime.now(datetime.timezone.utc)

    def authority(name: str, issuer: Issued | None) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, name)])
        certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer.certificate.subject if issuer else subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(
                x509.BasicConstraints(ca=True, path_length=None), critical=True
            )
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            # Python 3.13's strict verification wants both key identifiers.
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    (issuer.key if issuer else key).public_key()
                ),
                critical=False,
            )
            .sign(issuer.key if issuer else key, hashes.SHA256())
        )
        return Issued(certificate, key)

    root = authority("test root", None)
    intermediate = authority("test intermediate", root)
    leaf = issue(intermediate, "localhost", ["localhost", "127.0.0.1"], days=30)
    paths = {
        name: os.path.join(folder, f"{name}.pem")
        for name in ("root", "chain", "leaf", "intermediate", "key")
    }
    writeFile(paths["root"], root.certificatePEM())
    writeFile(paths["chain"], leaf.certificatePEM() + intermediate.certificatePEM())
    writeFile(paths["leaf"], leaf.certificatePEM())
    writeFile(paths["intermediate"], intermediate.certificatePEM())
    writeFile(paths["key"], leaf.keyPEM(), private=True)
    return paths


def rootOnlyClient(port: int, root: str) -> bytes:
    """
    An ordinary Python ``ssl`` client that trusts only ``root``: it needs the
    server to send the intermediate.  It sends its line and reads the
    answer to the end.
    """
    import socket
    import ssl

    context = ssl.create_default_context(cafile=root)
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as sock:
            sock.sendall(b"Hello, server!\n")
            return readToEnd(sock)
