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
#
# Read by the jobs (slurm/train.sbatch), checked here so that a typo fails at once, not in a queued job:
#   ACCELERATE_CONFIG_FILE  an `accelerate config` file for `accelerate launch --config_file`; made
#                           absolute here (relative to the folder the command is run from)
#   MIXED_PRECISION         no, fp16, bf16 or fp8: overrides the config file's mixed_precision

SLURM_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
GAN_ROOT=${GAN_ROOT:-$(dirname "$SLURM_DIR")}
export GAN_ROOT

die() {
    echo "error: $*" >&2
    exit 2
}

warn() {
    echo "warning: $*" >&2
}

# Before the caller changes folder: a relative ACCELERATE_CONFIG_FILE is the caller's.
check_environment() {
    if [[ -n ${ACCELERATE_CONFIG_FILE:-} ]]; then
        [[ -f $ACCELERATE_CONFIG_FILE ]] ||
            die "ACCELERATE_CONFIG_FILE=${ACCELERATE_CONFIG_FILE@Q}: no such file (an \`accelerate config\` file)"
        ACCELERATE_CONFIG_FILE=$(realpath -- "$ACCELERATE_CONFIG_FILE")
        export ACCELERATE_CONFIG_FILE
    fi
    case ${MIXED_PRECISION:-no} in
        no | fp16 | bf16 | fp8) ;;
        *) die "MIXED_PRECISION=${MIXED_PRECISION@Q}: use no, fp16, bf16 or fp8 (or leave it unset for the config file's)" ;;
    esac
    [[ ${NODES:-1} =~ ^[1-9][0-9]*$ ]] || die "NODES=${NODES@Q}: a number of nodes, 1 or more"
    [[ ${GPUS_PER_NODE:-0} =~ ^([A-Za-z0-9_-]+:)?[0-9]+$ ]] ||
        die "GPUS_PER_NODE=${GPUS_PER_NODE@Q}: a number of GPUs, or TYPE:NUMBER (e.g. 4 or a100:4)"
    return 0
}
check_environment

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

# GPUS_PER_NODE's count: 4 for 4 or a100:4
gpus_per_node() {
    local gpus=${GPUS_PER_NODE:-0}
    echo $((10#${gpus##*:}))
}

train_options() {
    common_options
    opts+=(--nodes "${NODES:-1}")
    if (($(gpus_per_node) > 0)); then
        opts+=(--gpus-per-node "$GPUS_PER_NODE")
    elif [[ -z ${GPUS_PER_NODE:-}${SBATCH_GPUS_PER_NODE:-}${SBATCH_GPUS:-}${SBATCH_GRES:-} && ${SBATCH_ARGS:-} != *gpu* ]]; then
        # GPUs asked for nowhere (GPUS_PER_NODE=0 is a choice, and sbatch has its own variables)
        warn "GPUS_PER_NODE is unset: the training gets no GPUs and runs on CPU" \
            "(${CPU_PROCS_PER_NODE:-1} process(es) per node); set GPUS_PER_NODE=N for N GPUs per node"
    fi
    [[ -n ${TIME:-} ]] && opts+=(--time "$TIME")
    return 0
}

eval_options() {
    common_options
    if (($(gpus_per_node) > 0)); then
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
