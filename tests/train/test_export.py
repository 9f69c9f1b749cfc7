"""Export on a tiny Llama trained for 2 steps: merged model and GGUF are loaded back with plain
transformers and compared with the adapter here, independently of the export's own checks.

The tiny model's q/k weights are scaled up before training: with the default 0.02 init the
attention is nearly uniform, so a GGUF written with the wrong q/k row order would pass
unnoticed (measured: 0.0016 logit change at scale 1, 0.17 at scale 10).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from models.tiny import save_model_dir
from train.test_trainer import make_project
from tunesmith.config import load_config
from tunesmith.data.pipeline import load_split
from tunesmith.errors import TunesmithError
from tunesmith.models.chat import encode_prompt
from tunesmith.train import export as export_mod
from tunesmith.train.export import export_model
from tunesmith.train.recipe import train
from tunesmith.workspace import Workspace


def _sharpen_attention(model_dir: Path, scale: float = 10.0) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(scale)
            layer.self_attn.k_proj.weight.mul_(scale)
    model.save_pretrained(model_dir)


def _tie_embeddings(model_dir: Path) -> None:
    """SmolLM2's layout: the output projection is the embedding matrix."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    model.config.tie_word_embeddings = True
    model.lm_head.weight = model.model.embed_tokens.weight
    model.save_pretrained(model_dir)
    reloaded = AutoModelForCausalLM.from_pretrained(model_dir)
    assert reloaded.lm_head.weight.data_ptr() == reloaded.model.embed_tokens.weight.data_ptr()


def _train(root: Path, extra: str = "", arch: str = "llama", chat_template: bool = True, tied: bool = False):
    cfg_path = make_project(root, extra)
    if tied:
        _tie_embeddings(root / "tiny")
    if arch != "llama" or not chat_template:
        kw = {} if chat_template else {"chat_template": None}
        shutil.rmtree(root / "tiny")  # else its chat_template.jinja would survive
        save_model_dir(root / "tiny", arch, **kw)
    if not chat_template:
        cfg_path.write_text(cfg_path.read_text().replace("base: tiny", "base: tiny\n  chat_template: chatml"))
    if arch == "llama":
        _sharpen_attention(root / "tiny")
    cfg = load_config(cfg_path)
    return cfg, Workspace(cfg.workspace_dir), train(cfg)


@pytest.fixture(scope="module")
def lora(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("lora"), "{max_steps: 2}")


def _prompt_ids(cfg, ws, tokenizer) -> list[list[int]]:
    snap = ws.latest("snapshot")
    chats = [e.messages[:-1] for e in load_split(snap.path, "test")[:3]]
    return [encode_prompt(tokenizer, c) for c in chats]


@torch.no_grad()
def _logits(model, ids: list[int]) -> torch.Tensor:
    return model(input_ids=torch.tensor([ids])).logits[0]


@torch.no_grad()
def _greedy(model, ids: list[int], n: int = 12) -> list[int]:
    x = torch.tensor([ids])
    return model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=n,
                          do_sample=False, pad_token_id=0)[0, len(ids):].tolist()


@pytest.mark.slow
def test_lora_merged_and_gguf_load_with_transformers_and_match_the_adapter(lora):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    cfg, ws, res = lora
    out = export_model(ws, res.model_id[:8], gguf_dtype="f32")  # an id prefix is enough
    # published in the workspace like every artifact, with its lineage row and every file's sha256
    assert out.merged_dir == ws.artifact_dir("export", out.export_id) / "merged"
    assert ws.parents("export", out.export_id) == [("model", res.model_id, "exported_from")]
    assert out.formats == ["hf_safetensors", "gguf_f32"]
    assert {f["path"] for f in out.files} >= {"merged/model.safetensors", "merged/tokenizer.json", "model-f32.gguf"}
    report = json.loads(out.report_path.read_text())
    assert report["prompt_source"].startswith("snapshot:") and report["prompts"] == 3
    assert all(report["checks"][k]["passed"] for k in ("merged", "gguf", "gguf_tokenizer"))
    tokenizer = AutoTokenizer.from_pretrained(out.merged_dir)
    base = AutoModelForCausalLM.from_pretrained(cfg.resolve("tiny")).eval()
    base_logits = [_logits(base, p) for p in _prompt_ids(cfg, ws, tokenizer)]
    adapter = PeftModel.from_pretrained(base, res.path / "adapter").eval()
    merged = AutoModelForCausalLM.from_pretrained(out.merged_dir).eval()
    folder, name = str(out.gguf_path.parent), out.gguf_path.name
    gguf_model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, quantization_config=GgufConfig(dequantize=True), dtype=torch.float32).eval()
    gguf_tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    for ids, before in zip(_prompt_ids(cfg, ws, tokenizer), base_logits, strict=True):
        reference = _logits(adapter, ids)
        assert (reference - before).abs().max() > 1e-2  # the adapter changed the model
        assert (_logits(merged, ids) - reference).abs().max() < 1e-4
        assert (_logits(gguf_model, ids) - reference).abs().max() < 1e-4
        assert _greedy(gguf_model, ids) == _greedy(merged, ids) == _greedy(adapter, ids)
    assert _prompt_ids(cfg, ws, gguf_tok) == _prompt_ids(cfg, ws, tokenizer)
    assert gguf_tok.eos_token == tokenizer.eos_token and gguf_tok.chat_template == tokenizer.chat_template
    from gguf import GGUFReader

    # transformers accepts any name here; llama.cpp (libllama b10605) refuses "gpt2" and loads "gpt-2"
    fields = GGUFReader(str(out.gguf_path)).fields
    assert fields["tokenizer.ggml.pre"].contents() == "gpt-2"
    assert fields["general.architecture"].contents() == "llama" and "output.weight" in {
        t.name for t in GGUFReader(str(out.gguf_path)).tensors}  # the tiny model is untied


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["f16", "q8_0"])
def test_lossy_gguf_reports_the_rounding_and_keeps_greedy_outputs(lora, dtype, tmp_path):
    _, ws, res = lora
    out = export_model(ws, res.model_id, gguf_dtype=dtype, out_dir=tmp_path / dtype)
    check = out.checks["gguf"]
    assert out.gguf_path.name == f"model-{dtype}.gguf"
    assert 0 < check["max_abs_logit_diff"] < 0.05 and check["logit_tolerance"] is None
    assert check["greedy_identical"] == check["prompts"] == 3
    from gguf import GGUFReader

    types = {t.name: t.tensor_type.name for t in GGUFReader(str(out.gguf_path)).tensors}
    assert types["blk.0.attn_q.weight"] == dtype.upper() and types["blk.0.attn_norm.weight"] == "F32"


