"""Rebuild the shipped demo corpus (src/bild_exp/data/demo/) from Debian's packages.

Usage: python scripts/build_demo_corpus.py [--output src/bild_exp/data/demo] [--workdir /tmp/bild-demo-debs]
Needs apt-get and dpkg-deb (any Debian/Ubuntu machine); nothing is installed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bild_exp.data.demo_corpus import build_corpus, fetch_packages, file_sha256


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", type=Path, default=Path("src/bild_exp/data/demo"))
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bild-demo-debs"))
    args = parser.parse_args()
    debs = fetch_packages(args.workdir)
    counts = build_corpus(args.workdir / "root", args.output)
    provenance = {
        "packages": debs,
        "counts": counts,
        "sha256": {p.name: file_sha256(p) for p in sorted(args.output.glob("*.jsonl.gz"))},
    }
    (args.output / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
    print(json.dumps(provenance, indent=2))


if __name__ == "__main__":
    main()
