"""The model card: every section, filled from the recorded lineage."""

from tunesmith.registry import ModelRegistry


def test_the_card_has_every_section_from_the_lineage(project):
    good, pack = project.version()
    bad, _ = project.version(pack=pack, passed=False)
    reg = ModelRegistry.from_config(project.cfg)
    reg.promote(good, by="ann")
    reg.promote(bad, force=True, reason="demo for the board", by="bob")
    reg.rollback(by="ann")
    card = reg.card(good)
    for section in ("# Model card: support-triage", "## Intended use", "## Data provenance", "### Sources",
                    "### Records", "### PII handling", "## Training", "## Evaluation", "## Forgetting",
                    "## Known limits", "## Alias history"):
        assert section in card, section
    assert "> You triage support tickets. Answer in JSON." in card  # the system prompt it trained with
    assert "`data/tickets.jsonl` | `abababababababab` | 1234" in card  # source hash
    assert "| 120 | 100 | 15 | 5 |" in card  # read, kept, dropped, quarantined
    assert "`filter:too_short` | 5" in card and "| EMAIL | 7 |" in card and "PERSON: pseudonym" in card
    assert f"| lr | {project.cfg.train.lr} |" in card and "best val loss | 0.4321 (step 200)" in card
    assert "| finetuned | 0.800 | [0.740, 0.860] | 60 |" in card  # the ladder with CIs
    assert "general-text perplexity | 12.00 | 13.20 | +10.0%" in card
    limits = card.split("## Known limits")[1].split("##")[0]
    assert "`urgency`: not better than few_shot" in limits and "category" not in limits
    history = card.split("## Alias history")[1]
    assert history.count("| champion |") == 3 and "demo for the board" in history and "rollback" in history


def test_a_version_without_evals_says_so(project):
    model_id = project.model(project.snapshot())
    card = ModelRegistry.from_config(project.cfg).card(model_id)
    assert "Not evaluated yet" in card and "Not evaluated: nothing is known about its quality." in card
    assert "No alias has pointed at this version." in card
