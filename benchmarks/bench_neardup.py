"""Near-duplicate detection: tunesmith's MinHash LSH vs datasketch, same corpus, same run.

    python benchmarks/bench_neardup.py [--docs 20000] [--skip-baseline] [--memory]

Both sides start from raw texts and end with similar pairs: datasketch tokenises with the
same ``\\w+``/lowercase rule, builds 5-word shingles, ``MinHash.bulk`` (``update_batch``,
permutations shared) with num_perm=128, then ``MinHashLSH`` (threshold 0.8) insertion and a
query per document. Ours: ``signatures`` in pipeline-sized batches, ``NearDuplicateIndex``,
``clusters()``. Ground truth is the exact Jaccard of the shingle sets, computed for every
planted pair and every pair either method reports; precision and recall are over pairs.
"""

from __future__ import annotations

import argparse
import re
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _corpus import EDIT_RATES, Corpus, planted_corpus

from tunesmith.config import NearDedupConfig
from tunesmith.data.minhash import NearDuplicateIndex, signatures

_WORD = re.compile(r"\w+")
Pairs = set[tuple[int, int]]


def shingle_set(text: str, ngram: int) -> set:
    """The reference shingle set (plain Python, independent of our numpy tokeniser)."""
    words = _WORD.findall(text.lower())
    if not words:
        return {("\x00" + text.strip().lower(),)}
    if len(words) < ngram:
        return {tuple(words)}
    return {tuple(words[k : k + ngram]) for k in range(len(words) - ngram + 1)}


def run_ours(texts: list[str], cfg: NearDedupConfig, batch: int) -> tuple[float, Pairs, np.ndarray]:
    """Signatures in ``batch``-sized calls (as the pipeline's workers do), index, cluster."""
    t0 = time.perf_counter()
    index = NearDuplicateIndex(cfg)
    for lo in range(0, len(texts), batch):
        index.add(signatures(texts[lo : lo + batch], cfg))
    reps = index.clusters()
    elapsed = time.perf_counter() - t0
    sp = index.similar_pairs()
    return elapsed, set(zip(sp["i"].tolist(), sp["j"].tolist(), strict=True)), reps


def ds_shingles(text: str, ngram: int) -> list[bytes]:
    words = _WORD.findall(text.lower())
    if len(words) < ngram:
        return [" ".join(words).encode() or text.strip().lower().encode()]
    return [" ".join(words[k : k + ngram]).encode() for k in range(len(words) - ngram + 1)]


def run_datasketch(texts: list[str], cfg: NearDedupConfig) -> dict:
    """datasketch's fastest documented path; returns timings and its candidate pairs."""
    from datasketch import MinHash, MinHashLSH

    t0 = time.perf_counter()
    hashes = MinHash.bulk((ds_shingles(t, cfg.ngram) for t in texts), num_perm=cfg.num_perm, seed=cfg.seed)
    t1 = time.perf_counter()
    lsh = MinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm)
    with lsh.insertion_session() as session:
        for k, m in enumerate(hashes):
            session.insert(k, m, check_duplication=False)
    pairs: Pairs = set()
    for k, m in enumerate(hashes):
        pairs.update((min(k, o), max(k, o)) for o in lsh.query(m) if o != k)
    t2 = time.perf_counter()
    verified = {p for p in pairs if hashes[p[0]].jaccard(hashes[p[1]]) >= cfg.threshold}
    t3 = time.perf_counter()
    return {
        "minhash_s": t1 - t0, "lsh_s": t2 - t1, "verify_s": t3 - t2, "pairs": pairs,
        "verified": verified, "bands_rows": lsh.b_r if hasattr(lsh, "b_r") else (lsh.b, lsh.r),
    }


def exact_jaccard(pairs: Pairs, texts: list[str], ngram: int) -> dict[tuple[int, int], float]:
    cache: dict[int, set] = {}

    def sh(k: int) -> set:
        if k not in cache:
            cache[k] = shingle_set(texts[k], ngram)
        return cache[k]

    return {(i, j): len(sh(i) & sh(j)) / len(sh(i) | sh(j)) for i, j in pairs}


def score(found: Pairs, truth: Pairs) -> tuple[float, float]:
    tp = len(found & truth)
    return tp / max(len(found), 1), tp / max(len(truth), 1)


