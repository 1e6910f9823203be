"""
What each module may import: the wire protocol knows nothing of TLS or the
PROXY protocol, the client side nothing of the server's protocol module,
and only `hellotcp._twistedcompat` imports Twisted's private modules.

Read from the source (the imports a module states), not from
``sys.modules``: importing the package loads everything anyway.
"""

from __future__ import annotations

import ast
import os

from twisted.trial.unittest import SynchronousTestCase

import hellotcp

PACKAGE = os.path.dirname(os.path.abspath(hellotcp.__file__))

# The modules of the command lines: hellotcp-client, hellotcp-certs and the
# plugin's options, and what they share.
COMMANDS = {"tap", "client", "certs", "_options"}


def imports(module: str) -> set[str]:
    """
    Every name ``hellotcp.<module>`` imports, as ``package.module`` and
    ``package.module.name`` (relative imports made absolute).
    """
    with open(os.path.join(PACKAGE, module + ".py"), encoding="utf-8") as source:
        tree = ast.parse(source.read())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = "hellotcp" + (f".{base}" if base else "")
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def modules() -> list[str]:
    """
    The modules of the package, by name.
    """
    return sorted(
        name.removesuffix(".py")
        for name in os.listdir(PACKAGE)
        if name.endswith(".py") and name != "__init__.py"
    )


class BoundaryTests(SynchronousTestCase):
    """
    The import rules of the module map.
    """

    def test_protocolKnowsNoTLSNorProxy(self) -> None:
        """
        `hellotcp.protocol` imports nothing of OpenSSL, TLS or the PROXY
        protocol: those report to it through `IConnectionReport`.
        """
        forbidden = (
            "OpenSSL",
            "cryptography",
            "service_identity",
            "twisted.internet.ssl",
            "twisted.protocols.tls",
            "twisted.protocols.haproxy",
            "hellotcp.tls",
            "hellotcp._proxy",
            "hellotcp._twistedcompat",
            "twisted.internet.interfaces.ISSLTransport",
            "twisted.internet.interfaces.IHandshakeListener",
        )
        found = sorted(
            name
            for name in imports("protocol")
            if any(name == f or name.startswith(f + ".") for f in forbidden)
        )
        self.assertEqual(found, [])

    def test_clientSideImportsNoServer(self) -> None:
        """
        The client side takes what it shares with the server from
        `hellotcp._wire`, never from the server's protocol module.
        """
        for module in [
            "greet",
            "probe",
            "client",
            "packets",
            "_tcpparse",
            "_tlsrecords",
            "_capture",
        ]:
            found = sorted(
                name
                for name in imports(module)
                if name == "hellotcp.protocol" or name.startswith("hellotcp.protocol.")
            )
            self.assertEqual(found, [], module)

    def test_privateTwistedInOnePlace(self) -> None:
        """
        Only `hellotcp._twistedcompat` imports a private module or name of
        Twisted.
        """
        found = {}
        for module in modules():
            if module == "_twistedcompat":
                continue
            private = sorted(
                name
                for name in imports(module)
                if name.startswith("twisted.")
                and any(part.startswith("_") for part in name.split(".")[1:])
                and name != "twisted.__version__"
            )
            if private:
                found[module] = private
        self.assertEqual(found, {})

    def test_usageOnlyInCommands(self) -> None:
        """
        Only the command modules import `twisted.python.usage`; library
        modules raise their own errors.
        """
        users = {
            module
            for module in modules()
            if any(name.startswith("twisted.python.usage") for name in imports(module))
        }
        self.assertLessEqual(users, COMMANDS)

    def test_exitOnlyInPrograms(self) -> None:
        """
        Only the command modules, the program's wiring and the one place that
        turns a `ListenError` into an exit when a program asks for it raise
        `SystemExit`: a library never ends the application that embeds it
        unasked.
        """
        raising = set()
        for module in modules():
            with open(os.path.join(PACKAGE, module + ".py"), encoding="utf-8") as f:
                tree = ast.parse(f.read())
            for node in ast.walk(tree):
                if isinstance(node, ast.Raise) and node.exc is not None:
                    called = (
                        node.exc.func if isinstance(node.exc, ast.Call) else node.exc
                    )
                    if isinstance(called, ast.Name) and called.id == "SystemExit":
                        raising.add(module)
        self.assertLessEqual(raising, COMMANDS | {"_wiring", "_listeners"})
        self.assertIn("_wiring", raising)  # the check sees a raise at all


TESTS = os.path.dirname(os.path.abspath(__file__))


def testModulesImported(path: str) -> list[str]:
    """
    The ``test_*`` modules that the test module at ``path`` imports from,
    anywhere in it (in a function too), relative imports made absolute.
    """
    with open(path, encoding="utf-8") as source:
        tree = ast.parse(source.read())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = "tests" + (f".{base}" if base else "")
            names.add(base)
            # ``from . import test_x`` imports a module by name.
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return sorted(
        {
            ".".join(name.split(".")[:2])
            for name in names
            if name.startswith("tests.test_")
        }
    )


class TestModuleBoundaryTests(SynchronousTestCase):
    """
    The test modules share helpers through `tests.support` and `tests.pki`,
    never through one another.
    """

    def test_noTestModuleImportsAnother(self) -> None:
        """
        No ``tests/test_*.py`` module imports from a ``test_*`` module.
        """
        found = {}
        for name in sorted(os.listdir(TESTS)):
            if name.startswith("test_") and name.endswith(".py"):
                imported = testModulesImported(os.path.join(TESTS, name))
                if imported:
                    found[name] = imported
        self.assertEqual(found, {})

    def test_everyKindOfImportIsSeen(self) -> None:
        """
        The check sees relative, absolute and function-level imports of a
        test module, and not those of the support modules.
        """
        path = self.mktemp() + ".py"
        with open(path, "w", encoding="utf-8") as source:
            source.write(
                "from .support import TIMEOUT\n"
                "from .pki import pki\n"
                "from .test_protocol import PEER\n"
                "import tests.test_greet\n"
                "def f():\n"
                "    from tests.test_tls import chainPKI\n"
                "    from . import test_closes\n"
            )
        self.assertEqual(
            testModulesImported(path),
            [
                "tests.test_closes",
                "tests.test_greet",
                "tests.test_protocol",
                "tests.test_tls",
            ],
        )
