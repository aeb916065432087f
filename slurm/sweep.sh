#!/bin/bash
# A sweep as one SLURM job array: every config x every seed, all in one W&B group.
#
#   slurm/sweep.sh --group NAME --config configs/A.yaml [--config configs/B.yaml ...] [--seeds 0,1,2]
#                  [--max-parallel N] [--evaluate] [--eval-args "ARGS"] [key.sub=value ...]
#
# Task i trains line i+1 of runs/NAME/tasks.txt ("RUN_DIR ARGS...") with slurm/train.sbatch: run
# folder runs/NAME/CONFIG-seedS, overrides train.seed=S and wandb.group=NAME, then the
# key.sub=value overrides given here (no spaces: write lists as [0.5,0.999]). --max-parallel caps
# the tasks running at once. --evaluate adds an evaluation array whose task i starts when training
# task i succeeded (--dependency=aftercorr), with --eval-args for evaluate.py (default
# "--metrics fid,kid"). Each task is preempted and requeued like a single training job.
# Resources come from environment variables: see slurm/common.sh. Prints train_job=, eval_job=
# and tasks= lines. SWEEP_ROOT (default runs) is where the NAME folder goes.

set -euo pipefail
# shellcheck source=slurm/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$GAN_ROOT"

group="" seeds="" max_parallel="" evaluate=0 eval_args="--metrics fid,kid"
configs=()
while (($#)); do
    case $1 in
        --group) group=${2:?--group needs a name}; shift ;;
        --config) configs+=("${2:?--config needs a file}"); shift ;;
        --seeds) seeds=${2:?--seeds needs a list, e.g. 0,1,2}; shift ;;
        --max-parallel) max_parallel=${2:?--max-parallel needs a number}; shift ;;
        --evaluate) evaluate=1 ;;
        --eval-args) eval_args=${2:?--eval-args needs a value}; shift ;;
        -h | --help) sed -n '2,14p' "$0"; exit 0 ;;
        -*) die "unknown option $1 (see slurm/sweep.sh --help)" ;;
        *) break ;;
    esac
    shift
done
overrides=("$@")
[[ -n $group ]] || die "--group NAME is required: the W&B group and the folder runs/NAME"
[[ $group =~ ^[A-Za-z0-9._-]+$ ]] || die "--group ${group@Q}: use letters, digits, '.', '_' and '-' only"
((${#configs[@]})) || die "at least one --config configs/NAME.yaml is required"
for arg in "${configs[@]}" "${overrides[@]}"; do
    [[ $arg =~ [[:space:]] ]] && die "${arg@Q} contains a space; a sweep task is one line of words"
    [[ $arg == *=* || -f $arg ]] || die "${arg@Q} is neither a config file nor a key.sub=value override"
done
IFS=, read -r -a seed_list <<<"$seeds"
for seed in "${seed_list[@]}"; do
    [[ $seed =~ ^[0-9]+$ ]] || die "--seeds: ${seed@Q} is not a non-negative integer"
done

sweep_dir=${SWEEP_ROOT:-runs}/$group
mkdir -p "$sweep_dir"
tasks=$sweep_dir/tasks.txt
: >"$tasks"
for config in "${configs[@]}"; do
    name=$(basename "$config" .yaml)
    if ((${#seed_list[@]} == 0)); then
        echo "$sweep_dir/$name --config $config wandb.group=$group ${overrides[*]}" >>"$tasks"
    fi
    for seed in "${seed_list[@]}"; do
        echo "$sweep_dir/$name-seed$seed --config $config train.seed=$seed wandb.group=$group" \
            "${overrides[*]}" >>"$tasks"
    done
done
count=$(wc -l <"$tasks")
array=0-$((count - 1))${max_parallel:+%$max_parallel}

train_options
train_job=$(submit "${opts[@]}" --array "$array" --job-name "$group" --export "ALL,SWEEP_TASKS=$tasks" \
    --output "$sweep_dir/slurm-%x-%A_%a.out" "$SLURM_DIR/train.sbatch")
echo "train_job=$train_job"
if ((evaluate)); then
    read -r -a evaluate_args <<<"$eval_args"
    eval_options
    eval_job=$(submit "${opts[@]}" --array "$array" --job-name "$group-eval" \
        --export "ALL,SWEEP_TASKS=$tasks" \
        --dependency "aftercorr:$train_job" --kill-on-invalid-dep=yes \
        --output "$sweep_dir/slurm-%x-%A_%a.out" "$SLURM_DIR/evaluate.sbatch" "${evaluate_args[@]}")
    echo "eval_job=$eval_job"
fi
echo "tasks=$tasks"
