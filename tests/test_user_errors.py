"""Errors a new user meets, each one line before anything loads: entry points and their
debug switch, bad custom data files named, null texts never "None", settings refused with
what is accepted."""

from __future__ import annotations

import codecs
import re
import shutil

import pytest

from bild_exp import sweep
from bild_exp.data.tasks import DataError, load_examples
from bild_exp.errors import InvalidParameterError
from bild_exp.harness.config.settings import resolve_settings
from bild_exp.harness.run import pipeline
from tests.harness_fixtures import (
    ENV,
    compose_sweep,
    custom_task,
    run_module,
    stderr_lines,
)

# Entry points print the project's errors as one line; a debug switch shows the traceback.


@pytest.mark.parametrize(
    ("module", "args", "needle"),
    [
        ("bild_exp.sweep", ["data.limit=0"], "data.limit=0 is invalid"),
        ("bild_exp.bench", ["data.limit=-5"], "data.limit=-5 is invalid"),
        ("bild_exp.train", ["mode=bogus"], "mode='bogus' is invalid"),
        ("bild_exp.paper", ["table1", "--results-dir", "/nonexistent"], "run `make table1`"),
    ],
)
def test_entry_points_print_one_line_errors(module, args, needle):
    finished = run_module(module, *args)
    assert finished.returncode == 2
    lines = stderr_lines(finished)
    assert len(lines) == 1, finished.stderr
    assert lines[0].startswith(f"{module}: error: ") and needle in lines[0]


def test_debug_switch_shows_the_traceback():
    finished = run_module("bild_exp.sweep", "data.limit=0", env={**ENV, "BILD_DEBUG": "1"})
    assert finished.returncode != 0
    assert "Traceback" in finished.stderr and "data.limit=0 is invalid" in finished.stderr
    paper = run_module("bild_exp.paper", "table1", "--results-dir", "/nonexistent", "--debug")
    assert "Traceback" in paper.stderr


# Bad custom files get one line naming the file; null is empty, never "None".


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.jsonl", b"", "is empty"),
        ("blank.jsonl", b"\n\n", "is empty"),
        ("header.csv", b"src,ref\n", "has no rows"),
        (
            "latin1.jsonl",
            b'{"src": "a", "ref": "b"}\n{"src": "gr\xfc\xdf", "ref": "c"}\n',
            "line 2",
        ),
        ("broken.jsonl", b'{"src": "a", "ref": "b"}\n{"src": "a", "ref": \n', "line 2"),
        ("broken.json", b'[{"src": "a", "ref": "b"},\n {"src": ]', "line 2"),
        ("scalar.jsonl", b'{"src": "a", "ref": "b"}\n[1, 2]\n', "line 2 is a JSON list"),
    ],
)
def test_bad_custom_files_get_one_line(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError) as error:
        load_examples(custom_task(path), "validation")
    text = str(error.value)
    assert "\n" not in text and name in text and message in text, text


def test_null_sources_and_references_are_empty_and_skipped(tmp_path):
    path = tmp_path / "nulls.jsonl"
    rows = [
        '{"src": "das haus", "ref": "the house"}',
        '{"src": null, "ref": "x"}',
        '{"ref": "no source"}',
        '{"src": "der hund", "ref": null}',
    ]
    path.write_text("\n".join(rows) + "\n")
    examples = load_examples(custom_task(path), "validation")
    assert all("None" not in e.source and "None" not in e.target for e in examples)
    assert [e.source for e in examples] == ["das haus", "", "", "der hund"]
    cfg = compose_sweep(["+task=custom", "task.source_field=src", "task.target_field=ref"])
    kept, skipped = pipeline.select_examples(
        custom_task(path), resolve_settings(cfg), cfg.scoring.empty_sources
    )
    assert [e.source for e in kept] == ["das haus"]
    assert skipped == {"n_empty_sources_skipped": 2, "n_empty_references_skipped": 1}
    strict = compose_sweep(["+task=custom", "scoring.empty_sources=error"])
    with pytest.raises(DataError, match="3 examples .* empty or null"):
        pipeline.select_examples(
            custom_task(path), resolve_settings(strict), strict.scoring.empty_sources
        )


