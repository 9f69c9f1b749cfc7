"""The train stage on a tiny random Llama: end to end, accumulation maths, exact resume,
methods, early stopping, pre-flight failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from models.tiny import save_model_dir
from tunesmith.config import load_config
from tunesmith.data.pipeline import prepare
from tunesmith.errors import TunesmithError
from tunesmith.train.recipe import train
from tunesmith.workspace import Workspace

CATS = ["billing", "shipping", "account"]


def make_project(root: Path, train_cfg: str = "", n: int = 60, arch: str = "llama") -> Path:
    save_model_dir(root / "tiny", arch)
    (root / "data").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        cat = CATS[i % 3]
        user = f"ticket {i} about my {cat} problem, reference {i * 37 % 101}, please help soon"
        lines.append(json.dumps({"messages": [{"role": "user", "content": user},
                                              {"role": "assistant", "content": cat}]}))
    (root / "data" / "t.jsonl").write_text("\n".join(lines) + "\n")
    base = {"max_length": 96, "batch_size": 2, "max_steps": 6, "eval_every": 2, "save_every": 2,
            "lr": 0.01, "precision": "fp32", "tracking": {"mlflow": False, "tensorboard": False},
            "lora": {"dropout": 0.0}}
    (root / "tunesmith.yaml").write_text(
        "data:\n  sources: [{path: data/t.jsonl}]\n  pii: {enabled: false}\n  workers: 1\n"
        "model:\n  base: tiny\n"
        f"train: {json.dumps(base)}\n"
    )
    if train_cfg:
        import yaml

        data = yaml.safe_load((root / "tunesmith.yaml").read_text())
        data["train"].update(yaml.safe_load(train_cfg))
        (root / "tunesmith.yaml").write_text(yaml.safe_dump(data))
    cfg = load_config(root)
    prepare(cfg)
    return root / "tunesmith.yaml"


def adapter_weights(result) -> dict[str, torch.Tensor]:
    return load_file(str(result.path / "adapter" / "adapter_model.safetensors"))


def test_lora_end_to_end_registers_a_loadable_model_version(tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    cfg = load_config(make_project(tmp_path, "{max_steps: 12, tracking: {tensorboard: true}}"))
    events = []
    res = train(cfg, log=events.append)
    assert res.model_id and (res.path / "adapter" / "adapter_config.json").exists()
    record = json.loads((res.path / "model_version.json").read_text())
    assert record["snapshot"] and record["base_model"] == "tiny" and record["method"] == "lora"
    losses = [e["loss"] for e in events if e.get("event") == "step"]
    assert len(losses) == 12 and sum(losses[-3:]) < sum(losses[:3])  # it learns
    evals = [e for e in events if e.get("event") == "eval"]
    assert [e["step"] for e in evals] == [2, 4, 6, 8, 10, 12]
    assert (res.path / "loss.png").exists() and list((res.run_dir / "tensorboard").iterdir())
    base = AutoModelForCausalLM.from_pretrained(tmp_path / "tiny")
    loaded = PeftModel.from_pretrained(base, res.path / "adapter")  # PEFT format
    assert loaded.peft_config["default"].r == 16


def test_grad_accumulation_equals_the_full_batch(tmp_path):
    """One step over micro-batches [a, b] with accumulation == one step over the batch a+b."""
    from tunesmith.train.packing import collate_packed, pack_examples

    cfg = load_config(make_project(tmp_path, "{max_steps: 1}"))
    weights = []
    for accum in (1, 2):
        trainer = _trainer(cfg, tmp_path / f"run{accum}")
        rows = pack_examples(trainer.train_set[:12], max_length=96).rows
        # make the halves very unequal in token count: per-micro-batch means would differ
        halves = [rows[:1], rows[1:]]
        pad = trainer.pad_id
        batches = ([collate_packed(rows, pad_id=pad)] if accum == 1 else
                   [collate_packed(h, pad_id=pad) for h in halves])
        batches = [b | {"_tokens": torch.tensor(1)} for b in batches]
        trainer._train_step(batches)
        weights.append({k: v.clone() for k, v in trainer.model.named_parameters() if v.requires_grad})
    for k in weights[0]:
        torch.testing.assert_close(weights[0][k], weights[1][k], rtol=1e-5, atol=1e-6)


def _trainer(cfg, run_dir, n_val=0):
    from tunesmith.data.pipeline import load_split
    from tunesmith.models.loading import load_model, load_tokenizer
    from tunesmith.train.masks import tokenize_examples
    from tunesmith.train.methods import apply_method
    from tunesmith.train.recipe import resolve_snapshot
    from tunesmith.train.trainer import Trainer
    from tunesmith.workspace import Workspace

    tok = load_tokenizer(str(cfg.resolve("tiny")))
    _, snap = resolve_snapshot(Workspace(cfg.workspace_dir), None)
    examples = tokenize_examples(tok, load_split(snap, "train"))
    torch.manual_seed(0)
    model = apply_method(load_model(str(cfg.resolve("tiny"))), cfg.train, tok)
    return Trainer(model, cfg.train, train=examples, validation=examples[:n_val], pad_id=tok.pad_token_id,
                   seed=1, run_dir=run_dir)


def test_same_seed_same_weights(tmp_path):
    a = train(load_config(make_project(tmp_path / "a")))
    b = train(load_config(make_project(tmp_path / "b")))
    for k, v in adapter_weights(a).items():
        assert torch.equal(v, adapter_weights(b)[k]), k


@pytest.mark.slow
def test_sigkill_then_resume_ends_with_the_same_weights(tmp_path):
    """Kill -9 mid-run (after the step-4 checkpoint, at step 5); --resume finishes identically."""
    extra = "{max_steps: 8, save_every: 2, lora: {dropout: 0.1}}"  # dropout: RNG must resume too
    straight = train(load_config(make_project(tmp_path / "straight", extra)))
    cfg_path = make_project(tmp_path / "killed", extra)
    cli = [sys.executable, "-m", "tunesmith.cli", "train", "-c", str(cfg_path), "--json"]
    env = {**os.environ, "TUNESMITH_TEST_KILL_AT_STEP": "5"}
    killed = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    resumed = subprocess.run([*cli, "--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    out = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert out["metrics"]["steps"] == 8
    b = load_file(str(Path(out["path"]) / "adapter" / "adapter_model.safetensors"))
    for k, v in adapter_weights(straight).items():
        assert torch.equal(v, b[k]), k


def _interrupt_after(monkeypatch, step: int):
    """Make the trainer raise Ctrl-C once ``step`` steps are done; returns the real step function."""
    from tunesmith.train import trainer as trainer_mod

    real = trainer_mod.Trainer._train_step

    def interrupting(self, batches):
        if self.state.step == step:
            raise KeyboardInterrupt
        real(self, batches)

    monkeypatch.setattr(trainer_mod.Trainer, "_train_step", interrupting)
    return real


def test_keyboard_interrupt_saves_a_checkpoint_and_resume_continues(tmp_path, monkeypatch):
    from tunesmith.train import trainer as trainer_mod

    cfg = load_config(make_project(tmp_path, "{max_steps: 6, save_every: 100}"))
    real = _interrupt_after(monkeypatch, 3)
    res = train(cfg)
    assert res.interrupted and res.model_id is None
    assert [p.name for p in (res.run_dir / "checkpoints").iterdir()] == ["step-000003"]
    with pytest.raises(TunesmithError, match="--resume"):
        train(cfg)
    monkeypatch.setattr(trainer_mod.Trainer, "_train_step", real)
    done = train(cfg, resume=True)
    assert done.metrics["steps"] == 6 and done.model_id
    again = train(cfg, resume=True)  # finished: the same version, nothing trained or registered again
    assert again.reused and again.model_id == done.model_id
    assert len(Workspace(cfg.workspace_dir).list("model")) == 1


@pytest.mark.parametrize("method", ["dora", "full", "prompt_tuning"])
def test_other_methods_train_and_export(tmp_path, method):
    extra = f"{{method: {method}, max_steps: 2, packing: {str(method != 'prompt_tuning').lower()}}}"
    res = train(load_config(make_project(tmp_path, extra)))
    folder = "model" if method == "full" else "adapter"
    assert list((res.path / folder).glob("*.safetensors"))
    assert res.metrics["steps"] == 2


def test_full_fine_tuning_of_tied_embeddings_checkpoints_and_reloads(tmp_path):
    """Input embeddings and output head are one tensor (GPT-2, SmolLM2): saved once, and
    the best weights reload with the tie intact."""
    from transformers import AutoModelForCausalLM

    cfg = load_config(make_project(tmp_path, "{method: full, max_steps: 4}", arch="gpt2"))
    trainer = _trainer(cfg, tmp_path / "run", n_val=6)
    model = trainer._unwrapped()
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    trainer.fit()
    trained = model.lm_head.weight.detach().clone()
    with torch.no_grad():
        model.lm_head.weight.zero_()
    trainer.load_best()
    torch.testing.assert_close(model.transformer.wte.weight, model.lm_head.weight)
    assert model.lm_head.weight.abs().sum() > 0 and trainer.state.best_step == 4
    torch.testing.assert_close(model.lm_head.weight, trained)
    res = train(cfg)  # and the exported model version loads as a plain HF checkpoint
    exported = AutoModelForCausalLM.from_pretrained(res.path / "model")
    torch.testing.assert_close(exported.lm_head.weight, exported.transformer.wte.weight)


def test_qlora_on_cpu_is_a_clear_error_before_loading(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("has a GPU")
    cfg = load_config(make_project(tmp_path, "{method: qlora}"))
    with pytest.raises(TunesmithError, match="qlora needs a CUDA GPU"):
        train(cfg)


def test_early_stopping(tmp_path):
    cfg = load_config(make_project(tmp_path, "{lr: 1.0e-9, max_steps: 40, eval_every: 1, early_stopping_patience: 2}"))
    res = train(cfg)
    assert res.metrics["stopped_early"] and res.metrics["steps"] < 40


def test_preflight_failure_names_the_problem_and_the_fix(tmp_path):
    cfg = load_config(make_project(tmp_path, "{max_length: 20}"))
    with pytest.raises(TunesmithError, match=r"truncated_answer.*\n?.*|no_trainable") as info:
        train(cfg)
    assert "train.on_bad_examples: drop" in str(info.value)


def test_max_length_beyond_context_and_empty_snapshot_errors(tmp_path):
    cfg = load_config(make_project(tmp_path, "{max_length: 4096}"))
    with pytest.raises(TunesmithError, match="max_position_embeddings 256"):
        train(cfg)
    with pytest.raises(TunesmithError, match="no snapshot 'nope'"):
        train(cfg, snapshot="nope")


def test_rehearsal_mixes_general_examples_and_is_recorded(tmp_path):
    general = tmp_path / "general.jsonl"
    make_project(tmp_path)  # builds the folder first
    general.write_text("\n".join(json.dumps({"text": f"General sentence number {i} about rivers and hills."})
                                 for i in range(20)) + "\n")
    cfg = load_config(make_project(tmp_path, "{max_steps: 2, rehearsal: {path: general.jsonl, ratio: 0.5}}"))
    events = []
    res = train(cfg, log=events.append)
    assert any(e.get("event") == "preflight" and e["split"] == "rehearsal" and e["examples"] == 20 for e in events)
    record = json.loads((res.path / "model_version.json").read_text())
    assert record["rehearsal"] == "file:general.jsonl"
    from tunesmith.train.trainer import Trainer

    # the epoch holds the train split plus ratio/(1-ratio) as many rehearsal examples
    trainer = _trainer(cfg, tmp_path / "r")
    trainer.rehearsal = trainer.train_set[:5]
    n = len(trainer.train_set)
    assert len(Trainer._epoch_examples(trainer, 0)) == n + round(n * 0.5 / 0.5)


def test_mlflow_run_records_params_and_metrics(tmp_path):
    import mlflow

    cfg = load_config(make_project(tmp_path, "{max_steps: 2, tracking: {mlflow: true, tensorboard: false}}"))
    res = train(cfg)
    run_id = (res.run_dir / "mlflow_run_id").read_text().strip()
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{cfg.workspace_dir / 'mlflow.db'}")
    run = client.get_run(run_id)
    assert run.data.params["train.method"] == "lora" and "snapshot" in run.data.params
    assert "train_loss" in run.data.metrics and "val_loss" in run.data.metrics
    assert run.info.status == "FINISHED"


def test_lora_plus_gives_b_matrices_a_faster_rate_through_the_schedule(tmp_path):
    cfg = load_config(make_project(tmp_path, "{max_steps: 4, warmup_ratio: 0.5, lora: {plus_ratio: 8}}"))
    trainer = _trainer(cfg, tmp_path / "run")
    groups = trainer.optimizer.param_groups
    assert len(groups) == 2
    named = {id(p): n for n, p in trainer.model.named_parameters()}
    slow, fast = ([named[id(p)] for p in g["params"]] for g in groups)
    assert fast and all(".lora_B." in n for n in fast) and not any(".lora_B." in n for n in slow)
    assert any(".lora_A." in n for n in slow)
    for _ in range(3):  # warmup then decay: the ratio holds at every step
        trainer.optimizer.step()  # no gradients yet: a no-op that keeps torch's order
        trainer.scheduler.step()
        lrs = [g["lr"] for g in groups]
        assert lrs[1] == pytest.approx(8 * lrs[0])
    # plain LoRA keeps one group at the configured rate
    plain = _trainer(load_config(make_project(tmp_path / "plain")), tmp_path / "plain-run")
    assert len(plain.optimizer.param_groups) == 1


def _fake_answers(monkeypatch, finish=lambda i: "stop"):
    """The tiny random model never ends a turn; give the engine answers of known shape."""
    from tunesmith.generate.engine import Engine, Generation

    class Calls(list):
        engines: list  # (max_batch_size, bf16_autocast) of each engine asked

    calls = Calls()
    engines = calls.engines = []

    def generate(self, conversations, cfg=None, *, adapter=None):
        calls.append(len(conversations))
        engines.append((self.max_batch_size, self.bf16_autocast))
        return [Generation(f"answer {i}", 3, 10, finish(i), 0.0) for i in range(len(conversations))]

    monkeypatch.setattr(Engine, "generate", generate)
    return calls


def test_self_rehearsal_keeps_finished_answers_and_caches_them(tmp_path, monkeypatch):
    from models.tiny import build_model, build_tokenizer
    from tunesmith.evaluate.probes import GENERAL_QA
    from tunesmith.train.rehearsal import GENERAL_INSTRUCTIONS, self_rehearsal

    tok = build_tokenizer()
    model = build_model("llama", tok)
    calls = _fake_answers(monkeypatch, finish=lambda i: "length" if i % 3 == 0 else "stop")
    kw = {"fingerprint": "abc", "cache_dir": tmp_path}
    got = self_rehearsal(model, tok, 9, **kw)
    assert calls == [9] and len(got) == 6  # cut-off answers are dropped
    assert got[0].messages == [{"role": "user", "content": GENERAL_INSTRUCTIONS[1]},
                               {"role": "assistant", "content": "answer 1"}]
    assert [e.messages for e in self_rehearsal(model, tok, 9, **kw)] == [e.messages for e in got]
    assert calls == [9]  # second call: read from the cache, no generation
    self_rehearsal(model, tok, 9, fingerprint="other-base", cache_dir=tmp_path)
    assert calls == [9, 9]  # another base model answers afresh
    self_rehearsal(model, tok, 9, bf16=True, **kw)
    assert calls == [9, 9, 9]  # another precision answers afresh
    assert calls.engines == [(9, False), (9, False), (9, True)]  # every instruction in flight at once
    # rehearsal must not teach the forgetting check's questions
    assert not {q for q, _ in GENERAL_QA} & set(GENERAL_INSTRUCTIONS)


def test_self_distilled_rehearsal_is_trained_and_recorded(tmp_path, monkeypatch):
    _fake_answers(monkeypatch)
    cfg = load_config(make_project(tmp_path, "{max_steps: 2, rehearsal: {self_distill: 5, ratio: 0.5}}"))
    events = []
    res = train(cfg, log=events.append)
    assert any(e.get("event") == "preflight" and e["split"] == "rehearsal" and e["examples"] == 5 for e in events)
    assert json.loads((res.path / "model_version.json").read_text())["rehearsal"] == "self:5"
    assert list((cfg.workspace_dir / "cache").glob("self-rehearsal-*.jsonl"))


def test_text_rehearsal_samples_the_base_once_and_trains_on_plain_text(tmp_path, monkeypatch):
    from tunesmith.evaluate.probes import GENERAL_TEXT
    from tunesmith.generate.engine import Engine, Generation
    from tunesmith.train.rehearsal import GENERAL_OPENINGS

    calls = []

    def complete(self, texts, cfg=None, *, adapter=None):
        calls.append((len(texts), cfg.temperature, cfg.seed))
        return [Generation(f"and then {i}.", 4, 10, "stop", 0.0) for i in range(len(texts))]

    monkeypatch.setattr(Engine, "complete", complete)
    _fake_answers(monkeypatch)
    cfg = load_config(make_project(tmp_path, "{max_steps: 2, rehearsal: {self_distill: 3, self_distill_text: 4, ratio: 0.5}}"))
    events = []
    res = train(cfg, log=events.append)
    assert calls == [(4, 1.0, cfg.seed)]  # sampled from the base model's own distribution, seeded
    assert any(e.get("event") == "preflight" and e["split"] == "rehearsal" and e["examples"] == 7 for e in events)
    assert json.loads((res.path / "model_version.json").read_text())["rehearsal"] == "self:3+self-text:4"
    cached = list((cfg.workspace_dir / "cache").glob("self-rehearsal-text-*.jsonl"))
    assert len(cached) == 1 and json.loads(cached[0].read_text().splitlines()[0]) == {
        "text": f"{GENERAL_OPENINGS[0]} and then 0."}
    # a second run on the same base reads the cache
    from tunesmith.train.rehearsal import self_rehearsal_text

    again = self_rehearsal_text(None, None, 4, fingerprint=json.loads((res.path / "model_version.json").read_text())["base_fingerprint"],
                                cache_dir=cfg.workspace_dir / "cache", seed=cfg.seed)
    assert calls == [(4, 1.0, cfg.seed)] and again[1].text == f"{GENERAL_OPENINGS[1]} and then 1." and not again[1].is_chat
    # rehearsal must not teach the forgetting check's text
    assert not any(o.split()[:4] == t.split()[:4] for o in GENERAL_OPENINGS for t in GENERAL_TEXT)


def _backward_stops_above_layer_0(model, tok) -> None:
    """One training step; the first layer's output must carry no autograd graph."""
    model.train()
    first = next(m for n, m in model.named_modules() if n.endswith(("layers.0", "h.0")))
    seen = []
    first.register_forward_hook(lambda mod, args, out: seen.append(out[0] if isinstance(out, tuple) else out))
    ids = torch.randint(3, len(tok), (2, 12))
    model(input_ids=ids, labels=ids).loss.backward()
    assert seen and not seen[0].requires_grad  # no autograd graph below the trained layers


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_top_layers_adapts_only_the_last_layers_and_stops_backward_there(arch):
    from models.tiny import build_model, build_tokenizer
    from tunesmith.config import TrainConfig
    from tunesmith.train.methods import apply_method

    tok = build_tokenizer()

    def lora_modules(top):
        cfg = TrainConfig(lora={"top_layers": top})
        model = apply_method(build_model(arch, tok), cfg, tok)
        return model, {n.split(".lora_A")[0] for n, _ in model.named_parameters() if ".lora_A." in n}

    _, everywhere = lora_modules(None)
    _, all_by_name = lora_modules(2)  # both tiny layers, selected by name: same modules as all-linear
    assert all_by_name == everywhere
    model, top = lora_modules(1)
    assert top and top == {n for n in everywhere if ".1." in n}
    _backward_stops_above_layer_0(model, tok)
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    assert all(".1." in n for n in trained)
    with pytest.raises(TunesmithError, match="top_layers: 3 is more than the model's 2 layers"):
        apply_method(build_model(arch, tok), TrainConfig(lora={"top_layers": 3}), tok)
    # the default (10, chosen on the 30-layer starter) adapts every layer of a smaller model
    assert TrainConfig().lora.top_layers == 10
    default = apply_method(build_model(arch, tok), TrainConfig(), tok)
    assert {n.split(".lora_A")[0] for n, _ in default.named_parameters() if ".lora_A." in n} == everywhere


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_full_top_layers_trains_the_last_layers_and_final_norm_only(tmp_path, arch):
    from models.tiny import build_model, build_tokenizer
    from tunesmith.config import TrainConfig
    from tunesmith.train.methods import apply_method, load_trainable_state, trainable_state

    tok = build_tokenizer()
    cfg = TrainConfig(method="full", full={"top_layers": 1})
    model = apply_method(build_model(arch, tok), cfg, tok)
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    final_norm = "model.norm.weight" if arch == "llama" else "transformer.ln_f.weight"
    assert final_norm in trained
    assert all(".1." in n or "norm" in n or "ln_f" in n for n in trained)
    assert not any("embed" in n or "wte" in n or "wpe" in n or "lm_head" in n for n in trained)
    _backward_stops_above_layer_0(model, tok)
    assert all((p.grad is not None) == (n in trained) for n, p in model.named_parameters())
    # checkpoints hold the trained weights only, and load back into a fresh base
    state = trainable_state(model, cfg)
    assert set(state) == trained
    fresh = apply_method(build_model(arch, tok), cfg, tok)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in trained:
                p.add_(1.0)
    load_trainable_state(fresh, cfg, trainable_state(model, cfg))
    for n, p in fresh.named_parameters():
        assert torch.equal(p, dict(model.named_parameters())[n]), n
    with pytest.raises(TunesmithError, match="checkpoint does not match"):
        load_trainable_state(fresh, cfg, {k: v for k, v in state.items() if k != final_norm})
    with pytest.raises(TunesmithError, match=r"train\.full\.top_layers: 3 is more than the model's 2 layers"):
        apply_method(build_model(arch, tok), TrainConfig(method="full", full={"top_layers": 3}), tok)


