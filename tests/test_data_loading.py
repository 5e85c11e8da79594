"""Loading tasks from local fixtures written in the real datasets' formats, and the
errors for missing files, columns and uncached Hub ids."""

from __future__ import annotations

import dataclasses
import gzip
import json
import time
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from bild_exp.data.tasks import DataError, TaskSpec, load_examples, task_from_config
from tests.harness_fixtures import custom_task

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")

ROWS = {
    # IWSLT 2017 and WMT 2014 on the Hub: {"translation": {"de": ..., "en": ...}}
    "iwslt17": [
        {"translation": {"de": f"Hallo Welt {i}.", "en": f"Hello world {i}."}} for i in range(3)
    ],
    "wmt14": [{"translation": {"de": f"Guten Tag {i}.", "en": f"Good day {i}."}} for i in range(3)],
    "xsum": [
        {"document": f"Long article {i}.", "summary": f"Short {i}.", "id": str(100 + i)}
        for i in range(3)
    ],
    "cnndm": [
        {"article": f"News story {i}.", "highlights": f"Point {i}.", "id": f"h{i}"}
        for i in range(3)
    ],
}


def task_spec(name: str, data_file: Path) -> TaskSpec:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            config_name="sweep",
            overrides=[f"+task={name}", f"task.data_files={{validation:{data_file}}}"],
        )
    return task_from_config(cfg.task)


@pytest.mark.parametrize("name", list(ROWS))
@pytest.mark.parametrize("fmt", ["jsonl", "jsonl.gz", "parquet"])
def test_real_formats_load_from_local_files(tmp_path, name, fmt):
    path = tmp_path / f"validation.{fmt}"
    if fmt == "parquet":
        pd.DataFrame(ROWS[name]).to_parquet(path)
    else:
        lines = "".join(json.dumps(row) + "\n" for row in ROWS[name]).encode()
        path.write_bytes(gzip.compress(lines) if fmt.endswith(".gz") else lines)
    task = task_spec(name, path)
    examples = load_examples(task, limit=2)
    assert len(examples) == 2
    first = ROWS[name][0]
    if name in ("iwslt17", "wmt14"):
        assert (examples[0].source, examples[0].target) == (
            first["translation"]["de"],
            first["translation"]["en"],
        )
        assert examples[0].id == "validation-0"
    else:
        source_field, target_field = (
            ("document", "summary") if name == "xsum" else ("article", "highlights")
        )
        assert examples[0].source == first[source_field]
        assert task.encoder_text(examples[0].source) == "summarize: " + first[source_field]
        assert examples[0].target == first[target_field]
        assert examples[0].id == first["id"]


def test_csv_custom_task(tmp_path):
    path = tmp_path / "dev.csv"
    pd.DataFrame({"src": ["a b c", "d e f"], "ref": ["x", "y"]}).to_csv(path, index=False)
    task = custom_task(path)
    assert [e.source for e in load_examples(task)] == ["a b c", "d e f"]


def test_missing_file_and_columns(tmp_path):
    task = custom_task(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match="does not exist"):
        load_examples(task)
    path = tmp_path / "dev.jsonl"
    path.write_text(json.dumps({"source": "a", "target": "b"}) + "\n")
    task = custom_task(path)
    with pytest.raises(DataError, match=r"lacks column\(s\) \['src', 'ref'\]"):
        load_examples(task)


def test_uncached_hub_dataset_fails_at_once_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    task = TaskSpec(
        name="xsum",
        metric="rouge",
        source_field="document",
        target_field="summary",
        hub_id="EdinburghNLP/xsum-not-cached-anywhere",
    )
    start = time.perf_counter()
    with pytest.raises(DataError, match="not cached and the Hub is offline") as error:
        load_examples(task, limit=1)
    assert time.perf_counter() - start < 15
    assert "\n" not in str(error.value) and "task.data_files" in str(error.value)


def test_shipped_demo_corpus_loads():
    task = TaskSpec(
        name="demo",
        metric="bleu",
        source_field="de",
        target_field="en",
        id_field="id",
        data_files={"test": "package://data/demo/test.jsonl.gz"},
        split="test",
    )
    examples = load_examples(task)
    assert len(examples) == 1000 and examples[0].id == "test-00000"
    assert all(e.source and e.target for e in examples)


@pytest.mark.parametrize(
    ("value", "shown"), [(["Hallo", "Welt"], "list"), (12345, "int"), ({"de": "x"}, "dict")]
)
def test_a_source_or_reference_that_is_not_text_is_one_line(tmp_path, value, shown):
    """Never its printed form scored as text (a list became "['Hallo', 'Welt']")."""
    path = tmp_path / "dev.jsonl"
    rows = [{"src": "fine", "ref": "fine"}, {"src": value, "ref": "x"}]
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    with pytest.raises(
        DataError, match=rf"row 1 .* field 'src' is a {shown} .*accepted a string"
    ) as error:
        load_examples(custom_task(path))
    assert "\n" not in str(error.value)
    rows = [{"src": "fine", "ref": value}]
    path.write_text(json.dumps(rows[0]) + "\n")
    with pytest.raises(DataError, match=rf"row 0 .* field 'ref' is a {shown}"):
        load_examples(custom_task(path))


def test_example_ids_choose_examples_in_their_order(tmp_path):
    from bild_exp.harness.run.pipeline import chosen_examples

    path = tmp_path / "dev.jsonl"
    rows = [{"id": f"e{i}", "src": f"s{i}", "ref": f"r{i}"} for i in range(5)]
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    task = custom_task(path)
    task = dataclasses.replace(task, id_field="id")
    examples = load_examples(task)
    assert [e.source for e in chosen_examples(examples, ["e3", "e0"])] == ["s3", "s0"]
    with pytest.raises(DataError, match=r"^data.example_ids=\['e9'\] are not in the split"):
        chosen_examples(examples, ["e3", "e9"])
