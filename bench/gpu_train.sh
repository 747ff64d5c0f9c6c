#!/usr/bin/env bash
# One short GPU training run (under 5 minutes on one H100): the ~1B preset for a few dozen steps
# on 32k-token packs with compiled FlexAttention and bf16, through the same `torchrun -m train`
# a user runs. Prints tokens/s, MFU and peak memory (means over the steps after compile warm-up),
# the graphs compiled after warm-up, and how long the steps waited for data.
#
#   bash bench/gpu_train.sh            # STEPS=30 NPROC=1 RUN_DIR=/tmp/chatumm-gpu-train by default
#   AC=selective PROFILE=2 bash bench/gpu_train.sh   # activation checkpointing off|full|selective
#                                                    # (gpu_1b.yaml: full); trace 2 steps (4-5)
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${STEPS:-30}
NPROC=${NPROC:-1}
AC=${AC:-}
PROFILE=${PROFILE:-0}
# Not $OUT: a common variable name (the device tool sets it), and this script deletes the folder.
RUN_DIR=${RUN_DIR:-/tmp/chatumm-gpu-train}
PY=${PYTHON:-python}
rm -rf "$RUN_DIR" && mkdir -p "$RUN_DIR"

# Stage-c-shaped shards (the contract and ShardWriter, real PNGs) until synth's stages produce data.
"$PY" - "$RUN_DIR/shards" <<'PYEOF'
import sys
from pathlib import Path
from tests.train_fixtures import write_stage_c_shards
write_stage_c_shards(Path(sys.argv[1]), samples=400, row_group_rows=8)
PYEOF

CONFIG=train/configs/gpu_1b.yaml
if [[ -n "$AC" ]]; then
  CONFIG="$RUN_DIR/gpu_1b_ac_$AC.yaml"
  sed "s/^  activation_checkpointing: .*/  activation_checkpointing: $AC/" train/configs/gpu_1b.yaml > "$CONFIG"
fi
echo "config $CONFIG: $(grep activation_checkpointing "$CONFIG")"

"$PY" -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))"
"$PY" -m torch.distributed.run --standalone --nproc-per-node "$NPROC" -m train \
  --config "$CONFIG" --data "$RUN_DIR/shards" --out "$RUN_DIR/run" --max-steps "$STEPS" \
  --profile "$PROFILE"

"$PY" - "$RUN_DIR/run/metrics.jsonl" "$NPROC" <<'PYEOF'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
steady = rows[5:] or rows  # the first step compiles; steps 4-5 may be profiled
mean = lambda key: statistics.fmean(r[key] for r in steady if r.get(key) is not None)
print(f"steps {len(rows)}  (means over steps {steady[0]['step']}-{steady[-1]['step']})")
print(f"tokens/s/GPU   {mean('tokens_per_s') / int(sys.argv[2]):.0f}")
print(f"MFU            {100 * mean('mfu'):.1f}%" if any(r.get('mfu') for r in steady) else "MFU n/a")
print(f"peak memory    {max(r.get('peak_mem_gib', 0.0) for r in rows):.1f} GiB")
print(f"packing        {mean('packing'):.3f}")
print(f"step time      {mean('step_s'):.3f} s, of which waiting for data {mean('data_s'):.4f} s")
print(f"compiles       " + " ".join(f"step{r['step']}:{r['compiles']}" for r in rows if r.get('compiles')))
print(f"compiles after step 1: {sum(r.get('compiles', 0) for r in rows[1:])}"
      f" (after step 2: {sum(r.get('compiles', 0) for r in rows[2:])})")
print(f"ce {rows[0]['ce']:.3f} -> {rows[-1]['ce']:.3f}   mse {rows[0]['mse']:.3f} -> {rows[-1]['mse']:.3f}")
PYEOF
