"""Drafted greedy decoding (the engine's ``draft_tokens``, generate/draft.py) against one token
per step: the demo's fine-tuned model answering fresh month-1 sample tickets as the server does.

    python benchmarks/bench_draft.py DEMO_DIR [--tickets 320] [--chunk 64] [--batch B] [--base]

DEMO_DIR is a project ``tunesmith demo`` has run in: its latest model version answers, or with
``--base`` the base model alone (as the zero-shot rung does). The tickets are shaped as the
server shapes them and answered greedy, under the eval's JSON grammar, in chunks of ``--chunk``
with ``--batch`` rows in flight (default: the project's eval batch size): each chunk once by an
engine with drafts and once without, alternating which goes first; the drafting engine's book
starts empty and learns as it goes, as a freshly started server's does. Prints seconds per
answer both ways and their ratio, how many answers differ (drafts keep only the model's own
greedy picks: 0 up to float rounding), the share of guessed tokens kept, and decode passes per
answer.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("demo", type=Path)
    ap.add_argument("--tickets", type=int, default=320)
    ap.add_argument("--chunk", type=int, default=64)
    ap.add_argument("--draft", type=int, default=8)
    ap.add_argument("--seed", type=int, default=31)
    ap.add_argument("--batch", type=int, default=0, help="rows in flight (default: the project's eval batch size)")
    ap.add_argument("--base", action="store_true", help="answer with the base model (the zero-shot rung)")
    ap.add_argument("--step-tokens", type=int, default=0, help="override the engine's DRAFT_STEP_TOKENS")
    args = ap.parse_args()

    from tunesmith.config import OutputSpec, load_config
    from tunesmith.data.pipeline import input_shaper
    from tunesmith.evaluate.outputs import grammar_for
    from tunesmith.evaluate.pack import load_pack
    from tunesmith.generate.batch import DecodeBatch
    from tunesmith.generate.engine import Engine
    from tunesmith.generate.sampling import GenerationConfig
    from tunesmith.sample.triage_month2 import month_traffic
    from tunesmith.workspace import Workspace

    cfg = load_config(args.demo)
    ws = Workspace(cfg.workspace_dir)
    version = ws.list("model")[-1]
    spec = OutputSpec(**load_pack(ws, ws.list("evalpack")[-1].id).settings["output"])
    import tunesmith.generate.engine as engine_module

    if args.step_tokens:
        engine_module.DRAFT_STEP_TOKENS = args.step_tokens
    engine = Engine.load("starter", adapters={"v": version.path},
                         max_batch_size=args.batch or cfg.eval.generation.batch_size,
                         system=cfg.model.system_prompt, draft_tokens=args.draft)
    book = engine.drafts
    assert book is not None
    gen = GenerationConfig(max_new_tokens=cfg.eval.generation.max_new_tokens, temperature=0, seed=cfg.seed,
                           grammar=grammar_for(spec))
    shape = input_shaper(cfg.model_copy(update={"serve": cfg.serve.model_copy(update={"shape_inputs": True})}))
    assert shape is not None
    convs = [shape(t.messages()) for t in month_traffic(1, args.tickets, seed=args.seed)]

    passes = {"on": 0, "off": 0}
    mode = ["off"]
    plain, drafted = DecodeBatch.step, DecodeBatch.step_drafts

    def count_plain(self, *a, **k):
        passes[mode[0]] += 1
        return plain(self, *a, **k)

    def count_drafted(self, *a, **k):
        passes[mode[0]] += 1
        return drafted(self, *a, **k)

    DecodeBatch.step, DecodeBatch.step_drafts = count_plain, count_drafted  # type: ignore[method-assign]
    seconds = {"on": 0.0, "off": 0.0}
    answers: dict[str, list[list[int]]] = {"on": [], "off": []}
    tokens = 0
    for n, start in enumerate(range(0, len(convs), args.chunk)):
        chunk = convs[start:start + args.chunk]
        for which in (("on", "off") if n % 2 == 0 else ("off", "on")):
            mode[0] = which
            engine.drafts = book if which == "on" else None
            t0 = time.perf_counter()
            out = engine.generate(chunk, gen, adapter=None if args.base else "v")
            seconds[which] += time.perf_counter() - t0
            answers[which].extend(g.token_ids for g in out)
            tokens += sum(g.tokens for g in out) if which == "on" else 0
        print(f"chunk {n + 1}: {len(chunk)} answers; so far {seconds['off']:.1f} s one token a step, "
              f"{seconds['on']:.1f} s drafted", flush=True)
    total = len(convs)
    differ = sum(a != b for a, b in zip(answers["on"], answers["off"], strict=True))
    print(f"model {'the base' if args.base else version.id[:12]} ({args.demo}); {total} month-1 tickets (seed {args.seed}), "
          f"{tokens / total:.1f} answer tokens each, batch {engine.max_batch_size}, draft {args.draft}, "
          f"at most {engine_module.DRAFT_STEP_TOKENS} tokens a drafted step")
    print(f"one token a step: {seconds['off'] / total:.3f} s/answer, {passes['off'] / total:.1f} decode passes/answer")
    print(f"drafted:          {seconds['on'] / total:.3f} s/answer, {passes['on'] / total:.1f} decode passes/answer; "
          f"{book.accepted} of {book.proposed} guessed tokens kept ({book.accepted / max(book.proposed, 1):.0%})")
    print(f"speed-up: {seconds['off'] / seconds['on']:.2f}x; answers that differ: {differ} of {total}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