@pytest.mark.slow
def test_a_gguf_with_the_wrong_qk_layout_fails_the_check_and_writes_nothing(lora, tmp_path, monkeypatch):
    _, ws, res = lora
    monkeypatch.setattr(export_mod, "_gguf_rope_order", lambda w, n_heads: w)
    published = ws.list("export")
    with pytest.raises(TunesmithError, match=r"GGUF model .* differs from the trained adapter"):
        export_model(ws, res.model_id, gguf_dtype="f32", out_dir=tmp_path / "bad", max_new_tokens=15)
    assert not (tmp_path / "bad").exists() and not list(tmp_path.glob(".tmp-*"))
    assert ws.list("export") == published and not list((ws.root / "tmp").iterdir())


@pytest.mark.slow
def test_a_base_model_changed_since_training_is_refused(lora, tmp_path, monkeypatch):
    from tunesmith.models import loading

    _, ws, res = lora
    monkeypatch.setattr(loading, "model_fingerprint", lambda ref: "0" * 32)
    with pytest.raises(TunesmithError, match="changed since model"):
        export_model(ws, res.model_id, gguf=False, out_dir=tmp_path / "x")


@pytest.mark.slow
def test_given_prompts_and_reexport_reuse_the_export_and_refresh_the_copy(lora, tmp_path):
    _, ws, res = lora
    prompts = [[{"role": "user", "content": "my billing problem"}, {"role": "assistant", "content": "billing"}]]
    first = export_model(ws, res.model_id, gguf=False, out_dir=tmp_path / "e", prompts=prompts)
    assert not first.reused and first.copied_to == tmp_path / "e"
    (tmp_path / "e" / "merged" / "stale.txt").write_text("old")
    rows = len(ws.list("export"))
    again = export_model(ws, res.model_id, gguf=False, out_dir=tmp_path / "e", prompts=prompts)
    assert again.reused and again.export_id == first.export_id and len(ws.list("export")) == rows
    report = json.loads(again.report_path.read_text())
    assert report["prompt_source"] == "given" and report["prompts"] == 1 and report["gguf"] is None
    assert again.gguf_path is None and not (tmp_path / "e" / "merged" / "stale.txt").exists()
    assert (tmp_path / "e" / "export.json").read_text() == again.report_path.read_text()


@pytest.mark.slow
@pytest.mark.parametrize("method", ["dora", "full"])
def test_dora_and_full_finetune_export(tmp_path, method):
    extra = f"{{method: {method}, max_steps: 2}}"
    _, ws, res = _train(tmp_path, extra)
    out = export_model(ws, res.model_id, gguf_dtype="f32")
    assert out.checks["merged"]["passed"] and out.checks["gguf"]["passed"]
    assert out.checks["merged"]["max_abs_logit_diff"] < 1e-4


@pytest.mark.slow
def test_tied_embeddings_are_written_once_and_load_back_tied(tmp_path):
    from gguf import GGUFReader
    from transformers import AutoModelForCausalLM, GgufConfig

    _, ws, res = _train(tmp_path, "{max_steps: 2}", tied=True)
    out = export_model(ws, res.model_id, gguf_dtype="f32")
    assert out.checks["gguf"]["passed"] and out.checks["gguf"]["max_abs_logit_diff"] < 1e-4
    assert "output.weight" not in {t.name for t in GGUFReader(str(out.gguf_path)).tensors}
    model = AutoModelForCausalLM.from_pretrained(out.gguf_path.parent, gguf_file=out.gguf_path.name,
                                                 quantization_config=GgufConfig(dequantize=True))
    assert model.config.tie_word_embeddings


