"""Constrained decoding: answers that can only be one of the allowed labels, or JSON that
satisfies a schema (label fields among their allowed values), by masking the logits of every
token the grammar does not allow before the next token is picked.

The grammar engine is llguidance (the Rust library behind Guidance; also used by vLLM, SGLang
and llama.cpp). Chosen against outlines-core, xgrammar and a hand-written token trie, measured
in benchmarks/bench_constrain.py on the starter's 49k-token vocabulary: it compiles the triage
JSON schema in 0.5 ms and a 77-label choice in 1.9 ms, where outlines-core takes 142 and 428 ms
(285x, 224x): a grammar per call, or per server request with its own ``response_format``, must
compile fast. Its per-token mask (32 µs) is slower than outlines-core's (4.5 µs), but both are
small beside the ~160 µs of expanding the bitmask over the logits, and a forward pass of
milliseconds. It accepts several end-of-turn tokens and needs no other package (xgrammar pulls
triton, ~1 GB). A Python trie over the labels' tokens is the cheapest mask, but covers only a
label's usual tokenisation and cannot follow JSON.

One :class:`Grammar` is compiled per call (a schema, a label set); each request gets its own
matcher, which follows the tokens that request picks. The end-of-turn tokens are the grammar's
end: once the answer is complete, only they remain allowed.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from tunesmith.deps import LLGUIDANCE, require
from tunesmith.errors import TunesmithError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


WHITESPACE = r"\n?[ ]{0,8}"  # JSON whitespace between tokens: compact, spaced or indented (2 levels)


class GrammarError(TunesmithError):
    """A schema or label set that cannot be turned into a grammar (or cannot be satisfied)."""


@dataclass(frozen=True)
class Grammar:
    """What answers may look like: ``kind`` is ``json_schema``, ``choice`` or ``regex``;
    ``source`` the schema (as canonical JSON), the labels (a JSON list) or the pattern."""

    kind: str
    source: str

    @classmethod
    def json_schema(cls, schema: dict[str, Any]) -> Grammar:
        # key order is kept: the grammar asks for the properties in the schema's order, which
        # is the order the training answers use (sorting them would force another one)
        return cls("json_schema", json.dumps(schema))

    @classmethod
    def choice(cls, values: list[str]) -> Grammar:
        """Exactly one of ``values`` (surrounding whitespace is not allowed)."""
        values = [v for v in dict.fromkeys(values) if v]
        if not values:
            raise GrammarError("a choice grammar needs at least one non-empty value")
        return cls("choice", json.dumps(values))

    @classmethod
    def regex(cls, pattern: str) -> Grammar:
        return cls("regex", pattern)

    def spec(self) -> str:
        """The llguidance grammar text."""
        import llguidance

        if self.kind == "json_schema":
            schema = json.loads(self.source)
            # the model chooses its own spacing, within bounds (a weak model would otherwise
            # spend its token budget on blanks); key order follows the schema's properties
            return llguidance.LLMatcher.grammar_from_json_schema(schema, defaults={"whitespace_pattern": WHITESPACE})
        if self.kind == "choice":
            alternatives = " | ".join(json.dumps(v) for v in json.loads(self.source))
            return llguidance.LLMatcher.grammar_from_lark(f"start: {alternatives}")
        if self.kind == "regex":
            return llguidance.LLMatcher.grammar_from_regex(self.source)
        raise GrammarError(f"unknown grammar kind {self.kind!r}")


class Constrainer:
    """Matchers for one tokenizer (its llguidance view is built once: ~0.3 s for 49k tokens)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, stop_ids: list[int], vocab_size: int):
        require(LLGUIDANCE)
        import llguidance.hf

        if not stop_ids:
            raise GrammarError("constrained decoding needs the template's end-of-turn token to end an answer")
        self.vocab_size = vocab_size
        self.ll_tokenizer = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size, eos_token=list(stop_ids))
        self._compiled = functools.lru_cache(maxsize=32)(self._compile)

    def _compile(self, grammar: Grammar) -> str:
        import llguidance

        spec = grammar.spec()
        message = llguidance.LLMatcher.validate_grammar(spec, self.ll_tokenizer)  # "" when valid
        if message:
            raise GrammarError(f"{grammar.kind} cannot be used as a grammar: {message}")
        return spec

    def matcher(self, grammar: Grammar) -> Any:
        import llguidance

        m = llguidance.LLMatcher(self.ll_tokenizer, self._compiled(grammar))
        if m.is_error():
            raise GrammarError(f"{grammar.kind}: {m.get_error()}")
        return m

    def mask(self, logits: torch.Tensor, matchers: list[Any]) -> None:
        """Set the logits of tokens a row's matcher forbids to -inf, in place (rows whose
        matcher is None are left alone)."""
        import llguidance.numpy as lln

        rows = [i for i, m in enumerate(matchers) if m is not None]
        if not rows:
            return
        bitmask = lln.allocate_token_bitmask(len(rows), self.vocab_size)
        for j, i in enumerate(rows):
            lln.fill_next_token_bitmask(matchers[i], bitmask, j)
        # bit k of word w allows token 32 * w + k
        words = torch.from_numpy(bitmask).to(logits.device)
        bits = torch.arange(32, device=logits.device, dtype=torch.int32)
        allowed = ((words[:, :, None] >> bits) & 1).bool().flatten(1)[:, : logits.shape[-1]]
        if allowed.shape[1] < logits.shape[-1]:  # padded embedding rows are never real tokens
            allowed = torch.nn.functional.pad(allowed, (0, logits.shape[-1] - allowed.shape[1]))
        index = torch.tensor(rows, device=logits.device)
        logits[index] = logits[index].masked_fill(~allowed, float("-inf"))

    @staticmethod
    def consume(matcher: Any, token: int) -> None:
        if matcher is not None and not matcher.is_stopped() and not matcher.consume_token(token):
            raise GrammarError(f"the grammar refused token {token} it had allowed: {matcher.get_error()}")