def test_full_top_layers_trains_exports_and_resumes(tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    from tunesmith.train import trainer as trainer_mod

    cfg = load_config(make_project(tmp_path, "{method: full, full: {top_layers: 1}, max_steps: 4, save_every: 100}"))
    real = _interrupt_after(monkeypatch, 2)
    assert train(cfg).interrupted
    monkeypatch.setattr(trainer_mod.Trainer, "_train_step", real)
    res = train(cfg, resume=True)
    assert res.metrics["steps"] == 4
    exported = AutoModelForCausalLM.from_pretrained(res.path / "model")
    base = AutoModelForCausalLM.from_pretrained(cfg.resolve("tiny"))
    same = {n for n, p in base.named_parameters() if torch.equal(p, dict(exported.named_parameters())[n])}
    assert "model.embed_tokens.weight" in same and any("layers.0." in n for n in same)
    assert not any("layers.1." in n for n in same)  # the trained layer changed


def test_default_tracking_writes_tensorboard_events_and_an_mlflow_run(tmp_path):
    """The README's set-up must carry what the default config turns on (TensorBoard + MLflow)."""
    import mlflow
    import yaml
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    path = make_project(tmp_path, "{max_steps: 2}")
    data = yaml.safe_load(path.read_text())
    del data["train"]["tracking"]  # the defaults, as a user's config has them
    path.write_text(yaml.safe_dump(data))
    cfg = load_config(path)
    assert cfg.train.tracking.tensorboard and cfg.train.tracking.mlflow
    res = train(cfg)
    events = EventAccumulator(str(res.run_dir / "tensorboard"))
    events.Reload()
    assert {"train/loss", "val/loss"} <= set(events.Tags()["scalars"])
    run_id = (res.run_dir / "mlflow_run_id").read_text().strip()
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{cfg.workspace_dir / 'mlflow.db'}")
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and "train_loss" in run.data.metrics
    # and the version is in MLflow's model registry, linked to its run, without a promote
    versions = client.search_model_versions(f"name = '{cfg.project}'")
    assert [v.tags["tunesmith.model_id"] for v in versions] == [res.model_id] and versions[0].run_id == run_id


def test_durations_parse_and_bad_ones_are_config_errors(tmp_path):
    from tunesmith.config import parse_duration
    from tunesmith.errors import ConfigError

    assert [parse_duration(t) for t in ("15m", "2h", "1h30m", "900s", "1.5h")] == [900, 7200, 5400, 900, 5400]
    for bad in ("15", "fifteen minutes", "0m", "5m 3x"):
        with pytest.raises(ValueError, match=r"duration|longer than 0"):
            parse_duration(bad)
    with pytest.raises(ConfigError, match=r"train\.time_budget: '10 minutes' is not a duration"):
        load_config(make_project(tmp_path, "{time_budget: 10 minutes}"))


def test_budget_planning_counts_validation_and_never_plans_backwards():
    from tunesmith.train.trainer import _Budget

    b = _Budget(seconds=100.0, eval_every=10, step_times=[5.0] + [0.5] * 6, eval_seconds=[2.0])
    assert b.step_seconds() == 0.5  # the first (warm-up) step is left out
    # 100 s - 10 used - 2 for the final validation = 88 s at 0.5 + 2/10 s per step: 125 more steps
    assert b.steps_that_fit(step=7, used=10.0, eval_cost=2.0) == 7 + 125
    assert b.steps_that_fit(step=7, used=120.0, eval_cost=2.0) == 7  # over budget: no more steps


@pytest.mark.slow
def test_a_time_budget_cuts_the_steps_and_ends_the_schedule_on_time(tmp_path, monkeypatch):
    """On a simulated clock (0.05 s per step, 0.5 s per validation) the plan is exact."""
    from types import SimpleNamespace

    import tunesmith.train.trainer as trainer_mod

    clock = [0.0]
    monkeypatch.setattr(trainer_mod, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    step, validate = trainer_mod.Trainer._train_step, trainer_mod.Trainer.validate

    def timed_step(self, batches):
        clock[0] += 0.05
        return step(self, batches)

    def timed_validate(self):
        clock[0] += 0.5
        return validate(self)

    monkeypatch.setattr(trainer_mod.Trainer, "_train_step", timed_step)
    monkeypatch.setattr(trainer_mod.Trainer, "validate", timed_validate)
    cfg = load_config(make_project(tmp_path, "{max_steps: 100000, eval_every: 20, time_budget: 10s, "
                                             "early_stopping_patience: null}"))
    events = []
    train(cfg, log=events.append)
    budget = [e for e in events if e["event"] == "budget"]
    assert budget[0]["step"] == 6 and budget[0]["planned_steps"] == 100000
    # 10 s = k × (0.05 + 0.5 / 20) + 0.5 for the last validation: 126 steps in all
    steps = [e for e in events if e["event"] == "step"]
    assert steps[-1]["step"] == steps[-1]["total_steps"] == budget[-1]["total_steps"] == 126
    evals = [e for e in events if e["event"] == "eval"]
    assert evals[-1]["step"] == 126  # the last step is validated
    assert steps[-1]["lr"] < 0.01 * cfg.train.lr  # the cosine schedule ran to its end, not cut mid-way
    assert clock[0] <= 10.0 + 1e-9


def test_progress_without_a_terminal_prints_plain_lines_with_eta():
    import io

    from rich.console import Console

    from tunesmith.cli import _TrainProgress

    buf = io.StringIO()
    progress = _TrainProgress(Console(file=buf, width=200), quiet=False, every=0.0)
    for step in (1, 2, 3):
        progress({"event": "step", "step": step, "total_steps": 10, "loss": 1.0 / step, "tokens": 500,
                  "seconds": 0.5})
    progress.close()
    lines = buf.getvalue().splitlines()
    assert len(lines) == 3 and lines[2].startswith("step 3/10  loss 0.3333  1,000 tok/s  elapsed ")
    assert " ETA " in lines[2]
