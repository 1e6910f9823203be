"""
hellotcp is typed for the applications that use it (PEP 561): every Python
example the documentation shows passes ``mypy --strict`` with only the
settings docs/embedding.md names, run from outside the checkout against the
installed package, and a misuse of the API is caught.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

import hellotcp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(hellotcp.__file__)))
DOCS = os.path.join(ROOT, "docs")


def documentedSettings() -> str:
    """
    What docs/embedding.md tells an application to put in its mypy
    settings: the page's ``ini`` block, as it is.
    """
    with open(os.path.join(DOCS, "embedding.md"), encoding="utf-8") as page:
        [settings] = re.findall(r"^```ini\n(.*?)^```", page.read(), re.M | re.S)
    return str(settings)


_BLOCK = re.compile(r"^```python\n(.*?)^```", re.M | re.S)


def documentedPython() -> dict[str, str]:
    """
    Every Python example of the documentation, by a name saying where it
    is: each file of docs/examples/ and each ``python`` block of README.md
    and docs/*.md.
    """
    found: dict[str, str] = {}
    examples = os.path.join(DOCS, "examples")
    for name in sorted(os.listdir(examples)):
        if name.endswith((".py", ".tac")):
            with open(os.path.join(examples, name), encoding="utf-8") as source:
                found[f"examples/{name}"] = source.read()
    pages = sorted(
        os.path.join(DOCS, name) for name in os.listdir(DOCS) if name.endswith(".md")
    )
    pages.insert(0, os.path.join(ROOT, "README.md"))
    for page in pages:
        with open(page, encoding="utf-8") as text:
            for number, block in enumerate(_BLOCK.findall(text.read()), 1):
                found[f"{os.path.basename(page)} block {number}"] = block
    return found


def strictMypy(test: SynchronousTestCase, sources: dict[str, str]) -> str:
    """
    Run ``mypy --strict`` with the documented settings on ``sources`` (file
    name to text) in a folder outside the checkout.

    :returns: mypy's report.
    """
    folder = os.path.abspath(test.mktemp())
    os.makedirs(folder)
    with open(os.path.join(folder, "mypy.ini"), "w") as settings:
        settings.write(documentedSettings())
    for name, text in sources.items():
        os.makedirs(os.path.dirname(os.path.join(folder, name)), exist_ok=True)
        with open(os.path.join(folder, name), "w", encoding="utf-8") as source:
            source.write(text)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", *sorted(sources)],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=600,
        # Only the installed package: not the checkout through PYTHONPATH.
        env={
            k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MYPYPATH")
        },
    )
    return result.stdout + result.stderr


class TypedPackageTests(SynchronousTestCase):
    """
    An application type-checks against hellotcp's own annotations.
    """

    def test_markerShipped(self) -> None:
        """
        The package has its PEP 561 marker (the wheel's contents are checked
        by .ci/run).
        """
        self.assertTrue(os.path.isfile(os.path.join(ROOT, "hellotcp", "py.typed")))

    def test_documentedExamplesPassStrict(self) -> None:
        """
        Every documented Python example passes ``mypy --strict``; a misuse
        of `hellotcp.greet` in the same run is an error, so hellotcp's types
        were read (not taken as ``Any``).
        """
        examples = documentedPython()
        self.assertGreaterEqual(len(examples), 6)
        # Test modules go in a tests package, as an application keeps them.
        sources = {
            (
                f"tests/test_example_{index}.py"
                if name.startswith("examples/test_")
                else f"example_{index}.py"
            ): text
            for index, (name, text) in enumerate(examples.items())
        }
        sources["tests/__init__.py"] = ""
        sources["misuse.py"] = (
            "from twisted.internet import reactor\n"
            "from twisted.internet.endpoints import TCP4ClientEndpoint\n"
            "from hellotcp import greet\n"
            "answer: str = greet(reactor, TCP4ClientEndpoint(reactor, 'h', 1))\n"
        )
        report = strictMypy(self, sources)
        names = dict(zip(sources, [*examples, "tests", "misuse"], strict=True))
        errors = [line for line in report.splitlines() if ": error:" in line]
        wrong = [
            f"{names[line.split(':')[0]]}: {line}"
            for line in errors
            if not line.startswith("misuse.py")
        ]
        self.assertEqual(wrong, [], report)
        self.assertTrue(
            any(
                line.startswith("misuse.py") and "Deferred[bytes]" in line
                for line in errors
            ),
            report,
        )