# Settings refused up front with messages that say what is accepted.


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.limit=0", "data.limit=0 is invalid: accepted null (the whole split) or an integer"),
        ("data.limit=-5", "data.limit=-5 is invalid"),
        ("logger.mode=ofline", "logger.mode='ofline' is invalid: accepted online, offline"),
        ("data.warmup=-1", "data.warmup=-1 is invalid"),
        ("data.warmup_max_new_tokens=0", "data.warmup_max_new_tokens=0 is invalid: accepted null"),
        ("task.max_new_tokens=0", "task.max_new_tokens=0 is invalid: accepted an integer >= 1"),
        ("task.max_new_tokens=abc", "task.max_new_tokens='abc' is invalid"),
        ("task.max_source_length=-1", "task.max_source_length=-1 is invalid"),
        ("max_new_tokens=-3", "max_new_tokens=-3 is invalid: accepted null (the task's) or"),
        ("data.example_ids=[]", "data.example_ids=[] is invalid: accepted null"),
        ("data.example_ids=[1,2]", "data.example_ids=[1, 2] is invalid"),
        ("engine.cpu_kernels=fast", "engine.cpu_kernels='fast' is invalid: accepted 'auto'"),
        ("stats.bootstrap=0", "stats.bootstrap=0 is invalid: accepted an integer >= 1"),
        ("scoring.truncate_references=0", "scoring.truncate_references=0 is invalid: accepted"),
        ("stats.seed=-1", "stats.seed=-1 is invalid: accepted an integer >= 0"),
        ("stats.confidence=95", "stats.confidence=95 is invalid: accepted a number strictly"),
    ],
)
def test_settings_refused_before_anything_loads(override, message, monkeypatch):
    def no_loading(*args, **kwargs):
        raise AssertionError("loaded data or models before checking the settings")

    monkeypatch.setattr(pipeline, "load_examples", no_loading)
    monkeypatch.setattr(pipeline, "load_pair", no_loading)
    task = ["+task=demo"] if override.startswith("task.") else []
    with pytest.raises(InvalidParameterError, match=re.escape(message)):
        sweep.run(compose_sweep([*task, override, "logger=wandb"]))


def test_unset_custom_file_says_which_override(tmp_path):
    cfg = compose_sweep(["+task=custom", "logger=none", f"results_dir={tmp_path}"])
    with pytest.raises(DataError, match=r"task.data_files.validation is not set: add task"):
        sweep.run(cfg)


def test_task_keys_without_a_task_override_the_demo_task(capsys):
    cfg = compose_sweep(["+task.max_new_tokens=10", "dry_run=true"])
    sweep.run(cfg)
    assert cfg.task.name == "demo" and cfg.task.metric == "bleu"
    assert cfg.task.max_new_tokens == 10
    assert "task=demo" in capsys.readouterr().out


def test_pair_with_a_different_tokenizer_of_equal_size_is_refused(tiny_assets, tmp_path):
    from bild_exp.models.pair import load_pair
    from bild_exp.training.tokenizer import train_unigram_tokenizer
    from tests.harness_fixtures import SENTENCES

    pair, _ = tiny_assets
    other = tmp_path / "small"
    shutil.copytree(pair["small"], other)
    for name in other.iterdir():
        if "token" in name.name or name.suffix == ".model":
            name.unlink()
    # rot13 maps letters one to one: a vocabulary of the same size with other pieces
    texts = [codecs.encode(text, "rot13") for pair in SENTENCES for text in pair] * 5
    tokenizer = train_unigram_tokenizer(texts, vocab_size=60, output_dir=tmp_path / "tok")
    tokenizer.save_pretrained(other)
    cfg = compose_sweep(
        [f"pair.{k}={v}" for k, v in pair.items()] + [f"pair.small={other}", "pair.device=cpu"]
    )
    assert len(tokenizer) == len(load_pair(cfg.pair, ["aligned"]).tokenizer)
    with pytest.raises(InvalidParameterError, match=r"pair.small=.* vocabulary differs"):
        load_pair(cfg.pair, ["base"])
