"""Rebuild the shipped description -> synopsis corpus (src/bild_exp/data/synopsis/).

Usage: python scripts/build_synopsis_corpus.py [--lists /var/lib/apt/lists] [--output src/bild_exp/data/synopsis]
Run `apt-get update -o Acquire::Languages=en` first (any Debian machine): it fetches the
English `Translation-en` index of bookworm main that this script reads (apt-helper
decompresses it). Nothing is installed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

from bild_exp.data.synopsis_corpus import build_corpus, release_fields, sha256_bytes

INDEX_GLOB = "*_dists_bookworm_main_i18n_Translation-en*"
RELEASE_GLOB = "*_dists_bookworm_InRelease"


def read_index(lists: Path) -> tuple[Path, bytes]:
    matches = sorted(lists.glob(INDEX_GLOB))
    if not matches:
        raise SystemExit(
            f"no {INDEX_GLOB} under {lists}: run `apt-get update -o Acquire::Languages=en` first"
        )
    # apt-helper cat-file decompresses whatever compression apt stored (lz4, xz, gz, none)
    data = subprocess.run(
        ["/usr/lib/apt/apt-helper", "cat-file", str(matches[0])], check=True, capture_output=True
    ).stdout
    return matches[0], data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lists", type=Path, default=Path("/var/lib/apt/lists"))
    parser.add_argument("--output", type=Path, default=Path("src/bild_exp/data/synopsis"))
    args = parser.parse_args()
    index_path, data = read_index(args.lists)
    counts = build_corpus(data.decode("utf-8").splitlines(), args.output)
    release = sorted(args.lists.glob(RELEASE_GLOB))
    provenance = {
        "index": index_path.name,
        "index_sha256": sha256_bytes(data),
        "release": release_fields(release[0]) if release else None,
        "counts": counts,
        "sha256": {
            p.name: sha256_bytes(p.read_bytes()) for p in sorted(args.output.glob("*.jsonl.gz"))
        },
    }
    (args.output / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
    print(json.dumps(provenance, indent=2))


if __name__ == "__main__":
    main()
