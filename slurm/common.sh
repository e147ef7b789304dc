# Shared by slurm/*.sbatch (sourced, not run): locate the checkout and the bloodcls executable, derive Lightning's
# devices / num_nodes from the Slurm allocation, and build the run-directory arguments.
#
# Environment read here (all optional):
#   BLOODCLS_REPO   the bloodcls checkout (default: the directory sbatch was called from, $SLURM_SUBMIT_DIR)
#   BLOODCLS        the bloodcls executable (default: $BLOODCLS_REPO/.venv/bin/bloodcls if present, else on PATH)
#   CONFIG          config files, space-separated, each passed as --config (default: configs/quickstart.yaml)
#   RUNS_DIR        where run directories go (default: runs)
#   RUN_NAME        run name, the middle part of RUNS_DIR/RUN_NAME/... (default: first config's file name, no .yaml)
#   ACCELERATOR     gpu | cpu (default: gpu when the allocation has GPUs, else cpu)
#   BLOODCLS_PYTHON the Python that has bloodcls's dependencies (default: the python next to BLOODCLS, else python3)

# shellcheck disable=SC2034  # the variables set here (PLACEMENT_ARGS, FIT_CONFIG, ...) are used by the scripts

BLOODCLS_SCRIPT="${BLOODCLS_SCRIPT:-bloodcls-slurm}"

bloodcls_die() {
    echo "${BLOODCLS_SCRIPT}: error: $*" >&2
    exit 2
}

# Checks that we run inside a batch job that Lightning will recognise, then bloodcls_locate.
bloodcls_setup() {
    [[ -n "${SLURM_JOB_ID:-}" ]] || bloodcls_die "not inside a Slurm job: submit it with sbatch"
    case "${SLURM_JOB_NAME:-}" in
        bash | interactive)
            # Lightning treats these job names as "not a Slurm job": no SLURMEnvironment, no auto-requeue.
            bloodcls_die "job name '${SLURM_JOB_NAME}' turns off Lightning's Slurm support; use another --job-name" ;;
    esac
    export PYTHONUNBUFFERED=1  # the job's output file shows progress as it happens
    # Slurm >= 22.05 no longer passes sbatch's --cpus-per-task on to srun; data-loader workers need those CPUs.
    if [[ -n "${SLURM_CPUS_PER_TASK:-}" ]]; then
        export SRUN_CPUS_PER_TASK="$SLURM_CPUS_PER_TASK"
    fi
    bloodcls_locate
}

