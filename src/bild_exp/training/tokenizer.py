"""A SentencePiece-style unigram tokenizer trained locally, shared by both models of a pair."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import SentencePieceUnigramTokenizer
from tokenizers.processors import TemplateProcessing
from transformers import PreTrainedTokenizerFast

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"


def train_unigram_tokenizer(
    texts: Iterable[str], vocab_size: int, output_dir: Path | None = None
) -> PreTrainedTokenizerFast:
    """Train a unigram tokenizer (ids: 0 pad, 1 eos, 2 unk, as T5) that appends EOS.

    Saved with ``save_pretrained`` it loads back with ``AutoTokenizer.from_pretrained``.
    """
    backend = SentencePieceUnigramTokenizer()
    backend.train_from_iterator(
        texts,
        vocab_size=vocab_size,
        special_tokens=[PAD, EOS, UNK],
        unk_token=UNK,
        show_progress=False,
    )
    eos_id = backend.token_to_id(EOS)
    backend.post_processor = TemplateProcessing(
        single=f"$A {EOS}", pair=f"$A {EOS} $B {EOS}", special_tokens=[(EOS, eos_id)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend._tokenizer, pad_token=PAD, eos_token=EOS, unk_token=UNK
    )
    if output_dir is not None:
        tokenizer.save_pretrained(output_dir)
    return tokenizer
