"""Names a package offers without importing them until first used (PEP 562).

A package's ``__init__`` says ``__getattr__, __dir__ = exports(__name__, {"name": "module", ...})``:
``import farm_merge`` (or one of its subpackages) then costs nothing beyond the package
itself, and each command line start loads only what that command uses.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, Mapping


def exports(package: str, names: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: ``names`` maps each public name to
    the module that defines it."""

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)  # the next lookup finds it without coming here
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(names))

    return __getattr__, __dir__
