"""Bad input as a new user meets it, through the real entry points (subprocesses): exit 2,
exactly one line on stderr naming the setting or file, no traceback, and nothing under the
results folder created or changed. Plus the damaged-file checks behind those lines."""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bild_exp import sweep
from bild_exp.data.tasks import DataError, load_examples, task_from_config
from bild_exp.harness.records.store import (
    CorruptedResultsError,
    RecordStore,
    UnwritableResultsError,
    check_writable,
)
from bild_exp.harness.run import pipeline
from bild_exp.models.gguf import GGUFError, check_gguf_file
from tests.harness_fixtures import ENV, ONE_BILD_POINT, ROOT, compose_sweep, tiny_overrides


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with a hash of its content."""
    if not folder.is_dir():
        return {}
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def write_gzip_damaged(path: Path) -> Path:
    data = gzip.compress(b'{"id": "1", "de": "Hallo Welt", "en": "Hello world"}\n' * 50)
    path.write_bytes(data[: len(data) // 2])
    return path


def write_gguf(path: Path) -> Path:
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), "llama")
    writer.add_tensor("weight", np.ones((64, 64), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def case_overrides(case: str, assets, results: Path, scratch: Path) -> tuple[str, list[str]]:
    """The entry point and arguments of one bad-input case."""
    base = tiny_overrides(assets, results, *ONE_BILD_POINT)
    if case == "task.max_new_tokens":
        return "bild_exp.sweep", [*base, "task.max_new_tokens=0"]
    if case == "task.max_source_length":
        return "bild_exp.sweep", [*base, "task.max_source_length=-1"]
    if case == "task.max_new_token":  # a typo of a task key: refused, not ignored
        return "bild_exp.sweep", [*base, "+task.max_new_token=5"]
    if case == "grid.window":
        return "bild_exp.sweep", [*base, "method=speculative", "grid.window=[0]"]
    if case == "seeds":
        return "bild_exp.sweep", [*base, "sampling=nucleus", "seeds=[-1]"]
    if case == "stats.bootstrap":
        return "bild_exp.sweep", [*base, "stats.bootstrap=0"]
    if case == "bench.n_examples":
        return "bild_exp.bench", [*base, "bench.n_examples=-5"]
    if case == "task.data_files.validation":
        damaged = write_gzip_damaged(scratch / "data.jsonl.gz")
        return "bild_exp.sweep", [*base, f"task.data_files.validation={damaged}"]
    if case == "compat.json":
        folder = results / "sweep" / "custom_tiny"
        folder.mkdir(parents=True)
        (folder / "compat.json").write_text('{"task": "cus')
        return "bild_exp.sweep", base
    if case == "pair.large":
        (scratch / "model.gguf").write_bytes(b"not a gguf file at all" * 100)
        return "bild_exp.sweep", [*base, f"pair.large={scratch / 'model.gguf'}"]
    if case == "results_dir":
        (scratch / "a-file").write_text("in the way")
        return "bild_exp.sweep", [*base, f"results_dir={scratch / 'a-file'}"]
    if case == "manifest.json":
        folder = results / "table1" / "some_run"
        folder.mkdir(parents=True)
        (folder / "summary.csv").write_text("config_id\nA\n")
        (folder / "manifest.json").write_text('{"config": {"task"')
        return "bild_exp.paper", ["table1", "--results-dir", str(results)]
    raise AssertionError(case)


CASES = [
    "task.max_new_tokens",
    "task.max_source_length",
    "task.max_new_token",
    "grid.window",
    "seeds",
    "stats.bootstrap",
    "bench.n_examples",
    "task.data_files.validation",
    "compat.json",
    "pair.large",
    "results_dir",
    "manifest.json",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_exit_2_and_leaves_the_results_folder_alone(
    case, tiny_assets, tmp_path
):
    results, scratch = tmp_path / "results", tmp_path / "scratch"
    scratch.mkdir()
    module, arguments = case_overrides(case, tiny_assets, results, scratch)
    if module != "bild_exp.paper":  # Hydra's own run folder, outside the results folder
        arguments = [*arguments, f"hydra.run.dir={scratch / 'hydra'}"]
    before = snapshot(results)
    finished = subprocess.run(
        [sys.executable, "-m", module, *arguments],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    lines = [line for line in finished.stderr.splitlines() if line.strip()]
    assert finished.returncode == 2, finished.stderr
    assert len(lines) == 1 and "Traceback" not in finished.stderr, finished.stderr
    assert case in lines[0], lines[0]
    assert snapshot(results) == before


def test_results_dir_checks_name_the_problem(tmp_path):
    check_writable(tmp_path / "new" / "deeper")  # creatable: fine, and nothing created
    assert not (tmp_path / "new").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(UnwritableResultsError, match="is a file, not a folder"):
        check_writable(tmp_path / "file" / "results")
    with pytest.raises(UnwritableResultsError, match="cannot be written"):
        check_writable(Path("/proc/bild-results"))


def test_damaged_gzip_data_is_one_line(tmp_path):
    damaged = write_gzip_damaged(tmp_path / "data.jsonl.gz")
    task = task_from_config(
        {
            "name": "custom",
            "metric": "bleu",
            "split": "validation",
            "source_field": "de",
            "target_field": "en",
            "id_field": "id",
            "data_files": {"validation": str(damaged)},
            "max_new_tokens": 8,
        }
    )
    with pytest.raises(DataError, match=r"cannot be decompressed \(EOFError"):
        load_examples(task, "validation", 3)


def test_gguf_files_not_gguf_or_truncated_are_one_line(tmp_path):
    intact = write_gguf(tmp_path / "intact.gguf")
    check_gguf_file(intact)
    data = intact.read_bytes()
    for name, content, message in (
        ("other.gguf", b"PK\x03\x04 a zip file" * 64, "is not a readable GGUF file"),
        ("head.gguf", data[:64], "is not a readable GGUF file"),
        ("cut.gguf", data[: int(len(data) * 0.9)], "is truncated|is not a readable GGUF"),
    ):
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(GGUFError, match=message):
            check_gguf_file(path)


def test_truncated_compat_json_is_one_line(tmp_path):
    store = RecordStore(tmp_path)
    (tmp_path / "compat.json").write_text('{"task": ')
    with pytest.raises(CorruptedResultsError, match=r"compat.json' is not valid JSON"):
        store.check({"task": "demo"})
    (tmp_path / "compat.json").write_text(json.dumps([1, 2]))
    with pytest.raises(CorruptedResultsError, match="holds a JSON list, not an object"):
        store.check({"task": "demo"})


def test_a_damaged_part_is_found_before_any_model_loads(tiny_assets, tmp_path, monkeypatch):
    overrides = tiny_overrides(tiny_assets, tmp_path, *ONE_BILD_POINT, "data.limit=2")
    outcome = sweep.run(compose_sweep(overrides))
    part = next((outcome.run_dir / "parts").glob("*.parquet"))
    part.write_bytes(part.read_bytes()[:40])

    def no_models(*args, **kwargs):
        raise AssertionError("models loaded before the damaged part was found")

    monkeypatch.setattr(pipeline, "load_pair", no_models)
    with pytest.raises(CorruptedResultsError, match=f"{part.name}' cannot be read"):
        sweep.run(compose_sweep(overrides))
