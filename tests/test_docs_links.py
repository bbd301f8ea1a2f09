"""The front page and the pages of docs/ link only to what exists: every
relative link names a file of the repository, and every `#anchor` a heading
of the page it points into, as GitHub makes anchors of headings. Every page
of docs/ is reachable from the front page's table of contents."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def prose(text: str) -> list[str]:
    """The lines outside fenced code blocks, where links and headings live."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (but
    `-` and `_`), each space a `-`."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every anchor of `page`, a repeated heading numbered as GitHub does."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in prose(page.read_text("utf-8")):
        heading = re.match(r"#{1,6} (.+)", line)
        if heading:
            base = slug(heading.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
    return found


def links(page: Path) -> list[str]:
    return [m for line in prose(page.read_text("utf-8")) for m in LINK.findall(line)]


def test_the_slug_is_githubs() -> None:
    assert slug("What is promised") == "what-is-promised"
    assert slug("Timber (`destination='timber'`, the default)") == (
        "timber-destinationtimber-the-default"
    )
    assert slug("ASGI: FastAPI, Starlette, Litestar") == "asgi-fastapi-starlette-litestar"
    assert slug("Why there is no `EventName` column") == "why-there-is-no-eventname-column"


def test_there_are_pages_and_links() -> None:
    assert len(PAGES) > 10
    assert all(links(page) for page in PAGES)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(page: Path) -> None:
    broken = []
    for target in links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):
            continue  # https:, mailto: and the like are not ours to check
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists() or ROOT not in (dest, *dest.parents):
            broken.append(f"{target}: no such file")
        elif anchor and (dest.suffix != ".md" or anchor not in anchors(dest)):
            broken.append(f"{target}: no such heading")
    assert broken == [], broken


def test_the_front_page_links_every_page_of_docs() -> None:
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in links(ROOT / "README.md")}
    assert set(PAGES[1:]) - linked == set()


def test_the_front_page_is_short_and_keeps_its_commands() -> None:
    text = (ROOT / "README.md").read_text("utf-8")
    assert len(text.splitlines()) <= 250
    assert "make demo" in text
    assert "make test" in text
