"""The typed eval results: every results.json eval writes (and older ones) loads, dumps back to
the same bytes, and a bad one is refused naming the file and the key.

``fixtures/results-label.json`` is the results.json of ``test_runner``'s ladder test (tiny model,
label task, probes, forgetting, confusion), kept as written so that a change to the model that
would rewrite existing files fails here."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from tunesmith.config import GateConfig
from tunesmith.errors import TunesmithError
from tunesmith.evaluate.gate import evaluate_gate, recommendation
from tunesmith.evaluate.report import compact_ladder_rows
from tunesmith.evaluate.results import EvalResults, load_results

FIXTURE = Path(__file__).parent / "fixtures" / "results-label.json"


def test_a_results_file_eval_wrote_round_trips_byte_for_byte():
    text = FIXTURE.read_text()
    r = load_results(FIXTURE)
    assert r.to_json() == text
    assert r.headline == "label_acc" and r.cases == 6 and list(r.ladder) == ["zero_shot", "rag", "finetuned",
                                                                            "finetuned_rag"]
    assert r.lead.baseline == "zero_shot" and r.lead.rung == "finetuned" and r.lead.excludes_zero == 0.0
    assert r.ladder["rag"].cost.prompt_tokens > r.ladder["zero_shot"].cost.prompt_tokens
    assert r.forgetting.measured and r.probes["finetuned"].injection_probes == 6
    assert [c.name for c in r.checks] == [c["name"] for c in json.loads(text)["gate"]["checks"]]
    assert r.passed is False and r.recommendation.startswith("More data needed")
    # the record the gate reads gives the checks and the sentence that were written
    assert evaluate_gate(GateConfig(), r) == r.checks
    assert recommendation(r, checks=r.checks) == r.recommendation


def test_the_registry_fixture_results_round_trip(tmp_path):
    from registry.conftest import FakeProject

    project = FakeProject(tmp_path / "p")
    project.version()
    path = project.ws.latest("eval").path / "results.json"
    r = load_results(path)
    assert r.to_json() == path.read_text()
    assert r.fields_vs_best_baseline["category"].wins and not r.fields_vs_best_baseline["urgency"].wins


def _old_file() -> dict:
    """The same results as an older tunesmith wrote them: no rung in the comparison, no input_key,
    confusion, test perplexity, per-field diffs or costs; a boolean excludes_zero."""
    old = json.loads(FIXTURE.read_text())
    for key in ("input_key", "confusion", "test_perplexity", "vs_zero_shot"):
        del old[key]
    del old["finetuned_vs_best_baseline"]["rung"]
    old["finetuned_vs_best_baseline"]["excludes_zero"] = False
    for rung in old["ladder"].values():
        del rung["cost"]
    old["something_new"] = {"kept": [1, 2]}  # a key this version does not know
    return old


def test_an_older_results_file_loads_and_its_readers_work(tmp_path):
    old = _old_file()
    path = tmp_path / "results.json"
    path.write_text(json.dumps(old, indent=1))
    r = load_results(path)
    assert r.to_json() == path.read_text()  # nothing invented, the unknown key kept in place
    assert r.compared_rung == "finetuned" and r.input_key is None and r.confusion == {}
    assert r.something_new == {"kept": [1, 2]}
    assert recommendation(r).startswith("More data needed")
    header, rows = compact_ladder_rows(r)
    assert header[:2] == ["rung", "label_acc"] and rows[0][-1] == "–"  # no cost recorded
    # the whole report renders from it (HTML and Markdown)
    from types import SimpleNamespace

    from tunesmith.data.example import Example
    from tunesmith.evaluate.report import write_reports

    cases = [Example(f"c{i}", [{"role": "user", "content": f"ticket {i}"}, {"role": "assistant", "content": "billing"}])
             for i in range(r.cases)]
    write_reports(tmp_path, r, SimpleNamespace(id=r.pack, cases=cases), "proj")
    md = (tmp_path / "report.md").read_text()
    assert "## Gate: FAILED" in md and "## Worst errors (side by side)" in md and "## Forgetting" in md
    assert "zero_shot − zero_shot" not in md  # vs_zero_shot is absent from the old file: no rows


def test_keys_set_after_loading_are_written_after_the_loaded_ones():
    r = EvalResults.model_validate({"headline": "label_acc", "ladder": {}, "cases": 3})
    r.recommendation, r.seconds = "x", 1.5
    assert list(json.loads(r.to_json())) == ["headline", "ladder", "cases", "recommendation", "seconds"]
    assert json.loads(r.to_json())["cases"] == 3  # an int stays an int


@pytest.mark.parametrize(("edit", "key", "why"), [
    (lambda d: d["ladder"]["finetuned"]["metrics"]["label_acc"].update(mean="high"),
     "ladder.finetuned.metrics.label_acc.mean", "should be a number"),
    (lambda d: d.pop("headline"), "headline", "Field required"),
    (lambda d: d["gate"]["checks"][0].pop("passed"), "gate.checks.0.passed", "Field required"),
    (lambda d: d.update(probes=[1, 2]), "probes", "valid dictionary"),
])
def test_a_bad_results_file_names_the_file_and_the_key(tmp_path, edit, key, why):
    data = copy.deepcopy(json.loads(FIXTURE.read_text()))
    edit(data)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(data))
    with pytest.raises(TunesmithError) as exc:
        load_results(path)
    assert str(path) in str(exc.value) and f"key '{key}'" in str(exc.value) and why in str(exc.value)


def test_missing_and_non_json_files_are_clear_errors(tmp_path):
    with pytest.raises(TunesmithError, match=r"results\.json: eval results file not found"):
        load_results(tmp_path)  # an eval folder without its results.json
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(TunesmithError, match=r"results\.json: not valid JSON"):
        load_results(tmp_path)
    (tmp_path / "results.json").write_text("[]")
    with pytest.raises(TunesmithError, match="must be a JSON object, got list"):
        load_results(tmp_path)


def test_a_confusion_matrix_as_the_runner_writes_it_round_trips(tmp_path):
    from tunesmith.evaluate.metrics import confusion_matrix

    answers = ['{"category": "billing"}', '{"category": "shipping"}', "not json", '{"category": "billing"}']
    refs = ['{"category": "billing"}', '{"category": "billing"}', '{"category": "shipping"}', '{"category": "billing"}']
    cm = confusion_matrix(answers, refs, "category", ["billing", "shipping"])
    data = json.loads(FIXTURE.read_text())
    data["confusion"] = {"category": {"rung": "finetuned", **cm.to_dict()}}
    text = json.dumps(data, indent=1, default=str)  # as runner.py writes results.json
    path = tmp_path / "results.json"
    path.write_text(text)
    r = load_results(path)
    assert r.to_json() == text
    c = r.confusion["category"]
    assert c.counts == [[2, 1, 0], [0, 0, 1]] and c.columns[-1] == "<invalid>"
    assert c.per_label["billing"].support == 3 and c.summary["n"] == 4 and isinstance(c.summary["n"], int)
