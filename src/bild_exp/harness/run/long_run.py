"""Runs that outlast a machine: a time budget that stops a sweep cleanly between examples
(``sweep.run_for``), a shard of the examples per cluster job (``data.shard``), and a
progress line per finished example (done of all, this block's rate, the time left); a
SIGTERM stops the run between examples as the budget does (``stop_on_signal``).

A sweep whose records are committed (``sweep.record_parts=per_example``, make humaneval)
writes each finished example's records at once and never rewrites them, so a fresh clone
of the committed state continues with the next example on any machine."""

from __future__ import annotations

import math
import re
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

import pandas as pd

from bild_exp.errors import InvalidParameterError

T = TypeVar("T")

RECORD_PARTS = ("compact", "per_example")
DURATION = re.compile(
    r"(?:(?P<h>\d+(?:\.\d+)?)h)?(?:(?P<m>\d+(?:\.\d+)?)m)?(?:(?P<s>\d+(?:\.\d+)?)s)?"
)
SHARD = re.compile(r"(?P<index>\d+)/(?P<count>\d+)")


def parse_duration(value: object, key: str = "sweep.run_for") -> float | None:
    """Seconds in ``value``: null (no limit), a number of seconds, or a string such as
    ``2h``, ``90m``, ``1h30m``, ``45s``; anything else is one line naming ``key``."""
    if value is None or value == "":
        return None
    seconds: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            seconds = float(text)
        else:
            match = DURATION.fullmatch(text)
            if match and any(match.groupdict().values()):
                parts = {unit: float(match[unit] or 0) for unit in "hms"}
                seconds = parts["h"] * 3600 + parts["m"] * 60 + parts["s"]
    if seconds is None or not math.isfinite(seconds) or seconds <= 0:
        raise InvalidParameterError(
            f"{key}={value!r} is invalid: accepted null (no limit), a positive number of "
            "seconds, or a duration such as 2h, 90m, 1h30m, 45s"
        )
    return seconds


def parse_shard(value: object, key: str = "data.shard") -> tuple[int, int] | None:
    """``index/count`` (0 <= index < count), e.g. ``3/16``; null: every example."""
    if value is None or value == "":
        return None
    match = SHARD.fullmatch(str(value).strip())
    if match:
        index, count = int(match["index"]), int(match["count"])
        if count >= 1 and 0 <= index < count:
            return index, count
    raise InvalidParameterError(
        f"{key}={value!r} is invalid: accepted null (every example) or 'i/n' with "
        "0 <= i < n, e.g. 3/16 (the 4th of 16 contiguous ranges)"
    )


def check_record_parts(value: object) -> str:
    if value not in RECORD_PARTS:
        raise InvalidParameterError(
            f"sweep.record_parts={value!r} is invalid: accepted {', '.join(RECORD_PARTS)}"
        )
    return str(value)


def shard_of(items: Sequence[T], shard: tuple[int, int] | None) -> list[T]:
    """The ``index``-th of ``count`` contiguous ranges of ``items`` (sizes differ by at most
    one; together the ranges hold every item once, in order)."""
    if shard is None:
        return list(items)
    index, count = shard
    start, stop = (len(items) * index) // count, (len(items) * (index + 1)) // count
    return list(items[start:stop])


def shard_label(shard: tuple[int, int] | None) -> str:
    """A name part for a shard's lock files (empty for the whole slice)."""
    return "" if shard is None else f".shard-{shard[0]}-of-{shard[1]}"


def complete_examples(records: pd.DataFrame, config_ids: Sequence[str]) -> tuple[pd.DataFrame, int]:
    """The records of examples that every configuration of ``config_ids`` has finished, and
    how many examples were left out (a run stopped within them: the next one finishes
    them), so that every row of a long run's summary covers the same examples."""
    wanted = set(config_ids)
    have = records.groupby("example_id")["config_id"].agg(lambda ids: wanted <= set(ids))
    complete = set(have.index[have])
    return records[records["example_id"].isin(complete)], int((~have).sum())


def format_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


@dataclass
class RunProgress:
    """Examples done of the slice, this block's rate and the time left. ``deadline``
    (``time.monotonic()`` seconds; None: none) stops the run before an example that this
    block's rate says would end after it."""

    n_total: int  # examples in the slice (this shard's, where there is one)
    n_done: int  # examples whose every configuration was stored before this block
    deadline: float | None = None
    run_for_s: float | None = None  # the budget, for the closing line
    started: float = field(default_factory=lambda: time.monotonic())  # this block's first example
    n_this_block: int = 0
    stopped_early: bool = False
    stop_signal: str | None = None  # the signal that asked the run to stop (stop_on_signal)

    def per_example_s(self, now: float | None = None) -> float | None:
        if not self.n_this_block:
            return None
        return ((time.monotonic() if now is None else now) - self.started) / self.n_this_block

    def out_of_time(self) -> bool:
        """True (and remembered) once the next example would end after the deadline at
        this block's rate (before the first example: once the deadline has passed), or once
        a signal asked the run to stop (:func:`stop_on_signal`)."""
        if self.stop_signal is not None:
            self.stopped_early = True
        if self.deadline is not None and not self.stopped_early:
            now = time.monotonic()
            self.stopped_early = now + (self.per_example_s(now) or 0.0) > self.deadline
        return self.stopped_early

    def example_done(self) -> str:
        """Count one finished example; the progress line to print."""
        self.n_this_block += 1
        self.n_done += 1
        now = time.monotonic()
        rate = self.per_example_s(now) or 0.0
        left = self.n_total - self.n_done
        return (
            f"progress: {self.n_done} of {self.n_total} examples done; this block "
            f"{self.n_this_block} in {format_duration(now - self.started)} "
            f"({format_duration(rate)} per example); about {format_duration(rate * left)} "
            "left at this rate"
        )

    def closing_line(self) -> str:
        left = self.n_total - self.n_done
        if not left:
            return f"progress: all {self.n_total} examples done"
        if self.stop_signal is not None:
            why = f"{self.stop_signal} asked it to stop"
        elif self.stopped_early:
            why = (
                f"the time budget ({format_duration(self.run_for_s or 0)}) would be exceeded "
                "by the next example"
            )
        else:
            why = "this run stopped"
        return (
            f"progress: {self.n_done} of {self.n_total} examples done; {why}: the same "
            f"command continues with the next example ({left} left)"
        )


@contextmanager
def stop_on_signal(
    progress: RunProgress, signals: Sequence[int] = (signal.SIGTERM,)
) -> Iterator[None]:
    """A stop asked for by a signal (``kill``, a cluster's time limit or preemption: Slurm
    sends SIGTERM first) is a stop between examples, as the time budget's: the example in
    progress finishes and is stored, the block's per-call costs are measured and the summary
    written. A second signal stops at once (Ctrl-C's path: what is stored stays). Outside
    the main thread, where Python cannot handle signals, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def ask_to_stop(signum: int, frame: object) -> None:
        if progress.stop_signal is not None:
            raise KeyboardInterrupt
        progress.stop_signal = signal.Signals(signum).name
        print(
            f"progress: {progress.stop_signal} received: stopping after the example in "
            "progress (send it again to stop at once)",
            flush=True,
        )

    previous = {number: signal.signal(number, ask_to_stop) for number in signals}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
