#!/usr/bin/env bash
# GPU check (issue 15): one call on one lent GPU, under 10 minutes, everything installed here.
#
#   make gpu-wheels                                   # on the CPU machine, once: fills .whl/
#   bash benchmarks/gpu_check.sh                      # on the GPU machine (the device tool's
#                                                     # run, carry [".whl"], timeout_s 600)
#   GPU_CHECK_DRY_RUN=1 bash benchmarks/gpu_check.sh  # on a CPU: tiny sizes, no fp16, temp dir
#
# Parts, each under its own timeout and all under one budget (GPU_CHECK_BUDGET seconds, 540 by
# default), so one hang cannot eat the call and the report is always written:
#   install   the carried wheels into /tmp/site (DeepSpeed, pymetis, pydantic, hjson, ...)
#   env       device, driver and library versions (benchmarks/gpu_check.py env)
#   prepare   the products-shaped graph (python -m gnnzero.prepare), in the background
#   ops       DeepSpeed's FusedAdam, JIT-built once; if that fails, the runs use torch's AdamW
#   grid      benchmarks/run.py: fp32/bf16/fp16 x ZeRO 0-3, Cluster-GCN, 1 GPU, + the plain loop
#   products  benchmarks/run.py on the prepared products-shaped graph
#   report    benchmarks/gpu_check.py report: bench_gpu.md labelled with the device and commit
# Results: benchmarks/results/bench_gpu.{jsonl,md,png}, bench_gpu_products.{jsonl,png}; the
# same files, the log and the runs' logs (gpu_check_runs.tar.gz) also under $OUT when it is set.
set -u -o pipefail
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."

DRY=${GPU_CHECK_DRY_RUN:-0}
if [ "$DRY" = 1 ]; then
    PY=${GPU_CHECK_PYTHON:-.venv/bin/python}
    WORK=${GPU_CHECK_WORK:-$(mktemp -d /tmp/gpu_check_dry.XXXXXX)}
    RESULTS=${GPU_CHECK_RESULTS:-$WORK/results}
    # The GPU machine's image: CPU sizes, fp16 refused on CPU, a few stages.
    : "${GPU_CHECK_NODES:=1500}" "${GPU_CHECK_HIDDEN:=32}" "${GPU_CHECK_EPOCHS:=1}"
    : "${GPU_CHECK_STAGES:=0,3}" "${GPU_CHECK_PRECISIONS:=fp32,bf16}"
    : "${GPU_CHECK_PRODUCTS_NODES:=4000}" "${GPU_CHECK_PRODUCTS_PARTS:=8}"
    : "${GPU_CHECK_PRODUCTS_CLUSTERS:=4}" "${GPU_CHECK_PRODUCTS_EPOCHS:=1}"
    : "${GPU_CHECK_PRODUCTS_STAGES:=0}" "${GPU_CHECK_PRODUCTS_PRECISIONS:=bf16}"
    : "${GPU_CHECK_BUDGET:=420}"
else
    PY=${GPU_CHECK_PYTHON:-python3}
    WORK=${GPU_CHECK_WORK:-/tmp/gpu_check}
    RESULTS=${GPU_CHECK_RESULTS:-benchmarks/results}
fi
# Grid: the workload of results/bench_cpu.* (synthetic 20,000 nodes, GraphSAGE 128 x 3), with
# more epochs, since a GPU epoch of it takes milliseconds.
NODES=${GPU_CHECK_NODES:-20000}
HIDDEN=${GPU_CHECK_HIDDEN:-128}
EPOCHS=${GPU_CHECK_EPOCHS:-20}
STAGES=${GPU_CHECK_STAGES:-0,1,2,3}
PRECISIONS=${GPU_CHECK_PRECISIONS:-fp32,bf16,fp16}
# Products-shaped (ogbn-products: average degree 50.5, 100 features, 47 classes, float16
# features, METIS parts of ~2,450 nodes, 8 a batch), scaled down to fit the call.
P_NODES=${GPU_CHECK_PRODUCTS_NODES:-300000}
P_PARTS=${GPU_CHECK_PRODUCTS_PARTS:-120}
P_CLUSTERS=${GPU_CHECK_PRODUCTS_CLUSTERS:-8}
P_EPOCHS=${GPU_CHECK_PRODUCTS_EPOCHS:-5}
P_STAGES=${GPU_CHECK_PRODUCTS_STAGES:-0,3}
P_PRECISIONS=${GPU_CHECK_PRODUCTS_PRECISIONS:-bf16}
# What the GPU image lacks (the Makefile's GPU_WHEEL_NAMES; make gpu-wheels): DeepSpeed, its
# requirements pydantic (+ pydantic-core, annotated-types, typing-inspection, typing-extensions
# >= 4.16) and hjson, pymetis; ninja, py-cpuinfo and msgpack are in the image, carried anyway
# (small) so that an image without them still runs.  The image has the rest of DeepSpeed's
# requirements: torch numpy einops packaging psutil tqdm.
GPU_WHEELS="deepspeed hjson pydantic pydantic-core annotated-types typing-inspection
            typing-extensions pymetis ninja py-cpuinfo msgpack"
