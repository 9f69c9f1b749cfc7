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


def _cached_rows(cache_dir: Path, stem: str, settings: dict[str, Any],
                 make_rows: Callable[[], list[dict[str, Any]]]) -> tuple[list[dict[str, Any]], bool]:
    """The rows cached under ``cache_dir/<stem>-<hash of settings>.jsonl``, else ``make_rows()``
    written there (atomically: a killed run leaves no half file). Returns (rows, cached)."""
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir / f"{stem}-{key}.jsonl"
    if path.exists():
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()], True
    rows = make_rows()
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(path)
    return rows, False


def self_rehearsal(
    model: Any, tokenizer: Any, count: int, *, fingerprint: str, cache_dir: Path,
    system: str | None = None, fallback_template: str | None = None, bf16: bool = False,
    log: Callable[[dict[str, Any]], None] | None = None,
) -> list[Example]:
    """The base model's greedy answers to ``count`` built-in general instructions, as chat
    examples (instruction -> answer). Only answers the model finished (end-of-turn before
    ``MAX_NEW_TOKENS``) are kept, so the adapter never learns to stop mid-sentence.

    Call it on the base model, before any adapter is attached. ``system`` is the model's
    default system prompt (``model.system_prompt``); ``None`` leaves the chat template's own.
    ``bf16``: answer under bfloat16 autocast (the precision training runs in). Every
    instruction is in flight at once: on a CPU, 64 rows per decode step instead of 16 and
    bf16 took the starter's 64 answers from 42 s to 17 s.
    """
    from tunesmith.generate.engine import Engine
    from tunesmith.generate.sampling import GenerationConfig

    log = log or (lambda event: None)
    instructions = list(GENERAL_INSTRUCTIONS[: max(0, count)])
    if not instructions:
        return []
    def answer() -> list[dict[str, Any]]:
        engine = Engine(model, tokenizer, system=system, fallback_template=fallback_template,
                        max_batch_size=len(instructions), bf16_autocast=bf16)
        convs = [[{"role": "user", "content": q}] for q in instructions]
        answers = engine.generate(convs, GenerationConfig(max_new_tokens=MAX_NEW_TOKENS))
        return [{"instruction": q, "answer": a.text.strip()} for q, a in zip(instructions, answers, strict=True)
                if a.finish_reason == "stop" and a.text.strip()]

    settings = {"base": fingerprint, "instructions": instructions, "max_new_tokens": MAX_NEW_TOKENS,
                "bf16": bf16, "v": 1}
    rows, cached = _cached_rows(cache_dir, "self-rehearsal", settings, answer)
    log({"event": "rehearsal", "examples": len(rows), "cached": cached,
         **({} if cached else {"asked": len(instructions)})})
    return [Example(id=f"self-rehearsal:{i}", messages=[{"role": "user", "content": r["instruction"]},
                                                        {"role": "assistant", "content": r["answer"]}],
                    meta={"source": "self-rehearsal"})
            for i, r in enumerate(rows)]


