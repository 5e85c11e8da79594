"""The description -> synopsis corpus builder on a fixture in the real Translation-en format."""

from __future__ import annotations

import gzip
import json

from bild_exp.data import synopsis_corpus
from bild_exp.data.synopsis_corpus import Entry, build_corpus, parse_translation, select


def read_rows(path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


LONG = " ".join(["word"] * 30)

FIXTURE = f"""Package: 0ad
Description-md5: d943033bedada21853d2ae54a2578a7b
Description-en: Real-time strategy game of ancient warfare
 0 A.D. (pronounced "zero ey-dee") is a free, open-source, cross-platform
 real-time strategy (RTS) game of ancient warfare.  In short, it is a
 historically-based war/economy game {LONG}
 .
 A second paragraph.

Package: 0ad-data
Description-md5: 26581e685027d5ae84824362a4ba59ee
Description-en: Real-time strategy game of ancient warfare (data files)
 0 A.D. (pronounced "zero ey-dee") is a free game with data {LONG}
 .
 This package contains the main data files required by 0 A.D.

Package: libfoo-dev
Description-md5: 00000000000000000000000000000001
Description-en: development files for the foo library
 Foo does things. {LONG}

Package: oldname
Description-md5: 00000000000000000000000000000002
Description-en: transitional package for newname
 This is a transitional package. {LONG}

Package: short
Description-md5: 00000000000000000000000000000003
Description-en: a tool with a short description
 Too short.

Package: zcopy
Description-md5: 00000000000000000000000000000004
Description-en: Real-time strategy game of ancient warfare
 A copy with another package name and another description {LONG}
"""


def test_parse_continuation_lines_and_paragraphs():
    entries = list(parse_translation(FIXTURE.splitlines()))
    assert [e.package for e in entries] == [
        "0ad",
        "0ad-data",
        "libfoo-dev",
        "oldname",
        "short",
        "zcopy",
    ]
    first = entries[0]
    assert first.synopsis == "Real-time strategy game of ancient warfare"
    paragraphs = first.description.split("\n")
    assert len(paragraphs) == 2 and paragraphs[1] == "A second paragraph."
    assert paragraphs[0].startswith('0 A.D. (pronounced "zero ey-dee") is a free')
    assert "  " not in first.description  # whitespace squeezed
    assert "Description-md5" not in first.description


def test_selection_drops_boilerplate_variants_short_and_duplicates():
    entries = list(parse_translation(FIXTURE.splitlines()))
    kept = select(entries)
    # 0ad-data is a variant of 0ad (synopsis + suffix): both bases collide, so both go;
    # -dev and transitional packages go; "short" is too short; zcopy repeats a synopsis.
    assert [e.package for e in kept] == []
    unique = [
        Entry("tool-a", "a fast tool for sorting lines", "Sorts lines. " + LONG),
        Entry("tool-b", "a fast tool for sorting lines", "Sorts other lines. " + LONG),
        Entry("tool-c", "a viewer for pictures and photos", "Shows pictures. " + LONG),
    ]
    assert [e.package for e in select(unique)] == ["tool-c"]  # a shared synopsis is a variant
    assert [e.package for e in synopsis_corpus.deduplicate(unique)] == ["tool-a", "tool-c"]


def test_build_is_deterministic_and_split_by_seed(tmp_path):
    sizes = {"validation": 2, "test": 2}
    blocks = [
        f"Package: pkg{i}\nDescription-md5: {i:032d}\nDescription-en: synopsis number {i} here\n"
        f" Description {i} of a package. {LONG}\n"
        for i in range(10)
    ]
    lines = "\n".join(blocks).splitlines()
    counts = build_corpus(lines, tmp_path / "a", sizes)
    build_corpus(lines, tmp_path / "b", sizes)
    assert counts == {"entries": 10, "selected": 10, "validation": 2, "test": 2, "train": 6}
    for name in ("train", "validation", "test"):
        first = (tmp_path / "a" / f"{name}.jsonl.gz").read_bytes()
        assert first == (tmp_path / "b" / f"{name}.jsonl.gz").read_bytes()
    rows = read_rows(tmp_path / "a" / "test.jsonl.gz")
    assert set(rows[0]) == {"id", "description", "synopsis"}
    ids = [
        row["id"]
        for name in ("train", "validation", "test")
        for row in read_rows(tmp_path / "a" / f"{name}.jsonl.gz")
    ]
    assert sorted(ids) == sorted(f"pkg{i}" for i in range(10))  # each package in one split


def test_shipped_corpus_matches_its_provenance():
    from importlib import resources

    folder = resources.files("bild_exp").joinpath("data/synopsis")
    provenance = json.loads(folder.joinpath("provenance.json").read_text())
    assert provenance["release"]["Codename"] == "bookworm"
    for name, digest in provenance["sha256"].items():
        assert synopsis_corpus.sha256_bytes(folder.joinpath(name).read_bytes()) == digest
    test_rows = read_rows(str(folder.joinpath("test.jsonl.gz")))
    assert len(test_rows) == provenance["counts"]["test"] == 500