GPU_IMAGE_HAS="torch numpy einops packaging psutil tqdm"
BUDGET=${GPU_CHECK_BUDGET:-540}   # seconds for all parts; the device call's limit is 600
RESERVE=35                        # kept back for the last report and the copies
LAUNCH_TIMEOUT=${GPU_CHECK_LAUNCH_TIMEOUT:-150}   # one deepspeed / baseline process

mkdir -p "$WORK" "$RESULTS"
[ -n "${OUT:-}" ] && mkdir -p "$OUT"
LOG=${OUT:+$OUT/gpu_check.log}
LOG=${LOG:-$WORK/gpu_check.log}
PARTS=$WORK/parts.tsv
T0=$(date +%s)

part() {  # part NAME CAP_SECONDS COMMAND...: run under min(CAP, budget left); record it
    local name=$1 cap=$2 left limit start rc
    shift 2
    left=$(( BUDGET - ($(date +%s) - T0) - RESERVE ))
    limit=$(( cap < left ? cap : left ))
    if (( limit < 20 )); then
        echo "== $name: skipped, $left s of the budget left"
        printf '%s\tskipped\t0\t%s\n' "$name" "$*" >>"$PARTS"
        return 125
    fi
    echo "== $name (at most ${limit} s): $*"
    start=$(date +%s)
    timeout --kill-after=15 "$limit" "$@"
    rc=$?
    (( rc == 124 || rc == 137 )) && echo "== $name: TIMED OUT after $limit s"
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - start ))" "$*" >>"$PARTS"
    echo "== $name: exit $rc after $(( $(date +%s) - start )) s (total $(( $(date +%s) - T0 )) s)"
    return "$rc"
}

report() {  # bench_gpu.* from what exists so far, copied under $OUT
    local rc=0
    timeout 90 "$PY" benchmarks/gpu_check.py report --work "$WORK" --results "$RESULTS" \
        ${OUT:+--out "$OUT"} "$@" || rc=$?
    echo "== report: exit $rc"
    return "$rc"
}

