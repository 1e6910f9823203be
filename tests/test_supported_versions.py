"""
The supported versions that the documentation states are those that
``pyproject.toml`` declares (and that CI's floors job installs), and every
package that hellotcp imports is declared.
"""

from __future__ import annotations

import ast
import os
import re
import sys

from twisted.trial.unittest import SkipTest, SynchronousTestCase

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The import name of each declared distribution, where they differ.
IMPORT_NAMES = {
    "twisted": "twisted",
    "pyopenssl": "OpenSSL",
    "service-identity": "service_identity",
    "zope-interface": "zope",
    "prometheus-client": "prometheus_client",
}


def declaredFloors() -> tuple[str, dict[str, str]]:
    """
    The lowest Python and each declared distribution's floor (normalised
    name to version), from ``pyproject.toml`` as CI's floors job reads it.
    """
    if sys.version_info < (3, 11):
        raise SkipTest("reading pyproject.toml needs tomllib (Python 3.11)")
    sys.path.insert(0, os.path.join(ROOT, ".ci"))
    try:
        import floors  # type: ignore[import-not-found]
    finally:
        sys.path.remove(os.path.join(ROOT, ".ci"))
    path = os.path.join(ROOT, "pyproject.toml")
    pins = dict(line.split("==") for line in floors.floors(path, ["metrics"]))
    return floors.lowestPython(path), pins


def read(*parts: str) -> str:
    """
    The text of a file of the checkout.
    """
    with open(os.path.join(ROOT, *parts)) as file:
        return file.read()


class SupportedVersionsTests(SynchronousTestCase):
    """
    README.md and docs/operations.md state the declared floors.
    """

    def test_operationsTable(self) -> None:
        """
        The table of docs/operations.md has one row per declared package,
        with the declared floor, and Python's.
        """
        python, pins = declaredFloors()
        text = read("docs", "operations.md").partition("### Supported versions")[2]
        rows = dict(
            re.findall(r"^\| `?([A-Za-z_.-]+)`?[^|]*\| ([0-9.]+) \|", text, re.M)
        )
        documented = {re.sub(r"[-_.]+", "-", k).lower(): v for k, v in rows.items()}
        self.assertEqual(documented.pop("python"), python)
        self.assertEqual(documented, pins)

    def test_readme(self) -> None:
        """
        README.md's summary names every floor.
        """
        python, pins = declaredFloors()
        text = " ".join(read("README.md").partition("## Supported versions")[2].split())
        self.assertIn(f"Python {python} to", text)
        for version in pins.values():
            self.assertIn(f" {version}", text)

    def test_everyImportDeclared(self) -> None:
        """
        Every package outside the standard library that hellotcp's modules
        import is declared.
        """
        _, pins = declaredFloors()
        declared = {IMPORT_NAMES.get(name, name) for name in pins}
        imported: set[str] = set()
        for folder in ("hellotcp", os.path.join("twisted", "plugins")):
            for name in os.listdir(os.path.join(ROOT, folder)):
                if name.endswith(".py"):
                    tree = ast.parse(read(folder, name))
                    for node in ast.walk(tree):
                        if isinstance(node, ast.Import):
                            imported.update(a.name.split(".")[0] for a in node.names)
                        elif isinstance(node, ast.ImportFrom) and not node.level:
                            imported.add((node.module or "").split(".")[0])
        thirdParty = imported - set(sys.stdlib_module_names) - {"hellotcp"}
        self.assertEqual(thirdParty - declared, set())
