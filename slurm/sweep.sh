#!/bin/bash
# A sweep as one SLURM job array: a grid of configs x --set values x seeds, all in one W&B group.
#
#   slurm/sweep.sh --group NAME --config configs/A.yaml [--config configs/B.yaml ...] [--seeds 0,1,2]
#                  [--set KEY=V1,V2,... ...] [--max-parallel N] [--evaluate] [--eval-args "ARGS"]
#                  [key.sub=value ...]
#
# One task per combination of a --config, one value of each --set and a seed (--set is repeatable:
# --set optim.lr_g=1e-4,2e-4 --set optim.betas=[0.5,0.999],[0.0,0.99] is 4 combinations; commas
# inside [...] belong to the value). Task i trains line i+1 of runs/NAME/tasks.txt ("RUN_DIR
# ARGS...") with slurm/train.sbatch: run folder runs/NAME/CONFIG[-KEY=VALUE...][-seedS] (KEY the
# last part of the --set key), overrides train.seed=S and wandb.group=NAME, the key.sub=value
# overrides given here (no spaces: write lists as [0.5,0.999]), then the task's --set values. A
# sweep is never overwritten: when runs/NAME/tasks.txt or a task's run folder exists, nothing is
# submitted; choose another --group. --max-parallel caps the tasks running at once. --evaluate
# adds an evaluation array whose task i starts when training task i succeeded
# (--dependency=aftercorr), with --eval-args for evaluate.py (default "--metrics fid,kid"). Each
# task is preempted and requeued like a single training job. Resources, ACCELERATE_CONFIG_FILE and
# MIXED_PRECISION come from environment variables: see slurm/common.sh. Prints train_job=,
# eval_job= and tasks= lines. SWEEP_ROOT (default runs) is where the NAME folder goes.
#
# --local runs the same tasks on this machine instead, without SLURM: --max-parallel at a time
# (default 1), each `python train.py` in one process and then, with --evaluate, `python evaluate.py`;
# a task's output goes to runs/NAME/local-I.out. It prints a line per task as it ends and exits 1
# when any task failed. Set OMP_NUM_THREADS (CPU) or CUDA_VISIBLE_DEVICES for what each task gets.

set -euo pipefail
# shellcheck source=slurm/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$GAN_ROOT"

# Split $2 on the commas outside [...] into the array named $1 (a --set's values).
split_values() {
    local -n into=$1
    local text=$2 value="" char depth=0 i
    into=()
    for ((i = 0; i < ${#text}; i++)); do
        char=${text:i:1}
        if [[ $char == , ]] && ((depth == 0)); then
            into+=("$value")
            value=""
            continue
        fi
        [[ $char == '[' ]] && depth=$((depth + 1))
        [[ $char == ']' ]] && depth=$((depth - 1))
        value+=$char
    done
    into+=("$value")
}

# The package's Python: $VENV's (default .venv), else python3 on PATH, else nothing.
package_python() {
    local python=${VENV:-$GAN_ROOT/.venv}/bin/python
    [[ -x $python ]] || python=$(command -v python3 || true)
    echo "$python"
}

# Each task's config and overrides as train.py would read them, before anything is submitted: a bad key
# or value is one line here, not a failure in every queued task. Without the package's Python, a warning.
check_tasks() {
    local python
    python=$(package_python)
    if [[ -z $python ]] || ! "$python" -c "import gan.config" 2>/dev/null; then
        warn "the tasks' settings are not checked here (no Python that imports gan.config); a bad key fails the tasks"
        return 0
    fi
    printf '%s\n' "${lines[@]}" | "$python" -c '
import sys
from gan.config import load_config
from gan.errors import GanError
for line in sys.stdin:
    run_dir, _, config, *overrides = line.split()
    try:
        load_config(config, overrides)
    except GanError as err:
        sys.exit(f"error: sweep task {run_dir}: {err}")
' || exit 2
}

# Task $1 of the sweep on this machine: train, then evaluate; one line when it ends; its exit status.
run_task() {
    local i=$1 status=0 task
    read -r -a task <<<"${lines[i]}"
    local log=$sweep_dir/local-$i.out
    "$python" train.py --run-dir "${task[0]}" "${task[@]:1}" >"$log" 2>&1 || status=$?
    if ((status == 0 && evaluate)); then
        "$python" evaluate.py "${task[0]}" "${evaluate_args[@]}" >>"$log" 2>&1 || status=$?
    fi
    case $status in
        0) echo "task $i ${task[0]}: done" ;;
        75) echo "task $i ${task[0]}: stopped at a checkpoint (exit 75), see $log" ;;
        *) echo "task $i ${task[0]}: failed (exit $status), see $log" ;;
    esac
    ((status == 0)) || echo "$i" >>"$failures"
    return "$status"
}

# Ctrl-C or SIGTERM on --local: each running training gets SIGTERM, checkpoints and exits; the
# sweep then stops. A task resumes with its line of tasks.txt: python train.py --run-dir LINE...
stop_tasks() {
    local pid
    for pid in $(jobs -p); do
        pkill -TERM -P "$pid" 2>/dev/null || true
    done
    wait
    echo "error: stopped; the running tasks checkpointed (resume one: python train.py --run-dir <its line of $tasks>)" >&2
    exit 130
}

