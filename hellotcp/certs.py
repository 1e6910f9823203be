# -*- test-case-name: tests.test_certs -*-
"""
The ``hellotcp-certs`` program (also ``python -m hellotcp.certs``): a private
CA, a server certificate and a client certificate, for people who have none.

The functions are public so that tests (and users' own tooling) can make
certificates of any shape: expired, for the wrong host, from another CA.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shlex
import sys
from collections.abc import Sequence
from typing import NoReturn

from attrs import frozen
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from twisted.python import usage

from ._options import OneLineErrorOptions, hostName, oneLineHelp

__all__ = [
    "DEFAULT_HOSTNAMES",
    "CertsOptions",
    "Issued",
    "issue",
    "main",
    "makeCA",
    "writeFile",
    "writeIssued",
]

DEFAULT_HOSTNAMES = ("localhost", "127.0.0.1", "::1")
"""The names a server certificate covers unless told otherwise."""

_DAY = datetime.timedelta(days=1)


@frozen
class Issued:
    """
    A certificate and its private key.

    :ivar certificate: The certificate.
    :ivar key: Its private key.
    """

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def certificatePEM(self) -> bytes:
        """
        The certificate in PEM.
        """
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def keyPEM(self) -> bytes:
        """
        The private key in unencrypted PKCS#8 PEM.
        """
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def _name(commonName: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "hellotcp"),
            x509.NameAttribute(NameOID.COMMON_NAME, commonName),
        ]
    )


def _validity(
    days: int, start: datetime.datetime | None
) -> tuple[datetime.datetime, datetime.datetime]:
    notBefore = start or datetime.datetime.now(datetime.timezone.utc) - _DAY
    return notBefore, notBefore + days * _DAY


def makeCA(
    commonName: str = "hellotcp private CA",
    days: int = 3650,
    start: datetime.datetime | None = None,
) -> Issued:
    """
    A self-signed certificate authority.

    :param days: How long it is valid.
    :param start: When it becomes valid (default: a day ago).
    """
    key = ec.generate_private_key(ec.SECP256R1())
    notBefore, notAfter = _validity(days, start)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(commonName))
        .issuer_name(_name(commonName))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(notBefore)
        .not_valid_after(notAfter)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
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
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return Issued(certificate, key)


def _subjectAlternativeName(names: Sequence[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(hostName(name)))
    return x509.SubjectAlternativeName(entries)


# X.509's upper bound on a common name (RFC 5280, ub-common-name).
_MAX_COMMON_NAME = 64


def issue(
    ca: Issued,
    commonName: str,
    names: Sequence[str] = (),
    client: bool = False,
    days: int = 365,
    start: datetime.datetime | None = None,
) -> Issued:
    """
    A certificate signed by ``ca``, for a server (covering ``names``: host
    names or IP addresses) or for a client.

    :param days: How long it is valid: a year by default, within the 366
        days that Mozilla's TLS profiles allow a leaf certificate.
    :param start: When it becomes valid (default: a day ago).
    """
    if len(commonName) > _MAX_COMMON_NAME:
        # Clients check the alternative names, not this: a long host name
        # must not make the certificate impossible.
        commonName = commonName[: _MAX_COMMON_NAME - 3] + "..."
    key = ec.generate_private_key(ec.SECP256R1())
    notBefore, notAfter = _validity(days, start)
    usage = (
        ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(commonName))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(notBefore)
        .not_valid_after(notAfter)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    if names:
        builder = builder.add_extension(_subjectAlternativeName(names), critical=False)
    return Issued(builder.sign(ca.key, hashes.SHA256()), key)


def writeFile(path: str, data: bytes, private: bool = False) -> None:
    """
    Write ``data`` to ``path``; a private file is readable by its owner only,
    from the moment it exists.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    descriptor = os.open(path, flags, 0o600 if private else 0o644)
    with os.fdopen(descriptor, "wb") as file:
        if private:
            os.fchmod(descriptor, 0o600)
        file.write(data)


def writeIssued(folder: str, stem: str, issued: Issued) -> tuple[str, str]:
    """
    Write ``stem``.pem and ``stem``-key.pem into ``folder``.

    :returns: The two paths.
    """
    certificate = os.path.join(folder, f"{stem}.pem")
    key = os.path.join(folder, f"{stem}-key.pem")
    writeFile(certificate, issued.certificatePEM())
    writeFile(key, issued.keyPEM(), private=True)
    return certificate, key


