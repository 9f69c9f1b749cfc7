"""``export``: a model version -> a merged Hugging Face model and a GGUF file, checked equal.

Reads top to bottom like the algorithm:

    1. read the model version; refuse what cannot be exported (before anything loads)
    2. load the trained model as training left it (base + PEFT adapter, or full weights)
    3. record its logits and greedy continuations on a few prompts (the reference)
    4. merge the adapter into the base, save it (safetensors + tokenizer), reload, compare
    5. write a llama.cpp GGUF from the merged folder, load it with transformers, compare
    6. write ``export.json`` with every number and every file's sha256; publish the folder into
       the workspace (``artifacts/export/<id>``, a lineage row to the model version) only if
       every check passed; ``out_dir`` also gets a copy

The export is an artifact like a snapshot or an eval: its id is derived from the model version
and the export settings, so exporting the same version the same way again returns the published
one (no second run, no second row), and ``tunesmith models show`` lists it under the version.

Why check at all: a merge or a conversion that goes wrong rarely crashes. A missed q/k
permutation or a tokenizer rebuilt with other merges gives a model that loads, answers, and is
quietly worse. Comparing against the adapter on the same token ids catches that at export time.

GGUF is written with the ``gguf`` package's ``GGUFWriter`` for Llama-architecture models
(Llama, SmolLM2, ...) whose tokenizer is byte-level BPE; anything else is a clear error. Tensor
names come from ``gguf``'s own name map; q/k rows are reordered for GGML's RoPE, which rotates
adjacent pairs where transformers rotates the two halves of each head.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from tunesmith import __version__
from tunesmith.errors import MissingDependencyError, TunesmithError
from tunesmith.train.trainer import LogFn
from tunesmith.workspace import Artifact, Workspace

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

Messages = list[dict[str, str]]

GGUF_DTYPES = ("f32", "f16", "q8_0")
LOGIT_TOLERANCE = 1e-3  # fp32 formats: the adapter, the merged model and an f32 GGUF
CHECK_PROMPTS = 3  # prompts taken from the snapshot when the caller gives none
FIXED_PROMPTS: list[Messages] = [
    [{"role": "user", "content": "Hello! Can you help me with my order?"}],
    [{"role": "user", "content": "Summarise the refund policy in one sentence."}],
    [{"role": "user", "content": "My password reset link does not work. What should I do?"}],
]
# transformers' GGUF loader rebuilds a Llama-architecture model from these config fields only;
# a model that needs any other setting would load from the GGUF as a different model.
_LLAMA_DEFAULTS = {"attention_bias": False, "mlp_bias": False, "hidden_act": "silu", "pretraining_tp": 1}


@dataclass
class ExportResult:
    """Where the export went and what the equivalence checks measured.

    ``checks`` maps ``merged`` / ``gguf`` / ``gguf_tokenizer`` to their numbers (max absolute
    logit difference against the adapter, greedy agreement); ``export.json`` holds the same.
    The paths are inside the workspace artifact; ``copied_to`` is the ``out_dir`` copy.
    """

    merged_dir: Path
    gguf_path: Path | None
    checks: dict[str, Any]
    report_path: Path
    gguf_skipped: str | None = None  # with gguf="auto": why no GGUF was written
    export_id: str = ""
    path: Path | None = None  # <workspace>/artifacts/export/<export_id>
    formats: list[str] | None = None  # hf_safetensors, gguf_<dtype>
    files: list[dict[str, Any]] | None = None  # {"path", "bytes", "sha256"} relative to ``path``
    reused: bool = False  # the same version was already exported with the same settings
    copied_to: Path | None = None


def export_model(
    ws: Workspace,
    model_id: str,
    *,
    out_dir: Path | None = None,
    gguf: bool | Literal["auto"] = "auto",
    gguf_dtype: str = "f16",
    prompts: list[Messages] | None = None,
    max_new_tokens: int = 16,
    log: LogFn | None = None,
) -> ExportResult:
    """Merge a model version into a standalone HF model (and a GGUF file) and prove them equal.

    Args:
        ws: the workspace holding the model version; the export is published into it
            (``artifacts/export/<export id>``, with a lineage row to the version).
        model_id: the version's id or an unambiguous prefix.
        out_dir: also copy the export here (replaced if present), for convenience.
        gguf: also write ``model-<gguf_dtype>.gguf``. ``"auto"``: where the GGUF writer supports
            the architecture (Llama), else skip it and say why in ``gguf_skipped``; ``True``:
            always, failing for other architectures; ``False``: never.
        gguf_dtype: ``f32`` (lossless), ``f16`` (llama.cpp's usual) or ``q8_0``.
        prompts: conversations to check on; default: the snapshot's test split, else fixed ones.
        max_new_tokens: length of the greedy continuations compared.
        log: receives ``{"event": "export", "phase": ..., "seconds": ...}`` as each phase ends.

    Returns:
        The merged folder, the GGUF path and the check numbers, in the workspace artifact; the
        published one when this version was exported with these settings before (``reused``).

    Raises:
        TunesmithError: unknown id, a prompt-tuned version, an architecture or tokenizer GGUF
            cannot carry, a base model that changed since training, or a failed check.
    """
    start = time.perf_counter()
    # 1. refuse early
    art, record = read_model_version(ws, model_id)
    check_exportable(record, gguf=bool(gguf), gguf_dtype=gguf_dtype)
    settings = {"gguf": gguf, "gguf_dtype": gguf_dtype if gguf else None, "max_new_tokens": max_new_tokens,
                "prompts": _digest(prompts) if prompts is not None else None}
    export_id = _digest({"model": art.id, **settings})[:16]
    done = _published(ws, export_id)
    reused = done is not None
    if done is None:
        done = _export_and_publish(ws, art, record, export_id, settings, gguf=gguf, gguf_dtype=gguf_dtype,
                                   prompts=prompts, log=log or (lambda e: None), start=start)
    result = _result(done, reused)
    if out_dir is not None:
        result.copied_to = copy_export(done.path, Path(out_dir))
    return result


def _export_and_publish(ws: Workspace, art: Artifact, record: dict[str, Any], export_id: str,
                        settings: dict[str, Any], *, gguf: bool | Literal["auto"], gguf_dtype: str,
                        prompts: list[Messages] | None, log: LogFn, start: float) -> Artifact:
    """Steps 2-6 in a staging folder of the workspace, published as ``export/<export_id>``."""
    skipped = None
    if gguf:
        try:
            check_gguf_architecture(_trained_config(art, record))
        except TunesmithError as exc:
            if gguf != "auto":
                raise
            gguf, skipped = False, str(exc)
    with ws.staging() as tmp:
        job = _Job.prepare(ws, art, record, prompts, settings["max_new_tokens"], log)
        if gguf == "auto":
            try:
                check_gguf_tokenizer(job.tokenizer)
            except TunesmithError as exc:
                gguf, skipped = False, str(exc)
        report = _export_into(tmp, job, gguf_dtype if gguf else None)
        report |= {"export_id": export_id, "settings": settings, "gguf_skipped": skipped,
                   "formats": ["hf_safetensors", *([f"gguf_{gguf_dtype}"] if report["gguf"] else [])],
                   "files": file_digests(tmp), "seconds": round(time.perf_counter() - start, 1)}
        (tmp / "export.json").write_text(json.dumps(report, indent=1))
        meta = {"model": art.id, **{k: report[k] for k in ("formats", "files", "gguf", "gguf_skipped", "settings",
                                                            "base_model", "method")}}
        return ws.publish(tmp, "export", export_id, meta=meta, parents=[("model", art.id, "exported_from")])


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def file_digests(root: Path) -> list[dict[str, Any]]:
    """Every file under ``root`` (sorted, relative paths) with its size and sha256."""
    out = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        out.append({"path": path.relative_to(root).as_posix(), "bytes": path.stat().st_size, "sha256": h.hexdigest()})
    return out


def _published(ws: Workspace, export_id: str) -> Artifact | None:
    """The export already published under this id, after checking that its files are all there
    with their recorded sizes (an artifact is never rewritten, so a damaged one is an error)."""
    try:
        art = ws.get("export", export_id)
    except TunesmithError:
        return None
    for f in art.meta.get("files") or []:
        path = art.path / f["path"]
        if not path.is_file() or path.stat().st_size != f["bytes"]:
            raise TunesmithError(f"export {export_id}: {path} is missing or changed since it was published; "
                                 f"remove {art.path} and export again")
    return art


def _result(art: Artifact, reused: bool) -> ExportResult:
    report = json.loads((art.path / "export.json").read_text())
    return ExportResult(art.path / report["merged"], art.path / report["gguf"] if report["gguf"] else None,
                        report["checks"], art.path / "export.json", report.get("gguf_skipped"),
                        export_id=art.id, path=art.path, formats=report.get("formats"), files=report.get("files"),
                        reused=reused)


def copy_export(src: Path, dest: Path) -> Path:
    """Copy a published export to ``dest`` (a folder outside the workspace, replaced if present):
    copied beside it first and renamed, so ``dest`` is never half written."""
    tmp = dest.parent / f".tmp-{dest.name}-{uuid.uuid4().hex[:8]}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        shutil.copytree(src, tmp)
        _replace_dir(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


@dataclass
class _Job:
    """What every step of one export shares: the version, its tokenizer and the check prompts."""

    art: Artifact
    record: dict[str, Any]
    tokenizer: Any
    conversations: list[Messages]
    prompt_source: str
    ids: list[list[int]]
    stop: list[int]
    max_new_tokens: int
    log: LogFn
    notes: list[str]
    timings: dict[str, float]

    @classmethod
    def prepare(cls, ws: Workspace, art: Artifact, record: dict, prompts: list[Messages] | None,
                max_new_tokens: int, log: LogFn) -> _Job:
        tokenizer, notes = export_tokenizer(art, record)
        conversations, source = _check_conversations(ws, record, prompts)
        ids = [_prompt_ids(tokenizer, c, record) for c in conversations]
        return cls(art, record, tokenizer, conversations, source, ids, _stop_ids(tokenizer, record),
                   max_new_tokens, log, notes, {})

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        self.timings[name] = round(time.perf_counter() - t0, 2)
        self.log({"event": "export", "phase": name, "seconds": self.timings[name]})

    def run(self, model: Any) -> list[PromptRun]:
        pad = self.tokenizer.pad_token_id
        return [run_prompt(model, p, self.stop, pad, self.max_new_tokens) for p in self.ids]

    def check(self, model: Any, reference: list[PromptRun], *, lossy: bool) -> dict[str, Any]:
        return _check_model(model, self.ids, reference, self.run(model), lossy=lossy)


def _export_into(out: Path, job: _Job, gguf_dtype: str | None) -> dict[str, Any]:
    """Steps 2-5 into ``out``; raises on the first failed check."""
    with job.phase("load_trained"):
        trained = load_trained(job.art, job.record)
    with job.phase("reference_outputs"):
        reference = job.run(trained)
    # 4. merge, save, reload from disk: the check covers what was written
    merged_dir = out / "merged"
    with job.phase("merge_and_save"):
        merge(trained, job.record).save_pretrained(merged_dir, safe_serialization=True)
        job.tokenizer.save_pretrained(merged_dir)
        del trained
    with job.phase("check_merged"):
        checks = {"merged": job.check(_load_dir(merged_dir, job.record), reference, lossy=False)}
    _raise_if_failed("merged model", checks["merged"])
    gguf_name = f"model-{gguf_dtype}.gguf" if gguf_dtype else None
    if gguf_name:
        with job.phase("write_gguf"):
            eot = next((t for t in job.stop if t != job.tokenizer.eos_token_id), None)
            job.notes += write_gguf(merged_dir, job.tokenizer, out / gguf_name, dtype=gguf_dtype, eot_id=eot,
                                    name=f"tunesmith-{job.art.id[:12]}", base_gguf=_base_gguf(job.record))
        with job.phase("check_gguf"):
            checks.update(_check_gguf(out / gguf_name, job, reference, lossy=gguf_dtype != "f32"))
    r = job.record
    return {"kind": "tunesmith.export", "model_id": job.art.id, "base_model": r.get("base_model"),
            "method": r.get("method"), "tunesmith": __version__, "merged": "merged", "gguf": gguf_name,
            "gguf_dtype": gguf_dtype, "prompts": len(job.ids), "prompt_source": job.prompt_source,
            "max_new_tokens": job.max_new_tokens, "checks": checks, "notes": job.notes,
            "seconds_by_phase": job.timings}


def _replace_dir(tmp: Path, final: Path) -> None:
    """Publish ``tmp`` as ``final`` with a rename; an older export of the same version goes."""
    if final.exists():
        old = final.parent / f".old-{final.name}-{uuid.uuid4().hex[:8]}"
        os.rename(final, old)
        shutil.rmtree(old, ignore_errors=True)
    os.rename(tmp, final)


# --------------------------------------------------------------------------- 1. the version
def read_model_version(ws: Workspace, model_id: str) -> tuple[Artifact, dict[str, Any]]:
    """The artifact and its ``model_version.json``.

    Raises:
        TunesmithError: no such version (the message lists the latest ids) or a folder that
            lacks its record.
    """
    art = ws.get("model", model_id)
    path = art.path / "model_version.json"
    if not path.is_file():
        raise TunesmithError(f"model {art.id}: {path} is missing; the artifact folder is incomplete")
    return art, json.loads(path.read_text())


def check_exportable(record: dict[str, Any], *, gguf: bool, gguf_dtype: str) -> None:
    """Refuse, before loading anything, what has no merged form or an unknown GGUF type.

    Prompt tuning is refused rather than exported as the base model plus a note: its soft
    prompt is an input prepended at run time, not a weight, so a "merged" model would behave
    exactly like the untuned base while looking like the fine-tuned one.
    """
    if gguf and gguf_dtype not in GGUF_DTYPES:
        raise TunesmithError(f"gguf_dtype: {gguf_dtype!r} is not one of {', '.join(GGUF_DTYPES)}")
    if record.get("method") == "prompt_tuning":
        raise TunesmithError(
            f"model {record.get('id')} was trained with prompt tuning: its soft prompt is prepended "
            "to the input at run time and has no weights to merge into the base model, and GGUF "
            "runtimes have no soft-prompt input. Serve it as an adapter instead "
            "(PeftModel.from_pretrained(base, <version>/adapter))."
        )
    if record.get("weights") not in ("adapter", "model"):
        raise TunesmithError(f"model {record.get('id')}: model_version.json names no weights folder")


def _trained_config(art: Artifact, record: dict) -> Any:
    """The transformers config of the model being exported (the base's, for an adapter)."""
    from transformers import AutoConfig

    if record["weights"] == "model":
        return AutoConfig.from_pretrained(art.path / "model")
    from tunesmith.models.loading import local_source

    source, _ = local_source(_base_ref(record))
    return AutoConfig.from_pretrained(source, trust_remote_code=_model_cfg(record).get("trust_remote_code", False))


def _model_cfg(record: dict) -> dict[str, Any]:
    return record.get("config", {}).get("model", {})


def _base_ref(record: dict) -> Any:
    """The base model as it was resolved at training time, checked unchanged since."""
    from tunesmith.models.loading import model_fingerprint, resolve_model

    location = record.get("base_location") or record.get("base_model")
    try:
        ref = resolve_model(location)
    except TunesmithError as exc:
        raise TunesmithError(f"base model of {record.get('id')} ({location}) not found: {exc}") from None
    expected = record.get("base_fingerprint")
    if expected and ref.kind != "hub" and model_fingerprint(ref) != expected:
        raise TunesmithError(
            f"the base model at {ref.location} changed since model {record.get('id')} was trained "
            f"(fingerprint {model_fingerprint(ref)[:12]} != {expected[:12]}); merging the adapter "
            "into other weights would export a different model. Restore the original base."
        )
    return ref


def _base_gguf(record: dict) -> Path | None:
    """The base model's GGUF file when training started from one (the starter does)."""
    location = record.get("base_location") or ""
    return Path(location) if location.lower().endswith(".gguf") and Path(location).is_file() else None


# --------------------------------------------------------------------------- 2. models
def export_tokenizer(art: Artifact, record: dict) -> tuple[PreTrainedTokenizerBase, list[str]]:
    """The version's tokenizer, carrying the chat template it was trained with.

    A version trained with a named fallback template (base model without one) gets that template
    written into the exported tokenizer, so the merged model and the GGUF render prompts the way
    training did without tunesmith's config beside them.
    """
    from transformers import AutoTokenizer

    from tunesmith.models.chat import fallback_chat_template

    mcfg = _model_cfg(record)
    tok = AutoTokenizer.from_pretrained(art.path / "tokenizer", trust_remote_code=mcfg.get("trust_remote_code", False))
    notes = []
    if not getattr(tok, "chat_template", None) and mcfg.get("chat_template"):
        tok.chat_template = fallback_chat_template(mcfg["chat_template"], tok)
        notes.append(f"wrote the `{mcfg['chat_template']}` fallback chat template into the tokenizer")
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    return tok, notes


def load_trained(art: Artifact, record: dict) -> Any:
    """The model as training left it, in float32 on the CPU: base + adapter, or full weights."""
    if record["weights"] == "model":
        return _load_dir(art.path / "model", record)
    from peft import PeftModel

    from tunesmith.models.loading import load_model

    mcfg = _model_cfg(record)
    base = load_model(_base_ref(record), dtype="float32", device="cpu",
                      trust_remote_code=mcfg.get("trust_remote_code", False),
                      allow_pickle=mcfg.get("allow_pickle", False))
    with warnings.catch_warnings():  # transformers' own deprecation, raised inside PEFT
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return PeftModel.from_pretrained(base, art.path / "adapter").eval()


def _load_dir(folder: Path, record: dict) -> Any:
    from tunesmith.models.loading import load_model

    return load_model(str(folder), dtype="float32", device="cpu",
                      trust_remote_code=_model_cfg(record).get("trust_remote_code", False))


def merge(model: Any, record: dict) -> Any:
    """Fold LoRA / DoRA deltas into the base weights (in place); a full model is already whole."""
    if record["weights"] == "model":
        return model
    return model.merge_and_unload(safe_merge=True)


# --------------------------------------------------------------------------- 3. prompts
def _check_conversations(ws: Workspace, record: dict, prompts: list[Messages] | None) -> tuple[list[Messages], str]:
    """The conversations to check on, cut before their last answer, and where they came from."""
    if prompts:
        return [_prompt_part(p) for p in prompts], "given"
    snapshot = record.get("snapshot")
    if snapshot:
        from tunesmith.data.pipeline import load_split

        try:
            snap = ws.get("snapshot", snapshot)
        except TunesmithError:
            snap = None
        for split in ("test", "validation"):
            if snap and (snap.path / f"{split}.parquet").is_file():
                chats = [e.messages for e in load_split(snap.path, split) if e.is_chat and e.answer_text()]
                if chats:
                    return [_prompt_part(m) for m in chats[:CHECK_PROMPTS]], f"snapshot:{snap.id}:{split}"
    return [list(p) for p in FIXED_PROMPTS], "fixed"


def _prompt_part(messages: Messages) -> Messages:
    """The turns before the last assistant answer: what generation is asked to continue."""
    last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=len(messages))
    return list(messages[:last])


def _prompt_ids(tokenizer: PreTrainedTokenizerBase, messages: Messages, record: dict) -> list[int]:
    """Token ids through THE rendering function, with the version's system prompt."""
    from tunesmith.models.chat import encode_prompt

    mcfg = _model_cfg(record)
    return encode_prompt(tokenizer, messages, system=mcfg.get("system_prompt"),
                         fallback_template=mcfg.get("chat_template"))


def _stop_ids(tokenizer: PreTrainedTokenizerBase, record: dict) -> list[int]:
    from tunesmith.models.chat import end_of_turn_ids

    return end_of_turn_ids(tokenizer, fallback_template=_model_cfg(record).get("chat_template"))


# --------------------------------------------------------------------------- checks
@dataclass
class PromptRun:
    """One model on one prompt: logits over the prompt positions and its greedy continuation."""

    logits: torch.Tensor  # (prompt_len, vocab), float32
    greedy: list[int]


@torch.no_grad()
def run_prompt(model: Any, ids: list[int], stop: list[int], pad_id: int | None, max_new_tokens: int) -> PromptRun:
    """Forward the prompt once (logits) and decode greedily (tokens)."""
    x = torch.tensor([ids])
    logits = model(input_ids=x).logits[0].float()
    out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=max_new_tokens,
                         do_sample=False, eos_token_id=stop, pad_token_id=pad_id if pad_id is not None else stop[0])
    greedy = out[0, len(ids):].tolist()
    # generate pads finished rows; cut after the first stop token so padding is not compared
    cut = next((i + 1 for i, t in enumerate(greedy) if t in stop), len(greedy))
    return PromptRun(logits, greedy[:cut])


