#!/bin/bash
# Submit a training job and its evaluation together.
#
#   slurm/submit.sh [--watch | --no-eval] [--eval-args "ARGS"]
#                   --config configs/NAME.yaml [--run-dir DIR] [key.sub=value ...]
#
# The evaluation starts after training succeeded (--dependency=afterok), or with --watch as soon
# as training has started (--dependency=after), evaluating each checkpoint as it appears.
# --eval-args are evaluate.py's options (default "--metrics fid,kid"). The run folder is
# --run-dir, else RUN_DIR, else runs/NAME-YYYYmmdd-HHMMSS; the jobs' logs go into it. Relative
# paths are relative to the repository. An evaluation whose training failed is cancelled.
# Resources come from environment variables: see slurm/common.sh (PARTITION, ACCOUNT, NODES,
# GPUS_PER_NODE, TIME, ...); so do ACCELERATE_CONFIG_FILE (relative to the current folder) and
# MIXED_PRECISION, which the training job passes to accelerate launch (see slurm/train.sbatch).
# Prints train_job=, eval_job= and run_dir= lines.

set -euo pipefail
# shellcheck source=slurm/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$GAN_ROOT"

mode=afterok
eval_args="--metrics fid,kid"
while (($#)); do
    case $1 in
        --watch) mode=watch ;;
        --no-eval) mode=none ;;
        --eval-args) eval_args=${2:?--eval-args needs a value}; shift ;;
        -h | --help) sed -n '2,16p' "$0"; exit 0 ;;
        *) break ;;
    esac
    shift
done
train_args=("$@")

config="" run_dir=""
for ((i = 0; i < ${#train_args[@]}; i++)); do
    case ${train_args[i]} in
        --config) config=${train_args[i + 1]:-} ;;
        --config=*) config=${train_args[i]#--config=} ;;
        --run-dir) run_dir=${train_args[i + 1]:-} ;;
        --run-dir=*) run_dir=${train_args[i]#--run-dir=} ;;
    esac
done
[[ -n $config ]] || die "--config configs/NAME.yaml is required (see slurm/submit.sh --help)"
if [[ -z $run_dir ]]; then
    run_dir=${RUN_DIR:-runs/$(basename "$config" .yaml)-$(date +%Y%m%d-%H%M%S)}
    train_args+=(--run-dir "$run_dir")
fi
mkdir -p "$run_dir"

train_options
log="$run_dir/slurm-%x-%j.out"
train_job=$(submit "${opts[@]}" --output "$log" "$SLURM_DIR/train.sbatch" "${train_args[@]}")
echo "train_job=$train_job"

if [[ $mode != none ]]; then
    read -r -a evaluate <<<"$eval_args"
    dependency=afterok:$train_job
    if [[ $mode == watch ]]; then
        dependency=after:$train_job
        evaluate+=(--watch)
    fi
    eval_options
    eval_job=$(submit "${opts[@]}" --dependency "$dependency" --kill-on-invalid-dep=yes --output "$log" \
        "$SLURM_DIR/evaluate.sbatch" "$run_dir" "${evaluate[@]}")
    echo "eval_job=$eval_job"
fi
echo "run_dir=$run_dir"
