"""What a new user meets first: one-line errors, committed folders that any device can
rerun, bad data files refused by name, make targets that honour DRY_RUN and LIMIT."""

from __future__ import annotations

import codecs
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from bild_exp import paper, sweep
from bild_exp.data.tasks import DataError, load_examples
from bild_exp.errors import InvalidParameterError
from bild_exp.harness.config.settings import resolve_settings
from bild_exp.harness.records.store import CorruptedResultsError, RecordStore
from bild_exp.harness.run import pipeline
from tests.harness_fixtures import (
    ENV,
    compose_sweep,
    custom_task,
    fresh_clone_copy,
    run_module,
    stderr_lines,
    tiny_overrides,
    tracked_files,
)
from tests.make_commands import dry_run_listing

# 1. Committed result folders do not lock the user's device.


def test_a_fingerprint_is_committed_only_beside_its_committed_records():
    """Summaries commit no fingerprint (their records are not committed: any device reruns
    them); make humaneval commits its records, and with them the fingerprint that keeps a
    continuation on a machine with other library versions or settings from mixing in."""
    tracked = tracked_files("results")
    assert tracked
    for name in (n for n in tracked if n.endswith("compat.json")):
        folder = name.rsplit("/", 1)[0]
        assert name.startswith("results/humaneval/"), name
        assert any(n.startswith(f"{folder}/parts/part-") for n in tracked), name


def test_committed_demo_folder_reruns_on_another_device(tmp_path, monkeypatch):
    results = fresh_clone_copy("results", tmp_path).parent / "results"
    real = pipeline.device_description

    def other_device(device):
        return {**real(device), "device_name": "NVIDIA Tesla T4"}

    monkeypatch.setattr(pipeline, "device_description", other_device)
    cfg = compose_sweep(
        [
            "experiment_name=demo",
            f"results_dir={results}",
            "method=large",
            "data.limit=1",
            "data.warmup=0",
            "logger=none",
            "progress=false",
        ]
    )
    outcome = sweep.run(cfg)
    assert outcome.run_dir == results / "demo" / "demo_demo"
    assert len(outcome.records) == 1


# 2. Entry points print the project's errors as one line; a debug switch shows the traceback.


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


def test_incompatible_folder_is_one_line(tiny_assets, tmp_path):
    overrides = tiny_overrides(tiny_assets, tmp_path, "method=large", "data.limit=2")
    args = [o for o in overrides if not o.startswith("task.max_new_tokens")]
    assert run_module("bild_exp.sweep", *args, "task.max_new_tokens=12").returncode == 0
    finished = run_module("bild_exp.sweep", *args, "task.max_new_tokens=5")
    assert finished.returncode == 2
    lines = stderr_lines(finished)
    assert len(lines) == 1 and "max_new_tokens=12" in lines[0], finished.stderr


@pytest.mark.slow  # over ~25 s cold on the 2-core CI machine: `make test-slow`
def test_ctrl_c_says_what_was_saved_and_resumes(tiny_assets, tmp_path):
    overrides = tiny_overrides(
        tiny_assets,
        tmp_path,
        "data.limit=12",
        "method=bild",
        "pair.small_variants=[base]",
        "grid.fallback_threshold=[0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9]",
        "grid.rollback_threshold=[1.0,2.0,3.0,4.0]",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "bild_exp.sweep", *overrides],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    parts = tmp_path / "sweep" / "custom_tiny" / "parts"
    deadline = time.time() + 120
    while time.time() < deadline and not (parts.exists() and any(parts.glob("*.parquet"))):
        assert process.poll() is None, process.stderr.read()
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    stderr = process.communicate(timeout=60)[1]
    assert process.returncode == 130, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "interrupted" in lines[0] and "resumes" in lines[0], stderr
    saved = int(re.search(r"(\d+) records in", lines[0]).group(1))
    assert saved == len(RecordStore(tmp_path / "sweep" / "custom_tiny").read()) > 0
    finished = run_module("bild_exp.sweep", *overrides)
    assert finished.returncode == 0, finished.stderr
    records = RecordStore(tmp_path / "sweep" / "custom_tiny").read()
    assert len(records) == 36 * 12


def test_corrupted_part_is_one_line(tmp_path):
    store = RecordStore(tmp_path)
    store.append([{"config_id": "a", "example_id": "1"}])
    (store.parts_dir / "part-broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(CorruptedResultsError, match="part-broken.parquet' cannot be read"):
        store.read()


# 3-4. Bad custom files get one line naming the file; null is empty, never "None".


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


# 5. Two processes on one folder split the work; a dead owner's lock is stale.


@pytest.mark.slow  # over ~25 s cold on the 2-core CI machine: `make test-slow`
def test_two_sweeps_on_one_folder_never_compute_a_record_twice(tiny_assets, tmp_path):
    overrides = tiny_overrides(
        tiny_assets,
        tmp_path,
        "data.limit=12",
        "method=bild",
        "pair.small_variants=[base,aligned]",
        "grid.fallback_threshold=[0.2,0.4,0.6,0.8]",
        "grid.rollback_threshold=[1.0,3.0]",
    )
    command = [sys.executable, "-m", "bild_exp.sweep", *overrides]
    processes = [
        subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    for process in processes:
        assert process.wait(timeout=300) == 0, process.stderr.read().decode()[-2000:]
    stores = [RecordStore(tmp_path / "sweep" / "custom_tiny")]
    stores += [RecordStore(d) for d in (tmp_path / "_baselines").iterdir()]
    raw = pd.concat([pd.read_parquet(p) for s in stores for p in s.part_files()], ignore_index=True)
    assert len(raw) == (1 + 16) * 12  # large + 2 variants x 8 points, each example once
    assert not raw.duplicated(["config_id", "example_id"]).any()


def test_lock_of_a_killed_owner_is_taken_over(tmp_path):
    from bild_exp.harness.records.store import BusyError, file_lock

    lock = tmp_path / "locks" / "abc.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; "
            "from bild_exp.harness.records.store import file_lock\n"
            f"with file_lock(Path({str(lock)!r}), wait=False):\n"
            "    print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(BusyError, match=f"pid {holder.pid}"), file_lock(lock, wait=False):
        pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with file_lock(lock, wait=False):  # stale: its owner is dead
        assert str(os.getpid()) in lock.read_text()


# 6. Every make target that runs a sweep honours DRY_RUN=1 and LIMIT=.

SWEEP_TARGETS = [
    "demo",
    "demo-compiled",
    "demo-synopsis",
    "demo-mt",
    "humaneval",
    "bench",
    "bench-mt",
    *paper.EXPERIMENTS,
    "demo-figures",
]


@pytest.mark.parametrize("target", SWEEP_TARGETS)
def test_make_targets_honour_dry_run_and_limit(target):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    listing = dry_run_listing(target, limit=7)
    commands = [
        line for line in listing.splitlines() if re.search(r"bild_exp\.(sweep|bench)", line)
    ]
    assert commands, listing
    for command in commands:
        assert "dry_run=true" in command and "data.limit=7" in command, command
    assert "bild_exp.paper" not in listing  # nothing to compare after a dry run


def test_make_demo_dry_run_runs_nothing(tmp_path):
    finished = run_module("bild_exp.sweep", "experiment_name=demo", "data.limit=3", "dry_run=true")
    assert finished.returncode == 0 and "configurations" in finished.stdout


# 8-9. Settings refused up front with messages that say what is accepted.


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