# Openings of everyday prose for text rehearsal: the base model writes the rest. Written for
# tunesmith; none of them is (or continues into) the forgetting check's general text
# (``evaluate.probes.GENERAL_TEXT``).
GENERAL_OPENINGS: tuple[str, ...] = (
    "The first thing you notice about the town is the smell of the bakery on the corner.",
    "Every spring the farmers on the hill wait for the last frost before they plant.",
    "Our neighbour has kept chickens in her garden for almost twenty years.",
    "The museum reopened last month after a long renovation.",
    "Most people who learn to swim as adults say the hardest part is trusting the water.",
    "The lighthouse has not had a keeper since the light was automated.",
    "When my grandfather was young, the only telephone in the village was at the post office.",
    "Tea was first brought to Europe by merchants who traded along the coast of China.",
    "The school bus stops outside our house at a quarter past seven.",
    "A good pair of walking boots can last for many years if they are looked after.",
    "The city council voted on Tuesday to build a new cycle path along the river.",
    "Cats spend a large part of the day asleep, often in the warmest spot they can find.",
    "The orchestra tuned their instruments while the audience found their seats.",
    "Volcanoes form where molten rock from deep inside the earth reaches the surface.",
    "He opened the old wooden box and found a bundle of letters tied with string.",
    "Gardening in a small flat is possible with a sunny windowsill and a few pots.",
    "The ferry crossing takes about forty minutes when the sea is calm.",
    "Children often ask why the moon seems to follow the car at night.",
    "Bread rises because yeast produces gas as it feeds on the sugars in the dough.",
    "The football match was delayed by heavy rain in the second half.",
    "In the north of the country, winter days are short and the nights are long.",
    "The new teacher asked the class to write about their favourite place.",
    "Copper has been used by people for thousands of years, first for tools and later for wires.",
    "After the harvest, the village holds a festival with music and dancing in the square.",
    "The hotel stood at the end of a long avenue lined with chestnut trees.",
    "Learning to cook a few simple meals is one of the most useful skills a student can have.",
    "Owls hunt mostly at night, using their hearing to find mice in the dark.",
    "The painter worked from early morning, when the light over the harbour was softest.",
    "Many old houses in the valley were built from stone taken from the riverbed.",
    "The shop on the high street sells everything from nails to garden chairs.",
    "Rain forests cover a small part of the earth but hold a large share of its species.",
    "She had never travelled by plane before, and she arrived at the airport far too early.",
    "Recycling paper saves water and energy compared with making it from new wood.",
    "The choir practises every Thursday evening in the hall behind the church.",
    "A compass needle points north because it lines up with the earth's magnetic field.",
    "The two brothers opened a small repair shop for bicycles near the station.",
    "Snow had fallen during the night, and the fields were white and silent.",
    "The recipe called for three eggs, but there were only two left in the fridge.",
    "Long before clocks, people told the time by the position of the sun.",
    "The zoo's oldest tortoise is said to be more than a hundred years old.",
    "Our family usually spends the summer holidays at a campsite by the lake.",
    "Glass is made by heating sand until it melts and then letting it cool.",
    "The marathon route passes the castle, the park and the old market.",
    "Each morning the fishing boats leave the harbour before sunrise.",
    "The village library lends tools as well as books.",
    "Elephants can recognise the voices of members of their family from far away.",
    "The committee met to plan the summer fair and to choose a date.",
    "At the top of the hill there is a bench with a view over the whole valley.",
)

TEXT_NEW_TOKENS = 96
TEXT_TEMPERATURE = 1.0  # ancestral sampling: the continuations follow the base model's own distribution


def self_rehearsal_text(
    model: Any, tokenizer: Any, count: int, *, fingerprint: str, cache_dir: Path, seed: int = 0,
    bf16: bool = False, log: Callable[[dict[str, Any]], None] | None = None,
) -> list[Example]:
    """Raw-text rehearsal: the base model's own sampled continuations of ``count`` built-in
    prose openings, as plain-text examples (language-model loss on every token).

    Chat rehearsal keeps the base model's *answers*; this keeps its *language model*: a
    fine-tune that only sees one chat format drifts away from ordinary prose (its perplexity
    on general text rises). Training on samples drawn from the base model itself pulls the
    fine-tune back towards the base distribution (in expectation, the loss is the KL from
    the base model plus a constant), without teaching it anything the base did not know.

    Sampling is seeded per opening, so the set is the same on every run; it is cached per
    (base model fingerprint, openings, settings, seed, precision). ``bf16``: sample under
    bfloat16 autocast (the precision training runs in; ~1.4x faster on CPUs with AVX512-BF16).
    """
    from tunesmith.generate.engine import Engine
    from tunesmith.generate.sampling import GenerationConfig

    log = log or (lambda event: None)
    openings = list(GENERAL_OPENINGS[: max(0, count)])
    if not openings:
        return []
    def continue_openings() -> list[dict[str, Any]]:
        engine = Engine(model, tokenizer, bf16_autocast=bf16, max_batch_size=len(openings))  # all in flight
        gens = engine.complete(openings, GenerationConfig(max_new_tokens=TEXT_NEW_TOKENS,
                                                          temperature=TEXT_TEMPERATURE, seed=seed))
        return [{"text": f"{o} {g.text.strip()}"} for o, g in zip(openings, gens, strict=True) if g.text.strip()]

    settings = {"base": fingerprint, "openings": openings, "max_new_tokens": TEXT_NEW_TOKENS,
                "temperature": TEXT_TEMPERATURE, "seed": seed, "bf16": bf16, "v": 1}
    rows, cached = _cached_rows(cache_dir, "self-rehearsal-text", settings, continue_openings)
    texts = [r["text"] for r in rows]
    log({"event": "rehearsal", "kind": "text", "examples": len(texts), "cached": cached,
         **({} if cached else {"asked": len(openings)})})
    return [Example(id=f"self-rehearsal-text:{i}", messages=[], text=t, meta={"source": "self-rehearsal-text"})
            for i, t in enumerate(texts)]
