"""`make docs`: rewrite every cell-marked figure of the README and docs/ from the results
file it names (bild_exp.doc_figures), then list any figure that still does not match."""

from __future__ import annotations

import sys
from pathlib import Path

from bild_exp.doc_figures import check_page, refresh

ROOT = Path(__file__).resolve().parents[1]
# the pages tests/test_readme.py holds figure by figure
CHECKED_PAGES = [
    ROOT / "README.md",
    ROOT / "docs" / "results.md",
    ROOT / "docs" / "benchmark.md",
    ROOT / "docs" / "cpu-and-compiled.md",
]


def main() -> int:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    failed = 0
    for page in pages:
        changed = refresh(page)
        if page not in CHECKED_PAGES:  # pages that explain rather than quote results
            print(f"{page.relative_to(ROOT)}: {changed} figures rewritten")
            continue
        problems, checked = check_page(page)
        print(f"{page.relative_to(ROOT)}: {changed} figures rewritten, {checked} checked")
        for problem in problems:
            print(f"  line {problem.line}: {problem.figure} ({problem.detail})")
        failed += len(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
