"""Griffe extension for the API pages: a star-imported name shadows its same-named submodule.

``optlib/optimizers/__init__.py`` runs ``from optlib.optimizers.adafactor import *``, so at
run time ``optlib.optimizers.adafactor`` is the *function* ``adafactor``, not the module of
the same name. Griffe's static analysis keeps the submodule; this extension replaces it by an
alias of the function, as Python does, so the package page lists ``adafactor`` with the other
optimizers. The top-level ``optlib`` is left alone: the API pages document its modules
(``optlib.param_groups``, ...) by path, not its flat names. Used by ``mkdocs.yml`` only; not
part of the library.
"""

from __future__ import annotations

from typing import Any

import griffe


class StarExportsShadowSubmodules(griffe.Extension):
    """After loading, makes ``pkg.name`` the star-exported object where Python would."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any):
        for member in pkg.members.values():
            if not member.is_alias and member.is_module:
                self._visit(member)

    def _visit(self, module: griffe.Module) -> None:
        for name, member in list(module.members.items()):
            if member.is_alias or not member.is_module:
                continue
            self._visit(member)
            star_import = f"from {member.path} import *"
            shadowed = name in (member.exports or ()) and name in member.members
            if shadowed and any(line.split("#")[0].strip() == star_import for line in module.lines):
                module.set_member(name, griffe.Alias(name, member.members[name], parent=module))