def _check_model(model: Any, ids: list[list[int]], reference: list[PromptRun], runs: list[PromptRun],
                 *, lossy: bool) -> dict[str, Any]:
    """Compare ``model``'s runs with the reference runs on every prompt."""
    rows = [_compare(model, p, ref, run) for p, ref, run in zip(ids, reference, runs, strict=True)]
    worst = max(r["max_abs_logit_diff"] for r in rows)
    tolerance = None if lossy else LOGIT_TOLERANCE
    passed = all(r["greedy_ok"] for r in rows) and (tolerance is None or worst <= tolerance)
    return {"reference": "adapter", "max_abs_logit_diff": worst,
            "next_token_logit_diff": max(r["next_token_logit_diff"] for r in rows),
            "logit_tolerance": tolerance, "greedy_identical": sum(r["greedy_match"] for r in rows),
            "prompts": len(rows), "passed": passed, "per_prompt": rows}


def _compare(model: Any, ids: list[int], ref: PromptRun, run: PromptRun) -> dict[str, Any]:
    """Logit distances, and whether a greedy divergence is a near-tie the rounding explains.

    ``max_abs_logit_diff`` is over every prompt position (the first positions, where logits are
    extreme, usually hold it); ``next_token_logit_diff`` is at the last one, a generation step.
    A divergence passes only when, at the first differing step (same prefix for both), ``model``
    scores its token and the reference's closer than twice the next-token error: rounding may
    flip a near-tie, never a clear choice.
    """
    diff = float((ref.logits - run.logits).abs().max())
    next_diff = float((ref.logits[-1] - run.logits[-1]).abs().max())
    row = {"max_abs_logit_diff": diff, "next_token_logit_diff": next_diff,
           "greedy_match": run.greedy == ref.greedy, "greedy_ok": run.greedy == ref.greedy,
           "greedy_tokens": len(ref.greedy), "first_divergence": None, "margin_at_divergence": None}
    if row["greedy_match"]:
        return row
    n = min(len(ref.greedy), len(run.greedy))
    j = next((i for i in range(n) if ref.greedy[i] != run.greedy[i]), n)
    margin = None
    if j < n:
        with torch.no_grad():
            last = model(input_ids=torch.tensor([ids + ref.greedy[:j]])).logits[0, -1].float()
        margin = abs(float(last[ref.greedy[j]] - last[run.greedy[j]]))
    return row | {"greedy_ok": margin is not None and margin <= 2 * next_diff, "first_divergence": j,
                  "margin_at_divergence": margin, "reference_tokens": ref.greedy, "tokens": run.greedy}


