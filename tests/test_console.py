"""Library output goes to the run's log file, not between the progress bars (bild_exp.console)."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import pytest

# A child process, as an entry point runs: a library warning, a transformers warning
# through its own stderr handler, a torch child logger with a handler of its own, and the
# project's own message.
SCRIPT = textwrap.dedent(
    """
    import logging, sys, warnings
    from pathlib import Path
    import transformers
    from bild_exp.console import library_output_to_log

    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    child = logging.getLogger("torch._inductor.fake")
    child.addHandler(logging.StreamHandler(sys.stderr))
    with library_output_to_log(Path(sys.argv[1])):
        warnings.warn("a library deprecation", FutureWarning)
        transformers.utils.logging.get_logger("transformers.generation").warning("hf says")
        child.warning("inductor says")
        logging.getLogger("bild_exp.sweep").info("our own progress")
    warnings.warn("after the block", UserWarning)
    """
)


def run_script(tmp_path, debug: bool) -> tuple[str, str]:
    log_file = tmp_path / "run" / "job.log"
    env = {"BILD_DEBUG": "1" if debug else "0", "HF_HUB_OFFLINE": "1", "PATH": ""}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(log_file)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return done.stderr, log_file.read_text() if log_file.exists() else ""


def test_library_output_goes_to_the_log_file_and_ours_to_the_terminal(tmp_path):
    stderr, logged = run_script(tmp_path, debug=False)
    for text in ("a library deprecation", "hf says", "inductor says"):
        assert text in logged and text not in stderr
    assert "our own progress" in stderr and "our own progress" not in logged
    assert f"3 library warning(s) written to {tmp_path / 'run' / 'job.log'}" in stderr
    assert "after the block" in stderr  # restored on leaving the block


def test_bild_debug_leaves_library_output_on_the_terminal(tmp_path):
    stderr, logged = run_script(tmp_path, debug=True)
    for text in ("a library deprecation", "hf says", "inductor says", "our own progress"):
        assert text in stderr
    assert logged == ""


def test_a_block_without_library_output_writes_no_log(tmp_path, monkeypatch):
    from bild_exp.console import library_output_to_log

    monkeypatch.delenv("BILD_DEBUG", raising=False)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    log_file = tmp_path / "never" / "job.log"
    with library_output_to_log(log_file):
        logging.getLogger("bild_exp.test").warning("ours")
    assert not log_file.parent.exists()


@pytest.mark.parametrize("name", ["transformers", "py.warnings", "torch"])
def test_loggers_are_restored_after_the_block(tmp_path, monkeypatch, name):
    from bild_exp.console import library_output_to_log

    monkeypatch.delenv("BILD_DEBUG", raising=False)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    logger = logging.getLogger(name)
    before = (logger.handlers[:], logger.propagate)
    with library_output_to_log(tmp_path / "job.log"):
        assert logger.propagate is False
    assert (logger.handlers, logger.propagate) == before
