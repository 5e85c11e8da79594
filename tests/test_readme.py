"""The README and docs/ quote results only from committed files: every figure a section
quotes appears (at the precision quoted) in a results file that section links, and every
link resolves. A number edited by hand, or left behind when a make target rewrote its file,
fails here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Pages whose every results section is checked figure by figure (the others link results
# and explain them; their figures are checked where they are quoted in these pages).
CHECKED_PAGES = [ROOT / "README.md", ROOT / "docs" / "results.md", ROOT / "docs" / "benchmark.md"]
README_MAX_LINES = 200

LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
# A quoted figure: a decimal number that is not part of a name or a version (Qwen2.5,
# 0.5B, torch 2.13.0), optionally followed by "x" (a speedup).
FIGURE = re.compile(r"(?<![\w.\-/])(\d+\.\d+)(?=x\b|[^\w.]|$)")
FILE_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[+-]?\d+)?")
CODE_BLOCK = re.compile(r"```.*?```", re.DOTALL)
INLINE_CODE = re.compile(r"`[^`]*`")


def sections(text: str) -> list[tuple[str, str]]:
    """(heading, body) for each ``##``/``###`` section, code removed."""
    text = INLINE_CODE.sub("", CODE_BLOCK.sub("", text))
    parts = re.split(r"^(#{1,3} .*)$", text, flags=re.MULTILINE)
    return list(zip(parts[1::2], parts[2::2], strict=True))


def result_files(page: Path, body: str) -> list[Path]:
    files = []
    for target in LINK.findall(body):
        path = (page.parent / target).resolve()
        if "results" in path.parts and path.suffix in (".csv", ".md", ".json"):
            files.append(path)
    return files


def numbers_in(files: list[Path]) -> list[float]:
    return [float(n) for path in files for n in FILE_NUMBER.findall(path.read_text())]


def quoted_figures(body: str) -> list[str]:
    return FIGURE.findall(body)


def appears(figure: str, numbers: list[float]) -> bool:
    """``figure`` equals some number of the file rounded to the figure's decimals."""
    decimals = len(figure.split(".")[1])
    value = float(figure)
    return any(abs(abs(n) - value) <= 0.5 * 10**-decimals + 1e-9 for n in numbers)


def test_readme_is_short_and_links_every_docs_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= README_MAX_LINES
    for page in PAGES[1:]:
        assert f"docs/{page.name}" in readme, f"README does not link docs/{page.name}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves(page):
    for target in LINK.findall(page.read_text()):
        if "://" in target or target.startswith("mailto:"):
            continue
        assert (page.parent / target).exists(), f"{page.name} links {target}, which is missing"


@pytest.mark.parametrize("page", CHECKED_PAGES, ids=lambda p: p.name)
def test_every_quoted_figure_appears_in_the_file_its_section_cites(page):
    checked = 0
    for heading, body in sections(page.read_text()):
        files = result_files(page, body)
        if not files:
            continue
        numbers = numbers_in(files)
        missing = [f for f in quoted_figures(body) if not appears(f, numbers)]
        assert not missing, f"{page.name} '{heading}': {missing} not in {[f.name for f in files]}"
        checked += len(quoted_figures(body))
    assert checked > 0  # the check ran on real sections


def test_the_figure_check_catches_an_edited_number(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "summary.csv").write_text("study,speedup\nbild,1.7874972\n")
    assert appears("1.79", numbers_in([results / "summary.csv"]))
    assert not appears("1.80", numbers_in([results / "summary.csv"]))
    assert quoted_figures("Qwen2.5-Coder 0.5B, torch 2.13.0: 1.79x [1.69, 1.88]") == [
        "1.79",
        "1.69",
        "1.88",
    ]
