#!/usr/bin/env bash
# Throughput of the context probes on one GPU: the ~1B preset (train/configs/gpu_1b.yaml) trained
# for a few steps on the bundled stage a+b+c data, then `python -m train eval` on its checkpoint
# with compiled FlexAttention and bf16, as a user runs it. Prints the report's line (tokens/s).
#
#   bash bench/gpu_eval.sh        # STEPS=5 NPROC=1 RUN_DIR=/tmp/chatumm-gpu-eval by default
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${STEPS:-5}
NPROC=${NPROC:-1}
RUN_DIR=${RUN_DIR:-/tmp/chatumm-gpu-eval}
PY=${PYTHON:-python}
rm -rf "$RUN_DIR" && mkdir -p "$RUN_DIR"

"$PY" -m synth run stage-a --sources examples/sources.yaml --out "$RUN_DIR/stage-a" > /dev/null
"$PY" -m synth run stage-b --in "$RUN_DIR/stage-a" --out "$RUN_DIR/stage-b" > /dev/null
"$PY" -m synth run stage-c --in "$RUN_DIR/stage-a" --in "$RUN_DIR/stage-b" --out "$RUN_DIR/stage-c" > /dev/null
DATA=("$RUN_DIR/stage-a" "$RUN_DIR/stage-b" "$RUN_DIR/stage-c")

# gpu_1b.yaml, saving its final checkpoint and holding 30% of the dialogues out for the probes
"$PY" - "$RUN_DIR/gpu_1b_eval.yaml" <<'PYEOF'
import sys, yaml
raw = yaml.safe_load(open("train/configs/gpu_1b.yaml"))
raw["checkpoint"] = {"every": 100000, "save_final": True}
raw["data"]["overrides"].update({"holdout": 0.3, "num_workers": 0})
yaml.safe_dump(raw, open(sys.argv[1], "w"))
PYEOF

"$PY" -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))"
"$PY" -m torch.distributed.run --standalone --nproc-per-node "$NPROC" -m train \
  --config "$RUN_DIR/gpu_1b_eval.yaml" --data "${DATA[@]}" --out "$RUN_DIR/run" --max-steps "$STEPS"
# twice: the first run compiles FlexAttention for the probe shapes
for pass in 1 2; do
  "$PY" -m torch.distributed.run --standalone --nproc-per-node "$NPROC" -m train eval \
    --checkpoint "$RUN_DIR/run" --data "${DATA[@]}" --holdout 0.3 --out "$RUN_DIR/eval-$pass" --no-plot
done
