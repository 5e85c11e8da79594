"""Bad input fails with one line naming the parameter, the value and what is accepted,
before any model runs."""

from __future__ import annotations

import pytest
import torch

from bild_exp.decoding import InvalidParameterError, check_pair, generate
from tests.tiny_models import prompt, tiny_model, tiny_pair


@pytest.fixture
def counted_pair():
    large, small = tiny_pair("t5")
    calls = []
    handles = [m.register_forward_pre_hook(lambda *_: calls.append(1)) for m in (large, small)]
    handles += [
        m.get_encoder().register_forward_pre_hook(lambda *_: calls.append(1))
        for m in (large, small)
    ]
    yield large, small, calls
    for handle in handles:
        handle.remove()


BAD_PARAMS = [
    ("bild", {"fallback_threshold": -0.1}, "fallback_threshold=-0.1"),
    ("bild", {"fallback_threshold": 1.5}, "fallback_threshold=1.5"),
    ("bild", {"fallback_threshold": float("nan")}, "fallback_threshold=nan"),
    ("bild", {"rollback_threshold": -1}, "rollback_threshold=-1"),
    ("bild", {"max_small_steps": 0}, "max_small_steps=0"),
    ("bild", {"rollback_metric": "l2"}, "rollback_metric='l2'"),
    ("speculative", {"window": 0}, "window=0"),
    ("speculative", {"window": 2.5}, "window=2.5"),
    ("large", {"top_p": 0.0}, "top_p=0.0"),
    ("large", {"top_p": 1.5}, "top_p=1.5"),
    ("large", {"temperature": 0}, "temperature=0"),
    ("large", {"sampling": "beam"}, "sampling='beam'"),
    ("oracle", {"oracle_threshold": 2}, "oracle_threshold=2"),
    (
        "hf_assisted",
        {"num_assistant_tokens_schedule": "fast"},
        "num_assistant_tokens_schedule='fast'",
    ),
    ("bild", {"window": 3}, "window=3 is not a parameter of method 'bild'"),
    ("beam", {}, "method='beam'"),
]


@pytest.mark.parametrize(("method", "params", "expected"), BAD_PARAMS, ids=lambda x: str(x))
def test_bad_parameters(counted_pair, method, params, expected):
    large, small, calls = counted_pair
    with pytest.raises(InvalidParameterError) as error:
        generate(method, large=large, small=small, input_ids=prompt("t5", 0), **params)
    message = str(error.value)
    assert expected in message and "accepted" in message and "\n" not in message
    assert calls == []


@pytest.mark.parametrize(
    ("input_ids", "expected"),
    [
        (torch.ones(2, 5, dtype=torch.long), "batch size=2"),
        (torch.ones(1, 0, dtype=torch.long), "input_ids length=0"),
        (torch.ones(1, 5), "input_ids='Tensor'"),
        ([[1, 2, 3]], "input_ids='list'"),
        (torch.ones(5, dtype=torch.long), "input_ids.shape=(5,)"),
    ],
)
def test_bad_inputs(counted_pair, input_ids, expected):
    large, small, calls = counted_pair
    with pytest.raises(
        InvalidParameterError, match=expected.replace("(", r"\(").replace(")", r"\)")
    ):
        generate("bild", large=large, small=small, input_ids=input_ids)
    assert calls == []


def test_bad_max_new_tokens(counted_pair):
    large, small, calls = counted_pair
    with pytest.raises(InvalidParameterError, match="max_new_tokens=0"):
        generate("large", large=large, input_ids=prompt("t5", 0), max_new_tokens=0)
    assert calls == []


def test_missing_small_model():
    large, _ = tiny_pair("t5")
    with pytest.raises(InvalidParameterError, match="small=None"):
        generate("bild", large=large, small=None, input_ids=prompt("t5", 0))


def test_vocabularies_must_match():
    large = tiny_model("t5", 0, layers=1, width=32)
    small = tiny_model("t5", 0, layers=1, width=32)
    small.resize_token_embeddings(80)
    with pytest.raises(InvalidParameterError, match="vocab_size=80 differs"):
        generate("bild", large=large, small=small, input_ids=prompt("t5", 0))


def test_architectures_must_match():
    t5 = tiny_model("t5", 0, layers=1, width=32)
    gpt2 = tiny_model("gpt2", 0, layers=1, width=32)
    with pytest.raises(InvalidParameterError, match="small='gpt2' is decoder-only"):
        generate("speculative", large=t5, small=gpt2, input_ids=prompt("t5", 0))
    with pytest.raises(InvalidParameterError, match="large='gpt2' is decoder-only.*seq2seq"):
        check_pair(gpt2, gpt2, architecture="seq2seq")
    with pytest.raises(InvalidParameterError, match="large='t5' is seq2seq"):
        check_pair(t5, t5, architecture="decoder-only")


def test_small_model_may_be_absent_for_large():
    large, _ = tiny_pair("t5")
    assert generate("large", large=large, input_ids=prompt("t5", 0), max_new_tokens=3).tokens
