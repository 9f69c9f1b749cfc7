"""What answer confidence costs: per answer, the scoring pass over every allowed value of every
label field (tunesmith.review.confidence) against generating the answer itself.

    python benchmarks/bench_confidence.py --model tiny     # random tiny Llama built in code
    python benchmarks/bench_confidence.py --model starter  # SmolLM2-135M-Instruct, float32, CPU

The task is the support-triage sample: its system prompt, made-up tickets, and its answer
schema (its system prompt cut to 60 characters for the tiny model; category 8 values, urgency 4, next_action 7: 19 alternatives per answer), generated
under the schema's grammar, greedy, in batches as eval and predict run them; then the same
answers are scored as the server scores them (one scoring call per answer: the prompt and the
answer's beginning run once, shared by that answer's 19 rows).

Two ways of running the 19 alternatives, same answers, same run, ratio printed: ``packed`` (the
default for sdpa/eager attention: all alternatives end to end in one row over the one-row cache,
a 4D mask keeping each to its own context) and ``rows`` (the fallback for attention without
custom masks: a batch of 19 rows, each over its own copy of the cache). The log-likelihoods of
the two must agree (max difference printed).

Then the packed row's layout: ``trie`` (the default: each field's alternatives as a token trie,
every distinct prefix fed once, last tokens not fed) against ``chains`` (every alternative its
own chain of all its tokens, the layout before), same answers, alternating halves, ratio printed.

Then ``kept``: answering and scoring together as eval's calibration and the server do
(``generate_scored``: the engine keeps each finished answer's keys/values and the scorer starts
from them, no prefill of the prompt) against generating and then scoring with a prefill
(``packed``), wall time of both steps, ratio printed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

import tunesmith.review.confidence as confidence
from tunesmith.config import OutputSpec
from tunesmith.generate import Engine, GenerationConfig
from tunesmith.generate.constrain import Grammar
from tunesmith.review.confidence import ScoringCost, score_answers, value_spans
from tunesmith.sample.triage_docs import SYSTEM_PROMPT, answer_schema

TICKETS = [
    "I was charged twice for my subscription this month, please refund one of the payments.",
    "The app crashes every time I open the settings page on Android 14.",
    "Someone logged into my account from another country last night and changed my email.",
    "My parcel was supposed to arrive last week and the tracking has not moved since Monday.",
    "How do I export my invoices as PDF for my accountant?",
    "I cannot reset my password, the reset link says it has expired.",
    "Your latest update deleted all my saved projects, this is urgent, we have a deadline today.",
    "Can I change the billing address on my company account?",
]


def engine_for(name: str) -> Engine:
    if name == "tiny":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from models.tiny import build_model, build_tokenizer

        tok = build_tokenizer()
        return Engine(build_model("llama", tok, seed=1), tok, max_batch_size=8)
    return Engine.load(name, max_batch_size=8)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--answers", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    engine = engine_for(args.model)
    schema = answer_schema()
    spec = OutputSpec(kind="json", json_schema=schema, label_fields=["category", "urgency", "next_action"])
    system = SYSTEM_PROMPT if args.model != "tiny" else SYSTEM_PROMPT[:60]  # the tiny model's context is 256
    convs = [[{"role": "system", "content": system},
              {"role": "user", "content": f"Ticket #{i}: {TICKETS[i % len(TICKETS)]}"}] for i in range(args.answers)]
    cfg = GenerationConfig(max_new_tokens=64, grammar=Grammar.json_schema(schema))
    engine.generate(convs[:2], cfg)  # warm-up: grammar compile, first allocations
    t0 = time.perf_counter()
    gens = engine.generate(convs, cfg)
    gen_s = time.perf_counter() - t0
    prompts = [engine.encode(c) for c in convs]
    texts = [g.text for g in gens]
    parsed = sum(1 for t in texts if value_spans(t) is not None)
    if parsed < len(texts):  # a random model wanders off within the grammar: score well-formed answers
        props = schema["properties"]
        texts = [json.dumps({f: props[f]["enum"][i % len(props[f]["enum"])] for f in props}) for i in range(len(texts))]
    gen_ms = 1000 * gen_s / len(gens)
    print(f"model {args.model}: {len(gens)} answers ({parsed} parsed; else scored hand-written ones), prompt {statistics.mean(map(len, prompts)):.0f} "
          f"tokens, answer {statistics.mean(g.tokens for g in gens):.0f} tokens, {args.threads} threads")
    print(f"generation (batched {engine.max_batch_size}): {gen_ms:.1f} ms per answer")
    results = {}
    packable = confidence._PACKABLE
    for way in ("rows", "packed"):
        confidence._PACKABLE = packable if way == "packed" else ()
        score_answers(engine, spec, prompts[:1], texts[:1])  # warm-up
        cost, per, scores = ScoringCost(), [], []
        for p, text in zip(prompts, texts, strict=True):  # as the server does: one request at a time
            t = time.perf_counter()
            scores += score_answers(engine, spec, [p], [text], cost=cost)
            per.append(1000 * (time.perf_counter() - t))
        results[way] = (cost.ms_per_answer, scores)
        print(f"confidence, {way} ({cost.rows / max(cost.answers, 1):.0f} alternatives, one call per answer): "
              f"{cost.ms_per_answer:.1f} ms per answer (median {statistics.median(per):.1f}, max {max(per):.1f}) "
              f"= {cost.ms_per_answer / gen_ms:.0%} of batched generation")
    confidence._PACKABLE = packable
    diff = max(abs(a.logliks[f][v] - b.logliks[f][v]) for a, b in zip(results["rows"][1], results["packed"][1], strict=True)
               for f in a.logliks for v in a.logliks[f])
    print(f"packed vs rows: {results['rows'][0] / results['packed'][0]:.2f}x faster; "
          f"log-likelihoods differ by at most {diff:.2e} nats")
    trie_vs_chains(engine, spec, prompts, texts)
    if parsed == len(gens):  # scoring from generation's own keys/values needs the generated answers
        kept_vs_fresh(engine, spec, convs, cfg, gen_s, results["packed"])


def trie_vs_chains(engine: Engine, spec: OutputSpec, prompts: list, texts: list[str]) -> None:
    """The packed row's layout: each field's alternatives as a token trie, last tokens not fed
    (the default) against every alternative as its own chain of every token (the layout
    before), alternating halves: chains A, trie A, chains B, trie B."""
    half = len(prompts) // 2
    times: dict[str, list[float]] = {"chains": [], "trie": []}
    positions: dict[str, int] = {}
    scores: dict[str, list] = {"chains": [], "trie": []}
    real = confidence._score_packed

    def counting(model, cache, past, rows, impl):
        positions[way] = positions.get(way, 0) + sum(len(t.nodes) for t in confidence._tries(rows).values())
        return real(model, cache, past, rows, impl)

    confidence._score_packed = counting
    try:
        for part in (slice(0, half), slice(half, None)):
            for way in ("chains", "trie"):
                confidence._TRIE = way == "trie"
                t = time.perf_counter()
                for p, text in zip(prompts[part], texts[part], strict=True):
                    scores[way] += score_answers(engine, spec, [p], [text])
                times[way].append(time.perf_counter() - t)
    finally:
        confidence._TRIE, confidence._score_packed = True, real
    n = len(prompts)
    diff = max(abs(a.logliks[f][v] - b.logliks[f][v]) for a, b in zip(scores["chains"], scores["trie"], strict=True)
               for f in a.logliks for v in a.logliks[f])
    base, new = (1000 * sum(times[w]) / n for w in ("chains", "trie"))
    print(f"packed as chains (baseline): {base:.1f} ms per answer, {positions['chains'] / n:.0f} positions; "
          f"as a trie: {new:.1f} ms, {positions['trie'] / n:.0f} positions -> {base / new:.2f}x faster; "
          f"log-likelihoods differ by at most {diff:.2e} nats")


def kept_vs_fresh(engine: Engine, spec: OutputSpec, convs: list, cfg: GenerationConfig, gen_s: float,
                  fresh: tuple[float, list]) -> None:
    """Answer and score as eval's calibration and the server do now (generate_scored: the
    scorer starts from the rows generation kept, no prefill) against generating, then scoring
    with a prefill of each answer's prompt (``packed`` above); wall time of both steps."""
    from tunesmith.review.confidence import generate_scored

    cost = ScoringCost()
    t0 = time.perf_counter()
    _, _, scores = generate_scored(engine, spec, convs, cfg, adapter=None, cost=cost)
    kept_s = time.perf_counter() - t0
    fresh_total = gen_s + fresh[0] * len(convs) / 1000
    diff = max(abs(a.logliks[f][v] - b.logliks[f][v]) for a, b in zip(scores, fresh[1], strict=True)
               for f in a.logliks for v in a.logliks[f])
    print(f"generate + score, kept rows: {1000 * kept_s / len(convs):.1f} ms per answer (scoring {cost.ms_per_answer:.1f}); "
          f"generate, then score with a prefill: {1000 * fresh_total / len(convs):.1f} ms "
          f"(scoring {fresh[0]:.1f}) -> {fresh_total / kept_s:.2f}x faster, scoring alone {fresh[0] / max(cost.ms_per_answer, 1e-9):.2f}x; "
          f"log-likelihoods differ by at most {diff:.2e} nats")

if __name__ == "__main__":
    main()
