"""Timing blocks: which machine and moment a timing belongs to, and which timings may be
divided by each other.

A *block* is one process's run of a sweep (or bench): one machine, one start time, the
same loaded models. Every timed record carries its block (its id, the CPU model, cores,
torch threads and start time) and, per record, wall seconds, the process's CPU seconds and
the one-minute load average before and after. These 2-core VMs change speed by up to 2x
from run to run, so a speedup divides only timings of the same example taken in the same
block: a configuration's record is *paired* with its vanilla reference's record of the
same example and block. Deterministic outputs are reused across runs; their timings are
not: :func:`timing_work` says which (configuration, example) records this block must time,
re-timing a reference where its stored record belongs to another block.

Pure functions over record frames, apart from :func:`start_block` and :func:`cpu_model`,
which read the machine.
"""

from __future__ import annotations

import datetime
import os
import platform
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import pandas as pd
import torch

from bild_exp.harness.records.manifest import machine_load

BLOCK_COLUMNS = ("block_id", "block_started", "cpu_model", "cpu_cores", "torch_threads")
# per record: wall and process CPU seconds of the timed region, 1-minute load around it
TIMING_COLUMNS = ("latency_s", "cpu_s", "load_before", "load_after")


@dataclass(frozen=True)
class TimingBlock:
    """One process's run: the timings it takes may be divided by each other."""

    block_id: str
    block_started: str  # ISO 8601, UTC
    cpu_model: str
    cpu_cores: int
    torch_threads: int

    def columns(self) -> dict[str, str | int]:
        return asdict(self)


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def start_block() -> TimingBlock:
    """A new block for this process's timings (call once the models are loaded)."""
    return TimingBlock(
        block_id=uuid.uuid4().hex[:12],
        block_started=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        cpu_model=cpu_model(),
        cpu_cores=os.cpu_count() or 1,
        torch_threads=torch.get_num_threads(),
    )


def load_average() -> float | None:
    """The one-minute load average (None where the OS has none)."""
    loads = machine_load()
    return None if loads is None else loads[0]


# A sweep's own torch threads hold the one-minute load at about the number of cores on a
# machine whose cores they all use (2.0-2.1 on these 2-core VMs with nothing else running);
# one more busy thread of another process adds about 1.
LOAD_MARGIN = 0.5


def loaded(records: pd.DataFrame) -> pd.Series:
    """True for records timed while the machine's one-minute load exceeded its cores by
    more than :data:`LOAD_MARGIN` (before or after the timed region): another process
    competed for the CPU."""
    if "cpu_cores" not in records or "load_before" not in records:
        return pd.Series(False, index=records.index)
    cores = pd.to_numeric(records["cpu_cores"], errors="coerce") + LOAD_MARGIN
    before = pd.to_numeric(records["load_before"], errors="coerce")
    after = pd.to_numeric(records["load_after"], errors="coerce")
    return ((before > cores) | (after > cores)).fillna(False).astype(bool)


def with_block_columns(records: pd.DataFrame) -> pd.DataFrame:
    """``records`` with every block and timing column (None where records written before
    blocks existed lack them: such records pair with nothing)."""
    missing = [c for c in (*BLOCK_COLUMNS, *TIMING_COLUMNS) if c not in records]
    if not missing:
        return records
    return records.assign(**dict.fromkeys(missing))


def latest_outputs(records: pd.DataFrame) -> pd.DataFrame:
    """One record per (configuration, example): the one from the latest block (outputs
    are the same in every block; a re-timed example has one record per block)."""
    records = with_block_columns(records)
    order = records["block_started"].fillna("").astype(str)
    latest = records.assign(_order=order).sort_values("_order", kind="stable")
    latest = latest.drop_duplicates(["config_id", "example_id"], keep="last")
    return latest.drop(columns="_order").sort_index()