def report_accuracy(corpus: Corpus, cfg: NearDedupConfig, methods: dict[str, Pairs]) -> None:
    planted = corpus.planted_pairs()
    jac = exact_jaccard(planted.union(*methods.values()), corpus.texts, cfg.ngram)
    truth = {p for p, v in jac.items() if v >= cfg.threshold}
    near = sum(1 for v in jac.values() if abs(v - cfg.threshold) < 0.05)
    print(f"\nground truth: {len(truth)} pairs with exact Jaccard >= {cfg.threshold} "
          f"(of {len(planted)} planted pairs + all reported; {near} pairs within ±0.05 of it)")
    print(f"{'method':34s} {'pairs':>8s} {'precision':>10s} {'recall':>8s}")
    for name, found in methods.items():
        p, r = score(found, truth)
        print(f"{name:34s} {len(found):8d} {p:10.4f} {r:8.4f}")
    print("\nrecall of ours by planted edit rate (pairs source-variant with J >= threshold):")
    ours = methods["tunesmith"]
    for rate in EDIT_RATES:
        fam = {tuple(sorted((f[0], v))) for f in corpus.families for v in f[1:] if corpus.edit_rate.get(v) == rate}
        pos = {p for p in fam if jac[p] >= cfg.threshold}
        if fam:
            print(f"  rate {rate:5.3f}: {len(fam):5d} planted, {len(pos):5d} >= thr, "
                  f"found {len(pos & ours):5d}, mean J {np.mean([jac[p] for p in fam]):.3f}")


def measure_memory(texts: list[str], cfg: NearDedupConfig, batch: int) -> float:
    """Peak bytes numpy/Python allocate for signatures + index + clusters (tracemalloc)."""
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    index = NearDuplicateIndex(cfg)
    for lo in range(0, len(texts), batch):
        index.add(signatures(texts[lo : lo + batch], cfg))
    index.clusters()
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=20000)
    ap.add_argument("--dup-fraction", type=float, default=0.25)
    ap.add_argument("--batch", type=int, default=5000, help="records per signatures() call")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per method (median shown)")
    ap.add_argument("--skip-baseline", action="store_true", help="ours only (e.g. for 1M docs)")
    ap.add_argument("--memory", action="store_true", help="also measure peak memory (tracemalloc)")
    args = ap.parse_args()
    cfg = NearDedupConfig()

    t = time.perf_counter()
    corpus = planted_corpus(args.docs, args.dup_fraction, args.seed)
    texts = corpus.texts
    words = sum(len(s.split()) for s in texts) / len(texts)
    print(f"corpus: {len(texts)} docs, {words:.1f} words/doc, {len(corpus.families)} planted "
          f"families, from {corpus.source} (built in {time.perf_counter() - t:.1f}s)")
    print(f"config: ngram={cfg.ngram} num_perm={cfg.num_perm} bands×rows={cfg.bands}×{cfg.rows} "
          f"threshold={cfg.threshold}")

    signatures(texts[:10], cfg)  # one-time table build (~0.05 s), not part of throughput
    runs = [run_ours(texts, cfg, args.batch) for _ in range(args.repeat)]
    ours_s = float(np.median([r[0] for r in runs]))
    _, ours_pairs, reps = runs[0]
    ours_rate = len(texts) / ours_s
    print(f"\ntimes are the median of {args.repeat} runs")
    print(f"tunesmith:  {ours_s:7.2f}s  {ours_rate:10,.0f} docs/s  "
          f"({int((reps != np.arange(len(reps))).sum())} near-duplicates in "
          f"{len(np.unique(reps[reps != np.arange(len(reps))]))} clusters)")
    print(f"process peak RSS (corpus building included): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    methods = {"tunesmith": ours_pairs}
    if not args.skip_baseline:
        ds_runs = [run_datasketch(texts, cfg) for _ in range(args.repeat)]
        ds = ds_runs[int(np.argsort([d["minhash_s"] + d["lsh_s"] for d in ds_runs])[len(ds_runs) // 2])]
        ds_s = ds["minhash_s"] + ds["lsh_s"]
        print(f"datasketch: {ds_s:7.2f}s  {len(texts) / ds_s:10,.0f} docs/s  (MinHash.bulk "
              f"{ds['minhash_s']:.1f}s, LSH insert+query {ds['lsh_s']:.1f}s, b×r={ds['bands_rows']})")
        print(f"ratio (ours / datasketch docs/s): {ours_rate / (len(texts) / ds_s):.1f}x")
        methods["datasketch LSH candidates"] = ds["pairs"]
        methods["datasketch + MinHash.jaccard check"] = ds["verified"]
    report_accuracy(corpus, cfg, methods)
    if args.memory:
        print(f"\npeak memory of signatures+index+clusters: {measure_memory(texts, cfg, args.batch) / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
