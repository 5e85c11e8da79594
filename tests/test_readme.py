"""The README and docs/ quote results only from committed files: every figure a results
section quotes names the cell it comes from (file, row, column; bild_exp.doc_figures) and
equals it at the precision quoted, and every link resolves. A number edited by hand, taken
from the wrong row, or left behind when a make target rewrote its file, fails here; `make
docs` rewrites the marked figures from their files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bild_exp.doc_figures import FigureError, check_page, refresh

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Pages whose every results section is checked figure by figure (the others link results
# and explain them; their figures are quoted in these pages).
CHECKED_PAGES = [
    ROOT / "README.md",
    ROOT / "docs" / "results.md",
    ROOT / "docs" / "benchmark.md",
    ROOT / "docs" / "cpu-and-compiled.md",
]
README_MAX_LINES = 200

LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


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


# a module named by its package folder in a code map or a "read this first" list
PACKAGES = "analysis|bench|data|decoding|harness|models|training"
MODULE = re.compile(rf"`(?:src/bild_exp/)?((?:{PACKAGES})/(?:\w+/)*\w+\.py)`")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_module_a_page_names_is_in_the_tree(page):
    """The code maps match the tree: a module moved or renamed without its docs fails here."""
    for module in MODULE.findall(page.read_text()):
        assert (ROOT / "src" / "bild_exp" / module).is_file(), f"{page.name} names {module}"


@pytest.mark.parametrize("page", CHECKED_PAGES, ids=lambda p: p.name)
def test_every_quoted_figure_is_the_cell_it_names(page):
    problems, checked = check_page(page)
    assert not problems, f"{page.name}: " + "; ".join(
        f"line {p.line}: {p.figure} ({p.detail})" for p in problems[:10]
    )
    assert checked > 0  # the check ran on real figures


def test_the_figure_check_catches_a_figure_from_the_wrong_row(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "summary.csv").write_text(
        "config_id,study,speedup,speedup_low,speedup_high,pass_at_1\n"
        "aaa,bild,1.7874972,1.69,1.88,100\n"
        "bbb,speculative,1.6249,1.57,1.69,100\n"
    )
    page = tmp_path / "page.md"
    header = "<!--@file s = results/summary.csv -->\n## Results\n\n"
    page.write_text(header + "BiLD 1.79x [1.69, 1.88]<!--@ s config_id=aaa speedup --> here.\n")
    assert check_page(page) == ([], 3)
    page.write_text(header + "BiLD 1.62x<!--@ s config_id=aaa speedup --> here.\n")
    assert [p.figure for p in check_page(page)[0]] == ["1.62"]  # speculative's speedup
    # a table row whose figures are all in one row of the file
    page.write_text(header + "| BiLD | 1.79x | 100 | <!--@ s study=bild -->\n")
    assert check_page(page) == ([], 1)
    page.write_text(header + "| BiLD | 1.62x | 100 | <!--@ s study=bild -->\n")
    assert [p.figure for p in check_page(page)[0]] == ["1.62"]
    # a figure with no marker in a section that quotes results
    page.write_text(
        header + "BiLD 1.79x [1.69, 1.88]<!--@ s config_id=aaa speedup -->, or 1.62x.\n"
    )
    assert [p.detail for p in check_page(page)[0]] == ["no marker names its cell"]
    # make docs rewrites each marked figure from its cell, at its precision
    page.write_text(header + "BiLD 1.5x [1.1, 1.2]<!--@ s config_id=aaa speedup -->.\n")
    assert refresh(page) == 1
    assert "BiLD 1.8x [1.7, 1.9]<!--@ s config_id=aaa speedup -->." in page.read_text()
    # a manifest's value by its key path
    (results / "manifest.json").write_text('{"peak_memory_gb": {"host_rss": 18.94}}')
    page.write_text(
        "<!--@file m = results/manifest.json -->\n## Memory\n\n"
        "Peak 18.9<!--@ m peak_memory_gb.host_rss --> GB, 19.9<!--@ m peak_memory_gb.host_rss --> GB.\n"
    )
    assert [p.figure for p in check_page(page)[0]] == ["19.9"]
    with pytest.raises(FigureError, match="matches 2 rows"):
        page.write_text(header + "1.79x<!--@ s pass_at_1=100 speedup -->\n")
        check_page(page)
