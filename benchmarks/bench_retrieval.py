"""Knowledge-base retrieval on the support-triage sample: recall@k of the policy page a
ticket's label depends on, for bm25 / embedding / hybrid, with and without the
one-chunk-per-page rule, plus queries/s. Baseline: bm25 (ratios printed against it).

    python benchmarks/bench_retrieval.py [n_tickets=400] [k ...=3 5]
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from tunesmith.evaluate.retrieval import Retriever, default_embedder, load_knowledge_base
from tunesmith.sample.support_triage import build_tickets, generate_support_triage
from tunesmith.sample.triage_policy import SYMPTOMS, is_hazard

PAGE = {
    "hardware_return": "refunds-and-returns.md", "subscription_refund": "refunds-and-returns.md",
    "late_delivery": "shipping.md", "duplicate_charge": "billing.md", "wrong_amount": "billing.md",
    "unrecognised_charge": "account-security.md", "account_compromised": "account-security.md",
    "lost_2fa": "account-security.md", "phishing_report": "account-security.md",
}
GROUP = {"refunds-and-returns.md": "refunds", "shipping.md": "shipping"}


def needs(rec) -> list[tuple[str, str]]:
    """(group, page) pairs: the pages this ticket's label depends on."""
    out = []
    for issue in rec.facts.issues:
        if issue.kind in PAGE:
            out.append((GROUP.get(PAGE[issue.kind], "billing/security"), PAGE[issue.kind]))
        elif (issue.kind == "device_fault" and not is_hazard(issue)
              and SYMPTOMS[issue.symptom].known_issue):
            out.append(("known-issues", "known-issues.md"))
    if rec.facts.plan == "Enterprise":
        out.append(("sla", "sla-and-urgency.md"))
    return out


def recall(recs, hits) -> dict[str, float]:
    got, tot = defaultdict(int), defaultdict(int)
    for rec, h in zip(recs, hits, strict=True):
        sources = {c.source for c, _ in h}
        for group, page in needs(rec):
            for key in (group, "all"):
                tot[key] += 1
                got[key] += page in sources
    return {g: got[g] / tot[g] for g in sorted(tot)}


def main(n: int = 400, *ks: int) -> None:
    ks = ks or (3, 5)
    tmp = Path(tempfile.mkdtemp())
    generate_support_triage(tmp, seed=7)
    chunks = load_knowledge_base(tmp / "kb")
    recs = [r for r in build_tickets(seed=7) if r.facts is not None and not r.noise]
    recs = random.Random(0).sample(recs, n)
    queries = [r.text for r in recs]
    t = time.perf_counter()
    default_embedder()
    print(f"{len(chunks)} chunks, {n} tickets, {sum(len(needs(r)) for r in recs)} "
          f"(ticket, page) pairs; embedding model load {time.perf_counter() - t:.1f}s")
    base: dict[tuple, float] = {}
    for cap in (1, None):
        for method in ("bm25", "embedding", "hybrid"):
            retriever = Retriever(chunks, method=method, max_per_source=cap)
            retriever.search("warm up", k=1)  # chunk vectors: computed once, not timed
            t = time.perf_counter()
            ranked = retriever.search_many(queries, k=max(ks))
            qps = n / (time.perf_counter() - t)
            base.setdefault((cap, "qps"), qps)
            for k in ks:
                r = recall(recs, [h[:k] for h in ranked])
                base.setdefault((cap, k), r["all"])
                groups = "  ".join(f"{g} {v:.3f}" for g, v in r.items() if g != "all")
                print(f"{method:9s} per_page={cap!s:4s} recall@{k} {r['all']:.3f} "
                      f"(x{r['all'] / base[(cap, k)]:.2f} vs bm25)  [{groups}]  "
                      f"{qps:,.1f} queries/s (x{qps / base[(cap, 'qps')]:.4f})")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
