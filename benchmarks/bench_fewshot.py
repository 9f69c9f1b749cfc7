"""Few-shot demonstration selection on the support-triage sample: the share of the k chosen
train tickets whose label matches the query's (per field and whole label) and the 1-NN
label accuracy, bm25 vs embedding vs the baseline of a random pick (ratios printed).

    python benchmarks/bench_fewshot.py [pool=1000] [queries=150] [k=4]
"""

from __future__ import annotations

import json
import random
import sys
import time

from tunesmith.data.example import Example
from tunesmith.evaluate.fewshot import FewShotSelector
from tunesmith.evaluate.retrieval import default_embedder
from tunesmith.sample.support_triage import build_tickets

FIELDS = ("category", "urgency", "next_action")


def example(rec) -> Example:
    return Example(rec.ticket_id, [{"role": "user", "content": rec.text},
                                   {"role": "assistant", "content": rec.answer}])


def split(pool: int, n_queries: int) -> tuple[list[Example], list[Example]]:
    """Train pool and queries from disjoint customers (as the real splits are)."""
    recs = [r for r in build_tickets(seed=7) if r.facts is not None and not r.noise]
    customers = sorted({r.customer.id for r in recs})
    held_out = set(random.Random(1).sample(customers, len(customers) // 10))
    train = [example(r) for r in recs if r.customer.id not in held_out][:pool]
    queries = [example(r) for r in recs if r.customer.id in held_out][:n_queries]
    return train, queries


def score(pick, queries, label, k) -> tuple[dict[str, float], float, float]:
    agree = dict.fromkeys((*FIELDS, "all"), 0)
    first = 0
    t = time.perf_counter()
    for q in queries:
        shots = pick(q)
        want = label[q.id]
        for s in shots:
            for f in FIELDS:
                agree[f] += label[s.id][f] == want[f]
            agree["all"] += label[s.id] == want
        first += label[shots[0].id] == want
    qps = len(queries) / (time.perf_counter() - t)
    return {f: v / (len(queries) * k) for f, v in agree.items()}, first / len(queries), qps


def main(pool: int = 1000, n_queries: int = 150, k: int = 4) -> None:
    train, queries = split(pool, n_queries)
    label = {e.id: json.loads(e.answer_text()) for e in train + queries}
    default_embedder()
    rng = random.Random(0)
    pickers = {"random": lambda q: rng.sample(train, k)}
    for method in ("bm25", "embedding"):
        t = time.perf_counter()
        selector = FewShotSelector(train, method=method)
        selector.select("warm up", 1)  # builds the index (embeds the pool once)
        print(f"{method}: index build {time.perf_counter() - t:.1f}s for {len(train)} examples")
        pickers[method] = lambda q, s=selector: s.select(q.prompt_text(), k, exclude_ids={q.id})
    base = None
    for name, pick in pickers.items():
        agree, nn, qps = score(pick, queries, label, k)
        base = base or agree
        print(f"{name:9s} same label in {k} shots: " + "  ".join(
            f"{f} {v:.3f}" for f, v in agree.items())
            + f" (whole label x{agree['all'] / base['all']:.1f} vs random)"
            f" | 1-NN {nn:.3f} | {qps:,.1f} queries/s")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
