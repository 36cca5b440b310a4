#!/usr/bin/env bash
# dev/cuda/run_all.sh: build and run every kernel check in dev/cuda, stopping at the first failure.
#   ./dev/cuda/run_all.sh            the bf16 checks, then the all-fp32 ones
#   ./dev/cuda/run_all.sh bf16       only the bf16 build (or: fp32)
#   SEED=123 ./dev/cuda/run_all.sh   repeat a run's random inputs (each program prints its seed)
# Everything printed goes to dev/results/cuda-<date>-<host>/ as well: build.log, gpu.txt, one <check>.log per program,
# and summary.txt. Exit status: 0 when every check passed, else the failing program's status.
set -uo pipefail
cd "$(dirname "$0")"
which="${1:-both}"
case "$which" in bf16|fp32|both) ;; *) echo "usage: $0 [bf16|fp32|both]" >&2; exit 2 ;; esac
out="../results/cuda-$(date +%Y%m%d-%H%M%S)-$(hostname -s 2>/dev/null || echo host)"
mkdir -p "$out"
echo "results: dev/results/${out#../results/}"

goals=""
[ "$which" != fp32 ] && goals="$goals all"
[ "$which" != bf16 ] && goals="$goals fp32"
if ! make -j"$(nproc 2>/dev/null || echo 4)" $goals 2>&1 | tee "$out/build.log"; then
    echo "build FAILED (see $out/build.log)" | tee -a "$out/summary.txt"; exit 1
fi
{ echo "commit: $(git rev-parse HEAD 2>/dev/null)$(git diff --quiet 2>/dev/null || echo " (with uncommitted changes)")"; echo "command: dev/cuda/run_all.sh $which"; nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem,driver_version --format=csv 2>&1; nvcc --version | tail -1; } > "$out/gpu.txt"
cat "$out/gpu.txt"

order="random timestep patchify gelu rope rmsnorm layernorm residual fm_loss adamw gemm gemm_own conv3d vae umt5"
bins=""
[ "$which" != fp32 ] && bins="$bins $order attention"
[ "$which" != bf16 ] && for k in $order; do bins="$bins ${k}_fp32"; done   # gemm_own -> gemm_own_fp32
for b in $bins; do
    echo; echo "==== $b"
    start=$(date +%s)
    ./"$b" ${SEED:-} 2>&1 | tee "$out/$b.log"
    rc=${PIPESTATUS[0]}
    echo "$b: exit $rc ($(( $(date +%s) - start )) s)" >> "$out/summary.txt"
    if [ "$rc" -ne 0 ]; then
        echo "FAILED: $b (exit $rc); log: $out/$b.log"; cat "$out/summary.txt"; exit "$rc"
    fi
done
echo; cat "$out/summary.txt"; echo "all kernel checks passed"
