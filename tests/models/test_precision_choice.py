"""`auto` precision is decided by measuring bf16 against float32 matmuls on this CPU, once per
machine (models/precision.py): native bf16 instructions alone do not make bf16 faster."""

from __future__ import annotations

import json

import pytest
import torch

import tunesmith.models.precision as precision
from tunesmith.config import TrainConfig
from tunesmith.train.trainer import precision_for


@pytest.fixture
def machine(monkeypatch, tmp_path):
    """A CPU whose flags and matmul rates the test sets; an empty cache folder; no GPU."""
    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    state = {"flags": {"avx2", "avx512f", "avx512_bf16"}, "rates": {torch.float32: 335.0, torch.bfloat16: 169.0},
             "measured": 0}

    def rate(dtype, **_):
        state["measured"] += 1
        return state["rates"][dtype]

    monkeypatch.setattr(precision, "cpu_flags", lambda: state["flags"])
    monkeypatch.setattr(precision, "matmul_gflops", rate)
    precision.cpu_bf16_pays.cache_clear()
    yield state
    precision.cpu_bf16_pays.cache_clear()


def test_bf16_flags_with_slower_bf16_matmuls_choose_fp32(machine, tmp_path):
    assert precision.cpu_bf16_pays() is False
    assert precision_for(TrainConfig()) == "no"
    assert precision.use_bf16("auto") is False
    stored = json.loads((tmp_path / "precision.json").read_text())
    [entry] = stored.values()
    assert entry == {"fp32_gflops": 335.0, "bf16_gflops": 169.0, "bf16": False}


def test_clearly_faster_bf16_matmuls_choose_bf16(machine):
    machine["flags"] = {"avx512f", "avx512_bf16", "amx_bf16"}
    machine["rates"] = {torch.float32: 174.0, torch.bfloat16: 388.0}
    assert precision.cpu_bf16_pays() is True
    assert precision_for(TrainConfig()) == "bf16"
    assert precision.use_bf16("auto") is True


def test_a_marginal_bf16_gain_is_not_worth_changed_answers(machine):
    machine["rates"] = {torch.float32: 200.0, torch.bfloat16: 200.0 * (precision.BF16_MIN_SPEEDUP - 0.01)}
    assert precision.cpu_bf16_pays() is False


def test_without_native_bf16_nothing_is_measured(machine, tmp_path):
    machine["flags"] = {"avx2", "fma"}
    assert precision.cpu_bf16_pays() is False
    assert machine["measured"] == 0 and not (tmp_path / "precision.json").exists()


def test_measured_once_per_machine_then_read_from_the_cache(machine):
    assert precision.cpu_bf16_pays() is False
    assert machine["measured"] == 2
    precision.cpu_bf16_pays.cache_clear()  # a new process: the file decides, nothing is re-measured
    machine["rates"] = {torch.float32: 1.0, torch.bfloat16: 1000.0}
    assert precision.cpu_bf16_pays() is False
    assert machine["measured"] == 2


def test_a_broken_cache_file_is_measured_again(machine, tmp_path):
    (tmp_path / "precision.json").write_text("not json")
    assert precision.cpu_bf16_pays() is False
    assert machine["measured"] == 2


def test_explicit_settings_win_over_the_measurement(machine):
    machine["rates"] = {torch.float32: 1000.0, torch.bfloat16: 1.0}
    precision._warn_if_bf16_is_slow.cache_clear()
    assert precision.use_bf16("fp32") is False
    assert precision_for(TrainConfig(precision="fp32")) == "no"
    assert machine["measured"] == 0  # fp32 measures nothing
    assert precision.use_bf16("bf16") is True  # far slower here, and still obeyed (measured once to warn)
    precision._warn_if_bf16_is_slow.cache_clear()


def test_the_probe_measures_a_real_matmul_rate():
    assert precision.matmul_gflops(torch.float32, seconds=0.01, shape=(64, 64, 64)) > 0.1


@pytest.mark.parametrize(("rates", "warned"), [({torch.float32: 335.0, torch.bfloat16: 169.0}, True),
                                               ({torch.float32: 174.0, torch.bfloat16: 388.0}, False)])
def test_an_explicit_bf16_is_kept_with_a_warning_where_it_is_slower(machine, caplog, rates, warned):
    """A project config that pins bf16 (written elsewhere, or by an older template) answered at
    half speed on this kind of CPU without a word: it is obeyed, and said once."""
    machine["flags"] = {"avx512f", "avx512_bf16", "amx_bf16"}
    machine["rates"] = rates
    precision._warn_if_bf16_is_slow.cache_clear()
    with caplog.at_level("WARNING", logger="tunesmith.models.precision"):
        assert precision.use_bf16("bf16") is True
        assert precision.use_bf16("bf16") is True
        assert precision.use_bf16("fp32") is False
    said = [r.getMessage() for r in caplog.records if "bf16" in r.getMessage()]
    assert len(said) == (1 if warned else 0)
    if warned:
        assert "precision: auto" in said[0] and "precision.json" in said[0]
    precision._warn_if_bf16_is_slow.cache_clear()
