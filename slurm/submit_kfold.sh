#!/bin/bash
# slurm/submit_kfold.sh: submit k-fold cross-validation (slurm/kfold.sbatch as a job array, one fold per task) and
# a summary job that starts once every fold succeeded and writes mean ± std over folds (`bloodcls summarize`).
#
# Usage (from the repository root):
#   [N_FOLDS=5] [CONFIG=...] [RUN_NAME=...] slurm/submit_kfold.sh [SBATCH_OPTIONS...] [-- FIT_OVERRIDES...]
#   SBATCH_OPTIONS apply to every fold (GPUs, time, partition); FIT_OVERRIDES go to `bloodcls fit` for every fold.
#   Prints the array job id and the summary job id; results go to RUNS_DIR/RUN_NAME/kfold<ARRAYJOBID>/:
#   fold<k>/ (one run directory per fold, with test/metrics.json), summary.csv, summary.json, summary.out.
#   If a fold fails, the summary job is cancelled (--kill-on-invalid-dep); fix, re-run that fold with
#   `N_FOLDS=.. sbatch --array=<k> ...` (it writes a new kfold<id>) or summarize what exists by hand.
#
# Environment variables
#   N_FOLDS       number of folds (array tasks 0..N_FOLDS-1)            default: 5
#   CONFIG, RUNS_DIR, RUN_NAME, ACCELERATOR, BLOODCLS, BLOODCLS_REPO  as in slurm/kfold.sbatch
#   SUMMARY_OPTS  extra sbatch options for the summary job (space-separated, e.g. "--partition=cpu")  default: none
#
# Examples
#   1 GPU per fold:            slurm/submit_kfold.sh --gpus-per-node=1
#   8 GPUs per fold, 1 node:   slurm/submit_kfold.sh --ntasks-per-node=8 --gpus-per-node=8 --cpus-per-task=8
#   4 nodes x 8 GPUs per fold: slurm/submit_kfold.sh --nodes=4 --ntasks-per-node=8 --gpus-per-node=8
#   PBC, 5 folds:              CONFIG=configs/pbc/resnet18_64px.yaml slurm/submit_kfold.sh --gpus-per-node=1 \
#                                  -- --data.init_args.root /data/pbc
set -euo pipefail

BLOODCLS_SCRIPT=submit_kfold.sh
# shellcheck source=slurm/common.sh
source "${BLOODCLS_REPO:-.}/slurm/common.sh"
bloodcls_locate
N_FOLDS="${N_FOLDS:-5}"
[[ "$N_FOLDS" =~ ^[0-9]+$ && "$N_FOLDS" -ge 2 ]] || bloodcls_die "N_FOLDS=$N_FOLDS: expected a whole number >= 2"
export N_FOLDS

sbatch_opts=()
fit_args=()
while [[ $# -gt 0 ]]; do
    if [[ "$1" == "--" ]]; then
        shift
        fit_args=("$@")
        break
    fi
    sbatch_opts+=("$1")
    shift
done

array_id="$(sbatch --parsable --array="0-$((N_FOLDS - 1))" "${sbatch_opts[@]}" \
    "$BLOODCLS_REPO/slurm/kfold.sbatch" "${fit_args[@]}")"
array_id="${array_id%%;*}"  # --parsable prints "id;cluster" on multi-cluster sites
kfold_dir="$RUNS_DIR/$RUN_NAME/kfold${array_id}"
folds=()
for ((k = 0; k < N_FOLDS; k++)); do
    folds+=("$kfold_dir/fold$k")
done
summary_cmd="$(printf '%q ' "$BLOODCLS" summarize "${folds[@]}" \
    --output "$kfold_dir/summary.csv" --output "$kfold_dir/summary.json")"
# shellcheck disable=SC2086  # SUMMARY_OPTS is a list of options
summary_id="$(sbatch --parsable --job-name=bloodcls-kfold-summary --ntasks=1 \
    --dependency="afterok:${array_id}" --kill-on-invalid-dep=yes --output="$kfold_dir/summary.out" \
    ${SUMMARY_OPTS:-} --wrap "$summary_cmd")"
summary_id="${summary_id%%;*}"
echo "array job: ${array_id} (${N_FOLDS} folds)"
echo "summary job: ${summary_id} (after every fold succeeds)"
echo "results: ${kfold_dir}/summary.csv"
