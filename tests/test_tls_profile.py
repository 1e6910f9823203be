"""
hellotcp's TLS server measured from outside against Mozilla's intermediate
TLS profile: the key-exchange groups it accepts (with ``openssl s_client``)
and a whole ``sslyze --mozilla_config=intermediate`` scan of a real
``twist hellotcp --tls-listen`` serving a ``hellotcp-certs`` certificate.

sslyze pins its own cryptography, pyOpenSSL and nassl, so it lives in a
virtual environment of its own: ``HELLOTCP_SSLYZE`` names its ``sslyze``
command (``.ci/run`` installs it and sets the variable).
"""

from __future__ import annotations

import datetime
import os
import shutil
import subprocess

from cryptography import x509
from twisted.internet import reactor
from twisted.trial.unittest import SkipTest

from hellotcp.tls import GROUPS, serverGroups

from .support import TIMEOUT, CommandTestCase, command, freePort, inThread

INTERMEDIATE_GROUPS = {"X25519", "P-256", "P-384"}
"""The key-exchange groups of Mozilla's intermediate profile (5.7)."""

OTHER_GROUPS = ("P-521", "X448", "ffdhe2048", "ffdhe3072")
"""Groups that OpenSSL accepts by default and the profile rejects."""


class ProfileTestCase(CommandTestCase):
    """
    A ``twist hellotcp`` TLS server with a certificate from
    ``hellotcp-certs``, as the README makes one.
    """

    async def startProfileServer(self) -> int:
        """
        Make certificates with ``hellotcp-certs`` and serve TLS with them on
        a loopback port for the length of the test.

        :returns: The port.
        """
        pki = os.path.join(self.folder, "pki")
        status, _, err = await self.runCommand([command("hellotcp-certs"), pki])
        self.assertEqual(status, 0, err)
        self.ca = os.path.join(pki, "ca.pem")
        self.certificate = os.path.join(pki, "server.pem")
        port = freePort()
        await self.startServer(
            [
                command("twist"),
                "hellotcp",
                "--tls-listen",
                f"tcp:{port}:interface=127.0.0.1",
                "--certificate",
                self.certificate,
                "--private-key",
                os.path.join(pki, "server-key.pem"),
            ],
            port,
        )
        return port


class GroupTests(ProfileTestCase):
    """
    The server accepts the profile's key-exchange groups, and no other.
    """

    def test_groupsWithinProfile(self) -> None:
        """
        What the server accepts is within the profile, P-256 always (every
        TLS client offers it), and all three where cryptography can set a
        group list (47 and later, as in the newest-packages job).
        """
        self.assertEqual(set(GROUPS), INTERMEDIATE_GROUPS)
        self.assertLessEqual(set(serverGroups()), INTERMEDIATE_GROUPS)
        self.assertIn("P-256", serverGroups())

    def greetWithGroup(self, port: int, group: str) -> bool:
        """
        A TLS 1.3 exchange by ``openssl s_client`` offering ``group`` alone,
        verified against the test CA.

        :returns: Whether the server greeted it.
        """
        result = subprocess.run(
            [
                "openssl",
                "s_client",
                "-connect",
                f"127.0.0.1:{port}",
                "-servername",
                "localhost",
                "-tls1_3",
                "-groups",
                group,
                "-CAfile",
                self.ca,
                "-verify_return_error",
                "-quiet",
            ],
            input=b"Hello, server!\n",
            capture_output=True,
            timeout=TIMEOUT,
        )
        return result.stdout.strip() == b"Hello, client!"

    async def test_acceptedGroups(self) -> None:
        """
        A client offering one group is greeted exactly when the group is one
        of `serverGroups`; X448, P-521 and the finite-field groups, which
        OpenSSL accepts by default, are refused.
        """
        if shutil.which("openssl") is None:
            raise SkipTest("the openssl command is not installed")
        port = await self.startProfileServer()
        accepted = set()
        for group in (*GROUPS, *OTHER_GROUPS):
            if await inThread(self.greetWithGroup, port, group):
                accepted.add(group)
        self.assertEqual(accepted, set(serverGroups()))


class MozillaIntermediateTests(ProfileTestCase):
    """
    sslyze finds the server compliant with Mozilla's intermediate profile.
    """

    def sslyze(self) -> str:
        """
        The sslyze command that ``HELLOTCP_SSLYZE`` names.

        Without it the test is skipped, except under CI (``CI=true``), where
        the scan must run.
        """
        sslyze = os.environ.get("HELLOTCP_SSLYZE")
        if not sslyze:
            reason = (
                "HELLOTCP_SSLYZE is not set: point it at an sslyze command "
                "installed in a virtual environment of its own "
                "(pip install sslyze), as .ci/run does"
            )
            if os.environ.get("CI") == "true":
                self.fail(reason)
            raise SkipTest(reason)
        self.assertTrue(
            os.access(sslyze, os.X_OK), f"HELLOTCP_SSLYZE={sslyze}: not a command"
        )
        return sslyze

    def test_leafLifetime(self) -> None:
        """
        ``hellotcp-certs`` issues server certificates within the profile's
        366 days (one year).
        """
        pki = os.path.join(self.folder, "pki")
        subprocess.run(
            [command("hellotcp-certs"), pki],
            check=True,
            capture_output=True,
            timeout=TIMEOUT,
        )
        with open(os.path.join(pki, "server.pem"), "rb") as file:
            leaf = x509.load_pem_x509_certificate(file.read())
        lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
        self.assertEqual(lifetime, datetime.timedelta(days=365))

    async def test_intermediateProfile(self) -> None:
        """
        ``sslyze --mozilla_config=intermediate`` reports the server
        compliant: protocols, cipher suites, groups, certificate and its
        lifetime, compression, renegotiation and downgrade protection.  The
        private CA is given to sslyze, so the certificate's path validates.
        """
        sslyze = self.sslyze()
        port = await self.startProfileServer()
        # sslyze's CA bundles leave their own warnings on standard error.
        env = dict(self.env, PYTHONWARNINGS="ignore")
        process = self.spawn(
            [
                sslyze,
                "--mozilla_config=intermediate",
                "--certinfo_ca_file",
                self.ca,
                f"localhost:{port}{{127.0.0.1}}",
            ],
            env=env,
        )
        status = await process.ended.addTimeout(6 * TIMEOUT, reactor)
        out = process.out.decode(errors="replace")
        compliance = out.partition("COMPLIANCE AGAINST")[2] or out[-3000:]
        self.assertEqual(
            status, 0, f"sslyze exit status {status}:\n{compliance}\n{process.err!r}"
        )
        self.assertIn(f"localhost:{port}: OK - Compliant.", compliance)
