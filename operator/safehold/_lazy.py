"""Package attributes that import their module on first use (PEP 562).

``safehold.engine`` and ``safehold.repo`` export names from many modules; importing every
module whenever the package is imported would load the chunker into a restore and the
whole engine into ``safehold --help``. A package instead sets its ``__getattr__`` to
:func:`lazy_attributes` of the modules its names live in.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_attributes"]


def lazy_attributes(
    package: str, namespace: dict[str, Any], modules: Mapping[str, tuple[str, ...]]
) -> Callable[[str], Any]:
    """The ``__getattr__`` of ``package``: a name of ``modules[m]`` imports ``package.m``
    once and is then stored in the package's ``namespace`` (its ``globals()``)."""
    module_of = {name: module for module, names in modules.items() for name in names}

    def __getattr__(name: str) -> Any:
        module = module_of.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        namespace[name] = value  # later lookups find it without this function
        return value

    return __getattr__
