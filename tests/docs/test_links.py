"""Every relative link in docs/ and README.md leads somewhere: the file exists and, where the
link names a section (``file.md#section``), the file has a heading with that anchor, as GitHub
makes anchors (lower case, punctuation dropped, spaces to hyphens, duplicates numbered)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAGES = [*sorted((REPO / "docs").glob("*.md")), REPO / "README.md"]
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^(```|~~~).*?^\1", re.DOTALL | re.MULTILINE)
_CODE = re.compile(r"`[^`\n]*`")  # an inline code span (a pattern such as [a-z](x)) is no link


def prose(page: Path) -> str:
    """The text of ``page`` without code blocks and code spans."""
    return _CODE.sub("", _FENCE.sub("", page.read_text()))


def anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of a page."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for line in _FENCE.sub("", markdown).splitlines():
        if not line.startswith("#"):
            continue
        title = line.lstrip("#").strip().lower()
        slug = re.sub(r"[^\w\- ]", "", title).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def test_anchor_rule() -> None:
    page = "# `safehold report`\n## Alerts\n```\n# no heading\n```\n## Alerts\n## Hosts: `-H`\n"
    assert anchors(page) == {"safehold-report", "alerts", "alerts-1", "hosts--h"}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page: Path) -> None:
    broken: list[str] = []
    for target in _LINK.findall(prose(page)):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no file {path}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text()):
            broken.append(f"{target}: {dest.name} has no section #{anchor}")
    assert not broken, f"{page.relative_to(REPO)}: broken links: " + "; ".join(broken)
