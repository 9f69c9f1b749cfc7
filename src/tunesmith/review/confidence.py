"""An answer's confidence from the model's own token log-probabilities, the same way in eval,
the server and batch prediction.

- **Label fields** (JSON fields with allowed values, or a label answer): for each field, every
  allowed value is scored as a continuation of the *same* context: the prompt plus the answer's
  text up to where the field's value starts (for a JSON answer, the keys and values the model
  wrote before it). A JSON value is scored with what the model wrote after it up to the next
  key's opening quote or the closing brace (``"bug",`` must not win probability from
  ``"bug_report",``, and each is tokenised as the model writes it), a label with the end-of-turn token (as
  :meth:`Engine.rank` does). The field's confidence is the probability of the value given,
  normalised over the allowed values: ``softmax(loglik / T)``, ``T`` the field's fitted
  temperature (:mod:`tunesmith.review.calibration`). The answer's confidence is its lowest
  field's. A field that is missing, or whose value is not allowed, has confidence 0.
- **Free text**: the geometric mean of the answer's token probabilities, ``exp(mean logprob)``,
  from the decoding logprobs when the engine recorded them, else from one scoring pass.

Cost: all allowed values of all fields of an answer go through the model in one packed
forward pass over a few tokens per allowed value, on top of the keys/values of the prompt and
the answer's beginning. Those come from generation itself when the engine kept the answer's
row (:func:`generate_scored`, the server's reviewer: no prefill at all), else from one prefill
past the system prompt's memoised keys/values.

Token boundaries: each alternative is the tokenisation of ``answer prefix + value``; the scored
tokens start where the alternatives' token ids first differ (BPE may merge the opening quote
with the value), so every value is compared from the same position and context.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tunesmith.config import OutputSpec
from tunesmith.review.answers import (
    LABEL_FIELD,
    TEXT_FIELD,
    allowed,
    answer_fields,
    answer_kind,
    field_names,
)
from tunesmith.review.calibration import field_confidences

if TYPE_CHECKING:
    from tunesmith.generate.engine import Engine, Generation
    from tunesmith.generate.logprobs import TokenLogprob
    from tunesmith.generate.sampling import GenerationConfig

_SPACE = " \t\n\r"


@dataclass
class AnswerScores:
    """What the model thinks of one answer, before calibration.

    ``values``: the answer's fields (None: a JSON answer with no JSON object). ``logliks``: per
    label field, each allowed value's log-likelihood in the answer's context (a field the
    answer lacks has none). ``text_logprob``: free text, the mean token log-probability.
    """

    kind: str  # json | label | text
    values: dict[str, str | None] | None
    logliks: dict[str, dict[str, float]] = field(default_factory=dict)
    text_logprob: float | None = None

    def confidences(self, temperatures: Mapping[str, float] | None = None
                    ) -> tuple[dict[str, float | None], float | None]:
        """Per field and overall (the lowest field's), calibrated with ``temperatures``."""
        if self.kind == "text":
            c = None if self.text_logprob is None else math.exp(self.text_logprob)
            return {TEXT_FIELD: c}, c
        if self.values is None:
            return {}, None
        return field_confidences(self.logliks, self.values, temperatures)


@dataclass
class ScoringCost:
    """Where the time of :func:`score_answers` went (for the overhead figures)."""

    answers: int = 0
    seconds: float = 0.0
    rows: int = 0  # scored alternatives

    @property
    def ms_per_answer(self) -> float:
        return 1000 * self.seconds / self.answers if self.answers else 0.0


# ----------------------------------------------------------------------------- JSON positions
def value_spans(text: str) -> dict[str, tuple[int, int]] | None:
    """Character span of every value of the first JSON object in ``text`` (dotted names for
    nested objects), the object :func:`~tunesmith.evaluate.metrics.extract_json` would find;
    None when there is none."""
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start != -1:
        spans: dict[str, tuple[int, int]] = {}
        try:
            _walk(text, start, "", spans, decoder)
            return spans
        except (ValueError, IndexError, StopIteration):
            start = text.find("{", start + 1)
    return None


def _skip(text: str, i: int) -> int:
    while i < len(text) and text[i] in _SPACE:
        i += 1
    return i


def _walk(text: str, i: int, path: str, spans: dict[str, tuple[int, int]], decoder: json.JSONDecoder) -> int:
    """Parse the object at ``text[i] == '{'``, recording value spans; returns its end."""
    i = _skip(text, i + 1)
    if text[i] == "}":
        return i + 1
    while True:
        i = _skip(text, i)
        key, i = decoder.scan_once(text, i)
        if not isinstance(key, str):
            raise ValueError("object key is not a string")
        i = _skip(text, i)
        if text[i] != ":":
            raise ValueError("':' expected")
        start = _skip(text, i + 1)
        name = path + key
        end = _walk(text, start, name + ".", spans, decoder) if text[start] == "{" else decoder.scan_once(text, start)[1]
        spans[name] = (start, end)
        i = _skip(text, end)
        if text[i] == ",":
            i += 1
            continue
        if text[i] == "}":
            return i + 1
        raise ValueError("',' or '}' expected")


_DELIMITER = re.compile(r'\s*(?:,\s*"?|[}\]])')


def _delimiter(answer: str, end: int) -> str:
    """What the model wrote right after a value, up to the next key's opening quote (``,"``) or
    the closing brace: scored with every alternative so that each is tokenised the way the
    model writes it. BPE merges a closing quote with what follows (SmolLM2 has one token for
    ``","`` and one for ``"}``): a value scored with a bare closing quote ends on a token the
    model never writes, whose log-probability (about -17 nats, the same for every value)
    drowns the difference between the values."""
    m = _DELIMITER.match(answer, end)
    return m.group(0) if m else ""


# ----------------------------------------------------------------------------- the alternatives
@dataclass(frozen=True)
class Alternatives:
    """One field of one answer: each allowed value's token ids (context included) and the
    position from which they are scored."""

    field: str
    values: list[str]
    ids: list[list[int]]
    start: int


def _common(seqs: Sequence[Sequence[int]]) -> int:
    n = min(len(s) for s in seqs)
    for i in range(n):
        t = seqs[0][i]
        if any(s[i] != t for s in seqs[1:]):
            return i
    return n


def _alternatives(name: str, values: list[str], ids: list[list[int]]) -> Alternatives:
    start = min(_common(ids), min(len(s) for s in ids) - 1)  # every value keeps at least one token
    return Alternatives(name, values, ids, max(start, 1))


def alternatives(engine: Engine, spec: OutputSpec, prompt_ids: list[int], answer: str) -> list[Alternatives]:
    """The continuations to score for one answer's label fields (none for free text, a JSON
    answer without an object, or a field the answer lacks)."""
    kind = answer_kind(spec)
    tok = engine.tokenizer

    def encode(text: str) -> list[int]:
        return list(prompt_ids) + tok(text, add_special_tokens=False)["input_ids"]

    if kind == "label":
        labels = allowed(spec, LABEL_FIELD)
        if not labels:
            return []
        eot = engine.stop_ids[:1]
        return [_alternatives(LABEL_FIELD, labels, [encode(v) + eot for v in labels])]
    if kind != "json":
        return []
    spans = value_spans(answer)
    if spans is None:
        return []
    out = []
    for name in field_names(spec):
        values = allowed(spec, name)
        if name not in spans or not values:
            continue
        start, end = spans[name]
        raw, head, after = answer[start:end], answer[:start], _delimiter(answer, end)
        if raw.startswith('"'):
            ascii_only = "\\u" in raw
            rendered = [json.dumps(v, ensure_ascii=ascii_only) + after for v in values]
        else:  # a non-string value (true, 3): its spelling
            rendered = [v + after for v in values]
        out.append(_alternatives(name, values, [encode(head + r) for r in rendered]))
    return out


# ----------------------------------------------------------------------------- scoring
def score_answers(engine: Engine, spec: OutputSpec, prompts: Sequence[list[int]], answers: Sequence[str], *,
                  adapter: str | None = None, logprobs: Sequence[Sequence[TokenLogprob] | None] | None = None,
                  cost: ScoringCost | None = None) -> list[AnswerScores]:
    """Each answer's :class:`AnswerScores` (``prompts[i]``: the token ids ``answers[i]`` was
    generated from; ``logprobs[i]``: its decoding logprobs, if recorded). Answers to the same
    prompt (``n > 1``) share one scoring call.

    A field whose alternatives would run past the model's context is not scored (confidence
    0); free text is scored up to the context.
    """
    from tunesmith.generate.scoring import ScoreRequest

    t0 = time.perf_counter()
    kind = answer_kind(spec)
    out = [AnswerScores(kind, answer_fields(spec, a)) for a in answers]
    labelled = [f for f in field_names(spec) if allowed(spec, f)] if kind != "text" else []
    for s in out:  # a field the answer lacks keeps no log-likelihoods: confidence 0
        if s.values is not None:
            s.logliks = {f: {} for f in labelled}
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(tuple(p), []).append(i)
    rows = 0
    for key, members in groups.items():
        prompt = list(key)
        requests: list[ScoreRequest] = []
        where: list[tuple[int, str | None, str | None]] = []  # (answer, field, value); field None: free text
        for i in members:
            if kind == "text":
                lps = logprobs[i] if logprobs is not None else None
                if lps:
                    stops = set(engine.stop_ids)
                    content = [r.logprob for r in lps if r.token not in stops] or [r.logprob for r in lps]
                    out[i].text_logprob = sum(content) / len(content)
                    continue
                ids = prompt + engine.tokenizer(answers[i], add_special_tokens=False)["input_ids"]
                if engine.context is not None:
                    ids = ids[: engine.context]
                if len(ids) > len(prompt):
                    requests.append(ScoreRequest(ids, [(len(prompt), len(ids))]))
                    where.append((i, None, None))
                continue
            alts = [alt for alt in alternatives(engine, spec, prompt, answers[i])  # past the context: not
                    if engine.context is None or max(map(len, alt.ids)) <= engine.context]  # scored, conf. 0
            rows += sum(len(alt.ids) for alt in alts)
            scored = _score_incrementally(engine, alts, adapter, len(prompt)) if alts else None
            if scored is not None:
                for alt, lls in zip(alts, scored, strict=True):
                    out[i].logliks[alt.field] = dict(zip(alt.values, lls, strict=True))
                continue
            for alt in alts:  # a model whose cache cannot be shared: the engine's batched scorer
                out[i].logliks[alt.field] = {}
                for value, ids in zip(alt.values, alt.ids, strict=True):
                    requests.append(ScoreRequest(ids, [(alt.start, len(ids))]))
                    where.append((i, alt.field, value))
        if not requests:
            continue
        rows += sum(1 for _, name, _ in where if name is None)
        for (i, name, value), s in zip(where, engine.score(requests, adapter=adapter), strict=True):
            if name is None:
                out[i].text_logprob = -s.nll / s.tokens if s.tokens else None
            else:
                out[i].logliks[name][value] = -s.nll  # type: ignore[index]
    if cost is not None:
        cost.answers += len(answers)
        cost.rows += rows
        cost.seconds += time.perf_counter() - t0
    return out


def generate_scored(engine: Engine, spec: OutputSpec, conversations: Sequence[Any], cfg: GenerationConfig, *,
                    adapter: str | None, cost: ScoringCost | None = None,
                    ) -> tuple[list[list[int]], list[Generation], list[AnswerScores]]:
    """Answer ``conversations`` and score each answer (:func:`score_answers`) as it ends, on the
    keys/values generation has just computed for it (the engine keeps the finished row,
    :class:`~tunesmith.generate.kv.FinishedRows`, and the scorer takes it): an answer's prompt
    is run once, by generation. Returns (prompt ids, generations, scores)."""
    prompts = [engine.encode(c) for c in conversations]
    scores: list[AnswerScores | None] = [None] * len(prompts)

    def score(index: int, gen: Generation) -> None:
        scores[index] = score_answers(engine, spec, [prompts[index]], [gen.text], adapter=adapter, cost=cost)[0]

    before = engine.finished.capacity
    engine.finished.capacity = max(before, 1)
    try:
        gens = engine.generate(list(conversations), cfg, adapter=adapter, on_finish=score)
    finally:
        engine.finished.capacity = before
        if before == 0:
            engine.finished.clear()
    missed = [i for i, sc in enumerate(scores) if sc is None]  # its scoring ran out of memory: the
    if missed:  # engine backed off and went on; score those now, with a prefill
        again = score_answers(engine, spec, [prompts[i] for i in missed], [gens[i].text for i in missed],
                              adapter=adapter, cost=cost)
        for i, sc in zip(missed, again, strict=True):
            scores[i] = sc
    return prompts, gens, scores  # type: ignore[return-value]


ROWS_PER_PASS = 64  # alternatives scored in one forward pass (batched rows)
PACKED_TOKENS = 512  # alternatives' tokens in one forward pass (packed into one row)
_PACKABLE = ("sdpa", "eager")  # attention implementations that take a custom 4D mask
_TRIE = True  # alternatives packed as a trie (False: each its own chain, the layout before; benchmarks)


def _score_incrementally(engine: Engine, alts: list[Alternatives], adapter: str | None,
                         prompt_len: int) -> list[list[float]] | None:
    """Each field's alternatives' log-likelihoods in one or two forward passes.

    1. The answer's longest context (prompt + the answer up to its last scored field): the
       row generation left in ``engine.finished`` cut back to it (nothing to run), or, when
       none was kept, run once into a one-row cache (the system prompt from the prefix memo).
    2. Every alternative of every field, each only the tokens after its field's context (a
       value's few tokens), packed end to end into **one row** on top of that cache, with a 4D
       attention mask: a token sees its field's context (the cache up to where the field's
       value starts), and the tokens before it in its own alternative; position ids continue
       from its context. One row means no copy of the cache per alternative (20 alternatives
       over a 300-token context were 20 copies of its keys/values, most of the pass's time).
       Attention implementations that take no custom mask (flash) get the same rows batched,
       each on a copy of the cache, with a 2D mask (:func:`_score_rows`).

    None when the model's cache cannot be shared (sliding-window or recurrent layers).
    """
    import torch

    from tunesmith.generate.kv import (
        cache_kwargs,
        common_prefix,
        fork,
        growing_cache_supported,
        new_cache,
        truncate,
    )

    heads = [alt.ids[0][: alt.start - 1] for alt in alts]  # the last one predicts the first scored token
    longest = max(heads, key=len)
    rows = []  # (field, tokens after the context, context length, first scored index in tokens)
    for f, (alt, head) in enumerate(zip(alts, heads, strict=True)):
        k = min(_common([longest, head]), len(head))
        rows += [(f, ids[k:], k, alt.start - k) for ids in alt.ids]
    out: list[list[float]] = [[] for _ in alts]
    with engine.running(adapter):
        model = engine.model
        if not growing_cache_supported(model) or not longest:
            return None
        device = next(model.parameters()).device
        # the answer's own keys/values, when the engine kept them as it finished (FinishedRows):
        # no prefill at all; else the system prompt's from the memo and the rest recomputed
        found = (engine.finished.take((id(model), adapter), longest, at_least=min(prompt_len, len(longest)))
                 if engine.finished.capacity > 0 else None)  # (a label's context ends a token before the prompt)
        if found is not None:
            row, cache = found
            skip = min(len(common_prefix([row, longest])), len(longest))
            truncate(cache, skip)
        else:
            prefix = engine.prefix_memo.get((id(model), adapter, "score"), model, [longest])
            skip = prefix.length if prefix is not None else 0
            cache = fork(prefix.cache, 1) if prefix is not None else new_cache(model)
        if skip < len(longest):
            ids = torch.tensor([longest[skip:]], device=device)
            model(input_ids=ids, attention_mask=torch.ones((1, len(longest)), dtype=torch.long, device=device),
                  position_ids=torch.arange(skip, len(longest), device=device)[None], **cache_kwargs(model, cache),
                  use_cache=True, logits_to_keep=1)
        impl = getattr(getattr(model, "config", None), "_attn_implementation", None)
        scored = (_score_packed(model, cache, len(longest), rows, impl) if impl in _PACKABLE
                  else _score_rows(model, cache, len(longest), rows, engine.pad_id))
        for f, ll in scored:
            out[f].append(ll)
    return out


Row = tuple[int, list[int], int, int]  # field, tokens after its context, context length, first scored index


def _score_packed(model: Any, cache: Any, past: int, rows: list[Row], impl: str | None) -> list[tuple[int, float]]:
    """Every row's log-likelihood from one sequence over the one-row ``cache`` (``past``
    tokens): each field's alternatives as a **token trie**, every distinct prefix fed once.

    A field's alternatives all begin with the same context token(s) and often share their
    first value tokens (``esc al ate _`` of ``escalate_security`` and ``escalate_engineering``);
    and an alternative's last token is only ever predicted, never needed as an input. So each
    node of the trie of the alternatives' tokens (last ones left out) is one position of the
    packed sequence; its 4D mask row sees the field's context (the cache up to ``k``) and the
    node's ancestors; its position id is its depth after ``k``. The log-likelihood of an
    alternative sums, along its path, the log-probability each node gives the next token:
    the same numbers as running every alternative on its own. For the triage schema: 57
    positions per answer instead of 97. Fields go :data:`PACKED_TOKENS` nodes at a time (a
    bigger field alone); the cache is cut back to ``past`` after each pass."""
    import torch

    from tunesmith.generate.kv import cache_kwargs, truncate
    from tunesmith.generate.scoring import accepts_logits_to_keep

    device = next(model.parameters()).device
    chunks: list[list[_Trie]] = [[]]
    for trie in _tries(rows).values():
        if chunks[-1] and sum(len(t.nodes) for t in chunks[-1]) + len(trie.nodes) > PACKED_TOKENS:
            chunks.append([])
        chunks[-1].append(trie)
    lls: dict[int, float] = {}
    for chunk in chunks:
        q = sum(len(t.nodes) for t in chunk)
        allow = torch.zeros((q, past + q), dtype=torch.bool)
        ids: list[int] = []
        pos: list[int] = []
        keep: list[int] = []  # the nodes whose next-token distribution is used
        at = 0
        for trie in chunk:
            for n, (token, parent, depth) in enumerate(trie.nodes):
                allow[at + n, : trie.k] = True  # the field's context
                allow[at + n, past + at + n] = True  # itself
                if parent >= 0:
                    allow[at + n, past + at : past + at + len(trie.nodes)] |= allow[at + parent,
                                                                                   past + at : past + at + len(trie.nodes)]
                ids.append(token)
                pos.append(trie.k + depth)
                if depth + 1 >= trie.first:
                    keep.append(at + n)
            at += len(trie.nodes)
        mask = allow[None, None]
        if impl != "sdpa":  # eager adds the mask to the scores
            dtype = next(model.parameters()).dtype
            mask = torch.zeros(mask.shape, dtype=dtype).masked_fill(~mask, torch.finfo(dtype).min)
        # logits only where a scored token is predicted (the vocabulary projection of every
        # position was a fifth of the pass)
        where = torch.tensor(keep, device=device)
        kwargs = {"logits_to_keep": where} if accepts_logits_to_keep(model) else {}
        logits = model(input_ids=torch.tensor([ids], device=device), attention_mask=mask.to(device),
                       position_ids=torch.tensor([pos], device=device), **cache_kwargs(model, cache),
                       use_cache=True, **kwargs).logits[0]
        if not kwargs:
            logits = logits[where]
        truncate(cache, past)
        logp = torch.log_softmax(logits.float(), dim=-1)
        row_of = {node: r for r, node in enumerate(keep)}
        at = 0
        for trie in chunk:
            for i, path, targets in trie.scored():
                idx = torch.tensor([row_of[at + n] for n in path], device=logp.device)
                lls[i] = float(logp[idx, torch.tensor(targets, device=logp.device)].sum())
            at += len(trie.nodes)
    return [(rows[i][0], lls[i]) for i in range(len(rows))]


def _tries(rows: list[Row]) -> dict[int, _Trie]:
    """Each field's rows as one :class:`_Trie` (row ``i`` is alternative ``i`` of the result)."""
    tries: dict[int, _Trie] = {}
    for i, (f, tokens, k, first) in enumerate(rows):
        tries.setdefault(f, _Trie(k, first)).add(i, tokens)
    return tries


class _Trie:
    """One field's alternatives as a trie of the tokens fed to score them: ``nodes`` (token,
    parent node or -1, depth from 0), parents before children; each alternative's scored path."""

    def __init__(self, k: int, first: int):
        self.k, self.first = k, first  # context length; index of the first scored token
        self.nodes: list[tuple[int, int, int]] = []
        self._index: dict[tuple[int, ...], int] = {}
        self._rows: list[tuple[int, list[int]]] = []

    def add(self, row: int, tokens: list[int]) -> None:
        parent = -1
        fed = len(tokens) - 1 if _TRIE else len(tokens)  # the last token is predicted, never needed fed
        for depth in range(fed):
            key = self._key(row, tokens[: depth + 1])
            node = self._index.get(key)
            if node is None:
                node = self._index[key] = len(self.nodes)
                self.nodes.append((tokens[depth], parent, depth))
            parent = node
        self._rows.append((row, tokens))

    @staticmethod
    def _key(row: int, prefix: list[int]) -> tuple[int, ...]:
        return tuple(prefix) if _TRIE else (row, *prefix)  # not shared: every alternative its own chain

    def scored(self) -> Iterator[tuple[int, list[int], list[int]]]:
        """(row, the nodes that predict its scored tokens, those tokens) per alternative."""
        for row, tokens in self._rows:
            path = [self._index[self._key(row, tokens[:j])] for j in range(self.first, len(tokens))]
            yield row, path, tokens[self.first:]


def _score_rows(model: Any, cache: Any, past: int, rows: list[Row], pad_id: int) -> list[tuple[int, float]]:
    """Every row in a batch of its own, :data:`ROWS_PER_PASS` at a time, each over a copy of
    the one-row ``cache`` (masked past the row's context)."""
    import torch

    from tunesmith.generate.kv import cache_kwargs, fork

    device = next(model.parameters()).device
    out: list[tuple[int, float]] = []
    for b in range(0, len(rows), ROWS_PER_PASS):
        batch = rows[b : b + ROWS_PER_PASS]
        width = max(len(t) for _, t, _, _ in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), past + width), dtype=torch.long)
        pos = torch.zeros((len(batch), width), dtype=torch.long)
        for r, (_, tokens, k, _) in enumerate(batch):
            ids[r, : len(tokens)] = torch.tensor(tokens)
            mask[r, :k] = 1
            mask[r, past : past + len(tokens)] = 1
            pos[r] = torch.arange(k, k + width)
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=pos.to(device),
                       **cache_kwargs(model, fork(cache, len(batch))), use_cache=True).logits
        logp = torch.log_softmax(logits.float(), dim=-1)
        for r, (f, tokens, _, first) in enumerate(batch):
            t = torch.arange(first, len(tokens), device=logp.device)
            out.append((f, float(logp[r, t - 1, ids[r, first : len(tokens)].to(logp.device)].sum())))
    return out


def brief(scores: AnswerScores, temperatures: Mapping[str, float] | None = None) -> dict[str, Any]:
    """Per field: the value given and its calibrated confidence (rounded for the wire)."""
    per, _ = scores.confidences(temperatures)
    values = scores.values or {}
    return {name: {"value": values.get(name), "confidence": None if c is None else round(c, 6)}
            for name, c in per.items()}
