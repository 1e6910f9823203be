"""
Sphinx configuration of the hellotcp documentation.

Build it with ``python -m sphinx -W --keep-going -b html docs docs/_build/html``
(warnings are errors, so a broken reference fails the build).
"""

project = "hellotcp"
author = "the hellotcp developers"
copyright = "2026, the hellotcp developers"

extensions = ["myst_parser", "sphinx.ext.autodoc"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "examples"]
myst_heading_anchors = 3

# Docstrings write `Name` for a cross-reference, as Twisted's L{Name} did.
default_role = "py:obj"
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}

html_theme = "alabaster"
html_title = "hellotcp"
