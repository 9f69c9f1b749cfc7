#!/usr/bin/env bash
# The GPU checks: tests/gpu (skipped on machines without CUDA) and the generation benchmark on
# CUDA, in the starter's shape with random weights unless MODEL names a folder with weights.
# For a machine with PyTorch + CUDA and no network: wheels of the other packages in .whl/ are
# installed to /tmp/site first (docs/gpu.md says how they were fetched and what ran).
#   bash scripts/gpu_check.sh [OUT_DIR]
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-gpu-check}}
mkdir -p "$out"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="src:tests:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
model=${MODEL:-.gpu/starter}
random=$([ -f "$model/model.safetensors" ] || echo --random-init)
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; python3 -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)"; } 2>&1 | tee "$out/gpu.txt"
python3 -m pytest -q -p no:cacheprovider -rs tests/gpu 2>&1 | tee "$out/tests.txt"
python3 benchmarks/bench_generate.py --device cuda --model "$model" $random --prompts "${PROMPTS:-64}" --batch 64 \
    --max-new-tokens 48 --hf-batched --bf16 2>&1 | tee "$out/bench_generate.txt"
