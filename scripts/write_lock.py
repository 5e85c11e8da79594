"""``make lock``: write constraints/lock.txt from the running environment; ``make test-latest``:
list where the running environment departs from the lock (``--compare``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from bild_exp.lockfile import describe, differences, installed_versions, lock_text, read_lock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--output", type=Path, help="write the lock of this environment here")
    action.add_argument("--compare", type=Path, help="print where this environment departs")
    args = parser.parse_args()
    if args.output:
        args.output.write_text(lock_text(installed_versions(), generated_by="make lock"))
        print(f"wrote {args.output}")
        return
    changed = differences(installed_versions(), read_lock(args.compare))
    print(f"{len(changed)} package(s) differ from {args.compare}:")
    for line in describe(changed):
        print(f"  {line}")


if __name__ == "__main__":
    main()