main() {
    # A warm machine keeps /tmp: nothing of an earlier call may pass for this one's.
    rm -rf "$WORK"/{runs,sweeps,products,hide,site312,ds_configs}
    [ -f .whl/COMMIT ] && export GNNZERO_GIT_COMMIT="$(cat .whl/COMMIT)"  # no .git there
    rm -f "$WORK"/{env.json,command.txt,prepare.log,collectives.log} "$RESULTS"/bench_gpu.* \
        "$RESULTS"/bench_gpu_products.*
    : >"$PARTS"
    printf '%s\n' "$(env | grep '^GPU_CHECK_' | sort | tr '\n' ' ')bash benchmarks/gpu_check.sh" \
        >"$WORK/command.txt"
    echo "== gpu_check: dry run $DRY, work $WORK, results $RESULTS, log $LOG, budget $BUDGET s"
    local name missing=""
    for name in $GPU_WHEELS; do
        ls .whl/"$(echo "$name" | tr - _)"-*.whl >/dev/null 2>&1 || missing="$missing $name"
    done
    if [ -n "$missing" ]; then
        echo "== no wheel in .whl/ for:$missing (make gpu-wheels here; carry [\".whl\"] there)"
        return 1
    fi
    if [ "$DRY" = 1 ]; then
        # The wheels must install for CPython 3.12 / manylinux; importing them needs that Python.
        part install 120 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
            --upgrade --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
            --platform manylinux2014_x86_64 --target "$WORK/site312" .whl/*.whl || return 1
        # Hide the optional sparse libraries, which the GPU image lacks.
        for name in torch_sparse torch_scatter torch_cluster torch_spline_conv pyg_lib; do
            mkdir -p "$WORK/hide/$name"
            echo "raise ImportError('hidden by gpu_check dry run: the GPU image has no $name')" \
                >"$WORK/hide/$name/__init__.py"
        done
        export PYTHONPATH=$WORK/hide:$PWD
    else
        part install 120 python3 -m pip install -q --no-index --no-deps --no-compile \
            --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || return 1
        export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH
        export DS_SKIP_CUDA_CHECK=1  # nvcc and torch's CUDA may differ in the minor version
        nvidia-smi || true
    fi

    # shellcheck disable=SC2086  # word lists
    part env 120 "$PY" benchmarks/gpu_check.py env --out-json "$WORK/env.json" \
        --require $GPU_WHEELS $GPU_IMAGE_HAS || return 1

    # The collectives under a real NCCL group (host and device tensors through utils/dist.py).
    part collectives 90 "$PY" -m pytest -q -p no:cacheprovider tests/test_collectives.py \
        >"$WORK/collectives.log" 2>&1
    cat "$WORK/collectives.log"
    [ -n "${OUT:-}" ] && cp "$WORK/collectives.log" "$OUT/" 2>/dev/null

    # METIS is one CPU thread: it runs while FusedAdam compiles, and ends before the grid.
    rm -rf "$WORK/products"
    ( part prepare 240 "$PY" -m gnnzero.prepare --dataset synthetic --out "$WORK/products" \
        --num-nodes "$P_NODES" --avg-degree 50.5 --num-features 100 --num-classes 47 \
        --words-per-node 8 --num-parts "$P_PARTS" --feature-store dense \
        --feature-dtype float16 ) >"$WORK/prepare.log" 2>&1 &
    local prepare_pid=$!

    if [ "$DRY" != 1 ]; then
        if ! part ops 240 "$PY" benchmarks/gpu_check.py build-ops; then
            echo "== ops: FusedAdam did not build; the runs use torch.optim.AdamW (torch_adam)"
            "$PY" benchmarks/gpu_check.py torch-adam --backup "$WORK/ds_configs" \
                && trap 'cp "$WORK"/ds_configs/*.json ds_configs/' EXIT
        fi
    fi
    wait "$prepare_pid"
    cat "$WORK/prepare.log"

    part grid 420 "$PY" benchmarks/run.py --tag gpu --results-dir "$WORK/sweeps" \
        --work-dir "$WORK/runs" --stages "$STAGES" --precisions "$PRECISIONS" --worlds 1 \
        --loaders cluster --models dense --num-nodes "$NODES" --hidden "$HIDDEN" --layers 3 \
        --epochs "$EPOCHS" --timeout "$LAUNCH_TIMEOUT"
    report  # the grid's results come back even if the products part is cut

    if [ -f "$WORK/products/manifest.json" ]; then
        part products 300 "$PY" benchmarks/run.py --tag gpu_products \
            --results-dir "$WORK/sweeps" --work-dir "$WORK/runs" \
            --dataset "$WORK/products" --num-nodes "$P_NODES" --stages "$P_STAGES" \
            --precisions "$P_PRECISIONS" --worlds 1 --loaders cluster --models dense \
            --hidden 128 --layers 3 --epochs "$P_EPOCHS" --timeout "$LAUNCH_TIMEOUT" \
            --extra "--num-parts $P_PARTS --clusters-per-batch $P_CLUSTERS"
    else
        echo "== products: skipped, the prepared graph is missing (see prepare above)"
        printf 'products\tskipped\t0\tno prepared graph\n' >>"$PARTS"
    fi
    local status=0
    report --final || status=1
    awk -F'\t' '$2 != 0 {bad = 1} END {exit bad}' "$PARTS" || status=1
    echo "== gpu_check: done in $(( $(date +%s) - T0 )) s, exit $status;" \
        "results in $RESULTS${OUT:+ and $OUT}"
    return "$status"
}

main 2>&1 | tee "$LOG"
