"""
Tests for `hellotcp.certs`, the ``hellotcp-certs`` program.
"""

from __future__ import annotations

import io
import ipaddress
import os
import shutil
import stat
import sys
import tempfile

from cryptography import x509
from twisted.trial.unittest import SynchronousTestCase

from hellotcp import certs
from hellotcp.tls import CertificateFiles, loadCertificates


class CertsProgramTests(SynchronousTestCase):
    """
    ``hellotcp-certs DIR`` makes a usable CA, server and client certificate.
    """

    def runProgram(self, *argv: str) -> tuple[int | str | None, str, str]:
        """
        Run the program; return its exit status and output.
        """
        out, err = io.StringIO(), io.StringIO()
        self.patch(sys, "stdout", out)
        self.patch(sys, "stderr", err)
        with self.assertRaises(SystemExit) as raised:
            certs.main(list(argv))
        return raised.exception.code, out.getvalue(), err.getvalue()

    def test_defaults(self) -> None:
        """
        The server certificate covers localhost, 127.0.0.1 and ::1; keys are
        readable by their owner only; the printed commands use the files.
        """
        folder = self.mktemp()
        status, out, _ = self.runProgram(folder)
        self.assertEqual(status, 0)
        for stem in ("ca", "server", "client"):
            key = os.path.join(folder, f"{stem}-key.pem")
            self.assertEqual(stat.S_IMODE(os.stat(key).st_mode), 0o600)
        server = os.path.join(folder, "server.pem")
        [leaf] = loadCertificates(server)
        names = leaf.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value
        self.assertEqual(names.get_values_for_type(x509.DNSName), ["localhost"])
        self.assertEqual(
            names.get_values_for_type(x509.IPAddress),
            [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")],
        )
        CertificateFiles(server, os.path.join(folder, "server-key.pem")).load()
        self.assertIn(f"--certificate {server}", out)
        self.assertIn(f"--ca {os.path.join(folder, 'ca.pem')}", out)
        self.assertIn("hellotcp-client --tls --connect tcp:localhost:5001", out)

    def test_hostnames(self) -> None:
        """
        ``--hostname`` replaces the default names.
        """
        folder = self.mktemp()
        self.runProgram(
            folder, "--hostname", "greeter.example", "--hostname", "10.0.0.7"
        )
        [leaf] = loadCertificates(os.path.join(folder, "server.pem"))
        names = leaf.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value
        self.assertEqual(names.get_values_for_type(x509.DNSName), ["greeter.example"])
        self.assertEqual(
            names.get_values_for_type(x509.IPAddress),
            [ipaddress.ip_address("10.0.0.7")],
        )

    def test_badHostnames(self) -> None:
        """
        An empty name, a label longer than 63 characters, a space or a
        wildcard: one line, exit status 2, and nothing written (the names
        are checked before the CA is made).
        """
        for name, problem in [
            ("", "it is empty"),
            ("a" * 70 + ".example", "Label too long"),
            ("has space", "U+0020"),
            ("x..example", "Empty Label"),
            ("*.example", "U+002A"),
            ("-bad.example", "hyphen"),
            (".".join(["a" * 60] * 5), "Domain too long"),
        ]:
            folder = self.mktemp()
            status, out, err = self.runProgram(folder, "--hostname", name)
            self.assertEqual((status, out), (2, ""), name)
            self.assertEqual(len(err.splitlines()), 1, err)
            self.assertTrue(
                err.startswith(f"hellotcp-certs: error: --hostname {name!r} is not"),
                err,
            )
            self.assertIn(problem, err)
            self.assertFalse(os.path.exists(folder), name)

    def test_internationalName(self) -> None:
        """
        An internationalised name works: the certificate names its A-label,
        which the printed command connects to; a name of 64 characters or
        more (the most a common name holds) works too.
        """
        folder = self.mktemp()
        long = "a" * 63 + ".example"
        status, out, err = self.runProgram(
            folder, "--hostname", "Bücher.example", "--hostname", long
        )
        self.assertEqual((status, err), (0, ""))
        [leaf] = loadCertificates(os.path.join(folder, "server.pem"))
        names = leaf.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value
        self.assertEqual(
            names.get_values_for_type(x509.DNSName), ["xn--bcher-kva.example", long]
        )
        self.assertIn("--connect tcp:xn--bcher-kva.example:5001", out)
        self.assertIn("for Bücher.example, " + long, out)
        folder = self.mktemp()
        self.assertEqual(self.runProgram(folder, "--hostname", long)[0], 0)

    def test_quotedCommands(self) -> None:
        """
        The printed commands are quoted for the shell where a path holds a
        space, and an IPv6 address is escaped in the endpoint.
        """
        import shlex

        folder = os.path.join(self.mktemp(), "has space")
        status, out, _ = self.runProgram(folder, "--hostname", "::1")
        self.assertEqual(status, 0)
        commands = [
            line.strip()
            for line in out.splitlines()
            if line.startswith(("  twist", "  hellotcp-client"))
        ]
        self.assertEqual(len(commands), 4, out)
        for command in commands:
            words = shlex.split(command)
            for option in ("--certificate", "--private-key", "--ca", "--client-ca"):
                if option in words:
                    path = words[words.index(option) + 1]
                    self.assertTrue(os.path.isfile(path), path)
            if "--connect" in words:
                self.assertEqual(words[words.index("--connect") + 1], r"tcp:\:\:1:5001")

    def test_keepsAnEarlierRun(self) -> None:
        """
        Run again on the same folder, the program replaces nothing (the CA
        would change under every certificate it signed): one line naming
        the files and --force, exit status 1; with --force, a new CA.
        """
        folder = self.mktemp()
        self.assertEqual(self.runProgram(folder)[0], 0)
        ca = os.path.join(folder, "ca.pem")
        with open(ca, "rb") as first:
            before = first.read()
        status, out, err = self.runProgram(folder)
        self.assertEqual((status, out), (1, ""))
        self.assertEqual(
            err,
            f"hellotcp-certs: error: {folder} already holds ca.pem, ca-key.pem, "
            "server.pem, server-key.pem, client.pem, client-key.pem; "
            "--force replaces them (with a new CA)\n",
        )
        with open(ca, "rb") as kept:
            self.assertEqual(kept.read(), before)
        self.assertEqual(self.runProgram(folder, "--force")[0], 0)
        with open(ca, "rb") as replaced:
            self.assertNotEqual(replaced.read(), before)

    def test_gitignoreHint(self) -> None:
        """
        The output ends by saying that the folder holds private keys, with
        the .gitignore line for a folder below the current one (only).
        """
        folder = os.path.join(self.mktemp(), "pki")
        _, out, _ = self.runProgram(folder)
        self.assertTrue(out.endswith(f"  echo /{folder}/ >> .gitignore\n"), out)
        outside = tempfile.mkdtemp(prefix="hellotcp-certs-")
        self.addCleanup(shutil.rmtree, outside)
        _, out, _ = self.runProgram(outside)
        self.assertTrue(
            out.endswith(
                f"{outside} holds private keys: keep it out of version control.\n"
            ),
            out,
        )

    def test_unwritable(self) -> None:
        """
        A folder that cannot be made is one line and exit status 1.
        """
        status, _, err = self.runProgram("/proc/no/such/folder")
        self.assertEqual(status, 1)
        self.assertEqual(len(err.splitlines()), 1)
        self.assertTrue(err.startswith("hellotcp-certs: error: "))

    def test_noFolder(self) -> None:
        """
        Without a folder: a usage error, exit status 2.
        """
        status, _, err = self.runProgram()
        self.assertEqual(status, 2)
        self.assertTrue(err.startswith("hellotcp-certs: error: "))
