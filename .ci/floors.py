"""
Print pip constraints that pin every declared dependency of hellotcp to its
floor: each ``name>=version`` of ``[project].dependencies`` and of the
extras named on the command line becomes ``name==version``.  A requirement
of any other form stops with an error, so the floors job cannot drift from
the declaration.

Usage: python .ci/floors.py pyproject.toml [EXTRA]...
       python .ci/floors.py --python pyproject.toml

With ``--python`` it prints the lowest Python that ``requires-python``
(``>=X.Y``) admits instead.
"""

from __future__ import annotations

import re
import sys

import tomllib

_FLOOR = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*>=\s*([0-9][0-9A-Za-z.]*)\s*$")


def floors(pyproject: str, extras: list[str]) -> list[str]:
    """
    The ``name==version`` constraints for ``pyproject``'s dependencies and
    ``extras``.

    :raises SystemExit: A requirement is not of the form ``name>=version``.
    """
    with open(pyproject, "rb") as file:
        project = tomllib.load(file)["project"]
    requirements = list(project["dependencies"])
    for extra in extras:
        requirements += project["optional-dependencies"][extra]
    pins: dict[str, str] = {}
    for requirement in requirements:
        match = _FLOOR.match(requirement)
        if match is None:
            raise SystemExit(
                f"{pyproject}: {requirement!r} is not 'name>=version'; "
                "the floors job needs a floor for every dependency"
            )
        name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
        pins[name] = match.group(2)
    return [f"{name}=={version}" for name, version in sorted(pins.items())]


def lowestPython(pyproject: str) -> str:
    """
    The ``X.Y`` of ``requires-python = ">=X.Y"``.

    :raises SystemExit: ``requires-python`` is of another form.
    """
    with open(pyproject, "rb") as file:
        requires = tomllib.load(file)["project"]["requires-python"]
    match = re.fullmatch(r"\s*>=\s*(3\.[0-9]+)\s*", requires)
    if match is None:
        raise SystemExit(f"{pyproject}: requires-python {requires!r} is not '>=3.N'")
    return match.group(1)


if __name__ == "__main__":
    if sys.argv[1] == "--python":
        print(lowestPython(sys.argv[2]))
    else:
        print("\n".join(floors(sys.argv[1], sys.argv[2:])))