def _raise_if_failed(what: str, check: dict[str, Any]) -> None:
    if check["passed"]:
        return
    tol = check.get("logit_tolerance")
    raise TunesmithError(
        f"export check failed: the {what} differs from the trained adapter: max |logit diff| "
        f"{check['max_abs_logit_diff']:.3g}" + (f" (tolerance {tol:g})" if tol else "") +
        f", identical greedy continuations on {check['greedy_identical']}/{check['prompts']} prompts. "
        "Nothing was written; please report this with the model version's files."
    )


def _check_gguf(path: Path, job: _Job, reference: list[PromptRun], *, lossy: bool) -> dict[str, Any]:
    """Load the GGUF back the way users' transformers code would; compare tokenizer and model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    from tunesmith.models.loading import no_hub_kernels

    folder, name = str(path.parent), path.name
    tok_check = _check_tokenizer(AutoTokenizer.from_pretrained(folder, gguf_file=name), job, reference)
    if not tok_check["passed"]:
        raise TunesmithError(
            f"export check failed: the tokenizer rebuilt from {name} encodes the check prompts "
            f"differently ({tok_check['prompt_ids_identical']}/{len(job.ids)} identical): "
            f"{tok_check.get('first_mismatch')}"
        )
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, quantization_config=GgufConfig(dequantize=True), dtype=torch.float32,
        **no_hub_kernels(),
    ).eval()
    check = job.check(model, reference, lossy=lossy)
    _raise_if_failed(f"GGUF model ({name})", check)
    return {"gguf": check, "gguf_tokenizer": tok_check}


def _check_tokenizer(gtok: Any, job: _Job, reference: list[PromptRun]) -> dict[str, Any]:
    """Same prompt ids through the GGUF's chat template and vocabulary; same decoded text."""
    same_ids, first = 0, None
    for conv, want in zip(job.conversations, job.ids, strict=True):
        got = _prompt_ids(gtok, conv, job.record)
        same_ids += got == want
        if got != want and first is None:
            first = {"expected": job.tokenizer.convert_ids_to_tokens(want)[-8:],
                     "got": gtok.convert_ids_to_tokens(got)[-8:]}
    texts = [p + r.greedy for p, r in zip(job.ids, reference, strict=True)]
    same_text = sum(gtok.decode(t) == job.tokenizer.decode(t) for t in texts)
    n = len(job.ids)
    return {"prompt_ids_identical": same_ids, "decoded_identical": same_text, "prompts": n,
            "chat_template_identical": gtok.chat_template == job.tokenizer.chat_template,
            "passed": same_ids == n and same_text == n, "first_mismatch": first}


