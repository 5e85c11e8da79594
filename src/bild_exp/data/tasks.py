"""Tasks are data: a :class:`TaskSpec` (from ``conf/task/*.yaml``) says where examples come
from and how to read them; :func:`load_examples` turns it into source/target pairs.

Sources: a Hugging Face Hub dataset (``hub_id``/``hub_config``), local files
(``data_files``: JSONL, JSON, CSV or Parquet, gzip allowed) with the same
preprocessing, or the demo corpus shipped inside the package (``data_files`` paths
starting with ``package://``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

METRICS = ("bleu", "rouge")
LOCAL_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


class DataError(ValueError):
    """A dataset cannot be loaded as configured (missing file, column, or offline Hub id)."""


@dataclass(frozen=True)
class TaskSpec:
    """Where a task's examples live and how to turn them into (source, target) text."""

    name: str
    metric: str  # "bleu" or "rouge"
    source_field: str
    target_field: str
    hub_id: str | None = None
    hub_config: str | None = None
    data_files: dict[str, str] | None = None  # split -> path (local or package://)
    # Nested fields such as WMT/IWSLT's {"translation": {"de": ..., "en": ...}}.
    nested_field: str | None = None
    id_field: str | None = None
    split: str = "validation"
    source_prefix: str = ""
    max_source_length: int = 1024
    max_new_tokens: int = 128
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Example:
    id: str
    source: str
    target: str


PACKAGE_SCHEME = "package://"


def resolve_path(path: str) -> Path:
    """``package://data/demo/test.jsonl.gz`` -> that file shipped inside the ``bild_exp`` package."""
    if path.startswith(PACKAGE_SCHEME):
        return Path(str(resources.files("bild_exp").joinpath(path.removeprefix(PACKAGE_SCHEME))))
    return Path(path).expanduser()


def local_format(path: Path) -> str:
    suffixes = [s for s in path.suffixes if s != ".gz"]
    fmt = LOCAL_FORMATS.get(suffixes[-1] if suffixes else "")
    if fmt is None:
        raise DataError(
            f"data_files path={str(path)!r} has an unknown format: accepted {', '.join(LOCAL_FORMATS)} (optionally .gz)"
        )
    return fmt


def load_rows(task: TaskSpec, split: str):
    """The raw ``datasets.Dataset`` of one split, from local files or the Hub."""
    import datasets

    if task.data_files:
        if not task.data_files.get(split):
            available = [name for name, path in task.data_files.items() if path]
            raise DataError(
                f"split={split!r} has no file in task {task.name!r}'s data_files: accepted {', '.join(available)}"
            )
        path = resolve_path(task.data_files[split])
        if not path.exists():
            raise DataError(
                f"data_files.{split}={str(path)!r} does not exist: set it to a local file"
            )
        return datasets.load_dataset(local_format(path), data_files=str(path), split="train")
    if task.hub_id is None:
        raise DataError(f"task {task.name!r} has neither hub_id nor data_files: set one")
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        # datasets retries the network for a while before failing; fail at once when
        # offline unless the dataset is already cached.
        return load_cached_or_fail(task, split)
    return datasets.load_dataset(task.hub_id, task.hub_config, split=split)


def load_cached_or_fail(task: TaskSpec, split: str):
    import datasets

    try:
        return datasets.load_dataset(task.hub_id, task.hub_config, split=split)
    except Exception as error:  # datasets raises several types for "not cached"
        raise DataError(
            f"dataset {task.hub_id!r} (config {task.hub_config!r}) is not cached and the Hub is offline "
            f"(HF_HUB_OFFLINE=1): download it once with network access "
            f"(datasets.load_dataset({task.hub_id!r}, {task.hub_config!r})) or set task.data_files "
            f"to local files with columns {task.source_field!r}/{task.target_field!r} "
            f"[{type(error).__name__}]"
        ) from None


def to_examples(task: TaskSpec, rows, split: str) -> list[Example]:
    """Pick and prefix the source/target fields; check the columns exist."""
    columns = rows.column_names
    needed = [task.nested_field] if task.nested_field else [task.source_field, task.target_field]
    missing = [c for c in needed if c not in columns]
    if missing:
        raise DataError(
            f"task {task.name!r} split {split!r} lacks column(s) {missing}: the file has {columns}"
        )
    examples = []
    for index, row in enumerate(rows):
        record = row[task.nested_field] if task.nested_field else row
        example_id = (
            str(row[task.id_field])
            if task.id_field and task.id_field in row
            else f"{split}-{index}"
        )
        examples.append(
            Example(
                id=example_id,
                source=task.source_prefix + str(record[task.source_field]),
                target=str(record[task.target_field]),
            )
        )
    return examples


def load_examples(
    task: TaskSpec, split: str | None = None, limit: int | None = None
) -> list[Example]:
    """The first ``limit`` examples of a split (default: the task's split), in file order."""
    split = split or task.split
    rows = load_rows(task, split)
    if limit is not None:
        rows = rows.select(range(min(limit, len(rows))))
    return to_examples(task, rows, split)


def task_from_config(config: Any) -> TaskSpec:
    """Build a TaskSpec from a Hydra/OmegaConf node or a dict (unknown keys go to ``extra``)."""
    from omegaconf import DictConfig, OmegaConf

    values = (
        OmegaConf.to_container(config, resolve=True)
        if isinstance(config, DictConfig)
        else dict(config)
    )
    known = set(TaskSpec.__dataclass_fields__)
    extra = {k: v for k, v in values.items() if k not in known}
    spec_values = {k: v for k, v in values.items() if k in known}
    if spec_values.get("metric") not in METRICS:
        raise DataError(
            f"task.metric={spec_values.get('metric')!r} is invalid: accepted {', '.join(METRICS)}"
        )
    return TaskSpec(**spec_values, extra={**spec_values.get("extra", {}), **extra})
