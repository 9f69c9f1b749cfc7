"""Constrained decoding: llguidance (our Constrainer) vs outlines-core vs a token trie, same run.

    python benchmarks/bench_constrain.py [--walks 20] [--compile-repeat 3] [--threads 1]

All three run on the starter model's tokenizer (SmolLM2-135M-Instruct, 49,152 tokens) for
two grammars: (a) one label among the 77 intents of a many-class task, (b) the
support-triage answer schema (``tunesmith.sample.triage_docs.answer_schema``).

- llguidance, through ``tunesmith.generate.constrain``: ``Constrainer(tokenizer, stop_ids,
  vocab_size)`` builds the tokenizer view; ``.matcher(grammar)`` compiles (first call,
  timed with the grammar cache cleared) or just starts a request (later calls);
  ``.mask(logits, [matcher])`` masks a (1, 49152) logits row; ``Constrainer.consume``.
- outlines-core: a ``Vocabulary`` built from the tokenizer's own vocabulary (GPT-2 byte-level
  symbols decoded to bytes, special tokens left out, the first stop id as its single EOS);
  ``json_schema.build_regex_from_schema`` (with our JSON whitespace pattern, so both engines
  accept the same answers) or a regex alternation of the labels; ``Index`` compiles,
  ``Guide`` starts a request, ``write_mask_into`` fills a bitmask that is then applied to
  the logits with the very torch code ``Constrainer.mask`` uses.
- a plain Python trie over the token ids of each label's canonical tokenization: label case
  only (it cannot follow JSON, nor any tokenization but the one it was built from).

Times: tokenizer view (once per process), grammar compile (median of --compile-repeat),
request start, and per-token mask time (median, p95) while walking realistic answers token
by token (mask, check the answer's token is allowed, consume it; the stop token last).
"fill" is the engine alone writing its allowed-token set; "mask" is the whole logits step on
a CPU (1, 49152) row, mostly torch's bit unpacking, identical for the two engines.

xgrammar is not installed and not compared: DESIGN measured that it pulls triton (~1 GB),
so it was not a candidate here.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import re
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from tunesmith.generate.constrain import WHITESPACE, Constrainer, Grammar

# 77 made-up intents of a card/banking help desk (the many-class label case)
INTENTS = [
    "activate_my_card", "age_limit", "apple_pay_or_google_pay", "atm_support", "automatic_top_up",
    "balance_not_updated_after_bank_transfer", "balance_not_updated_after_cheque_or_cash_deposit",
    "beneficiary_not_allowed", "cancel_transfer", "card_about_to_expire", "card_acceptance",
    "card_arrival", "card_delivery_estimate", "card_linking", "card_not_working",
    "card_payment_fee_charged", "card_payment_not_recognised", "card_payment_wrong_exchange_rate",
    "card_swallowed", "cash_withdrawal_charge", "cash_withdrawal_not_recognised", "change_pin",
    "compromised_card", "contactless_not_working", "country_support", "declined_card_payment",
    "declined_cash_withdrawal", "declined_transfer", "direct_debit_payment_not_recognised",
    "disposable_card_limits", "edit_personal_details", "exchange_charge", "exchange_rate",
    "exchange_via_app", "extra_charge_on_statement", "failed_transfer", "fiat_currency_support",
    "get_disposable_virtual_card", "get_physical_card", "getting_spare_card",
    "getting_virtual_card", "lost_or_stolen_card", "lost_or_stolen_phone", "order_physical_card",
    "passcode_forgotten", "pending_card_payment", "pending_cash_withdrawal", "pending_top_up",
    "pending_transfer", "pin_blocked", "receiving_money", "refund_not_showing_up",
    "request_refund", "reverted_card_payment", "supported_cards_and_currencies",
    "terminate_account", "top_up_by_bank_transfer_charge", "top_up_by_card_charge",
    "top_up_by_cash_or_cheque", "top_up_failed", "top_up_limits", "top_up_reverted",
    "topping_up_by_card", "transaction_charged_twice", "transfer_fee_charged",
    "transfer_into_account", "transfer_not_received_by_recipient", "transfer_timing",
    "unable_to_verify_identity", "verify_my_identity", "verify_source_of_funds", "verify_top_up",
    "virtual_card_not_working", "visa_or_mastercard", "why_verify_identity",
    "wrong_amount_of_cash_received", "wrong_exchange_rate_for_cash_withdrawal",
]
LABEL_ANSWERS = ["card_arrival", "lost_or_stolen_card", "balance_not_updated_after_bank_transfer",
                 "pin_blocked", "why_verify_identity", "top_up_by_card_charge"]
TRIAGE_ANSWERS = [  # (category, urgency, next_action); serialised compact and spaced
    ("known_issue", "normal", "send_workaround"),
    ("security", "critical", "escalate_security"),
    ("refund", "low", "issue_refund"),
    ("account_access", "high", "reset_access"),
]


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable-symbol table (byte-level BPE vocabularies are written in it)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def outlines_vocabulary(tok: Any, eos: int) -> Any:
    """outlines-core's Vocabulary from the tokenizer itself (``Vocabulary.from_pretrained``
    would go to the hub): token bytes -> ids, special tokens left out."""
    import outlines_core

    decode = {c: b for b, c in bytes_to_unicode().items()}
    special = set(tok.all_special_ids) | set(tok.get_added_vocab().values())
    table: dict[bytes, list[int]] = {}
    for token, tid in tok.get_vocab().items():
        if tid in special or tid == eos:
            continue
        try:
            raw = bytes(decode[c] for c in token)
        except KeyError:  # not a byte-level symbol string
            raw = token.encode()
        table.setdefault(raw, []).append(tid)
    return outlines_core.Vocabulary(eos, table)


def outlines_mask(logits: torch.Tensor, guides: list[Any], vocab_size: int) -> None:
    """``Constrainer.mask`` with outlines-core filling the bitmask: the same allocation and the
    same torch code, so the two differ only in the engine."""
    rows = [i for i, g in enumerate(guides) if g is not None]
    if not rows:
        return
    bitmask = np.zeros((len(rows), (vocab_size + 31) // 32), dtype=np.int32)
    for j, i in enumerate(rows):
        guides[i].write_mask_into(bitmask[j].ctypes.data, bitmask.shape[1], 4)
    # from here on, line for line Constrainer.mask
    words = torch.from_numpy(bitmask).to(logits.device)
    bits = torch.arange(32, device=logits.device, dtype=torch.int32)
    allowed = ((words[:, :, None] >> bits) & 1).bool().flatten(1)[:, : logits.shape[-1]]
    if allowed.shape[1] < logits.shape[-1]:
        allowed = torch.nn.functional.pad(allowed, (0, logits.shape[-1] - allowed.shape[1]))
    index = torch.tensor(rows, device=logits.device)
    logits[index] = logits[index].masked_fill(~allowed, float("-inf"))


def popcount(words: np.ndarray, vocab: int) -> int:
    return int(np.unpackbits(words.astype("<i4").view(np.uint8), bitorder="little")[:vocab].sum())


class Trie:
    """Token-id trie of the labels' canonical tokenizations; a label end allows the stop ids."""

    def __init__(self, sequences: list[list[int]], stop_ids: list[int]):
        self.root: dict = {}
        self.stop_ids = list(stop_ids)
        for seq in sequences:
            node = self.root
            for t in seq:
                node = node.setdefault(t, {})
            node[None] = True  # end of a label

    def allowed(self, node: dict) -> list[int]:
        ids = [t for t in node if t is not None]
        return ids + self.stop_ids if None in node else ids

    def step(self, node: dict, token: int) -> dict:
        if token in self.stop_ids and None in node:
            return {}
        return node[token]


