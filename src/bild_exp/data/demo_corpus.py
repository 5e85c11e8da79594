"""Build the offline German-English demo corpus from two Debian packages of real text.

- ``trans-de-en`` (Ding dictionary, GPL-2+): ``/usr/share/trans/de-en``, lines
  ``de | de2 :: en | en2``; the aligned sub-entries that are full sentences are kept.
- ``libreoffice-help-de`` / ``libreoffice-help-en-us`` (MPL-2.0): HTML help pages whose
  paragraphs carry the same ``id="par_id..."`` in both languages.

Packages are fetched with ``apt-get download`` (no install), unpacked with
``dpkg-deb -x``, cleaned, de-duplicated so that no German or English sentence occurs
twice, and split with a fixed seed: rebuilding gives the same files.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import re
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

PACKAGES = ("trans-de-en", "libreoffice-help-de", "libreoffice-help-en-us")
DING_PATH = Path("usr/share/trans/de-en")
HELP_ROOT = Path("usr/share/libreoffice/help")
SPLIT_SIZES = {"validation": 1000, "test": 1000}
MIN_WORDS, MAX_WORDS = 4, 40
SEED = 20230214


@dataclass(frozen=True)
class Pair:
    de: str
    en: str
    origin: str  # "ding" or "libreoffice-help"


def fetch_packages(workdir: Path, packages: Iterable[str] = PACKAGES) -> dict[str, str]:
    """Download and unpack the packages into ``workdir/root``; return {package: .deb file}."""
    workdir.mkdir(parents=True, exist_ok=True)
    subprocess.run(["apt-get", "download", *packages], cwd=workdir, check=True, capture_output=True)
    debs = {}
    for package in packages:
        matches = sorted(workdir.glob(f"{package}_*.deb"))
        if not matches:
            raise FileNotFoundError(f"apt-get download left no .deb for package={package!r}")
        debs[package] = matches[-1].name
        subprocess.run(["dpkg-deb", "-x", str(matches[-1]), str(workdir / "root")], check=True)
    return debs


ANNOTATION = re.compile(r"\s*(\{[^}]*\}|\[[^\]]*\])")
SPACES = re.compile(r"\s+")


def clean(text: str) -> str:
    """Drop ``{m}``/``[ugs.]``-style annotations and normalise whitespace."""
    return SPACES.sub(" ", ANNOTATION.sub("", text)).strip()


def has_sentence_length(text: str) -> bool:
    return MIN_WORDS <= len(text.split()) <= MAX_WORDS


def is_sentence(text: str) -> bool:
    """A full sentence: MIN_WORDS to MAX_WORDS words, ending in . ? or !."""
    return has_sentence_length(text) and text[-1:] in ".?!"


def parse_ding(lines: Iterable[str]) -> Iterator[Pair]:
    """Sentence pairs from Ding lines ``de | de2 :: en | en2`` (first variant of each side)."""
    for line in lines:
        if line.startswith("#") or " :: " not in line:
            continue
        german, english = line.rstrip("\n").split(" :: ", 1)
        for de_entry, en_entry in zip(german.split(" | "), english.split(" | "), strict=False):
            # "A.; B." lists variants of one sentence: keep the first of each side.
            de = clean(de_entry.split("; ")[0])
            en = clean(en_entry.split("; ")[0])
            if is_sentence(de) and is_sentence(en) and "/" not in de + en:
                yield Pair(de, en, "ding")


class ParagraphParser(HTMLParser):
    """Collects the text of every element whose id starts with ``par_id``."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.paragraphs: dict[str, str] = {}
        self._stack: list[tuple[str, str | None]] = []  # (tag, paragraph id or None)
        self._current: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in {"br", "img", "meta", "link", "input", "hr"}:
            return
        par_id = dict(attrs).get("id") or ""
        opens = self._current is None and par_id.startswith("par_id")
        if opens:
            self._current = par_id
            self.paragraphs.setdefault(par_id, "")
        self._stack.append((tag, par_id if opens else None))

    def handle_endtag(self, tag: str) -> None:
        while self._stack:
            open_tag, par_id = self._stack.pop()
            if par_id is not None:
                self._current = None
            if open_tag == tag:
                break

    def handle_data(self, data: str) -> None:
        if self._current is not None:
            self.paragraphs[self._current] += data


def paragraphs_of(html_file: Path) -> dict[str, str]:
    parser = ParagraphParser()
    parser.feed(html_file.read_text(encoding="utf-8", errors="replace"))
    return {key: SPACES.sub(" ", text).strip() for key, text in parser.paragraphs.items()}


def parse_libreoffice_help(help_root: Path) -> Iterator[Pair]:
    """Paragraph pairs from pages present in both ``de`` and ``en-US`` with the same par_id."""
    german_root, english_root = help_root / "de", help_root / "en-US"
    for german_file in sorted(german_root.rglob("*.html")):
        english_file = english_root / german_file.relative_to(german_root)
        if not english_file.exists():
            continue
        german, english = paragraphs_of(german_file), paragraphs_of(english_file)
        for par_id in sorted(german.keys() & english.keys()):
            de, en = german[par_id], english[par_id]
            # Identical text is untranslated (names, code): not a translation pair.
            if de != en and has_sentence_length(de) and has_sentence_length(en):
                yield Pair(de, en, "libreoffice-help")


def deduplicate(pairs: Iterable[Pair]) -> list[Pair]:
    """Keep the first pair for each German and each English sentence, so no sentence can
    land in two splits."""
    seen_de: set[str] = set()
    seen_en: set[str] = set()
    kept = []
    for pair in pairs:
        if pair.de in seen_de or pair.en in seen_en:
            continue
        seen_de.add(pair.de)
        seen_en.add(pair.en)
        kept.append(pair)
    return kept


def split(pairs: list[Pair], sizes: dict[str, int], seed: int = SEED) -> dict[str, list[Pair]]:
    """Shuffle with a fixed seed; the first ``sizes`` go to validation/test, the rest to train."""
    shuffled = sorted(pairs, key=lambda p: (p.de, p.en))
    random.Random(seed).shuffle(shuffled)
    splits, start = {}, 0
    for name, size in sizes.items():
        splits[name] = shuffled[start : start + size]
        start += size
    splits["train"] = shuffled[start:]
    return splits


def write_split(pairs: list[Pair], path: Path, split_name: str) -> None:
    """JSONL (gzip, reproducible: no timestamp) with id, de, en, origin."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as handle:
        for index, pair in enumerate(pairs):
            row = {
                "id": f"{split_name}-{index:05d}",
                "de": pair.de,
                "en": pair.en,
                "origin": pair.origin,
            }
            handle.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))


def build_corpus(package_root: Path, output_dir: Path) -> dict[str, dict[str, int]]:
    """Parse, clean, de-duplicate, split and write; return counts per split and origin."""
    ding_lines = (package_root / DING_PATH).read_text(encoding="utf-8").splitlines()
    pairs = deduplicate(
        [*parse_ding(ding_lines), *parse_libreoffice_help(package_root / HELP_ROOT)]
    )
    counts = {}
    for name, split_pairs in split(pairs, SPLIT_SIZES).items():
        write_split(split_pairs, output_dir / f"{name}.jsonl.gz", name)
        counts[name] = {
            origin: sum(p.origin == origin for p in split_pairs)
            for origin in ("ding", "libreoffice-help")
        }
    return counts


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
