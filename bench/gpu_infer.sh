#!/usr/bin/env bash
# ChatUMM inference benchmark on one GPU (H100 80GB or larger, about 5 minutes): the
# BAGEL-7B-MoT-shaped preset with random weights in bf16, a two-turn session of 1024x1024 images
# with 50 schedule points (BAGEL's defaults: text-to-image, then an edit with three-branch
# guidance) and a text answer, plus the naive baseline that recomputes the context at every
# step and token. Prints one JSON line and keeps it in bench/results/gpu_infer_<gpu>.json.
#
#   bash bench/gpu_infer.sh            # needs a CUDA build of torch==2.13 in $PYTHON (default python)
#
# Not run yet: no GPU was available when it was written; its figures are pending.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"

gpu=$("$PYTHON" - <<'PY'
import sys, torch
if not torch.cuda.is_available():
    sys.exit(f"bench/gpu_infer.sh needs CUDA; this torch {torch.__version__} sees no GPU")
name = torch.cuda.get_device_name()
print(f"torch {torch.__version__}, {name}", file=sys.stderr, flush=True)
print(name.split()[1].lower() if " " in name else name.lower())
PY
)

out="bench/results/gpu_infer_${gpu}.json"
timeout 560 "$PYTHON" bench/bench_infer.py --preset bagel_7b --device cuda --dtype bf16 \
  --size 1024 --steps 50 --text-tokens 128 --naive-steps 2 | tee "$out"
echo "kept in $out (add the date, the machine and this command to bench/results/infer.md)" >&2