# --local: every task on this machine, --max-parallel at a time; exit 1 when any failed.
run_locally() {
    python=$(package_python)
    [[ -n $python ]] || die "no Python to run the tasks with (make .venv, or set VENV)"
    [[ -n ${MIXED_PRECISION:-} ]] && export ACCELERATE_MIXED_PRECISION=$MIXED_PRECISION
    read -r -a evaluate_args <<<"$eval_args"
    failures=$(mktemp)
    trap 'rm -f "$failures"' EXIT
    trap stop_tasks INT TERM
    echo "tasks=$tasks (running here, ${max_parallel:-1} at a time)"
    local i
    for ((i = 0; i < count; i++)); do
        while (($(jobs -rp | wc -l) >= ${max_parallel:-1})); do
            wait -n || true
        done
        run_task "$i" &
    done
    wait
    local failed
    failed=$(wc -l <"$failures")
    ((failed == 0)) || { echo "error: $failed of $count task(s) failed (listed above)" >&2; exit 1; }
}

group="" seeds="" max_parallel="" evaluate=0 eval_args="--metrics fid,kid" here=0
configs=() set_keys=() set_values=()
while (($#)); do
    case $1 in
        --group) group=${2:?--group needs a name}; shift ;;
        --config) configs+=("${2:?--config needs a file}"); shift ;;
        --seeds) seeds=${2:?--seeds needs a list, e.g. 0,1,2}; shift ;;
        --set)
            spec=${2:?--set needs KEY=V1,V2,..., e.g. optim.lr_g=1e-4,2e-4}
            [[ $spec =~ [[:space:]] ]] && die "--set ${spec@Q} contains a space; a sweep task is one line of words"
            [[ $spec =~ ^([A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*)=(.+)$ ]] ||
                die "--set ${spec@Q}: expected KEY=V1,V2,... (e.g. --set optim.lr_g=1e-4,2e-4)"
            key=${BASH_REMATCH[1]}
            for known in "${set_keys[@]}"; do
                [[ $known == "$key" ]] && die "--set $key is given twice; list all its values in one --set"
            done
            split_values values "${BASH_REMATCH[3]}"
            for value in "${values[@]}"; do
                [[ -n $value ]] || die "--set ${spec@Q}: an empty value (a stray comma?)"
            done
            set_keys+=("$key")
            set_values+=("${values[*]}")  # no spaces in values: one word each
            shift ;;
        --max-parallel) max_parallel=${2:?--max-parallel needs a number}; shift ;;
        --evaluate) evaluate=1 ;;
        --local) here=1 ;;
        --eval-args) eval_args=${2:?--eval-args needs a value}; shift ;;
        -h | --help) sed -n '2,25p' "$0"; exit 0 ;;
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
# six digits at most: bash's arithmetic wraps larger numbers, and no array runs a million tasks at once
[[ -z $max_parallel || $max_parallel =~ ^[1-9][0-9]{0,5}$ ]] ||
    die "--max-parallel ${max_parallel@Q}: a number of tasks, 1 to 999999"

# The --set grid: each combination as its overrides and its part of the run folder's name.
combos=("") suffixes=("")
for ((k = 0; k < ${#set_keys[@]}; k++)); do
    key=${set_keys[k]} short=${set_keys[k]##*.}
    read -r -a values <<<"${set_values[k]}"
    next_combos=() next_suffixes=()
    for ((c = 0; c < ${#combos[@]}; c++)); do
        for value in "${values[@]}"; do
            name_part=${value//[\[\]\"\']/}  # [0.5,0.999] -> 0.5_0.999; a folder name keeps to [A-Za-z0-9._+=-]
            next_combos+=("${combos[c]} $key=$value")
            next_suffixes+=("${suffixes[c]}-$short=${name_part//[^A-Za-z0-9._+-]/_}")
        done
    done
    combos=("${next_combos[@]}") suffixes=("${next_suffixes[@]}")
done

sweep_dir=${SWEEP_ROOT:-runs}/$group
tasks=$sweep_dir/tasks.txt
# A queued array reads its tasks file when each task starts: never replace it.
[[ -e $tasks ]] && die "$tasks exists: sweep $group was submitted before and its jobs read that file;" \
    "choose another --group"
extra=""
for override in "${overrides[@]}"; do
    extra+=" $override"
done
lines=()
declare -A task_of
for config in "${configs[@]}"; do
    name=$(basename "$config" .yaml)
    for ((c = 0; c < ${#combos[@]}; c++)); do
        for seed in "${seed_list[@]:-none}"; do
            run_dir=$sweep_dir/$name${suffixes[c]} args="--config $config" what="$config${combos[c]}"
            if [[ $seed != none ]]; then
                run_dir+=-seed$seed args+=" train.seed=$seed" what+=" seed $seed"
            fi
            [[ -n ${task_of[$run_dir]:-} ]] && die "two tasks would share the run folder $run_dir" \
                "(${task_of[$run_dir]}; $what): make the configs' names, the values and the seeds distinct"
            [[ -e $run_dir ]] && die "$run_dir exists (a run of an earlier sweep?): choose another --group"
            task_of[$run_dir]=$what
            lines+=("$run_dir $args wandb.group=$group$extra${combos[c]}")
        done
    done
done
check_tasks
mkdir -p "$sweep_dir" 2>/dev/null || die "cannot create the sweep folder $sweep_dir"
# noclobber: created only if absent, so of two sweeps started at once with this --group one is refused
(set -o noclobber && printf '%s\n' "${lines[@]}" >"$tasks") 2>/dev/null ||
    die "$tasks cannot be created (another sweep $group was just submitted, or the folder is not writable)"
count=${#lines[@]}
if ((here)); then
    run_locally
    exit
fi
array=0-$((count - 1))${max_parallel:+%$max_parallel}

train_options
if ! train_job=$(submit "${opts[@]}" --array "$array" --job-name "$group" --export "ALL,SWEEP_TASKS=$tasks" \
    --output "$sweep_dir/slurm-%x-%A_%a.out" "$SLURM_DIR/train.sbatch"); then
    rm -f "$tasks"  # nothing reads it: the same command may be run again
    exit 2
fi
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