# --------------------------------------------------------------------------- 5. GGUF writing
def check_gguf_architecture(config: Any) -> None:
    """Refuse models the Llama GGUF layout cannot describe exactly (before any work is done).

    Raises:
        TunesmithError: another architecture, or Llama settings GGUF readers would not restore.
    """
    kind = getattr(config, "model_type", None)
    if kind != "llama":
        raise TunesmithError(
            f"GGUF export supports Llama-architecture models (Llama, SmolLM2, ...); this model is "
            f"{kind!r}. Export with `--gguf off` for the merged model alone, and convert "
            "it with llama.cpp's convert_hf_to_gguf.py."
        )
    odd = {k: getattr(config, k, v) for k, v in _LLAMA_DEFAULTS.items() if getattr(config, k, v) != v}
    rope = _rope(config)
    if rope.get("rope_type", "default") != "default":
        odd["rope_type"] = rope["rope_type"]
    if odd:
        raise TunesmithError(
            f"GGUF export: this Llama model uses settings the GGUF loaders would not restore: {odd}. "
            "Export with `--gguf off`."
        )


def _rope(config: Any) -> dict[str, Any]:
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    theta = params.get("rope_theta", getattr(config, "rope_theta", 10000.0))
    return {**params, "rope_theta": theta}


def write_gguf(model_dir: Path, tokenizer: PreTrainedTokenizerBase, path: Path, *, dtype: str = "f16",
               name: str = "tunesmith", base_gguf: Path | None = None, eot_id: int | None = None) -> list[str]:
    """Write a merged Llama-architecture model folder as one GGUF file; returns notes.

    Args:
        model_dir: a transformers folder (config.json + safetensors).
        tokenizer: the tokenizer to embed (vocabulary, merges, special ids, chat template).
        dtype: ``f32``, ``f16`` or ``q8_0`` for 2-D weights; norms always stay f32, as llama.cpp
            expects.
        name: ``general.name``.
        base_gguf: the GGUF the base model came from, whose pre-tokenizer name is reused.
        eot_id: the chat template's end-of-turn token when it is not EOS (``<|im_end|>`` on a
            base model trained with the ChatML fallback): llama.cpp stops on it only if told.
    """
    gguf = _import_gguf()
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_dir)
    check_gguf_architecture(config)
    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    _write_llama_metadata(writer, config, name, dtype)
    notes = _write_tokenizer(writer, tokenizer, config.vocab_size, base_gguf)
    if eot_id is not None:
        writer.add_eot_token_id(int(eot_id))
    notes += _write_tensors(writer, model_dir, config, dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return notes


def _import_gguf() -> Any:
    try:
        import gguf
    except ImportError:
        raise MissingDependencyError("gguf", "train", "Writing a GGUF file") from None
    return gguf


def _write_llama_metadata(writer: Any, config: Any, name: str, dtype: str) -> None:
    """The ``llama.*`` keys llama.cpp and transformers read to rebuild the model's shape."""
    gguf = _import_gguf()
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    # "mistral" in general.name makes transformers load a llama file as Mistral: keep ours plain
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads or config.num_attention_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_freq_base(float(_rope(config)["rope_theta"]))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_vocab_size(config.vocab_size)
    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                 "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[dtype]
    writer.add_file_type(int(file_type))
    if dtype == "q8_0":
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _gguf_rope_order(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Reorder q/k rows from transformers' RoPE layout to GGML's.

    transformers rotates the first half of each head's dims against the second half; GGML's
    (normal-mode) RoPE rotates adjacent pairs. Interleaving each head's two halves makes GGML
    compute the same rotation; transformers' GGUF loader undoes exactly this.
    """
    rows = w.shape[0]
    half = rows // n_heads // 2
    return w.reshape(n_heads, 2, half, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _write_tensors(writer: Any, model_dir: Path, config: Any, dtype: str) -> list[str]:
    """Every weight under its GGUF name; q/k rows reordered; 1-D tensors in f32."""
    gguf = _import_gguf()
    from safetensors import safe_open

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    fallback = 0
    for file in sorted(model_dir.glob("*.safetensors")):
        with safe_open(file, framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                if tied and key == "lm_head.weight":
                    continue  # no output.weight = tied, to llama.cpp and transformers alike
                target = names.get_name(key, try_suffixes=(".weight", ".bias"))
                if target is None:
                    raise TunesmithError(f"GGUF export: no GGUF name for tensor {key!r} in {file.name}")
                w = f.get_tensor(key).float().numpy()
                if target.endswith(("attn_q.weight", "attn_k.weight")):
                    heads = config.num_attention_heads if "attn_q" in target else config.num_key_value_heads
                    w = _gguf_rope_order(w, heads)
                fallback += _add_tensor(writer, target, w, dtype)
    return [f"{fallback} tensor(s) with rows not a multiple of 32 kept in f16 instead of q8_0"] if fallback else []


def _add_tensor(writer: Any, name: str, w: np.ndarray, dtype: str) -> int:
    """Add one tensor in the file's type; returns 1 when q8_0 had to fall back to f16."""
    gguf = _import_gguf()
    if w.ndim == 1 or dtype == "f32":
        writer.add_tensor(name, np.ascontiguousarray(w, dtype=np.float32))
        return 0
    if dtype == "q8_0" and w.shape[-1] % 32 == 0:
        q8 = gguf.GGMLQuantizationType.Q8_0
        writer.add_tensor(name, gguf.quants.quantize(np.ascontiguousarray(w, dtype=np.float32), q8), raw_dtype=q8)
        return 0
    writer.add_tensor(name, np.ascontiguousarray(w, dtype=np.float16))
    return int(dtype == "q8_0")


# --------------------------------------------------------------------------- GGUF tokenizer
def check_gguf_tokenizer(tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
    """The tokenizer's spec, if GGUF can carry it exactly (byte-level BPE).

    Raises:
        TunesmithError: another tokenizer kind.
    """
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    model = spec.get("model", {})
    if model.get("type") != "BPE" or not _is_byte_level(spec.get("pre_tokenizer")) or spec.get("normalizer"):
        raise TunesmithError(
            "GGUF export supports byte-level BPE tokenizers (GPT-2, Llama 3, SmolLM2 style); this one "
            f"is {model.get('type')} with pre-tokenizer {_describe(spec.get('pre_tokenizer'))} and "
            f"normalizer {_describe(spec.get('normalizer'))}. Export with `--gguf off`."
        )
    return spec


def _write_tokenizer(writer: Any, tokenizer: PreTrainedTokenizerBase, vocab_size: int,
                     base_gguf: Path | None) -> list[str]:
    """Vocabulary, merges, token types, special ids and chat template (``tokenizer.*`` keys).

    Only byte-level BPE (GPT-2 / Llama 3 / SmolLM style) is written: its tokens and merges are
    stored verbatim, so llama.cpp and transformers rebuild the same tokenizer from them.
    """
    spec = check_gguf_tokenizer(tokenizer)
    model = spec.get("model", {})
    tokens, types = _vocabulary(tokenizer, vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(_pre_tokenizer_name(spec.get("pre_tokenizer"), base_gguf))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])])
    for token, add in (("bos", writer.add_bos_token_id), ("eos", writer.add_eos_token_id),
                       ("unk", writer.add_unk_token_id), ("pad", writer.add_pad_token_id)):
        token_id = getattr(tokenizer, f"{token}_token_id", None)
        if token_id is not None:
            add(int(token_id))
    probe = tokenizer("a", add_special_tokens=True)["input_ids"]
    writer.add_add_bos_token(tokenizer.bos_token_id is not None and probe[:1] == [tokenizer.bos_token_id])
    writer.add_add_eos_token(tokenizer.eos_token_id is not None and probe[-1:] == [tokenizer.eos_token_id])
    if isinstance(getattr(tokenizer, "chat_template", None), str):
        writer.add_chat_template(tokenizer.chat_template)
        return []
    return ["the tokenizer has no chat template; none was written to the GGUF"]


