"""Big Little Decoder (Kim et al. 2023, Algorithm 1).

The small model decodes until its confidence drops below alpha_FB (or it has run
``max_small_steps`` tokens); the large model then runs once over every token it
has not seen, rolls back the first small token it disagrees with by more than
alpha_RB, and control returns to the small model.

With ``draft_source="ngram+small"`` each step first looks for an n-gram proposal
(:mod:`bild_exp.decoding.ngram`): its tokens join the unverified ones and go to the large
model at once, whose rollback rule judges them as it judges the small model's; only where
there is none does the small model decode a token under the fallback policy.

:class:`BildDecoder` is Algorithm 1 as the paper writes it; :class:`OfficialBildDecoder`
is the authors' released loop (``schedule="official"``), which differs in three places,
each an override below. Where this module departs from the paper's text, a comment
starting "Departs from the paper" says so at the line that does it.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from bild_exp.decoding.context import DecodeContext
from bild_exp.decoding.early_exit import EarlyExit
from bild_exp.decoding.ngram import ngram_proposal, until_end
from bild_exp.decoding.params import BildParams
from bild_exp.decoding.policies import first_rollback_index, rollback_distances, should_fall_back
from bild_exp.decoding.result import GenerationResult, PolicyCounters, build_result
from bild_exp.decoding.runner import DecoderRunner
from bild_exp.decoding.sampling import Sampler
from bild_exp.decoding.sequence import TokenSequence


class BildDecoder:
    """State of one BiLD generation: the sequence, both runners, unverified small tokens."""

    def __init__(
        self,
        large: DecoderRunner,
        small: DecoderRunner,
        sequence: TokenSequence,
        params: BildParams,
        sampler: Sampler,
        lookup_prefix: list[int] | None = None,
    ):
        self.large, self.small, self.sequence = large, small, sequence
        self.params, self.sampler = params, sampler
        self.counters = PolicyCounters()
        self.n_unverified = 0  # small tokens the large model has not checked yet
        # Departs from the paper: its rollback distance is the cross-entropy of the large
        # model's distribution against y_S alone; the KL and total-variation metrics
        # (rollback_metric) compare whole distributions, so p_S of every unverified token is
        # kept here until the large pass that judges it.
        self.keep_small_log_probs = params.rollback_metric != "cross_entropy"
        self.unverified_small_log_probs: list[torch.Tensor] = []
        # what n-gram proposals search before the output: the prompt (a decoder-only
        # model's prefix; an encoder-decoder's source tokens)
        self.lookup_prefix = sequence.prompt_ids() if lookup_prefix is None else lookup_prefix
        self.n_ngram_pending = 0  # the last unverified tokens that an n-gram proposal drafted

    def run(self) -> GenerationResult:
        while not self.sequence.done:
            self.small_step()
        return build_result(self.sequence, self.large, self.small, self.counters)

    def small_step(self) -> None:
        # 0. An n-gram proposal, where there is one, drafts instead and is verified at once.
        if self.params.uses_ngrams and self.ngram_step():
            return
        # 1. The small model proposes y_S; its confidence is max_y p_S(y).
        logits = self.small.forward(self.sequence.view())[-1]
        log_probs = self.sampler.tempered_log_probs(logits)
        token = self.sampler.choose(logits)
        fall_back = should_fall_back(log_probs.max().exp(), self.params.fallback_threshold)
        token_id, fell_back = torch.stack([token, fall_back.long()]).tolist()
        # 2. Fallback policy: discard y_S and let the large model take over.
        if fell_back:
            self.counters.n_fallbacks += 1
            self.large_pass(tail=False)
            return
        self.sequence.append(token_id, from_large=False)
        self.n_unverified += 1
        if self.keep_small_log_probs:
            self.unverified_small_log_probs.append(log_probs)
        # 3. The sequence ended with small tokens the large model never saw.
        if self.sequence.done:
            if self.params.verify_tail:
                self.counters.n_tail_verifications += 1
                self.large_pass(tail=True)
        elif self.n_unverified >= self.params.max_small_steps:
            self.counters.n_forced_verifications += 1
            self.large_pass(tail=False)

    def ngram_step(self) -> bool:
        """Append the n-gram proposal for the current sequence (if any: False otherwise) as
        unverified tokens and run the large pass over them and the small tokens before."""
        sequence, params = self.sequence, self.params
        room = min(
            params.ngram_tokens,
            params.max_small_steps - self.n_unverified,  # max_small_steps counts both sources
            sequence.max_new_tokens - sequence.n_generated,
        )
        proposal = ngram_proposal(self.lookup_prefix + sequence.tokens, params.ngram_size, room)
        proposal = until_end(proposal, sequence.eos_token_ids)
        if not proposal:
            return False
        for token_id in proposal:
            sequence.append(token_id, from_large=False, from_ngram=True)
        self.n_unverified += len(proposal)
        self.n_ngram_pending = len(proposal)
        # an end token or stop string inside the proposal: verify as the tail (nothing after)
        self.large_pass(tail=sequence.done)
        sequence.clip_after_stop()
        return True

    def large_pass(self, tail: bool) -> None:
        """One non-autoregressive large pass, the rollback policy, and the cache crop.

        With ``tail`` the sequence has already ended: nothing is appended unless a
        rollback replaces a small token.
        """
        sequence, n_unverified = self.sequence, self.n_unverified
        # 1. Forward over all tokens the large model has not seen; keep the rows that
        #    predict the unverified small tokens and the position after them.
        logits = self.large.forward(sequence.view())[-(n_unverified + 1) :]
        small_tokens = sequence.view()[0, sequence.length - n_unverified :]
        # 2. Rollback policy: first small token too far from the large model.
        rollback_at, token = self.rollback_decision(logits, small_tokens)
        rollback_at, token_id = torch.stack([rollback_at, token]).tolist()
        # 3. Keep the accepted small tokens and the large model's token.
        self.counters.verified(n_unverified, rollback_at, self.n_ngram_pending)
        n_rejected = n_unverified - rollback_at
        first_changed = sequence.length
        if n_rejected > 0:
            self.counters.n_rollbacks += 1
            self.counters.n_rolled_back_tokens += n_rejected
            sequence.truncate(sequence.n_generated - n_rejected)
        if n_rejected > 0 or not tail:
            first_changed = sequence.length
            sequence.append(token_id, from_large=True)
        # 4. Crop both caches to the tokens that are still valid.
        self.large.truncate(first_changed)
        self.small.truncate(first_changed)
        self.n_unverified = self.n_ngram_pending = 0
        self.unverified_small_log_probs.clear()
        self.after_large_pass(n_rejected)

    def after_large_pass(self, n_rejected: int) -> None:
        """Algorithm 1 hands control back to the small model after every large pass."""

    def rollback_decision(
        self, logits: torch.Tensor, small_tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Index m of the first rolled-back small token (or their count) and the large token at m.

        Args:
            logits: ``(n_unverified + 1, vocab)`` large-model logits.
            small_tokens: ``(n_unverified,)`` y_S.
        """
        large_log_probs = self.sampler.tempered_log_probs(logits)
        small_log_probs = None
        if self.keep_small_log_probs:
            # No unverified tokens (a fallback right after a large pass): an empty stack.
            small_log_probs = large_log_probs[:0]
            if self.unverified_small_log_probs:
                small_log_probs = torch.stack(self.unverified_small_log_probs)
        distances = rollback_distances(
            large_log_probs[:-1], small_tokens, small_log_probs, self.params.rollback_metric
        )
        return self.rollback_at(logits, small_tokens, distances)

    def rollback_at(
        self, logits: torch.Tensor, small_tokens: torch.Tensor, distances: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Algorithm 1's rule: the first small token whose distance exceeds alpha_RB."""
        if self.sampler.greedy:
            large_tokens = logits.argmax(-1)
            # Departs from the paper: under greedy decoding a small token equal to the large
            # model's argmax is never rolled back, however far the distributions are. The
            # text's rule would roll back there, have the large model write the same token
            # and discard every small token after it; here those are judged in turn.
            agreement = large_tokens[:-1] == small_tokens
            rollback_at = first_rollback_index(distances, self.params.rollback_threshold, agreement)
            return rollback_at, large_tokens[rollback_at]
        rollback_at = first_rollback_index(distances, self.params.rollback_threshold)
        return rollback_at, self.sampler.choose(logits[rollback_at])


class OfficialBildDecoder(BildDecoder):
    """The authors' released loop (``schedule="official"``, kssteven418/BigLittleDecoder):
    it starts with a large-model token, lets the large model write one more token after a
    rollback, and judges only the first position beyond alpha_RB."""

    def run(self) -> GenerationResult:
        if not self.sequence.done:  # the official loop starts with the large model
            self.large_step()
        return super().run()

    def after_large_pass(self, n_rejected: int) -> None:
        """After a rollback the large model writes one more token before the small resumes."""
        if n_rejected > 0 and not self.sequence.done:
            self.large_step()

    def large_step(self) -> None:
        """One autoregressive large-model token, no small tokens pending."""
        logits = self.large.forward(self.sequence.view())[-1]
        self.sequence.append(int(self.sampler.choose(logits)), from_large=True)

    def rollback_at(
        self, logits: torch.Tensor, small_tokens: torch.Tensor, distances: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Only the first position beyond alpha_RB may roll back, and it does not when the
        large model's token there equals the small one's (then every small token is kept and
        the large model's token after them is appended)."""
        n_unverified = small_tokens.shape[0]
        first = first_rollback_index(distances, self.params.rollback_threshold)
        token = self.sampler.choose(logits[first])
        if first < n_unverified and token == small_tokens[first]:
            return torch.tensor(n_unverified), self.sampler.choose(logits[-1])
        return first, token


def decode_bild(
    large: PreTrainedModel,
    small: PreTrainedModel | EarlyExit,
    input_ids: torch.Tensor,
    params: BildParams,
    context: DecodeContext,
) -> GenerationResult:
    """Run BiLD on one example (batch size 1)."""
    sequence = context.start(large, input_ids)
    large_runner, small_runner = context.runners(large, small, input_ids, sequence)
    decoder_class = OfficialBildDecoder if params.schedule == "official" else BildDecoder
    decoder = decoder_class(
        large=large_runner,
        small=small_runner,
        sequence=sequence,
        params=params,
        sampler=context.sampler,
        lookup_prefix=context.lookup_prefix(large, input_ids, sequence),
    )
    return decoder.run()