class CertsOptions(OneLineErrorOptions):
    """
    Options of ``hellotcp-certs``.
    """

    program = "hellotcp-certs"
    synopsis = "Usage: hellotcp-certs DIR [--hostname NAME]... [--force]"
    longdesc = (
        "Create a private CA (ca.pem, ca-key.pem), a server certificate "
        "(server.pem, server-key.pem) and a client certificate (client.pem, "
        "client-key.pem) in DIR, keys readable by their owner only, and print "
        "the commands that use them. Files already in DIR are kept unless "
        "--force is given."
    )
    optFlags = [
        [
            "force",
            None,
            "Replace the files of an earlier run (a new CA: certificates it "
            "signed are no longer trusted).",
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["hostnames"] = []

    @oneLineHelp
    def opt_hostname(self, name: str) -> None:
        """
        A host name or IP address the server certificate covers (repeatable).
        [default: localhost, 127.0.0.1, ::1]
        """
        self["hostnames"].append(name)

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        """
        Parse the command line, options before or after the folder.
        """
        argv = list(sys.argv[1:] if options is None else options)
        flags: list[str] = []
        positional: list[str] = []
        while argv:
            word = argv.pop(0)
            if word == "--hostname" and argv:
                flags += [word, argv.pop(0)]
            elif word.startswith("-"):
                flags.append(word)
            else:
                positional.append(word)
        super().parseOptions(flags + positional)

    def parseArgs(self, folder: str) -> None:  # type: ignore[override]
        """
        Take the folder to write into.
        """
        self["folder"] = folder

    def postOptions(self) -> None:
        """
        Fill in the default names, and check every name before anything is
        written.
        """
        self["hostnames"] = self["hostnames"] or list(DEFAULT_HOSTNAMES)
        try:
            self["names"] = [hostName(name) for name in self["hostnames"]]
        except ValueError as error:
            raise usage.UsageError(f"--hostname {error}") from None


_FILES = (
    "ca.pem",
    "ca-key.pem",
    "server.pem",
    "server-key.pem",
    "client.pem",
    "client-key.pem",
)


def _privateKeysNote(folder: str) -> str:
    # A .gitignore line only means something for a folder below this one.
    relative = os.path.relpath(os.path.abspath(folder))
    note = f"{folder} holds private keys: keep it out of version control"
    if relative == os.curdir or relative.startswith(os.pardir):
        return note + ".\n"
    entry = "/" + relative.replace(os.sep, "/") + "/"
    return f"{note}, e.g.\n  echo {shlex.quote(entry)} >> .gitignore\n"


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """
    Run ``hellotcp-certs``.
    """
    options = CertsOptions()
    options.parseOptions(sys.argv[1:] if argv is None else argv)
    folder: str = options["folder"]
    names: list[str] = options["names"]
    there = [name for name in _FILES if os.path.lexists(os.path.join(folder, name))]
    if there and not options["force"]:
        sys.stderr.write(
            f"hellotcp-certs: error: {folder} already holds {', '.join(there)}; "
            "--force replaces them (with a new CA)\n"
        )
        raise SystemExit(1)
    try:
        os.makedirs(folder, exist_ok=True)
        ca = makeCA()
        caPath, _ = writeIssued(folder, "ca", ca)
        server, serverKey = writeIssued(folder, "server", issue(ca, names[0], names))
        client, clientKey = writeIssued(
            folder, "client", issue(ca, "hellotcp client", client=True)
        )
    except OSError as error:
        sys.stderr.write(
            f"hellotcp-certs: error: {error.filename or folder}: {error.strerror}\n"
        )
        raise SystemExit(1) from None

    def q(path: str) -> str:
        return shlex.quote(path)

    # An endpoint string escapes the colons of an IPv6 address; the shell
    # then quotes what needs it (a folder with a space in its name).
    connect = q("tcp:" + names[0].replace(":", "\\:") + ":5001")
    sys.stdout.write(
        f"Wrote a private CA, a server certificate for "
        f"{', '.join(options['hostnames'])}, "
        f"and a client certificate, in {folder}.\n\n"
        "Serve TLS:\n"
        f"  twist hellotcp --tls-listen tcp:5001:interface=127.0.0.1 "
        f"--certificate {q(server)} --private-key {q(serverKey)}\n"
        "Greet it, verifying its certificate:\n"
        f"  hellotcp-client --tls --connect {connect} --ca {q(caPath)}\n\n"
        "Mutual TLS (the server requires the client's certificate):\n"
        f"  twist hellotcp --tls-listen tcp:5001:interface=127.0.0.1 "
        f"--certificate {q(server)} --private-key {q(serverKey)} "
        f"--client-ca {q(caPath)}\n"
        f"  hellotcp-client --tls --connect {connect} --ca {q(caPath)} "
        f"--certificate {q(client)} --private-key {q(clientKey)}\n\n"
        + _privateKeysNote(folder)
    )
    raise SystemExit(0)


if __name__ == "__main__":
    main()
