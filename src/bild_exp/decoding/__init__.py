"""The decoding engine: BiLD and its baselines behind one function, ``generate``.

    from bild_exp.decoding import generate
    res = generate("bild", large=large, small=small, input_ids=ids, max_new_tokens=128,
                   fallback_threshold=0.6, rollback_threshold=5.0)

Batch size 1, as in the paper.
"""

from bild_exp.decoding.api import ARCHITECTURES, architecture_of, check_pair, generate, validate
from bild_exp.decoding.early_exit import EarlyExit
from bild_exp.decoding.registry import METHODS, parse_params
from bild_exp.decoding.result import GenerationResult
from bild_exp.errors import InvalidParameterError

__all__ = [
    "ARCHITECTURES",
    "EarlyExit",
    "METHODS",
    "GenerationResult",
    "InvalidParameterError",
    "architecture_of",
    "check_pair",
    "generate",
    "parse_params",
    "validate",
]