def median_ms(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Median wall time of ``repeat`` calls (ms), and the last call's result."""
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3, out


class Walk:
    """Per-step times of one engine along the answers (µs)."""

    def __init__(self) -> None:
        self.mask: list[float] = []
        self.fill: list[float] = []
        self.consume: list[float] = []
        self.start: list[float] = []
        self.rejected = 0

    def add(self, key: str, t0: int, t1: int) -> None:
        getattr(self, key).append((t1 - t0) / 1e3)


def walk_llguidance(con: Constrainer, grammar: Grammar, seqs: list[list[int]], walks: int, vocab: int) -> Walk:
    import llguidance.numpy as lln

    w = Walk()
    base = torch.randn(1, vocab)
    bm = lln.allocate_token_bitmask(1, con.vocab_size)
    ns = time.perf_counter_ns
    for _ in range(walks):
        for seq in seqs:
            t0 = ns()
            m = con.matcher(grammar)
            w.add("start", t0, ns())
            m_fill = con.matcher(grammar)  # a twin that only fills (same states, same tokens)
            for tok_id in seq:
                logits = base.clone()
                t0 = ns()
                con.mask(logits, [m])
                w.add("mask", t0, ns())
                t0 = ns()
                lln.fill_next_token_bitmask(m_fill, bm, 0)
                w.add("fill", t0, ns())
                if not torch.isfinite(logits[0, tok_id]):
                    w.rejected += 1
                    break
                t0 = ns()
                Constrainer.consume(m, tok_id)
                w.add("consume", t0, ns())
                Constrainer.consume(m_fill, tok_id)
    return w


def walk_outlines(index: Any, eos: int, seqs: list[list[int]], walks: int, vocab: int) -> Walk:
    import outlines_core

    w = Walk()
    base = torch.randn(1, vocab)
    scratch = np.zeros((1, (vocab + 31) // 32), dtype=np.int32)
    ns = time.perf_counter_ns
    for _ in range(walks):
        for seq in seqs:
            t0 = ns()
            g = outlines_core.Guide(index)
            w.add("start", t0, ns())
            for tok_id in seq:
                logits = base.clone()
                t0 = ns()
                outlines_mask(logits, [g], vocab)
                w.add("mask", t0, ns())
                t0 = ns()
                g.write_mask_into(scratch.ctypes.data, scratch.shape[1], 4)
                w.add("fill", t0, ns())
                if not torch.isfinite(logits[0, tok_id]):
                    w.rejected += 1
                    break
                if g.is_finished() and tok_id == eos:
                    break  # a finished Guide allows its EOS but has no state to advance to
                t0 = ns()
                try:
                    g.advance(tok_id, return_tokens=False)
                except Exception:
                    w.rejected += 1
                    break
                w.add("consume", t0, ns())
    return w


def walk_trie(trie: Trie, seqs: list[list[int]], walks: int, vocab: int) -> Walk:
    w = Walk()
    base = torch.randn(1, vocab)
    ns = time.perf_counter_ns
    for _ in range(walks):
        for seq in seqs:
            node = trie.root
            for tok_id in seq:
                logits = base.clone()
                t0 = ns()
                allowed = torch.zeros(vocab, dtype=torch.bool)
                allowed[torch.tensor(trie.allowed(node))] = True
                logits[0].masked_fill_(~allowed, float("-inf"))
                w.add("mask", t0, ns())
                t0 = ns()
                trie.allowed(node)
                w.add("fill", t0, ns())
                if not torch.isfinite(logits[0, tok_id]):
                    w.rejected += 1
                    break
                t0 = ns()
                node = trie.step(node, tok_id)
                w.add("consume", t0, ns())
    return w


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) if xs else float("nan")


def installed(dist_name: str) -> str:
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        return f"{dist_name}: not installed"
    size = sum(p.locate().stat().st_size for p in dist.files or [] if p.locate().exists())
    reqs = [r for r in dist.requires or [] if "extra ==" not in r]
    return f"{dist_name} {dist.version}: {size / 2**20:.1f} MiB installed, requires: {', '.join(reqs) or 'nothing'}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="starter")
    ap.add_argument("--walks", type=int, default=20, help="passes over the answers per engine")
    ap.add_argument("--compile-repeat", type=int, default=3, help="grammar compiles per engine (median shown)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (0: torch's default). 1 by default: on a busy 2-core box, torch's "
                         "intra-op threads made rare llguidance steps wait tens of ms (mask p95 up to 64 ms "
                         "against 0.3-0.8 ms with 1 thread), which hid the engines' own times")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import llguidance.numpy as lln
    import outlines_core
    from outlines_core.json_schema import build_regex_from_schema

    from tunesmith.models.chat import end_of_turn_ids
    from tunesmith.models.loading import load_tokenizer, resolve_model
    from tunesmith.sample.triage_docs import answer_schema

    t = time.perf_counter()
    tok = load_tokenizer(resolve_model(args.model))
    stop_ids = end_of_turn_ids(tok)
    vocab = max(len(tok), 49152)
    print(f"tokenizer: {args.model}, {len(tok)} tokens (logits width {vocab}), stop ids {stop_ids} "
          f"(loaded in {time.perf_counter() - t:.1f}s); torch threads {torch.get_num_threads()}")
    print(f"llguidance {importlib.metadata.version('llguidance')}, "
          f"outlines-core {importlib.metadata.version('outlines-core')}, torch {torch.__version__}")

    # tokenizer views, once per process
    t = time.perf_counter()
    con = Constrainer(tok, stop_ids, vocab)
    ll_view_s = time.perf_counter() - t
    t = time.perf_counter()
    oc_vocab = outlines_vocabulary(tok, stop_ids[0])
    oc_view_s = time.perf_counter() - t
    print(f"\ntokenizer view (once per process): llguidance {ll_view_s * 1e3:.0f} ms, "
          f"outlines-core Vocabulary {oc_view_s * 1e3:.0f} ms ({len(oc_vocab)} entries; one EOS id only: "
          f"{stop_ids[0]}), trie: none")

    def encode(text: str) -> list[int]:
        return tok.encode(text, add_special_tokens=False)

    # (a) labels
    label_grammar = Grammar.choice(INTENTS)
    label_seqs = [[*encode(a), stop_ids[0]] for a in LABEL_ANSWERS]
    # (b) triage JSON; the schema as the Grammar holds it (its property order is the one enforced)
    schema = answer_schema()
    json_grammar = Grammar.json_schema(schema)
    held = json.loads(json_grammar.source)
    keys = list(held["properties"])
    answers = []
    for cat, urg, act in TRIAGE_ANSWERS:
        obj = {k: {"category": cat, "urgency": urg, "next_action": act}[k] for k in keys}
        answers += [json.dumps(obj, separators=(",", ":")), json.dumps(obj)]
    json_seqs = [[*encode(a), stop_ids[0]] for a in answers]
    print(f"triage schema property order as compiled: {', '.join(keys)} "
          f"(schema as written: {', '.join(schema['properties'])})")

    def ll_compile(g: Grammar) -> Any:
        con._compiled.cache_clear()
        return con.matcher(g)

    rows = []
    cases = [  # (name, our grammar, outlines-core's regex from scratch, answer token sequences)
        ("labels (77)", label_grammar, lambda: "(" + "|".join(re.escape(v) for v in INTENTS) + ")", label_seqs),
        ("triage JSON", json_grammar,
         lambda: build_regex_from_schema(json.dumps(held), whitespace_pattern=WHITESPACE), json_seqs),
    ]
    for case, grammar, make_regex, seqs in cases:
        regex = make_regex()
        n_tokens = sum(len(s) for s in seqs)
        print(f"\n[{case}] {len(seqs)} answers, {n_tokens} tokens (stop included), walked {args.walks}x; "
              f"outlines regex {len(regex)} chars")
        # llguidance
        ll_ms, _ = median_ms(lambda g=grammar: ll_compile(g), args.compile_repeat)
        bm = lln.allocate_token_bitmask(1, vocab)
        lln.fill_next_token_bitmask(con.matcher(grammar), bm, 0)
        ll_first = popcount(bm[0], vocab)
        rows.append((case, "llguidance", ll_ms, walk_llguidance(con, grammar, seqs, args.walks, vocab), ll_first))
        # outlines-core
        oc_ms, index = median_ms(lambda m=make_regex: outlines_core.Index(m(), oc_vocab), args.compile_repeat)
        words = np.zeros((1, (vocab + 31) // 32), dtype=np.int32)
        outlines_core.Guide(index).write_mask_into(words.ctypes.data, words.shape[1], 4)
        oc_first = popcount(words[0], vocab)
        rows.append((case, "outlines-core", oc_ms, walk_outlines(index, stop_ids[0], seqs, args.walks, vocab), oc_first))
        # trie (labels only)
        if grammar.kind == "choice":
            trie_ms, trie = median_ms(lambda: Trie([encode(v) for v in INTENTS], stop_ids), args.compile_repeat)
            first = len(trie.allowed(trie.root))
            rows.append((case, "python trie", trie_ms, walk_trie(trie, seqs, args.walks, vocab), first))
        else:
            rows.append((case, "python trie", None, None, None))

    print("\ntimes: compile in ms (median); start, fill, mask, consume in µs per request / per token "
          "(median; mask also p95); allowed = tokens allowed at the first step")
    hdr = f"{'case':12s} {'engine':14s} {'compile ms':>10s} {'start':>8s} {'fill':>8s} {'mask':>8s} " \
          f"{'mask p95':>9s} {'consume':>8s} {'allowed@1':>16s} {'refused':>7s}"
    print(hdr)
    print("-" * len(hdr))
    for case, engine, comp, w, first in rows:
        if w is None:
            print(f"{case:12s} {engine:14s} {'n/a: a token trie over fixed values cannot follow JSON':>60s}")
            continue
        start = f"{statistics.median(w.start):8.1f}" if w.start else f"{'-':>8s}"
        share = f"{first} ({100 * first / vocab:.3f}%)"
        print(f"{case:12s} {engine:14s} {comp:10.1f} {start} {statistics.median(w.fill):8.1f} "
              f"{statistics.median(w.mask):8.1f} {pct(w.mask, 95):9.1f} {statistics.median(w.consume):8.1f} "
              f"{share:>16s} {w.rejected:7d}")

    print()
    by = {(c, e): (comp, w) for c, e, comp, w, _ in rows}
    for case, *_ in cases:
        ll_comp, ll = by[(case, "llguidance")]
        for other in ("outlines-core", "python trie"):
            comp, w = by[(case, other)]
            if w is None:
                print(f"{case}: {other} cannot constrain JSON (fixed token sequences only)")
                continue
            print(f"{case}: {other} / llguidance mask time: {statistics.median(w.mask) / statistics.median(ll.mask):.1f}x "
                  f"(p95 {pct(w.mask, 95) / pct(ll.mask, 95):.1f}x; engine fill alone "
                  f"{statistics.median(w.fill) / statistics.median(ll.fill):.1f}x), compile: {comp / ll_comp:.1f}x")
    print("note: the trie only allows each label's canonical tokenization; llguidance and outlines-core "
          "allow every tokenization of an allowed string")
    print("\ninstalled sizes (own files; both also need torch for the logits, which we already have):")
    for name in ("llguidance", "outlines-core"):
        print("  " + installed(name))
    print("  xgrammar: not installed (pulls triton, ~1 GB: see the module docstring)")


if __name__ == "__main__":
    main()
