"""
The public surface: every public module says what it exports in
``__all__``, each exported name exists and has a docstring, and the API
page documents exactly the public modules (klein's ``test_exports`` is the
model).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import re
from types import FunctionType

from twisted.trial.unittest import SynchronousTestCase

import hellotcp

PACKAGE = os.path.dirname(os.path.abspath(hellotcp.__file__))
API_PAGE = os.path.join(os.path.dirname(PACKAGE), "docs", "api.md")


def publicModules() -> list[str]:
    """
    The package and its modules whose names do not start with ``_``.
    """
    modules = sorted(
        "hellotcp." + name.removesuffix(".py")
        for name in os.listdir(PACKAGE)
        if name.endswith(".py") and not name.startswith("_")
    )
    return ["hellotcp", *modules]


def constants(module: str) -> dict[str, bool]:
    """
    The names ``module``'s source assigns at its top level, each with
    whether a string follows the assignment (an attribute docstring, as
    Sphinx reads it).
    """
    path = importlib.import_module(module).__file__
    assert path is not None
    with open(path, encoding="utf-8") as source:
        tree = ast.parse(source.read())
    found: dict[str, bool] = {}
    for node, following in zip(tree.body, [*tree.body[1:], None], strict=True):
        if not isinstance(node, ast.Assign | ast.AnnAssign):
            continue
        documented = (
            isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        )
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        for target in targets:
            if isinstance(target, ast.Name):
                found[target.id] = documented
    return found


class ExportsTests(SynchronousTestCase):
    """
    ``__all__`` and the API page agree with the code.
    """

    def test_everyPublicModuleDeclaresAll(self) -> None:
        """
        Each public module has an ``__all__`` naming only names it has.
        """
        for name in publicModules():
            module = importlib.import_module(name)
            exported: list[str] = getattr(module, "__all__", None)  # type: ignore[assignment]
            self.assertIsInstance(exported, list, f"{name} has no __all__")
            self.assertEqual(len(exported), len(set(exported)), name)
            for attribute in exported:
                self.assertTrue(
                    hasattr(module, attribute), f"{name}.__all__ names {attribute}"
                )

    def test_exportedNamesDocumented(self) -> None:
        """
        Each exported class and function has a docstring, and so has each
        exported constant that its module assigns.
        """
        for name in publicModules():
            module = importlib.import_module(name)
            assigned = constants(name)
            for attribute in module.__all__:
                value = getattr(module, attribute)
                if isinstance(value, type | FunctionType):
                    self.assertTrue(
                        (value.__doc__ or "").strip(),
                        f"{name}.{attribute} has no docstring",
                    )
                elif attribute in assigned:
                    self.assertTrue(
                        assigned[attribute], f"{name}.{attribute} has no docstring"
                    )

    def test_apiPageCoversPublicModules(self) -> None:
        """
        The API page has one ``automodule`` per public module, and none for
        a private one.
        """
        with open(API_PAGE, encoding="utf-8") as page:
            documented = re.findall(r"^\.\. automodule:: (\S+)$", page.read(), re.M)
        self.assertEqual(len(documented), len(set(documented)))
        self.assertEqual(sorted(documented), publicModules())

    def test_packageReexports(self) -> None:
        """
        Everything ``hellotcp`` exports is the object its home module
        exports under the same name.
        """
        for attribute in hellotcp.__all__:
            value = getattr(hellotcp, attribute)
            home = getattr(value, "__module__", None)
            if home is None or not home.startswith("hellotcp."):
                continue
            if home.split(".")[1].startswith("_"):
                continue  # defined in a private module: exported from hellotcp
            self.assertIn(attribute, importlib.import_module(home).__all__)


def undocumentedArguments(cls: type) -> list[str]:
    """
    The arguments of ``cls``'s constructor that neither its docstring nor
    its ``__init__``'s names with ``:param name:`` or ``:ivar name:``.
    """
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):
        return []
    init = cls.__dict__.get("__init__")
    text = (cls.__doc__ or "") + (getattr(init, "__doc__", None) or "")
    return [
        name
        for name, parameter in signature.parameters.items()
        if parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
        and not re.search(rf":(param|ivar) {name}:", text)
    ]


class ConstructorTests(SynchronousTestCase):
    """
    Every public class says what each argument of its constructor is.
    """

    def test_everyArgumentDocumented(self) -> None:
        """
        Each public class defined by hellotcp documents every argument its
        constructor takes (inherited constructors are their authors' to
        document).
        """
        missing = []
        for module in publicModules():
            loaded = importlib.import_module(module)
            for name in loaded.__all__:
                value = getattr(loaded, name)
                if not isinstance(value, type) or value.__module__ != module:
                    continue
                init = getattr(value, "__init__", None)
                ours = getattr(init, "__module__", "") or ""
                if "__attrs_attrs__" not in vars(value) and not ours.startswith(
                    "hellotcp"
                ):
                    continue
                for argument in undocumentedArguments(value):
                    missing.append(f"{module}.{name}({argument})")
        self.assertEqual(missing, [])
