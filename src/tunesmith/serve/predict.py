"""``tunesmith predict``: batch prediction. Any ingestable file in (the prepare stage's readers:
JSONL chat/alpaca/prompt-completion, CSV/Parquet with a column mapping, ...), one answer per
record out (JSONL, CSV or Parquet, by the output's extension), through the same engine,
rendering and output constraints as eval and the server.

Resumable: answers are appended to ``<output>.partial.jsonl`` as each chunk finishes; a rerun
skips the records already answered there, and the final file is written (and the sidecar
removed) only when every record has an answer. Each answer is logged in the request log like a
served request (variant ``batch``, request id ``batch:<input digest>:<record id>``, so a resumed
run never logs a record twice).

For a project whose answers have label fields (or are a label), each row also carries the
answer's ``confidence`` and review ``decision`` and the full ``tunesmith`` extension (per-field
values and confidences, reasons, threshold), computed as the server does
(:mod:`tunesmith.review.live`), and the request log records them for ``tunesmith review enqueue``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith.config import Config, SourceConfig
from tunesmith.data.example import Example
from tunesmith.errors import TunesmithError
from tunesmith.workspace import Workspace

OUTPUT_FORMATS = (".jsonl", ".csv", ".parquet")
CHUNK = 64  # records generated (and saved) together
LogFn = Callable[[dict[str, Any]], None]


@dataclass
class PredictResult:
    output: Path
    model: str  # version id, or "base"
    records: int  # rows in the output
    answered: int  # answered by this run (the rest came from an interrupted one)
    failed: int  # records the reader quarantined (their row carries the error)
    seconds: float


def predict(cfg: Config, input_path: Path, output_path: Path, *, model: str | None = None,
            log: LogFn | None = None) -> PredictResult:
    """Answer every record of ``input_path`` with ``model`` (an id, prefix or alias; default
    the ``champion`` alias, else the latest version, else the base model; ``base`` for it).

    Raises:
        TunesmithError: an unreadable input, an output format we cannot write, an unknown model.
    """
    log = log or (lambda e: None)
    started = time.perf_counter()
    if output_path.suffix.lower() not in OUTPUT_FORMATS:
        raise TunesmithError(f"--output {output_path}: write .jsonl, .csv or .parquet")
    if not input_path.exists():
        raise TunesmithError(f"--input {input_path}: no such file")
    ws = Workspace(cfg.workspace_dir)
    version = _version(cfg, ws, model)
    records = _read(cfg, input_path)
    digest = _digest(input_path)
    partial = output_path.with_name(output_path.name + ".partial.jsonl")
    done = _answered(partial)
    todo = [(i, r) for i, r in enumerate(records) if _row_id(i, r) not in done]
    log({"event": "predict_start", "records": len(records), "todo": len(todo), "resumed": len(done),
         "model": version.id if version else "base"})
    answered = 0
    if todo:
        answered = _answer(cfg, ws, version, todo, partial, digest, log)
    rows = _answered(partial)
    ordered = [rows[_row_id(i, r)] for i, r in enumerate(records)]
    _write(ordered, output_path)
    partial.unlink()
    failed = sum(1 for row in ordered if row.get("error"))
    return PredictResult(output_path, version.id if version else "base", len(ordered), answered, failed,
                         round(time.perf_counter() - started, 1))


# ---------------------------------------------------------------------------- inputs
def _version(cfg: Config, ws: Workspace, model: str | None) -> Any:
    from tunesmith.registry import ModelRegistry

    if model == "base":
        return None
    registry = ModelRegistry(ws, cfg.project)
    if model:
        return registry.resolve(model)
    champion = registry.aliases().get("champion")
    return ws.get("model", champion) if champion else ws.latest("model")


def _read(cfg: Config, path: Path) -> list[Example | str]:
    """Records in file order: an Example, or the reader's error for a quarantined one."""
    from tunesmith.data.ingest import Quarantined, expand_source, read_source
    from tunesmith.data.ingest.formats import unanswered_records

    src = SourceConfig(path=str(path.resolve()))
    out: list[Example | str] = []
    with unanswered_records():  # inputs to answer: no assistant turn needed (one is ignored)
        for p in expand_source(src, cfg.base_dir):
            for rec in read_source(src, p, base_dir=cfg.base_dir, max_line_bytes=cfg.data.max_line_bytes):
                out.append(f"{rec.location}: {rec.error}" if isinstance(rec, Quarantined) else rec)
    if not out:
        raise TunesmithError(f"--input {path}: no records")
    return out


def _digest(path: Path) -> str:
    from tunesmith.models.loading import file_digest

    return file_digest(path)[:12]


def _row_id(index: int, record: Example | str) -> str:
    return record.id if isinstance(record, Example) else f"#{index}"


def _answered(partial: Path) -> dict[str, dict[str, Any]]:
    if not partial.exists():
        return {}
    rows = {}
    for line in partial.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut by the interruption: answer it again
            continue
        rows[row["id"]] = row
    return rows


