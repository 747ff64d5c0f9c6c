#!/bin/bash
# Stage a over a SLURM job array: one shard per array task, all writing into one --out.
#
#   sbatch --array=0-15 examples/slurm_stage_a.sh examples/sources.yaml /data/chatumm/stage-a
#
# Each task runs `--num-shards $SLURM_ARRAY_TASK_COUNT --shard-index $SLURM_ARRAY_TASK_ID`: the
# shards take items[index::count] of the same deterministic plan, so they are disjoint and their
# union is the unsharded run. Every shard writes its own files (train-<shard>-*.parquet,
# manifest-<shard>.json) and all share the LLM response cache in <out>/.cache (SQLite in WAL
# mode, safe for concurrent writers). A task that is preempted or killed resumes where it
# stopped when resubmitted (`sbatch --array=<ids> ...` again): nothing is lost, duplicated or
# paid for twice. Stage b reads the directory once every shard's manifest says complete.
#
# Set the backend in the environment, e.g.  SYNTH_LLM=openai SYNTH_MODEL=gpt-4o-mini
# OPENAI_API_KEY=...  (or SYNTH_BASE_URL=http://vllm-host:8000/v1 for a local server).
#SBATCH --job-name=chatumm-stage-a
#SBATCH --cpus-per-task=4
#SBATCH --mem=8G
#SBATCH --time=12:00:00
#SBATCH --output=logs/stage-a-%A_%a.log
#SBATCH --requeue

set -euo pipefail

SOURCES=${1:?usage: sbatch --array=0-N slurm_stage_a.sh SOURCES_YAML OUT_DIR [extra synth options]}
OUT=${2:?usage: sbatch --array=0-N slurm_stage_a.sh SOURCES_YAML OUT_DIR [extra synth options]}
shift 2

: "${SLURM_ARRAY_TASK_ID:?run this script as a job array: sbatch --array=0-N ...}"
: "${SLURM_ARRAY_TASK_COUNT:?run this script as a job array: sbatch --array=0-N ...}"
# The shard count is the array's size. To resubmit only some tasks of a run
# (sbatch --array=3,7 ...), set SYNTH_NUM_SHARDS to the original count.
NUM_SHARDS=${SYNTH_NUM_SHARDS:-$SLURM_ARRAY_TASK_COUNT}
if [ -z "${SYNTH_NUM_SHARDS:-}" ] && { [ "${SLURM_ARRAY_TASK_MIN:-0}" != 0 ] ||
   [ "${SLURM_ARRAY_TASK_MAX:-$((NUM_SHARDS - 1))}" != "$((NUM_SHARDS - 1))" ]; }; then
  echo "use --array=0-$((NUM_SHARDS - 1)) (contiguous, from 0), or set SYNTH_NUM_SHARDS" >&2
  exit 2
fi

args=(--sources "$SOURCES" --out "$OUT"
      --num-shards "$NUM_SHARDS" --shard-index "$SLURM_ARRAY_TASK_ID"
      --llm "${SYNTH_LLM:-template}" --concurrency "${SYNTH_CONCURRENCY:-64}" --no-progress)
[ -n "${SYNTH_MODEL:-}" ] && args+=(--model "$SYNTH_MODEL")
[ -n "${SYNTH_BASE_URL:-}" ] && args+=(--base-url "$SYNTH_BASE_URL")

mkdir -p logs
# SYNTH: how to call the CLI (default: the installed `synth` command).
exec ${SYNTH:-synth} run stage-a "${args[@]}" "$@"