def _vocabulary(tokenizer: PreTrainedTokenizerBase, vocab_size: int) -> tuple[list[str], list[int]]:
    """Tokens by id, padded to the embedding size, with llama.cpp token types."""
    gguf = _import_gguf()
    vocab = tokenizer.get_vocab()
    if max(vocab.values()) >= vocab_size:
        raise TunesmithError(
            f"GGUF export: the tokenizer has ids up to {max(vocab.values())} but the model embeds "
            f"{vocab_size} tokens; resize the embeddings before exporting"
        )
    by_id = {i: t for t, i in vocab.items()}
    added = {t.content: t.special for t in tokenizer.added_tokens_decoder.values()}
    tokens, types = [], []
    for i in range(vocab_size):
        token = by_id.get(i)
        if token is None:  # embedding rows beyond the vocabulary (padded for speed)
            tokens.append(f"[PAD{i}]")
            types.append(int(gguf.TokenType.UNUSED))
            continue
        tokens.append(token)
        kind = gguf.TokenType.NORMAL
        if token in added:
            kind = gguf.TokenType.CONTROL if added[token] else gguf.TokenType.USER_DEFINED
        types.append(int(kind))
    return tokens, types


def _is_byte_level(pre: dict | None) -> bool:
    if not pre:
        return False
    if pre.get("type") == "ByteLevel":
        return True
    return pre.get("type") == "Sequence" and any(p.get("type") == "ByteLevel" for p in pre.get("pretokenizers", []))


