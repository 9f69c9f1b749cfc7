"""The engine's per-token logprobs (:class:`~tunesmith.generate.logprobs.TokenLogprob`) in
OpenAI's two wire shapes:

- chat: ``choices[i].logprobs.content = [{token, logprob, bytes, top_logprobs: [...]}]``;
- legacy completions: ``choices[i].logprobs = {tokens, token_logprobs, top_logprobs, text_offset}``.

A token's text is its bytes decoded as UTF-8 (a token holding half a character shows U+FFFD;
``bytes`` has the exact bytes, as in OpenAI's API). For byte-level BPE tokenizers (GPT-2,
Llama 3, Qwen, SmolLM) the bytes come from the token's vocabulary entry, so they are exact even
for such half characters; for other tokenizers from decoding the token alone.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cache
from typing import TYPE_CHECKING

from tunesmith.serve.protocol import CompletionLogprobs, TokenLogprob, TopLogprob

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from tunesmith.generate.logprobs import TokenLogprob as Record


@cache
def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, reversed: the printable character standing for each byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def _is_byte_level(tokenizer: PreTrainedTokenizerBase) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return False
    decoder = json.loads(backend.to_str()).get("decoder") or {}
    kinds = [decoder.get("type"), *(d.get("type") for d in decoder.get("decoders") or [])]
    return "ByteLevel" in kinds


class TokenText:
    """Token id -> (text, bytes) for one tokenizer, cached (a scored prompt repeats tokens)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase):
        self.tokenizer = tokenizer
        self.byte_level = _is_byte_level(tokenizer)
        self.special = set(tokenizer.all_special_ids)
        self._cache: dict[int, tuple[str, bytes]] = {}

    def __call__(self, token: int) -> tuple[str, bytes]:
        hit = self._cache.get(token)
        if hit is None:
            hit = self._cache[token] = self._lookup(token)
        return hit

    def _lookup(self, token: int) -> tuple[str, bytes]:
        piece = self.tokenizer.convert_ids_to_tokens(token)
        table = _byte_decoder()
        if self.byte_level and token not in self.special and piece and all(c in table for c in piece):
            raw = bytes(table[c] for c in piece)
        else:
            raw = self.tokenizer.decode([token]).encode()
        return raw.decode("utf-8", errors="replace"), raw


def chat_content(records: Sequence[Record], text: TokenText) -> list[TokenLogprob]:
    """Chat's ``logprobs.content``: one entry per answer token, with its alternatives."""
    out = []
    for r in records:
        token, raw = text(r.token)
        top = [TopLogprob(token=text(t)[0], logprob=lp, bytes=list(text(t)[1])) for t, lp in r.top]
        out.append(TokenLogprob(token=token, logprob=r.logprob, bytes=list(raw), top_logprobs=top))
    return out


def completion_logprobs(records: Sequence[Record | None], token_ids: Sequence[int], text: TokenText,
                        *, offset: int = 0) -> CompletionLogprobs:
    """Completions' ``logprobs`` for ``token_ids`` (``records[i]`` None: no logprob, e.g. the
    first prompt token). ``top_logprobs[i]``: the ``k`` most likely tokens, plus token ``i``. ``text_offset`` is each token's start in the choice's text, counting
    token texts from ``offset``, as vLLM does (exact for byte-level tokenizers)."""
    tokens, logprobs, tops, offsets = [], [], [], []
    for token_id, r in zip(token_ids, records, strict=True):
        token = text(token_id)[0]
        tokens.append(token)
        offsets.append(offset)
        offset += len(token)
        logprobs.append(None if r is None else r.logprob)
        top: dict[str, float] | None = None
        if r is not None:
            top = {}
            for t, lp in r.top:  # most likely first: a text two tokens share keeps the better one
                top.setdefault(text(t)[0], lp)
            top.setdefault(token, r.logprob)  # the token itself, as vLLM and OpenAI add it
        tops.append(top)
    return CompletionLogprobs(tokens=tokens, token_logprobs=logprobs, top_logprobs=tops, text_offset=offsets)
