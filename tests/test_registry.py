"""The method registry is the one place a decoding method is declared: a toy method added
there (and nowhere else) decodes through ``generate``, parses its parameters and plans in
a sweep; removed, it is refused again."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from omegaconf import OmegaConf, open_dict

from bild_exp.decoding import generate, registry
from bild_exp.decoding.params import AutoregressiveParams
from bild_exp.errors import InvalidParameterError
from bild_exp.harness.config.plan import plan_runs
from bild_exp.sweep import with_default_task
from tests.harness_fixtures import compose_sweep
from tests.tiny_models import prompt, tiny_pair


def greedy(large, small, input_ids, params, context):
    """A toy method: vanilla large decoding under another name."""
    return registry.SPECS["large"].decode(large, small, input_ids, params, context)


TOY = registry.MethodSpec("toy", AutoregressiveParams, greedy)


def test_a_method_added_to_the_registry_only_runs_everywhere(monkeypatch):
    with pytest.raises(InvalidParameterError, match="method='toy' is invalid"):
        registry.parse_params("toy", {})
    monkeypatch.setitem(registry.SPECS, "toy", TOY)
    large, small = tiny_pair("gpt2")
    ids = prompt("gpt2", 0)
    toy = generate("toy", large=large, input_ids=ids, max_new_tokens=8)
    vanilla = generate("large", large=large, input_ids=ids, max_new_tokens=8)
    assert toy.tokens == vanilla.tokens and toy.stats == vanilla.stats
    with pytest.raises(InvalidParameterError, match="window=3 is not a parameter of method 'toy'"):
        registry.parse_params("toy", {"window": 3})
    cfg = with_default_task(compose_sweep(["method=bild"]))
    with open_dict(cfg):
        cfg.method = OmegaConf.create({"toy": {"method": "toy", "params": {}, "sweep": []}})
    runs = plan_runs(cfg)
    assert [(run.study, run.small_variant) for run in runs] == [("large", "-"), ("toy", "-")]
    with pytest.raises(InvalidParameterError, match="compile=True is invalid for method='toy'"):
        generate("toy", large=large, input_ids=ids, max_new_tokens=8, compile=True)
    monkeypatch.delitem(registry.SPECS, "toy")
    with pytest.raises(InvalidParameterError, match="method='toy' is invalid"):
        generate("toy", large=large, input_ids=ids, max_new_tokens=8)


@dataclass(frozen=True)
class KnobParams(AutoregressiveParams):
    knob: int = 3


def test_a_new_parameter_class_gives_its_columns_and_types(monkeypatch):
    monkeypatch.setitem(registry.SPECS, "toy", registry.MethodSpec("toy", KnobParams, greedy))
    types = registry.parameter_types()
    assert types["knob"] is int and types["window"] is int and types["top_p"] is float
    assert types["assistant_confidence_threshold"] is float  # float | None read as float
    assert list(types)[-4:] == ["sampling", "top_p", "temperature", "seed"]
    assert registry.parse_params("toy", {"knob": 5}).knob == 5
