"""Commands are registered one way: each module of ``main.COMMANDS`` has ``register(sub,
common)``, which adds its parsers with their handlers; ``main`` only loops over them."""

from __future__ import annotations

import argparse
import ast
import importlib
import pkgutil
from pathlib import Path

import safehold.cli

# (``safehold.cli.main`` is also the name of the entry-point function)
main = importlib.import_module("safehold.cli.main")


def _adds_parsers(path: Path) -> bool:
    tree = ast.parse(path.read_text())
    return any(
        isinstance(node, ast.Attribute) and node.attr == "add_parser" for node in ast.walk(tree)
    )


def test_every_module_that_adds_parsers_is_registered_by_main() -> None:
    package = Path(safehold.cli.__file__).parent
    adding = {
        f"safehold.cli.{info.name}"
        for info in pkgutil.iter_modules([str(package)])
        if _adds_parsers(package / f"{info.name}.py")
    }
    registered = {module.__name__ for module in main.COMMANDS}  # type: ignore[attr-defined]
    assert adding == registered
    assert not _adds_parsers(package / "main.py")


def test_every_command_has_a_handler() -> None:
    def walk(parser: argparse.ArgumentParser, path: str) -> list[str]:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            return [] if callable(parser.get_default("func")) else [path]
        return [
            missing
            for action in subs
            for name, child in action.choices.items()
            for missing in walk(child, f"{path} {name}")
        ]

    assert walk(main.build_parser(), "safehold") == []


def test_register_takes_sub_and_common() -> None:
    for module in main.COMMANDS:
        name = module.__name__  # type: ignore[attr-defined]
        register = importlib.import_module(name).register
        assert list(register.__annotations__)[:2] == ["sub", "common"], name
