"""Self-distilled rehearsal: keep the base model's general behaviour while it learns the task.

A fine-tune that only ever sees the project's system prompt and answer format drifts into
that format everywhere: asked "What is the capital of France?" without the project prompt,
it answers with a triage JSON. Rehearsal mixes general examples into training; when a team
has no general instruction data of its own (or no licence to train on one), the base model
supplies it: it answers a built-in set of general instructions *before* training, and those
answers become training targets. The adapter is thereby pulled towards the base model's own
behaviour outside the task (self-distillation), without adding knowledge the base lacked.

The instructions below are deliberately disjoint from the forgetting check's questions
(``evaluate.probes.GENERAL_QA``): rehearsal must protect general ability, not teach the test.
Answers are cached per (base model fingerprint, instruction set, generation settings), so a
second training run on the same base costs nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunesmith.data.example import Example

# Everyday facts, arithmetic, language and instruction following: the kinds of requests a
# general assistant answers. None of them appears in the forgetting check.
GENERAL_INSTRUCTIONS: tuple[str, ...] = (
    "What is the capital of Spain?",
    "What is the capital of Canada?",
    "What is the capital of Egypt?",
    "Which is the longest river in Africa?",
    "What is the boiling point of water at sea level in degrees Celsius?",
    "How many continents are there?",
    "Which animal is known as the king of the jungle?",
    "What do bees make?",
    "How many hours are in a day?",
    "What is the largest mammal on Earth?",
    "Who painted the Mona Lisa?",
    "What is the main language spoken in Brazil?",
    "What is the tallest mountain in the world?",
    "Which planet is closest to the Sun?",
    "What is the chemical symbol for gold?",
    "How many sides does a triangle have?",
    "What season comes after winter?",
    "What is 12 plus 15?",
    "What is 9 multiplied by 6?",
    "What is 100 minus 37?",
    "What is half of 84?",
    "If I have 3 apples and buy 4 more, how many apples do I have?",
    "Is 17 an odd or an even number?",
    "Which is larger, 0.5 or 0.45?",
    "What is the past tense of 'run'?",
    "What is a synonym for 'happy'?",
    "What is the plural of 'child'?",
    "Give an antonym of 'early'.",
    "Translate 'thank you' into French.",
    "Put these words in alphabetical order: pear, apple, mango.",
    "Write one sentence about autumn.",
    "Write a short greeting for a birthday card.",
    "Give me three tips for sleeping better.",
    "Explain in one sentence what a thermometer is for.",
    "Summarise in one sentence: The meeting was moved from Monday to Wednesday because the "
    "manager was travelling.",
    "List three colours of the rainbow.",
    "Name two fruits that are yellow.",
    "What should I do if I feel tired in the afternoon?",
    "Suggest a name for a pet goldfish.",
    "Describe a cat in five words.",
    "Explain why the sky looks blue, in two sentences.",
    "How do I boil an egg?",
    "Write a haiku about the sea.",
    "What is the difference between weather and climate?",
    "Convert 2 kilometres to metres.",
    "How many grams are in a kilogram?",
    "Reply with only the word 'yes'.",
    "Count from one to five.",
    "Say hello in Spanish.",
    "Name the four seasons.",
    "What is photosynthesis, in one sentence?",
    "Why do we need to drink water?",
    "Give an example of a vegetable.",
    "Rewrite this sentence politely: Give me the report now.",
    "What day comes after Tuesday?",
    "How many months have 31 days?",
    "What is the square root of 81?",
    "What is the opposite of 'open'?",
    "What is a noun? Answer briefly.",
    "Name a famous composer.",
    "What instrument has black and white keys?",
    "Which gas do humans breathe out?",
    "What is the freezing point of water in Fahrenheit?",
    "Recommend a short book for a long train journey.",
)

MAX_NEW_TOKENS = 96


def _cache_key(fingerprint: str, instructions: list[str]) -> str:
    blob = json.dumps({"base": fingerprint, "instructions": instructions, "max_new_tokens": MAX_NEW_TOKENS,
                       "v": 1}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def self_rehearsal(
    model: Any, tokenizer: Any, count: int, *, fingerprint: str, cache_dir: Path,
    system: str | None = None, fallback_template: str | None = None,
    log: Callable[[dict[str, Any]], None] | None = None,
) -> list[Example]:
    """The base model's greedy answers to ``count`` built-in general instructions, as chat
    examples (instruction -> answer). Only answers the model finished (end-of-turn before
    ``MAX_NEW_TOKENS``) are kept, so the adapter never learns to stop mid-sentence.

    Call it on the base model, before any adapter is attached. ``system`` is the model's
    default system prompt (``model.system_prompt``); ``None`` leaves the chat template's own.
    """
    from tunesmith.generate.engine import Engine
    from tunesmith.generate.sampling import GenerationConfig

    log = log or (lambda event: None)
    instructions = list(GENERAL_INSTRUCTIONS[: max(0, count)])
    if not instructions:
        return []
    path = cache_dir / f"self-rehearsal-{_cache_key(fingerprint, instructions)}.jsonl"
    if path.exists():
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        log({"event": "rehearsal", "examples": len(rows), "cached": True})
    else:
        engine = Engine(model, tokenizer, system=system, fallback_template=fallback_template)
        convs = [[{"role": "user", "content": q}] for q in instructions]
        answers = engine.generate(convs, GenerationConfig(max_new_tokens=MAX_NEW_TOKENS))
        rows = [{"instruction": q, "answer": a.text.strip()} for q, a in zip(instructions, answers, strict=True)
                if a.finish_reason == "stop" and a.text.strip()]
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        tmp.replace(path)
        log({"event": "rehearsal", "examples": len(rows), "asked": len(instructions), "cached": False})
    return [Example(id=f"self-rehearsal:{i}", messages=[{"role": "user", "content": r["instruction"]},
                                                        {"role": "assistant", "content": r["answer"]}],
                    meta={"source": "self-rehearsal"})
            for i, r in enumerate(rows)]