def _describe(part: dict | None) -> str:
    if not part:
        return "none"
    if part.get("type") == "Sequence":
        inner = part.get("pretokenizers") or part.get("normalizers") or []
        return "Sequence[" + ", ".join(p.get("type", "?") for p in inner) + "]"
    return str(part.get("type"))


def _pre_tokenizer_name(pre: dict | None, base_gguf: Path | None) -> str:
    """llama.cpp's name for how text is split before BPE (``tokenizer.ggml.pre``).

    Reused from the base GGUF when training started from one; otherwise recognised from the
    pre-tokenizer's shape: GPT-2's regex, SmolLM's digit split, or a split regex transformers
    knows by name (Llama 3, ...). llama.cpp refuses to load a file whose name it does not know.
    Checked with libllama (llama.cpp b10605): the written files load and match (see the report).
    """
    if base_gguf is not None:
        from gguf import GGUFReader

        field = GGUFReader(str(base_gguf)).fields.get("tokenizer.ggml.pre")
        if field is not None:
            return str(field.contents())
    parts = pre.get("pretokenizers", []) if pre and pre.get("type") == "Sequence" else [pre or {}]
    kinds = [p.get("type") for p in parts]
    if kinds == ["ByteLevel"] and parts[0].get("use_regex", True):
        return "gpt-2"  # llama.cpp's spelling; it refuses "gpt2"
    if kinds == ["Digits", "ByteLevel"] and parts[0].get("individual_digits") and parts[1].get("use_regex", True):
        return "smollm"
    if kinds == ["Split", "ByteLevel"] and not parts[1].get("use_regex", True):
        name = _split_regex_name(parts[0].get("pattern", {}).get("Regex"))
        if name:
            return name
    raise TunesmithError(
        f"GGUF export: cannot name this tokenizer's pre-tokenizer ({_describe(pre)}) for llama.cpp; "
        "export with `--gguf off` and convert with llama.cpp's convert_hf_to_gguf.py"
    )


def _split_regex_name(regex: str | None) -> str | None:
    """The llama.cpp pre-tokenizer name whose split regex transformers' GGUF loader uses."""
    try:
        from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS
    except ImportError:  # older transformers: no table, so no name we could vouch for
        return None
    return next((name for name, split in GGUF_PRE_TOKENIZER_SPLITS.items() if split == regex), None)
