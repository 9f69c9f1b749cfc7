"""Batched generation (and scoring) over one base model with switchable adapters: the single
path through which eval's strategies and the server produce answers."""

from tunesmith.generate.adapters import AdapterError
from tunesmith.generate.engine import Engine, Generation, GenerationError, is_out_of_memory
from tunesmith.generate.sampling import GenerationConfig
from tunesmith.generate.scoring import Score, corpus_perplexity

__all__ = [
    "AdapterError",
    "Engine",
    "Generation",
    "GenerationConfig",
    "GenerationError",
    "Score",
    "corpus_perplexity",
    "is_out_of_memory",
]