# ---------------------------------------------------------------------------- answering
def _answer(cfg: Config, ws: Workspace, version: Any, todo: list[tuple[int, Example | str]], partial: Path,
            digest: str, log: LogFn) -> int:
    from tunesmith.data.pipeline import input_shaper, shape_example
    from tunesmith.evaluate.outputs import grammar_for, resolve_output
    from tunesmith.evaluate.strategies import STRATEGIES, build_conversation
    from tunesmith.generate.sampling import GenerationConfig
    from tunesmith.review.live import AnswerReviewer, reviews_answers, version_calibration
    from tunesmith.serve.launch import load_engine, log_scrubber
    from tunesmith.serve.requestlog import Answer, LogEntry, RequestLog

    scrub = log_scrubber(cfg)
    shape = input_shaper(cfg)
    engine = load_engine(cfg)
    adapter = None
    if version is not None:
        engine.add_adapter(version.id, version.path)
        adapter = version.id
    strategy = STRATEGIES["finetuned" if version is not None else "zero_shot"]
    spec = cfg.eval.output
    snapshot = ws.latest("snapshot")
    if snapshot is not None:
        from tunesmith.data.pipeline import load_split

        spec = resolve_output(spec, load_split(snapshot.path, "train"))
    g = cfg.eval.generation
    gen_cfg = GenerationConfig(max_new_tokens=g.max_new_tokens, temperature=g.temperature, seed=cfg.seed,
                               grammar=grammar_for(spec))
    calibration = version_calibration(ws, version.id) if version is not None else None
    reviewer = (AnswerReviewer(engine, spec, cfg.review, lambda _: calibration, keep=CHUNK)
                if reviews_answers(spec) else None)
    request_log = RequestLog(ws.db_path, scrub=scrub)
    request_log.start()
    answered = 0
    try:
        with partial.open("a", encoding="utf-8") as out:
            for start in range(0, len(todo), CHUNK):
                chunk = todo[start : start + CHUNK]
                ok = [(i, r) for i, r in chunk if isinstance(r, Example)]
                convs = [build_conversation(strategy, r if shape is None else shape_example(r, shape),
                                            instructions=cfg.eval.instructions) for _, r in ok]
                t0 = time.time()
                gens = engine.generate(convs, gen_cfg, adapter=adapter) if convs else []
                per = (time.time() - t0) * 1000 / max(len(gens), 1)
                answers = {r.id: g for (_, r), g in zip(ok, gens, strict=True)}
                conv_of = {r.id: conv for (_, r), conv in zip(ok, convs, strict=True)}
                reviews = {r.id: reviewer.review_answers(f"batch:{digest}:{_row_id(i, r)}", engine.encode(conv_of[r.id]),
                                                         [answers[r.id].text], adapter=adapter, version=adapter)[0]
                           for i, r in ok} if reviewer else {}
                for i, r in chunk:
                    row_id = _row_id(i, r)
                    if isinstance(r, Example):
                        gen = answers[r.id]
                        row = {"id": row_id, "answer": gen.text, "finish_reason": gen.finish_reason,
                               "tokens": gen.tokens, "error": None}
                        logged = Answer(gen.text, gen.finish_reason, gen.tokens)
                        if (rv := reviews.get(r.id)) is not None:
                            ext = rv.extension()
                            row |= {"confidence": ext["confidence"], "decision": ext["decision"], "tunesmith": ext}
                            logged.confidence, logged.decision = rv.field_confidence(), rv.decision.to_dict()
                        request_log.record(LogEntry(
                            f"batch:{digest}:{row_id}", t0, 200, model=cfg.project,
                            version=version.id if version is not None else "base", adapter=adapter,
                            variant="batch", prompt=engine.tokenizer.decode(engine.encode(conv_of[r.id])),
                            prompt_tokens=gen.prompt_tokens, answers=[logged], latency_ms=per,
                            messages=conv_of[r.id]))
                    else:
                        row = {"id": row_id, "answer": None, "finish_reason": None, "tokens": 0, "error": r}
                    out.write(json.dumps(row, ensure_ascii=False) + "\n")
                out.flush()
                answered += len(ok)
                log({"event": "predict_progress", "done": answered, "total": len(todo)})
    finally:
        request_log.stop()
    return answered


# ---------------------------------------------------------------------------- output
def _write(rows: list[dict[str, Any]], path: Path) -> None:
    from tunesmith.workspace import write_atomic

    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".jsonl":
        write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        return
    import pyarrow as pa

    columns = [("id", pa.string()), ("answer", pa.string()), ("finish_reason", pa.string()),
               ("tokens", pa.int64()), ("error", pa.string())]
    if any("tunesmith" in r for r in rows):  # confidence and review decision (label projects)
        columns += [("confidence", pa.float64()), ("decision", pa.string()), ("tunesmith", pa.string())]
        rows = [{**r, "tunesmith": json.dumps(r["tunesmith"]) if r.get("tunesmith") else None} for r in rows]
    table = pa.Table.from_pylist(rows, schema=pa.schema(columns))
    tmp = path.with_name(path.name + ".tmp")
    if suffix == ".csv":
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, tmp)
    else:
        import pyarrow.parquet as pq

        pq.write_table(table, tmp)
    tmp.replace(path)
