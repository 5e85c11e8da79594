"""Figures quoted in the README and docs, each held to the cell of the results file it
comes from.

A page names its results files once, by alias::

    <!--@file he = ../results/demo/humaneval_qwen2.5-coder_0.5b_1.5b/summary.csv -->

and every quoted figure names its cell in an HTML comment right after it (invisible when
rendered): the file, the row (``column=value`` pairs, all of which must match exactly one
row; values with spaces in double quotes) and the column::

    BiLD 1.88x [1.82, 1.94]<!--@ he config_id=564b1febc58b speedup -->

A JSON file (a manifest) is one row whose columns are its dotted key paths
(``<!--@ man peak_memory_gb.host_rss -->``). An interval in brackets after the figure is checked against ``<column>_low`` and
``<column>_high``. A line may instead end with a row marker (no column), for a table row
whose every figure is in one results row: ``<!--@ he config_id=564b1febc58b -->``.
:func:`refresh` rewrites every cell-marked figure from its file, at the figure's own
precision (``make docs``); :func:`check_page` lists what does not match.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

ALIAS = re.compile(r"<!--@file\s+(\S+)\s*=\s*(\S+)\s*-->")
NUMBER = r"-?\d+(?:\.\d+)?"
# a figure (optionally "x" or "%"), an optional "[low, high]", then its cell marker
CELL = re.compile(
    rf"(?P<figure>{NUMBER})(?P<unit>x|%)?(?P<interval>\s*\[(?P<low>{NUMBER}),\s*(?P<high>{NUMBER})\])?"
    r"(?P<marker><!--@\s+(?P<body>[^>]*?)\s*-->)"
)
ROW_MARKER = re.compile(r"<!--@\s+(?P<body>[^>]*?)\s*-->\s*$")
# a quoted decimal figure that is not part of a name or a version (Qwen2.5, 0.5B, 2.13.0)
DECIMAL = re.compile(r"(?<![\w.\-/])(\d+\.\d+)(?=x\b|[^\w.]|$)")
CODE = re.compile(r"```.*?```|`[^`]*`", re.DOTALL)
MARKER = re.compile(r"<!--@.*?-->")


class FigureError(ValueError):
    """A marker that names no file, no row, more than one row, or no such column."""


@dataclass(frozen=True)
class Cell:
    alias: str
    row: dict[str, str]
    column: str | None


def parse_marker(body: str) -> Cell:
    parts = shlex.split(body)
    if not parts:
        raise FigureError("empty figure marker")
    alias, rest = parts[0], parts[1:]
    row = dict(part.split("=", 1) for part in rest if "=" in part)
    columns = [part for part in rest if "=" not in part]
    if len(columns) > 1:
        raise FigureError(f"marker {body!r} names more than one column: {columns}")
    return Cell(alias, row, columns[0] if columns else None)


def aliases(page: Path) -> dict[str, Path]:
    text = page.read_text()
    return {name: (page.parent / target).resolve() for name, target in ALIAS.findall(text)}


def matches(value: object, wanted: str) -> bool:
    if pd.isna(value):
        return wanted in ("", "null", "None")
    if isinstance(value, float | int) and not isinstance(value, bool):
        try:
            return float(wanted) == float(value)
        except ValueError:
            return False
    return str(value) == wanted


def row_of(files: dict[str, Path], cell: Cell, cache: dict[Path, pd.DataFrame]) -> pd.Series:
    if cell.alias not in files:
        raise FigureError(f"no <!--@file {cell.alias} = ...--> on this page")
    path = files[cell.alias]
    if path not in cache:
        cache[path] = read_table(path)
    frame = cache[path]
    mask = pd.Series(True, index=frame.index)
    for column, wanted in cell.row.items():
        if column not in frame:
            raise FigureError(f"{path.name} has no column {column!r}")
        mask &= frame[column].map(lambda value, wanted=wanted: matches(value, wanted))
    if mask.sum() != 1:
        raise FigureError(f"{path.name}: {cell.row} matches {int(mask.sum())} rows, not one")
    return frame[mask].iloc[0]


def read_table(path: Path) -> pd.DataFrame:
    """A CSV file, or a JSON object as one row whose columns are its dotted key paths
    (``peak_memory_gb.host_rss`` in a manifest)."""
    if path.suffix == ".json":
        return pd.json_normalize(json.loads(path.read_text()))
    return pd.read_csv(path)


def decimals(figure: str) -> int:
    return len(figure.split(".")[1]) if "." in figure else 0


def agrees(figure: str, value: object) -> bool:
    """``figure`` is ``value`` rounded to the figure's decimals."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return False
    return abs(number - float(figure)) <= 0.5 * 10 ** -decimals(figure) + 1e-9


