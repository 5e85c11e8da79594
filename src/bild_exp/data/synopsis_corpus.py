"""Build the offline description -> synopsis corpus from Debian's English package index.

Every package of Debian's archive has a long description and a one-line synopsis, both
written by a person: an extreme-summarisation task in the manner of XSUM. The source is
the ``Translation-en`` index that ``apt-get update -o Acquire::Languages=en`` fetches
(``/var/lib/apt/lists/*_main_i18n_Translation-en*``), in deb822 paragraphs::

    Package: 0ad
    Description-md5: d943033bedada21853d2ae54a2578a7b
    Description-en: Real-time strategy game of ancient warfare
     0 A.D. (pronounced "zero ey-dee") is a free, open-source, cross-platform
     real-time strategy (RTS) game of ancient warfare.
     .
     A second paragraph.

Boilerplate families are dropped (``-dev``, ``-doc``, ``-dbg`` and similar names,
transitional and dummy packages, and variants whose synopsis is another package's plus a
suffix), sources are kept between ``MIN_WORDS`` and ``MAX_WORDS`` words, pairs are
de-duplicated by synopsis and by description, and split with a fixed seed. Rebuilding from
the same index gives byte-identical files (gzip with a fixed mtime).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

SPLIT_SIZES = {"validation": 500, "test": 500}
MIN_WORDS, MAX_WORDS = 25, 140  # description words: enough to summarise, short prompts
MIN_SYNOPSIS_WORDS = 3
SEED = 20230214
BOILERPLATE_SUFFIXES = (
    "-dev",
    "-doc",
    "-dbg",
    "-dbgsym",
    "-prof",
    "-data",
    "-common",
    "-l10n",
    "-locale",
    "-i18n",
)
BOILERPLATE_WORDS = re.compile(
    r"\b(transitional|dummy package|metapackage|meta-package|debug symbols|documentation for"
    r"|development files|header files|(?:static|shared) librar(?:y|ies) for)\b",
    re.IGNORECASE,
)
# "Parent synopsis (data files)", "Parent synopsis - documentation", "Parent synopsis: GTK"
VARIANT_SUFFIX = re.compile(r"\s*(?:\([^()]*\)|\s[-\u2013:]\s.*)$")


@dataclass(frozen=True)
class Entry:
    package: str
    synopsis: str
    description: str  # paragraphs joined by "\n", lines within a paragraph by " "


def parse_translation(lines: Iterable[str]) -> Iterator[Entry]:
    """Entries of a ``Translation-en`` file (deb822: continuation lines start with a space,
    `` .`` separates paragraphs)."""
    package, synopsis, paragraphs, current = None, None, [], []

    def finish() -> Entry | None:
        if package is None or synopsis is None:
            return None
        text = "\n".join(squeeze(p) for p in [*paragraphs, " ".join(current)] if p.strip())
        return Entry(package, squeeze(synopsis), text)

    for raw in lines:
        line = raw.rstrip("\n")
        if not line.strip():
            entry = finish()
            if entry:
                yield entry
            package, synopsis, paragraphs, current = None, None, [], []
        elif line.startswith(" ") and synopsis is not None:
            content = line[1:]
            if content.strip() == ".":
                paragraphs.append(" ".join(current))
                current = []
            else:
                current.append(content.strip())
        elif line.startswith("Package:"):
            package = line.split(":", 1)[1].strip()
        elif line.startswith("Description-en:"):
            synopsis = line.split(":", 1)[1]
    entry = finish()
    if entry:
        yield entry


def squeeze(text: str) -> str:
    return " ".join(text.split())


def is_boilerplate(entry: Entry) -> bool:
    name = entry.package
    if any(name.endswith(suffix) or f"{suffix}-" in name for suffix in BOILERPLATE_SUFFIXES):
        return True
    return bool(BOILERPLATE_WORDS.search(entry.synopsis))


def synopsis_base(synopsis: str) -> str:
    """The synopsis without a trailing variant suffix, lower-cased."""
    return VARIANT_SUFFIX.sub("", synopsis).strip().lower()


def drop_variants(entries: list[Entry]) -> list[Entry]:
    """Drop every entry whose synopsis, without its suffix, is shared with another package
    (``foo (data files)`` next to ``foo``, ``lib - Python 3`` next to ``lib - Perl``)."""
    bases = Counter(synopsis_base(e.synopsis) for e in entries)
    return [e for e in entries if bases[synopsis_base(e.synopsis)] == 1]


def has_source_length(entry: Entry) -> bool:
    n_words = len(entry.description.split())
    return MIN_WORDS <= n_words <= MAX_WORDS and len(entry.synopsis.split()) >= MIN_SYNOPSIS_WORDS


def deduplicate(entries: Iterable[Entry]) -> list[Entry]:
    """First entry (by package name) per synopsis and per description, case-insensitively."""
    seen_synopses, seen_descriptions, kept = set(), set(), []
    for entry in sorted(entries, key=lambda e: e.package):
        synopsis, description = entry.synopsis.lower(), entry.description.lower()
        if synopsis in seen_synopses or description in seen_descriptions:
            continue
        seen_synopses.add(synopsis)
        seen_descriptions.add(description)
        kept.append(entry)
    return kept


def select(entries: Iterable[Entry]) -> list[Entry]:
    """The corpus: boilerplate and variants dropped, lengths kept in range, de-duplicated."""
    candidates = [e for e in entries if not is_boilerplate(e)]
    return deduplicate(e for e in drop_variants(candidates) if has_source_length(e))


def split(
    entries: list[Entry], sizes: dict[str, int] = SPLIT_SIZES, seed: int = SEED
) -> dict[str, list[Entry]]:
    """Shuffle with a fixed seed; the named sizes first, the rest is train."""
    shuffled = sorted(entries, key=lambda e: e.package)
    random.Random(seed).shuffle(shuffled)
    splits, start = {}, 0
    for name, size in sizes.items():
        splits[name] = sorted(shuffled[start : start + size], key=lambda e: e.package)
        start += size
    splits["train"] = sorted(shuffled[start:], key=lambda e: e.package)
    return splits


def write_split(entries: list[Entry], path: Path) -> None:
    """gzip JSONL with a fixed mtime, so that a rebuild is byte-identical."""
    lines = [
        json.dumps(
            {"id": e.package, "description": e.description, "synopsis": e.synopsis},
            ensure_ascii=False,
        )
        for e in entries
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as handle:
        handle.write(("\n".join(lines) + "\n").encode())


def build_corpus(
    lines: Iterable[str], output_dir: Path, sizes: dict[str, int] = SPLIT_SIZES
) -> dict[str, int]:
    """Parse, select, split and write ``{train,validation,test}.jsonl.gz``; return counts."""
    entries = list(parse_translation(lines))
    selected = select(entries)
    counts = {"entries": len(entries), "selected": len(selected)}
    for name, part in split(selected, sizes).items():
        write_split(part, output_dir / f"{name}.jsonl.gz")
        counts[name] = len(part)
    return counts


def release_fields(release_file: Path) -> dict[str, str]:
    """Origin, Suite, Codename, Version and Date of an apt ``Release``/``InRelease`` file."""
    wanted = ("Origin", "Suite", "Codename", "Version", "Date")
    fields = {}
    for line in release_file.read_text(errors="replace").splitlines():
        key, _, value = line.partition(": ")
        if key in wanted and key not in fields:
            fields[key] = value.strip()
    return fields


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
