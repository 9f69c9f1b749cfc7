"""Choosing the next token (greedy or seeded sampling) and deciding when a sequence is done.

Sampling draws each row from its own generator, seeded by (seed, the request's index in the
caller's list): a prompt's sample does not depend on which other prompts share its batch, on
the batch size, or on an out-of-memory back-off that re-runs it in a smaller batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import torch

from tunesmith.errors import TunesmithError
from tunesmith.generate.logprobs import MAX_TOP

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from tunesmith.generate.constrain import Grammar

FinishReason = Literal["stop", "length"]


@dataclass
class GenerationConfig:
    """How to generate. ``temperature == 0`` is greedy (deterministic, reproducible)."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int = 0
    grammar: Grammar | None = None  # constrained decoding: every answer follows it
    logprobs: int | None = None  # record each token's logprob and this many alternatives (None: off)

    def __post_init__(self) -> None:
        problems = []
        if self.max_new_tokens < 1:
            problems.append(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            problems.append(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            problems.append(f"top_p must be in (0, 1], got {self.top_p}")
        if not isinstance(self.stop, list) or not all(isinstance(s, str) and s for s in self.stop):
            problems.append(f"stop must be a list of non-empty strings, got {self.stop!r}")
        if self.logprobs is not None and not 0 <= self.logprobs <= MAX_TOP:
            problems.append(f"logprobs must be None or 0 to {MAX_TOP} alternatives, got {self.logprobs}")
        if problems:
            raise TunesmithError("generation config: " + "; ".join(problems))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def row_generator(cfg: GenerationConfig, index: int, device: torch.device) -> torch.Generator | None:
    """The generator that samples request ``index`` (None when greedy)."""
    if cfg.greedy:
        return None
    gen = torch.Generator(device=device)
    # A large odd multiplier keeps (seed, index) pairs from colliding for realistic lists.
    gen.manual_seed((cfg.seed * 1_000_003 + index) % (2**63 - 1))
    return gen


def _top_p_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Zero all but the smallest set of tokens whose probability mass reaches ``top_p``."""
    sorted_p, order = probs.sort(dim=-1, descending=True)
    # A token is kept when the mass *before* it is still below top_p (so the top token stays).
    drop = (sorted_p.cumsum(dim=-1) - sorted_p) >= top_p
    sorted_p = sorted_p.masked_fill(drop, 0.0)
    return torch.zeros_like(probs).scatter(-1, order, sorted_p)


def pick_tokens(
    logits: torch.Tensor, cfg: GenerationConfig, generators: list[torch.Generator | None]
) -> torch.Tensor:
    """Next token per row from ``logits`` [B, V]: argmax when greedy, else a seeded draw."""
    if cfg.greedy:
        return logits.argmax(dim=-1)  # first index on ties, like transformers' greedy search
    probs = torch.softmax(logits.float() / cfg.temperature, dim=-1)
    if cfg.top_p < 1:
        probs = _top_p_filter(probs, cfg.top_p)
    draws = [torch.multinomial(p, 1, generator=g) for p, g in zip(probs, generators, strict=True)]
    return torch.cat(draws)


class StopChecker:
    """Finds the end of an answer: an end-of-turn token, a stop string, or the token budget.

    Stop strings are searched in the decoded tail of the answer after every token (a string
    completed by this token starts at most ``len(stop)`` characters back), so the cost per
    token does not grow with the answer's length.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, stop_ids: list[int], stop: list[str]):
        self.tokenizer = tokenizer
        self.stop_ids = set(stop_ids)
        self.stop = stop
        # Tokens decode to >= 1 character, so this many tokens cover the longest stop string.
        self._tail = max((len(s) for s in stop), default=0) + 4

    def finished(self, generated: list[int], budget: int) -> FinishReason | None:
        if generated[-1] in self.stop_ids:
            return "stop"
        if self.stop:
            tail = self.tokenizer.decode(generated[-self._tail :], skip_special_tokens=True)
            if any(s in tail for s in self.stop):
                return "stop"
        return "length" if len(generated) >= budget else None

    def text(self, generated: list[int], reason: FinishReason) -> tuple[str, FinishReason]:
        """The answer's text (end-of-turn token dropped, cut before the first stop string)."""
        ids = generated[:-1] if generated and generated[-1] in self.stop_ids else generated
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        cuts = [i for i in (text.find(s) for s in self.stop) if i >= 0]
        if cuts:
            return text[: min(cuts)], "stop"
        return text, reason
