"""Stop strings end every method's output at the same token, so exactness still holds."""

from __future__ import annotations

import pytest

from bild_exp.decoding import generate
from bild_exp.decoding.hf_assisted import clip_at_stop, hf_greedy_tokens
from bild_exp.decoding.sequence import StopStrings
from tests.tiny_models import EOS, decode_with, prompt, tiny_pair

MAX_NEW = 24
EXACT_METHODS = {
    "large": {},
    "bild": {"fallback_threshold": 0.5, "rollback_threshold": 0.0, "verify_tail": True},
    "speculative": {"window": 4},
}
# Methods whose tokens may differ from vanilla large: they must still end at their own
# first stop string.
OTHER_METHODS = {
    "small": {},
    "oracle": {"oracle_threshold": 0.3},
    "bild": {"fallback_threshold": 0.3, "rollback_threshold": 5.0},
}


class LetterTokenizer:
    """Token i decodes to one letter: enough to put stop strings anywhere in a sequence."""

    def decode(self, ids, skip_special_tokens=False):
        return "".join(chr(ord("a") + int(i) % 26) for i in ids)


def decode(method, params, large, small, ids, stop) -> list[int]:
    options = {"stop_strings": [stop], "tokenizer": LetterTokenizer(), **params}
    return decode_with(method, large, small, ids, MAX_NEW, **options).tokens


def stop_letter_for(tokens: list[int], position: int) -> str:
    return LetterTokenizer().decode([tokens[position]])


@pytest.mark.parametrize("family", ["llama", "gpt2", "t5"])
@pytest.mark.parametrize("seed", [0, 1])
def test_every_method_stops_at_the_same_stop_string(family, seed):
    large, small = tiny_pair(family)
    ids = prompt(family, seed)
    free = generate("large", large=large, input_ids=ids, max_new_tokens=MAX_NEW).tokens
    assert len(free) >= 5, "the tiny model must generate enough tokens to place a stop"
    stop = stop_letter_for(free, 3)
    expected_end = next(i for i, t in enumerate(free) if stop_letter_for(free, i) == stop) + 1
    tokenizer = LetterTokenizer()
    outputs = {
        method: decode(method, params, large, small, ids, stop)
        for method, params in EXACT_METHODS.items()
    }
    assert outputs["large"] == free[:expected_end]
    for method, tokens in outputs.items():
        assert tokens == outputs["large"], method
    for method, params in OTHER_METHODS.items():
        tokens = decode(method, params, large, small, ids, stop)
        text = tokenizer.decode(tokens)
        if len(tokens) < MAX_NEW and tokens[-1] != EOS:  # ended by the stop, not EOS or length
            assert text.endswith(stop) and stop not in tokenizer.decode(tokens[:-1]), method
        else:
            assert stop not in tokenizer.decode(tokens[:-1]), method
    # HF greedy cut by the same rule (HF's own stop-string criterion needs a real tokenizer;
    # the GGUF model's test checks it with one)
    stops = StopStrings.of([stop], tokenizer)
    assert clip_at_stop(hf_greedy_tokens(large, ids, MAX_NEW), stops) == free[:expected_end]


def test_multi_character_stop_string_across_tokens():
    large, small = tiny_pair("llama")
    ids = prompt("llama", 0)
    free = generate("large", large=large, input_ids=ids, max_new_tokens=MAX_NEW).tokens
    tokenizer = LetterTokenizer()
    assert len(free) >= 5
    stop = tokenizer.decode(free[2:4])  # two letters written by two tokens
    end = tokenizer.decode(free).find(stop) + len(stop)
    for method, params in EXACT_METHODS.items():
        assert decode(method, params, large, small, ids, stop) == free[:end], method


def test_stop_strings_find_and_cut():
    stops = StopStrings.of(["cd"], LetterTokenizer())
    assert stops.end([0, 1, 2, 3, 4]) == 4  # "abcde": "cd" is complete at the 4th token
    assert stops.end([0, 1, 2]) is None
    assert stops.cut("xxcdyy") == "xx"
    assert StopStrings.of([], LetterTokenizer()) is None


def test_stop_strings_need_a_tokenizer():
    large, small = tiny_pair("llama")
    with pytest.raises(ValueError, match="tokenizer=None is invalid"):
        generate("large", large=large, input_ids=prompt("llama", 0), stop_strings=["\n"])
