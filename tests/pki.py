"""
Certificates made at test time (no private key is ever shipped): a CA with
server and client certificates, a foreign CA, an expired certificate, and
one for the wrong host.
"""

from __future__ import annotations

import datetime
import os
import tempfile

from hellotcp.certs import Issued, issue, makeCA, writeIssued

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