# Sets BLOODCLS_REPO, BLOODCLS, RUNS_DIR, CONFIG, CONFIG_ARGS (--config F ...) and RUN_NAME from their defaults.
bloodcls_locate() {
    BLOODCLS_REPO="${BLOODCLS_REPO:-${SLURM_SUBMIT_DIR:-$PWD}}"
    if [[ -z "${BLOODCLS:-}" ]]; then
        if [[ -x "$BLOODCLS_REPO/.venv/bin/bloodcls" ]]; then
            BLOODCLS="$BLOODCLS_REPO/.venv/bin/bloodcls"
        else
            BLOODCLS="$(command -v bloodcls)" || bloodcls_die "bloodcls not found: set BLOODCLS=/path/to/bloodcls"
        fi
    fi
    RUNS_DIR="${RUNS_DIR:-runs}"
    CONFIG="${CONFIG:-configs/quickstart.yaml}"
    CONFIG_ARGS=()
    local file
    for file in $CONFIG; do
        [[ -f "$file" ]] || bloodcls_die "CONFIG: $file does not exist (relative paths start at $PWD)"
        CONFIG_ARGS+=(--config "$file")
    done
    [[ ${#CONFIG_ARGS[@]} -gt 0 ]] || bloodcls_die "CONFIG is empty: name at least one config file"
    if [[ -z "${RUN_NAME:-}" ]]; then
        local first="${CONFIG_ARGS[1]}"
        RUN_NAME="$(basename "${first%.y*ml}")"
    fi
    if [[ -z "${BLOODCLS_PYTHON:-}" ]]; then
        BLOODCLS_PYTHON="$(dirname "$BLOODCLS")/python"
        [[ -x "$BLOODCLS_PYTHON" ]] || BLOODCLS_PYTHON=python3
    fi
}

# Tasks per node: --ntasks-per-node when given, otherwise SLURM_TASKS_PER_NODE ("8(x4)", "2,1"), which must be the
# same on every node because Lightning runs the same number of devices on each.
bloodcls_tasks_per_node() {
    if [[ -n "${SLURM_NTASKS_PER_NODE:-}" ]]; then
        echo "$SLURM_NTASKS_PER_NODE"
        return
    fi
    local counts
    counts="$(tr ',' '\n' <<<"${SLURM_TASKS_PER_NODE:-1}" | sed 's/(x[0-9]*)//' | sort -u)"
    [[ "$(wc -l <<<"$counts")" -eq 1 ]] \
        || bloodcls_die "tasks differ between nodes (SLURM_TASKS_PER_NODE=$SLURM_TASKS_PER_NODE): use --ntasks-per-node"
    echo "$counts"
}

# GPUs per node of the allocation (--gpus-per-node, --gres=gpu:N or --gpus); 0 when none were requested.
bloodcls_gpus_per_node() {
    if [[ -n "${SLURM_GPUS_ON_NODE:-}" ]]; then
        echo "$SLURM_GPUS_ON_NODE"
    elif [[ -n "${SLURM_GPUS_PER_NODE:-}" ]]; then
        echo "${SLURM_GPUS_PER_NODE##*:}"  # "a100:8" -> 8
    else
        echo 0
    fi
}

# Sets PLACEMENT_ARGS (--trainer.accelerator/devices/num_nodes) from the allocation: one process per task, one
# device per process. Refuses a GPU count that differs from the task count: Lightning would otherwise train with
# fewer processes than GPUs (or several processes per GPU) without saying so.
bloodcls_placement() {
    TASKS_PER_NODE="$(bloodcls_tasks_per_node)" || exit 2
    GPUS_PER_NODE="$(bloodcls_gpus_per_node)"
    NUM_NODES="${SLURM_NNODES:-1}"
    ACCELERATOR="${ACCELERATOR:-$([[ "$GPUS_PER_NODE" -gt 0 ]] && echo gpu || echo cpu)}"
    if [[ "$GPUS_PER_NODE" -gt 0 && "$GPUS_PER_NODE" -ne "$TASKS_PER_NODE" ]]; then
        bloodcls_die "the job has $GPUS_PER_NODE GPU(s) per node but $TASKS_PER_NODE task(s) per node;" \
            "Lightning runs one process per GPU, so submit with --ntasks-per-node=$GPUS_PER_NODE" \
            "--gpus-per-node=$GPUS_PER_NODE"
    fi
    # Lightning's SLURMEnvironment checks --ntasks-per-node against devices and refuses --ntasks > 1 without it;
    # exporting the derived value makes srun and Lightning agree for jobs submitted with --ntasks only.
    export SLURM_NTASKS_PER_NODE="$TASKS_PER_NODE"
    PLACEMENT_ARGS=(
        --trainer.accelerator "$ACCELERATOR"
        --trainer.devices "$TASKS_PER_NODE"
        --trainer.num_nodes "$NUM_NODES"
    )
}

# The script owns these keys (placement and run directory); a user override would break requeue or placement.
bloodcls_refuse_owned_keys() {
    local arg
    for arg in "$@"; do
        case "$arg" in
            --trainer.devices* | --trainer.num_nodes* | --trainer.accelerator* | --trainer.default_root_dir* | \
                --trainer.logger.init_args.save_dir* | --trainer.logger.init_args.name* | \
                --trainer.logger.init_args.version*)
                bloodcls_die "${arg%%=*} is set by this script (from the allocation / RUNS_DIR, RUN_NAME);" \
                    "change the sbatch options or the environment variables instead" ;;
        esac
    done
}

# Sets RUN_DIR = save_dir/name/version (and its parts RUN_SAVE_DIR, RUN_LOGGER_NAME, RUN_VERSION): the CSV
# logger's directory and trainer.default_root_dir, the same in every attempt of the job. Lightning writes the
# auto-requeue checkpoint (hpc_ckpt_N.ckpt) into default_root_dir and, when a requeued job starts without
# --ckpt_path, resumes from the highest hpc_ckpt_N there.
bloodcls_run_dir() {
    RUN_SAVE_DIR="$1"
    RUN_LOGGER_NAME="$2"
    RUN_VERSION="$3"
    RUN_DIR="$RUN_SAVE_DIR/$RUN_LOGGER_NAME/$RUN_VERSION"
}

# Sets FIT_CONFIG: the `bloodcls fit` command line ("$@" after the W&B id) resolved once per job and pinned to
# RUN_DIR by slurm/pin_run_dir.py (a command-line override cannot reach a logger inside a list, e.g. CSV + W&B).
# A requeued attempt reuses the file, so every attempt runs exactly the same configuration.
bloodcls_pin_fit_config() {
    local wandb_id="$1"
    shift
    FIT_CONFIG="$(dirname "$RUN_DIR")/.slurm/${RUN_VERSION}.yaml"
    if [[ "${SLURM_RESTART_COUNT:-0}" -gt 0 && -s "$FIT_CONFIG" ]]; then
        return
    fi
    local resolved
    resolved="$(mktemp)"
    # A bad key or value stops here with bloodcls's error and its exit status (2): nothing created, no srun.
    "$BLOODCLS" fit "$@" --print_config >"$resolved" || {
        local status=$?
        rm -f "$resolved"
        exit "$status"
    }
    mkdir -p "$(dirname "$FIT_CONFIG")"
    "$BLOODCLS_PYTHON" "$BLOODCLS_REPO/slurm/pin_run_dir.py" --save_dir "$RUN_SAVE_DIR" --name "$RUN_LOGGER_NAME" \
        --version "$RUN_VERSION" --wandb_id "$wandb_id" <"$resolved" >"$FIT_CONFIG" || {
        local status=$?
        rm -f "$resolved" "$FIT_CONFIG"
        exit "$status"
    }
    rm -f "$resolved"
}

# Lightning's CSVLogger deletes an existing metrics.csv when it starts: keep the earlier attempts' rows beside it.
bloodcls_keep_previous_metrics() {
    local restarts="${SLURM_RESTART_COUNT:-0}"
    if [[ "$restarts" -gt 0 && -f "$RUN_DIR/metrics.csv" ]]; then
        mv "$RUN_DIR/metrics.csv" "$RUN_DIR/metrics.attempt${restarts}.csv"
    fi
}

# One line saying what this attempt does; SLURM_RESTART_COUNT counts requeues.
bloodcls_banner() {
    local resume="fresh start"
    local checkpoints=("$RUN_DIR"/hpc_ckpt_*.ckpt)
    if [[ -f "${checkpoints[0]}" ]]; then
        # The newest is the highest N, which Lightning picks too; sort -V orders hpc_ckpt_10 after hpc_ckpt_9.
        resume="resumes from $(printf '%s\n' "${checkpoints[@]}" | sort -V | tail -n 1)"
    fi
    echo "${BLOODCLS_SCRIPT}: job ${SLURM_JOB_ID} attempt $(( ${SLURM_RESTART_COUNT:-0} + 1 )) on $(hostname):" \
        "${NUM_NODES} node(s) x ${TASKS_PER_NODE} task(s), accelerator=${ACCELERATOR}, run dir ${RUN_DIR} (${resume})"
}
