"""The suite fails a test whose bild_exp code triggers a library deprecation (tests/warning_guard.py).

Each case runs an inner pytest session with the guard loaded, so the outer test can check
that the inner test failed (or passed) and what it said.
"""

from __future__ import annotations

import pytest

# The inner test: a tiny Llama whose forward deprecates a keyword the engine passes today,
# as transformers 5.24 deprecated ``past_key_values``; the engine decodes with it.
ENGINE_PASSES_A_DEPRECATED_KEYWORD = """
import functools, warnings
import pytest
from bild_exp.decoding import generate
from tests.tiny_models import prompt, tiny_model

def deprecating(forward, keyword):
    @functools.wraps(forward)
    def wrapped(*args, **kwargs):
        if keyword in kwargs:
            warnings.warn(f"{keyword} is deprecated", FutureWarning, stacklevel=2)
        return forward(*args, **kwargs)
    return wrapped

def test_decode(monkeypatch):
    model = tiny_model("llama", seed=0, layers=1, width=32)
    monkeypatch.setattr(model, "forward", deprecating(model.forward, KEYWORD))
    generate("large", large=model, input_ids=prompt("llama", 0), max_new_tokens=3)
"""


def run_inner(pytester: pytest.Pytester, source: str) -> pytest.RunResult:
    pytester.makepyfile(test_inner=source)
    return pytester.runpytest_inprocess("-p", "tests.warning_guard", "-q")


def test_a_deprecation_triggered_by_the_engine_fails_the_test(pytester):
    result = run_inner(pytester, ENGINE_PASSES_A_DEPRECATED_KEYWORD.replace("KEYWORD", '"cache"'))
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*bild_exp triggered * deprecation warning(s) during the test:*",
            "*FutureWarning: cache is deprecated (triggered from bild_exp.decoding.runner:*",
        ]
    )


def test_a_keyword_the_engine_does_not_pass_is_no_offence(pytester):
    result = run_inner(
        pytester, ENGINE_PASSES_A_DEPRECATED_KEYWORD.replace("KEYWORD", '"past_key_values"')
    )
    result.assert_outcomes(passed=1)


def test_deprecations_outside_bild_exp_frames_are_left_to_pytest(pytester):
    source = "import warnings\ndef test_own():\n    warnings.warn('old', DeprecationWarning)\n"
    result = run_inner(pytester, source)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*DeprecationWarning: old*"])  # pytest reports it as usual
