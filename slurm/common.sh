# shellcheck shell=bash
# Shared by submit.sh and sweep.sh (sourced, on the submitting machine): sbatch options from
# environment variables, so that the same command line works on every cluster.
#
#   PARTITION       -p/--partition for every job
#   ACCOUNT         -A/--account for every job
#   NODES           nodes per training job (default 1)
#   GPUS_PER_NODE   GPUs per node for training (default 0: CPU processes, see CPU_PROCS_PER_NODE);
#                   evaluation gets one GPU when this is > 0
#   CPUS_PER_TASK   CPUs per node (one task per node), for training and evaluation
#   TIME            training time limit, sbatch syntax (e.g. 1-00:00:00); the job checkpoints and
#                   requeues itself 300 s before it
#   EVAL_TIME       evaluation time limit
#   SBATCH_ARGS     extra sbatch options for every job, split on spaces (e.g. "--qos=high --mail-type=END")

SLURM_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
GAN_ROOT=${GAN_ROOT:-$(dirname "$SLURM_DIR")}
export GAN_ROOT

die() {
    echo "error: $*" >&2
    exit 2
}

# The functions below set the array `opts`. First the options every job gets.
common_options() {
    opts=()
    [[ -n ${PARTITION:-} ]] && opts+=(--partition "$PARTITION")
    [[ -n ${ACCOUNT:-} ]] && opts+=(--account "$ACCOUNT")
    [[ -n ${CPUS_PER_TASK:-} ]] && opts+=(--cpus-per-task "$CPUS_PER_TASK")
    if [[ -n ${SBATCH_ARGS:-} ]]; then
        local extra
        read -r -a extra <<<"$SBATCH_ARGS"
        opts+=("${extra[@]}")
    fi
    return 0
}

train_options() {
    common_options
    opts+=(--nodes "${NODES:-1}")
    if ((${GPUS_PER_NODE:-0} > 0)); then
        opts+=(--gpus-per-node "$GPUS_PER_NODE")
    fi
    [[ -n ${TIME:-} ]] && opts+=(--time "$TIME")
    return 0
}

eval_options() {
    common_options
    if ((${GPUS_PER_NODE:-0} > 0)); then
        opts+=(--gpus 1)
    fi
    [[ -n ${EVAL_TIME:-} ]] && opts+=(--time "$EVAL_TIME")
    return 0
}

# sbatch --parsable prints JOBID or JOBID;CLUSTER
submit() {
    local out
    out=$(sbatch --parsable "$@") || die "sbatch $* failed"
    echo "${out%%;*}"
}