def cell_value(row: pd.Series, column: str, path_name: str) -> object:
    if column not in row:
        raise FigureError(f"{path_name} has no column {column!r}")
    return row[column]


@dataclass(frozen=True)
class Mismatch:
    line: int
    figure: str
    detail: str


HEADING = re.compile(r"^#{1,4} ")
RESULTS_LINK = re.compile(r"\]\([^)]*results/[^)]*\)")


def results_sections(lines: list[str]) -> set[int]:
    """Line numbers (1-based) of the sections that quote results: those that link a
    results file or mark a figure."""
    sections, current = [], []
    for number, line in enumerate(lines, 1):
        if HEADING.match(line) and current:
            sections.append(current)
            current = []
        current.append(number)
    sections.append(current)
    quoting = set()
    for numbers in sections:
        body = "\n".join(lines[n - 1] for n in numbers)
        if "<!--@ " in body or RESULTS_LINK.search(body):
            quoting |= set(numbers)
    return quoting


def check_page(page: Path) -> tuple[list[Mismatch], int]:
    """Every marked figure against its cell, and every other decimal figure of a section
    that quotes results against its line's row marker (none: a mismatch); returns the
    mismatches and the number of figures checked."""
    files, cache = aliases(page), {}
    problems, checked = [], 0
    in_code = False
    lines = page.read_text().splitlines()
    quoting = results_sections(lines)
    for number, line in enumerate(lines, 1):
        if line.strip().startswith("```"):
            in_code = not in_code
            continue
        if in_code or ALIAS.search(line):
            continue
        text = CODE.sub("", line)
        covered: set[int] = set()
        for match in CELL.finditer(text):
            cell = parse_marker(match["body"])
            if cell.column is None:
                continue
            row = row_of(files, cell, cache)
            name = files[cell.alias].name
            wanted = [(match["figure"], cell.column)]
            if match["interval"]:
                wanted += [
                    (match["low"], f"{cell.column}_low"),
                    (match["high"], f"{cell.column}_high"),
                ]
            for figure, column in wanted:
                checked += 1
                value = cell_value(row, column, name)
                if not agrees(figure, value):
                    problems.append(
                        Mismatch(number, figure, f"{name} {cell.row} {column} = {value}")
                    )
            covered |= set(range(match.start(), match.end()))
        row_marker = ROW_MARKER.search(text)
        row_cell = parse_marker(row_marker["body"]) if row_marker else None
        row = None
        if row_cell is not None and row_cell.column is None:
            row = row_of(files, row_cell, cache)
        bare = MARKER.sub(lambda m: " " * len(m.group()), text)
        for match in DECIMAL.finditer(bare):
            if match.start() in covered:
                continue
            if row is None:
                if number in quoting:
                    problems.append(Mismatch(number, match.group(1), "no marker names its cell"))
                continue
            checked += 1
            if not any(agrees(match.group(1), value) for value in row.to_numpy()):
                problems.append(
                    Mismatch(
                        number,
                        match.group(1),
                        f"not in {files[row_cell.alias].name} {row_cell.row}",
                    )
                )
    return problems, checked


def formatted(value: object, like: str) -> str:
    return f"{float(value):.{decimals(like)}f}"


def refresh(page: Path) -> int:
    """Rewrite every cell-marked figure of ``page`` from its file (at its precision);
    returns the number of figures changed."""
    files, cache, changed = aliases(page), {}, 0

    def replace(match: re.Match) -> str:
        nonlocal changed
        cell = parse_marker(match["body"])
        if cell.column is None:
            return match.group()
        row = row_of(files, cell, cache)
        name = files[cell.alias].name
        figure = formatted(cell_value(row, cell.column, name), match["figure"])
        text = figure + (match["unit"] or "")
        if match["interval"]:
            low = formatted(cell_value(row, f"{cell.column}_low", name), match["low"])
            high = formatted(cell_value(row, f"{cell.column}_high", name), match["high"])
            text += f" [{low}, {high}]"
        if text + match["marker"] != match.group():
            changed += 1
        return text + match["marker"]

    text = page.read_text()
    new = CELL.sub(replace, text)
    if new != text:
        page.write_text(new)
    return changed