def same_block_pairs(
    mine: pd.DataFrame, reference: pd.DataFrame, columns: Sequence[str] = ("latency_s",)
) -> pd.DataFrame:
    """Per example, ``mine``'s and ``reference``'s records from one block: ``example_id``,
    ``block_id``, ``loaded`` (either record), and each of ``columns`` twice (``<c>`` and
    ``<c>_ref``). Where several blocks hold both, an unloaded pair beats a loaded one, then
    the latest block wins. Records without a block pair with nothing; an example that no
    block timed on both sides is left out."""
    keep = ["example_id", "block_id", "block_started", *columns]
    sides = []
    for side in (mine, reference):
        side = with_block_columns(side)
        side = side.assign(loaded=loaded(side))[[*keep, "loaded"]]
        sides.append(side.dropna(subset=["block_id"]))
    pairs = sides[0].merge(
        sides[1].drop(columns="block_started"), on=["example_id", "block_id"], suffixes=("", "_ref")
    )
    pairs["loaded"] = pairs["loaded"] | pairs["loaded_ref"]
    pairs = pairs.drop(columns="loaded_ref")
    pairs = pairs.assign(_order=pairs["block_started"].astype(str), _clean=~pairs["loaded"])
    pairs = pairs.sort_values(["_clean", "_order"], kind="stable")
    pairs = pairs.drop_duplicates("example_id", keep="last").drop(columns=["_order", "_clean"])
    # in mine's order of examples
    position = {example: i for i, example in enumerate(dict.fromkeys(mine["example_id"]))}
    return (
        pairs.assign(_position=pairs["example_id"].map(position))
        .sort_values("_position")
        .drop(columns="_position")
        .reset_index(drop=True)
    )


@dataclass(frozen=True)
class TimingWork:
    """What one block times: per example, the configurations in run order, and how many
    of them are re-timings of records stored from other blocks."""

    by_example: dict[str, list[str]]
    n_new: int  # (configuration, example) records not stored yet
    n_retimed: int  # stored, but timed again here so that a pair shares this block

    @property
    def n_calls(self) -> int:
        return self.n_new + self.n_retimed


def paired_keys(stored: pd.DataFrame, references: dict[str, str | None], clean: bool) -> set:
    """(configuration, example) whose stored record shares a block with its reference's
    record of the example (both unloaded when ``clean``)."""
    stored = with_block_columns(stored).dropna(subset=["block_id"])
    if clean:
        stored = stored[~loaded(stored)]
    if stored.empty:
        return set()
    blocks = stored.groupby(["config_id", "example_id"])["block_id"].agg(set).to_dict()
    paired = set()
    for (config, example), mine in blocks.items():
        reference = references.get(config)
        if reference is None or reference == config:
            continue
        if mine & blocks.get((reference, example), set()):
            paired.add((config, example))
    return paired


def timing_work(
    config_ids: Sequence[str],
    references: dict[str, str | None],
    example_ids: Iterable[str],
    stored: pd.DataFrame,
    retime_loaded: bool = False,
) -> TimingWork:
    """Which records this block times, per example: every configuration without a stored
    record, and every configuration whose stored record has no same-block pair with its
    reference (``references``: config -> its vanilla-large config, None for none), together
    with that reference, timed again here. ``retime_loaded``: a pair timed under load
    counts as missing, so both sides are timed again."""
    stored = with_block_columns(stored)
    done = set(zip(stored["config_id"], stored["example_id"], strict=True))
    paired = paired_keys(stored, references, clean=retime_loaded)
    by_example, n_new, n_retimed = {}, 0, 0
    for example in example_ids:
        wanted = set()
        for config in config_ids:
            reference = references.get(config)
            if (config, example) not in done:
                wanted.add(config)
            if reference is not None and reference != config and (config, example) not in paired:
                wanted |= {config, reference}
        if not wanted:
            continue
        ordered = [config for config in config_ids if config in wanted]
        ordered += sorted(wanted - set(ordered))  # a reference outside this round's runs
        by_example[example] = ordered
        fresh = sum((config, example) not in done for config in ordered)
        n_new += fresh
        n_retimed += len(ordered) - fresh
    return TimingWork(by_example, n_new, n_retimed)


def rotated(items: Sequence[str], index: int) -> list[str]:
    """``items`` starting at position ``index`` (mod its length): the order of the
    configurations on the ``index``-th example, so that no configuration is always first
    (or last) after a slow or fast moment of the machine."""
    if not items:
        return []
    shift = index % len(items)
    return [*items[shift:], *items[:shift]]
