#!/usr/bin/env bash
# The training-efficiency check on one GPU, in one go (about 5 minutes on one H100, 9.5 at most):
#   1. the CUDA tests of the decoder layout (compiled FlexAttention = SDPA, no recompiles),
#   2. bench/gpu_model.sh: forward+backward of the ~1B preset on one 32k pack (MFU, memory),
#   3. bench/gpu_train.sh: 25 steps of the real loop, selective activation checkpointing,
#      a 2-step profiler trace (MFU, compiles after warm-up, data wait, memory),
#   4. bench/bench_loader.py: the loader (2 workers) against the step time just measured.
# Everything lands in RESULTS (default: $OUT when set, else /tmp/chatumm-gpu-efficiency).
#
#   bash bench/gpu_efficiency.sh
set -uo pipefail  # not -e: a failing part must not lose the others' results
cd "$(dirname "$0")/.."
RESULTS=${RESULTS:-${OUT:-/tmp/chatumm-gpu-efficiency}}
RUN_DIR=/tmp/chatumm-gpu-train
PY=${PYTHON:-python}
mkdir -p "$RESULTS"
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$PY" -c "import torch; print('torch', torch.__version__)"; } | tee "$RESULTS/device.txt"

timeout 60 "$PY" -m pytest -q -p no:cacheprovider tests/test_model_layout.py tests/test_data_mask.py \
  2>&1 | tail -5 | tee "$RESULTS/cuda_tests.txt"
timeout 180 bash bench/gpu_model.sh 2>&1 | tail -3 | tee "$RESULTS/gpu_model.txt"
STEPS=25 AC=selective PROFILE=2 RUN_DIR=$RUN_DIR timeout 270 bash bench/gpu_train.sh 2>&1 \
  | tail -14 | tee "$RESULTS/gpu_train.txt"
cp "$RUN_DIR/run/metrics.jsonl" "$RESULTS/gpu_train_metrics.jsonl" 2>/dev/null
cp "$RUN_DIR/run/profile/ops_rank0.txt" "$RESULTS/gpu_train_ops.txt" 2>/dev/null
gzip -c "$RUN_DIR/run/profile/trace_rank0.json" > "$RESULTS/gpu_train_trace.json.gz" 2>/dev/null
timeout 60 "$PY" bench/bench_loader.py --data "$RUN_DIR/shards" --workers 2 \
  --metrics "$RUN_DIR/run/metrics.jsonl" 2>&1 | tail -2 | tee "$RESULTS/loader.txt"
ls -la "$RESULTS"