@pytest.mark.slow
def test_fallback_template_is_written_into_the_exported_tokenizers(tmp_path):
    from transformers import AutoTokenizer

    _, ws, res = _train(tmp_path, "{max_steps: 2}", chat_template=False)
    out = export_model(ws, res.model_id, gguf_dtype="f32")
    merged_tok = AutoTokenizer.from_pretrained(out.merged_dir)
    gguf_tok = AutoTokenizer.from_pretrained(out.gguf_path.parent, gguf_file=out.gguf_path.name)
    assert "<|im_start|>" in merged_tok.chat_template and gguf_tok.chat_template == merged_tok.chat_template
    assert any("chatml" in n for n in json.loads(out.report_path.read_text())["notes"])
    from gguf import GGUFReader

    # EOS is <|endoftext|> here; llama.cpp must also stop on the template's <|im_end|>
    eot = GGUFReader(str(out.gguf_path)).fields["tokenizer.ggml.eot_token_id"].contents()
    assert merged_tok.eos_token == "<|endoftext|>" and eot == merged_tok.convert_tokens_to_ids("<|im_end|>")


@pytest.mark.slow
def test_prompt_tuning_is_refused_with_the_reason(tmp_path):
    _, ws, res = _train(tmp_path, "{method: prompt_tuning, max_steps: 2, packing: false}")
    with pytest.raises(TunesmithError, match=r"prompt tuning.*no weights to merge.*Serve it as an adapter"):
        export_model(ws, res.model_id)


@pytest.mark.slow
def test_non_llama_gguf_auto_skips_with_the_reason_on_refuses_off_merges(tmp_path):
    _, ws, res = _train(tmp_path, "{max_steps: 2}", arch="qwen2")
    with pytest.raises(TunesmithError, match=r"Llama-architecture.*'qwen2'.*--gguf off"):
        export_model(ws, res.model_id, gguf=True, out_dir=tmp_path / "q")
    assert not (tmp_path / "q").exists()
    out = export_model(ws, res.model_id, out_dir=tmp_path / "q")  # the default: auto
    assert out.gguf_path is None and out.checks["merged"]["passed"]
    assert "'qwen2'" in out.gguf_skipped and not list((tmp_path / "q").glob("*.gguf"))
    assert json.loads(out.report_path.read_text())["gguf_skipped"] == out.gguf_skipped
    off = export_model(ws, res.model_id, gguf=False, out_dir=tmp_path / "off")
    assert off.gguf_path is None and off.gguf_skipped is None


def test_unknown_model_id_and_bad_dtype_are_clear_errors(tmp_path):
    ws = Workspace(tmp_path / "ws")
    with pytest.raises(TunesmithError, match="no model 'nope'"):
        export_model(ws, "nope")
    with pytest.raises(TunesmithError, match="gguf_dtype: 'q4' is not one of f32, f16, q8_0"):
        export_mod.check_exportable({"method": "lora", "weights": "adapter"}, gguf=True, gguf_dtype="q4")


def test_qk_row_order_is_what_transformers_gguf_loader_undoes():
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    rng = np.random.default_rng(0)
    q, k = rng.normal(size=(9 * 64, 576)).astype(np.float32), rng.normal(size=(3 * 64, 576)).astype(np.float32)
    proc = LlamaTensorProcessor(config={"num_attention_heads": 9, "num_key_value_heads": 3})
    back_q = proc.process(export_mod._gguf_rope_order(q, 9), "blk.0.attn_q.weight").weights
    back_k = proc.process(export_mod._gguf_rope_order(k, 3), "blk.0.attn_k.weight").weights
    assert np.array_equal(back_q, q) and np.array_equal(back_k, k)
    assert not np.array_equal(export_mod._gguf_rope_order(q, 9), q)


class _FixedLogits:
    """A stand-in model whose next-token logits are fixed: token 1 leads token 2 by ``margin``."""

    def __init__(self, margin: float):
        self.margin = margin

    def __call__(self, input_ids):
        from types import SimpleNamespace

        logits = torch.zeros(1, input_ids.shape[1], 4)
        logits[..., 1], logits[..., 2] = self.margin, 0.0
        return SimpleNamespace(logits=logits)


@pytest.mark.parametrize(("margin", "accepted"), [(0.01, True), (1.0, False)])
def test_a_greedy_flip_passes_only_at_a_near_tie(margin, accepted):
    """Rounding error 0.05 at the next token: a flip between tokens 0.01 apart is rounding,
    one between tokens 1.0 apart is a different model."""
    ref_logits = torch.zeros(3, 4)
    ref = export_mod.PromptRun(ref_logits, [1, 1, 3])
    run = export_mod.PromptRun(ref_logits + 0.05, [1, 2, 3])
    row = export_mod._compare(_FixedLogits(margin), [5, 6, 7], ref, run)
    assert row["first_divergence"] == 1 and row["next_token_logit_diff"] == pytest.approx(0.05)
    assert row["greedy_match"] is False and row["greedy_ok"] is accepted
