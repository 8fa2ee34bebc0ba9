"""Sizes for people, the same in the CLI's output and in the resources' status."""

from __future__ import annotations

__all__ = ["human_size"]


def human_size(n: float) -> str:
    """``n`` bytes for people: ``512 B``, ``1.5 KiB``, ... ``3.2 TiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
