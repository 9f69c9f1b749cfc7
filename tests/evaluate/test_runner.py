"""`tunesmith eval` / `run` end to end on a tiny model: the ladder, the pack, the report, reuse,
and clear errors for user mistakes."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from train.test_trainer import make_project
from tunesmith.cli import app
from tunesmith.config import load_config
from tunesmith.errors import TunesmithError
from tunesmith.evaluate.runner import evaluate
from tunesmith.train.recipe import train

EVAL = ("{max_cases: 6, rungs: [zero_shot, rag, finetuned, finetuned_rag], generation: {max_new_tokens: 6}, "
        "bootstrap_resamples: 200, output: {kind: label, labels: [billing, shipping, account]}}")


def project(tmp_path, eval_cfg: str = EVAL):
    import yaml

    path = make_project(tmp_path, "{max_steps: 4}")
    kb = tmp_path / "kb"
    kb.mkdir()
    (kb / "billing.md").write_text("# Billing\n\nDouble charges are refunded within 5 days.\n")
    (kb / "shipping.md").write_text("# Shipping\n\nParcels arrive in 7 days; late parcels are reshipped.\n")
    data = yaml.safe_load(path.read_text())
    data["data"]["knowledge_base"] = "kb"
    data["eval"] = yaml.safe_load(eval_cfg)
    path.write_text(yaml.safe_dump(data))
    return load_config(path)


@pytest.mark.slow
def test_eval_runs_the_ladder_and_writes_the_report(tmp_path):
    cfg = project(tmp_path)
    version = train(cfg)
    events = []
    res = evaluate(cfg, log=events.append)
    r = res.results
    assert list(r.ladder) == ["zero_shot", "rag", "finetuned", "finetuned_rag"]
    assert r.headline == "label_acc" and r.cases == 6 and r.model == version.model_id
    for rung in r.ladder.values():
        m = rung.metrics["label_acc"]
        assert m.n == 6 and m.low <= m.mean <= m.high
        assert len(rung.answers) == 6
    # RAG rungs saw the knowledge base in their prompt
    assert r.ladder["rag"].cost.prompt_tokens > r.ladder["zero_shot"].cost.prompt_tokens
    assert r.lead.baseline in ("zero_shot", "rag")
    f = r.forgetting
    assert None not in (f.ppl_before, f.ppl_after, f.qa_before, f.qa_after)
    assert r.probes["finetuned"].injection_probes == 6
    # results.json is the typed record, and reads back to the same bytes
    from tunesmith.evaluate.results import load_results

    text = (res.path / "results.json").read_text()
    assert load_results(res.path).to_json() == text == r.to_json()
    assert json.loads(text)["gate"]["checks"] == [c.model_dump() for c in res.checks]
    timed = [e["phase"] for e in events if e["event"] == "phase_done"]
    assert timed == ["probes", "forgetting", "test_perplexity"]
    for name in ("report.html", "report.md", "gate.xml", "results.json", "ladder.png"):
        assert (res.path / name).exists(), name
    assert "Recommendation" in (res.path / "report.md").read_text()
    # results are stored per (model version, pack) so versions compare over time
    from tunesmith.workspace import Workspace

    history = Workspace(cfg.workspace_dir).eval_history(r.pack, "label_acc")
    assert {h["rung"] for h in history} == set(r.ladder)
    # the same inputs are reused by `run`, the pack is frozen (same id)
    again = evaluate(cfg, reuse=True)
    assert again.reused and again.eval_id == res.eval_id
    assert again.results.to_json() == text and again.checks == res.checks


@pytest.mark.slow
def test_cli_run_gate_exit_code_and_json(tmp_path):
    cfg = project(tmp_path, EVAL.replace("}}", "}, gate: {min_lift: 0.9}}"))
    junit = tmp_path / "gate.xml"
    res = CliRunner().invoke(app, ["run", "-c", str(cfg.base_dir), "--gate", "--json"])
    assert res.exit_code == 1, res.output  # a 0.9 lift cannot happen on a 4-step tiny model
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["passed"] is False and set(summary["seconds"]) == {"prepare", "train", "eval"}
    res = CliRunner().invoke(app, ["eval", "-c", str(cfg.base_dir), "--junit", str(junit)])
    assert res.exit_code == 0 and "<testsuite" in junit.read_text()
    res = CliRunner().invoke(app, ["eval", "-c", str(cfg.base_dir), "--max-cases", "3", "--json"])
    assert res.exit_code == 0, res.output
    assert {m["n"] for m in json.loads(res.stdout.strip().splitlines()[-1])["ladder"].values()} == {3}


def test_clear_errors_for_missing_pieces(tmp_path):
    cfg = project(tmp_path)
    with pytest.raises(TunesmithError, match=r"run `tunesmith train` first"):
        evaluate(cfg)
    with pytest.raises(TunesmithError, match="no model 'deadbeef'"):
        evaluate(cfg, model="deadbeef")
    cfg.data.knowledge_base = None
    cfg.eval.rungs = ["zero_shot", "rag"]
    with pytest.raises(TunesmithError, match=r"data\.knowledge_base"):
        evaluate(cfg)


def test_reference_outside_the_label_set_is_a_clear_error(tmp_path):
    cfg = project(tmp_path, EVAL.replace("rungs: [zero_shot, rag, finetuned, finetuned_rag]", "rungs: [zero_shot]")
                  .replace("kind: label, labels: [billing, shipping, account]",
                           "kind: json, label_fields: [category]"))
    with pytest.raises(TunesmithError, match="label_fields"):
        evaluate(cfg)


@pytest.mark.parametrize(("precision", "pays", "bf16"),
                         [("fp32", True, False), ("bf16", False, True), ("auto", True, True), ("auto", False, False)])
def test_generation_precision_reaches_the_engine(tmp_path, monkeypatch, precision, pays, bf16):
    import tunesmith.models.precision as precision_module
    from tunesmith.evaluate import runner
    from tunesmith.generate.engine import Engine

    cfg = project(tmp_path, "{generation: {precision: " + precision + ", batch_size: 3}}")
    seen = {}
    monkeypatch.setattr(Engine, "load", classmethod(lambda cls, base, **kw: seen.update(kw) or "engine"))
    monkeypatch.setattr(precision_module, "cpu_bf16_pays", lambda: pays)  # auto: this CPU's measurement
    monkeypatch.setattr(precision_module.torch.cuda, "is_available", lambda: False)
    assert runner._engine(cfg, None) == "engine"
    assert seen["bf16_autocast"] is bf16 and seen["max_batch_size"] == 3


@pytest.mark.parametrize(("answer", "reference", "ok"), [
    ("The capital of France is Paris.", "Paris", True),
    ("A spider has eight legs.", "8", True),
    ("There are sixty minutes in an hour", "60", True),
    ("A week has 7 days.", "7", True),
    ("A spider has 800 feet of legs.", "8", False),   # whole words only
    ("The answer is seventy-two", "7", False),
    ("Paris, France", "Rome", False),
    ("Plants absorb carbon dioxide (CO2)", "carbon dioxide", True),
])
def test_general_qa_match_is_whole_words_with_number_words(answer, reference, ok):
    from tunesmith.evaluate.runner import qa_correct

    assert qa_correct(answer, reference) is ok


def test_max_cases_flag_refuses_a_pinned_pack(tmp_path):
    cfg = project(tmp_path, EVAL.replace("{", "{pack: 1234abcd, ", 1))
    res = CliRunner().invoke(app, ["eval", "-c", str(cfg.base_dir), "--max-cases", "3"])
    assert res.exit_code == 2
    assert "--max-cases builds a new eval pack, but eval.pack pins '1234abcd'" in res.output


def test_per_field_differences_against_the_best_baseline():
    from tunesmith.config import Config
    from tunesmith.evaluate.report import compact_ladder_rows
    from tunesmith.evaluate.runner import _comparisons

    def rung(cat, urg):  # per-case 0/1 scores for two label fields
        scores = [{"field/category": c, "field/urgency": u, "fields_exact": float(c and u),
                   "fields_mean": (c + u) / 2} for c, u in zip(cat, urg, strict=True)]
        metrics = {k: {"mean": sum(s[k] for s in scores) / len(scores), "low": 0.0, "high": 1.0}
                   for k in scores[0]}
        return {"scores": scores, "metrics": metrics, "cost": {"seconds_per_answer": 0.1, "prompt_tokens": 90.0,
                                                          "answer_tokens": 20.0}}

    n = 40
    ladder = {"few_shot": rung([1.0] * 20 + [0.0] * 20, [1.0] * 30 + [0.0] * 10),
              "finetuned": rung([1.0] * n, [1.0] * 30 + [0.0] * 10)}
    cfg = Config.model_validate({"data": {"sources": [{"path": "x.jsonl"}]}, "eval": {"bootstrap_resamples": 500}})
    out = _comparisons(ladder, "fields_mean", cfg)
    fields = out["fields_vs_best_baseline"]
    assert set(fields) == {"category", "urgency"}
    assert fields["category"]["diff"] == pytest.approx(0.5) and fields["category"]["excludes_zero"]
    assert fields["urgency"]["diff"] == 0 and not fields["urgency"]["excludes_zero"]
    # the terminal table shows all-fields exact match beside a fields_mean headline
    header, rows = compact_ladder_rows({"headline": "fields_mean", "ladder": ladder})
    assert header[:3] == ["rung", "fields_mean", "exact"] and rows[1][2] == "0.75"
    # and the report has a per-field table
    from tunesmith.evaluate.report import _sections

    ladder["finetuned"]["scores"] = [dict(s, fields_mean=1.0) for s in ladder["finetuned"]["scores"]]
    results = {"headline": "fields_mean", "ladder": ladder, "gate": {"passed": True, "checks": []}, **out}
    tables = {title: rows for title, _, rows in _sections(results, pack=None)}
    per_field = tables["Per label field: fine-tuned − few_shot (accuracy)"]
    assert [row[0] for row in per_field] == ["category", "urgency"]
    assert per_field[0][1].startswith("+0.500 [") and per_field[1][1].startswith("+0.000 [")


LABEL_EVAL = ("{max_cases: 6, rungs: [zero_shot, finetuned], generation: {max_new_tokens: 6}, probes: false, "
              "forgetting: false, bootstrap_resamples: 100, output: {kind: label, decoding: DECODING}}")


@pytest.mark.slow
def test_label_set_is_inferred_and_constrained_or_ranked_answers_stay_inside_it(tmp_path):
    cfg = project(tmp_path, LABEL_EVAL.replace("DECODING", "constrained"))
    train(cfg)
    constrained = evaluate(cfg).results
    from tunesmith.evaluate.pack import load_pack
    from tunesmith.workspace import Workspace

    pack = load_pack(Workspace(cfg.workspace_dir), constrained.pack)
    assert pack.settings["output"]["labels"] == ["account", "billing", "shipping"]  # from the train split
    for rung in constrained.ladder.values():
        assert set(rung.answers) <= {"account", "billing", "shipping"}
        assert rung.mean("label_valid") == 1.0 and rung.mean("label_acc") is not None

    assert set(constrained.test_perplexity) == {"base", "finetuned"}

    cfg.eval.output.decoding = "free"  # the random base model does not answer with a label unprompted
    cfg.eval.test_perplexity = False  # (the report's test perplexity off: none computed)
    free = evaluate(cfg).results
    assert free.ladder["zero_shot"].mean("label_valid") < 1.0
    assert free.test_perplexity == {}

    cfg.eval.output.decoding = "rank"
    ranked = evaluate(cfg).results
    for rung in ranked.ladder.values():
        assert set(rung.answers) <= {"account", "billing", "shipping"}
        assert all(1 / 3 <= c <= 1.0 for c in rung.confidence)  # the likeliest of three labels


def test_a_headline_that_cannot_be_computed_fails_before_any_model_runs(tmp_path):
    cfg = project(tmp_path, LABEL_EVAL.replace("decoding: DECODING", "headline: fields_exact"))
    train(cfg)
    with pytest.raises(TunesmithError, match=r"headline is 'fields_exact', but it cannot be computed"):
        evaluate(cfg)


@pytest.mark.slow
def test_finetuned_fewshot_trains_with_neighbours_and_runs_as_a_rung(tmp_path):
    ladder = ("{max_cases: 6, rungs: [few_shot, finetuned, finetuned_fewshot], generation: {max_new_tokens: 6}, "
              "probes: false, forgetting: false, bootstrap_resamples: 100, few_shot: {k: 2}, output: {kind: label}}")
    cfg = project(tmp_path, ladder)
    cfg.train.fewshot_k = 2
    cfg.train.max_length = 256  # room for two demonstrations
    events = []
    train(cfg, log=events.append)
    shown = next(e for e in events if e["event"] == "demonstrations")
    assert shown["k"] == 2 and shown["examples"] > 0
    pre = next(e for e in events if e["event"] == "preflight" and e["split"] == "train")
    # the neighbours' answers are context: an example trains exactly its own answer (+ end of turn)
    plain = tokenize_examples_of(cfg)
    assert pre["trainable_tokens"] == sum(t.trainable() for t in plain)
    assert pre["tokens"] > sum(len(t) for t in plain)  # but its prompt holds the demonstrations
    r = evaluate(cfg).results
    costs = {k: v.cost.prompt_tokens for k, v in r.ladder.items()}
    assert costs["finetuned_fewshot"] > costs["finetuned"]
    assert r.finetuned_fewshot_vs_finetuned is not None
    assert r.lead.rung in ("finetuned", "finetuned_fewshot")


def tokenize_examples_of(cfg):
    from tunesmith.data.pipeline import load_split
    from tunesmith.models.loading import load_tokenizer, resolve_model
    from tunesmith.train.masks import tokenize_examples
    from tunesmith.train.recipe import model_reference
    from tunesmith.workspace import Workspace

    snap = Workspace(cfg.workspace_dir).latest("snapshot")
    tok = load_tokenizer(resolve_model(model_reference(cfg)))
    return tokenize_examples(tok, load_split(snap.path, "train"), mode="assistant")
