#!/usr/bin/env bash
# dev/gpu_check.sh: everything that only a GPU can check, in tiers sized for lent GPU sessions (a session has about 15
# minutes of device time, machine start and builds included, one command at most 10 minutes, no network, no ffmpeg,
# no diffusers on the device image, at most 8 files back).
#   dev/gpu_check.sh [--dry-run] [1|2|3|4|5]   (default tier 1; each tier is one command on a fresh machine)
#   tier 1 (<= 9 minutes on one H100, builds included): builds (make -j, sm_90 only), the attention lab (flash, naive
#          and cuDNN vs the CPU twin, and at Wan sizes with timings) and compute-sanitizer on its small cases, the GEMM
#          lab, test_gpu bf16 and on the world preset (the flash path), the 1.3B forward bench with cuDNN and with the
#          own flash kernel (TMD_CUDNN=0), the 1.3B Stage 1 and Stage 2 steps (train_tmd --bench) with the memory in
#          use next to the plan and where the time goes
#   tier 2: the fp32 parity builds (GEMM=own ATTN=naive, cuBLASLt; with --recompute 1), the VAE decoder and encoder
#          parity, the umT5 encoder's parity alone (fp32; the bf16 one is in tier 1's test_gpu) and the umT5 lab with the
#          umT5-XXL encoder benchmark (random BF16 weights, batch 16 x 100 tokens: ms per prompt against <= 20 ms), the
#          1.3B forward of diffusers' eager WanTransformer3DModel (from the wheels dev/fetch_deps.sh put in dev/wheels/
#          on a machine with PyPI), to set against tier 1's forward on the same kind of device
#   tier 3: the rest of the kernel lab (dev/cuda/run_all.sh), the latent-dataset check and the prompt chain at toy size
#   tier 4: the built-in world end to end: teacher, Stage 1 and 2 with resume and recompute bit-identity, KD, the
#          baseline, sampling, ./train_tmd's pipeline and its rerun; FULL=1 adds the default run (a session of its own)
#   tier 5 (a machine with 2+ GPUs): the sharded optimizer step on 2 ranks, over NCCL and staged through MPI
# One results file: $OUT/gpu-check-tier<N>.txt when OUT is set (a lent device session), else dev/results/. Its first
# line says the rung (hardware, with the device's name), the commit and the command.
# cudnn-frontend's headers: CUDNN_FRONTEND_PATH, else dev/deps/cudnn_frontend/include (dev/fetch_deps.sh; carry it to a
# device without network), else the pip package; without them the build uses the own flash kernels and says so.
# --dry-run: each tier's steps with their estimated times (estimates from arithmetic, not measurements) and exits
# non-zero if tier 1's estimate passes 540 s (CI runs it).
set -uo pipefail
cd "$(dirname "$0")/.."
dry=0; tier=1
for a in "$@"; do
    case "$a" in
        --dry-run) dry=1 ;;
        1|2|3|4|5) tier=$a ;;
        *) echo "usage: $0 [--dry-run] [1|2|3|4|5]" >&2; exit 2 ;;
    esac
done
J=$(nproc 2>/dev/null || echo 4)
if [ -z "${CUDNN_FRONTEND_PATH:-}" ] && [ -f dev/deps/cudnn_frontend/include/cudnn_frontend.h ]; then
    export CUDNN_FRONTEND_PATH="$PWD/dev/deps/cudnn_frontend/include"
fi
B13="--preset wan2.1-t2v-1.3b --batch 1 --latent-frames 21 --latent-height 60 --latent-width 104"
S13="$B13 --recompute on --M 2 --N 2 --head-blocks 5"
W="NVEXTRA=-Werror all-warnings -Xcompiler -Werror"

# each step: tier, estimated seconds, what, command. The estimates (arithmetic, for one H100 with 16 cores):
#   builds: the cuDNN graphs' unit ~60-90 s, then the three programs in parallel (-j16), ~90 s each at -O3 for one
#     arch (they link the unit, so they wait for it); attention lab: its CPU twin at 96 rows and two heads plus ~30 s of timed kernels at 32,760
#     tokens (6.6 TFLOP per self-attention forward at ~300 TFLOP/s, 28 runs per variant and direction); 1.3B forward
#     bench: ~10 s of host weight init + 12 passes of ~0.5-0.8 s; 1.3B steps: init + 4 (Stage 1) or 7 (Stage 2) steps
#     of ~2-6 s (3x / 4x a forward's FLOPs at 40 % of peak) plus the host-side plan and random weights; umT5 lab: ~50 s
#     to build one lab program, then ~45 s: host random weights of one XXL block (~190 M values), 9.3 GB uploaded, the
#     kernel checks and 2 x (3 warm-up + DEV_REPS) encodes of ~18 TFLOP (16 x 100 tokens) at ~50 % of peak. A step that
#     would pass the tier's budget is skipped with a line, so the results file is always written
STEPS=(
"1|180|builds: train_tmd sample_tmd test_gpu (bf16, sm_90, cuDNN where found) and the attention and GEMM labs|make -j$J GPU_ARCH=sm_90 cuda \"$W\" && make -C dev/cuda -j$J ARCH=sm_90 WERROR=1 attention gemm"
"1|60|attention lab: flash, naive, cuDNN vs the CPU twin, Wan sizes, timings|dev/cuda/attention"
"1|40|compute-sanitizer (memcheck) on the attention lab's small cases|compute-sanitizer --tool memcheck --error-exitcode 1 dev/cuda/attention --small"
"1|30|GEMM lab (cuBLASLt vs the CPU twin, timings)|dev/cuda/gemm"
"1|25|test_gpu bf16 (the parity config; also the VAE decoder and encoder, and the umT5 encoder against its bf16 tolerance)|./test_gpu"
"1|25|test_gpu bf16 on the world preset (head dim 64: the flash / cuDNN path)|./test_gpu --preset world --frames 2 --height 16 --width 16"
"1|30|1.3B forward, 480p x 81 frames, cuDNN attention|./sample_tmd $B13 --bench 5"
"1|30|1.3B forward, the own flash attention (TMD_CUDNN=0)|env TMD_CUDNN=0 ./sample_tmd $B13 --bench 5"
"1|45|1.3B Stage 1 step (bench, memory against the plan)|./train_tmd --stage stage1 --bench 4 $S13"
"1|70|1.3B Stage 2 step with the GAN (bench, memory against the plan)|./train_tmd --stage stage2 --bench 6 $S13 --disc-width 570 --update-every 5"
"2|180|fp32 builds: GEMM=own ATTN=naive and cuBLASLt (test_gpu)|make -j$J -B GPU_ARCH=sm_90 PRECISION=FP32 GEMM=own ATTN=naive test_gpu \"$W\" && cp test_gpu /tmp/test_gpu_fp32_own && make -j$J -B GPU_ARCH=sm_90 PRECISION=FP32 test_gpu \"$W\" && cp test_gpu /tmp/test_gpu_fp32"
"2|60|fp32 parity, in-repo GEMM and cuBLASLt, and with recompute|/tmp/test_gpu_fp32_own && /tmp/test_gpu_fp32 && /tmp/test_gpu_fp32 --recompute 1"
"2|60|the VAE decoder's and encoder's parity (fp32)|/tmp/test_gpu_fp32_own --vae-only"
"2|20|the umT5 encoder's parity alone (fp32, tolerance 1e-5; with the committed peer vectors' 500-token case)|/tmp/test_gpu_fp32_own --umt5-only"
"2|100|umT5 lab: its kernels vs the CPU twins, then the umT5-XXL encoder at batch 16 x 100 tokens (random BF16 weights, 9.3 GB): ms per prompt against <= 20 ms|make -C dev/cuda -j$J ARCH=sm_90 WERROR=1 umt5 && dev/cuda/umt5"
"2|120|1.3B forward vs diffusers' eager WanTransformer3DModel (diffusers from dev/wheels)|pip install --no-index --no-deps --find-links dev/wheels diffusers && python3 dev/bench/diffusers_forward.py 5"
"3|180|builds: the bf16 programs (sm_90)|make -j$J GPU_ARCH=sm_90 cuda \"$W\""
"3|240|the rest of the kernel lab (dev/cuda/run_all.sh: every kernel vs its CPU twin, both precisions)|./dev/cuda/run_all.sh"
"3|120|latent datasets: dev/data_check.sh|env TRAIN=./train_tmd dev/data_check.sh"
"3|25|a sentence to latents (and an mp4 where ffmpeg is) and the dataset recipe with its KD pairs, toy size: dev/prompt_chain_check.sh|dev/prompt_chain_check.sh"
"4|180|builds: the bf16 programs (sm_90)|make -j$J GPU_ARCH=sm_90 cuda \"$W\""
"4|400|the built-in world end to end: teacher, Stage 1 / 2 (resume, recompute bit-identity), KD, baseline, sampling, the pipeline|world_end_to_end"
"5|150|multi-GPU (2+ GPUs and mpirun): the sharded optimizer step over NCCL, then staged through MPI, against the replicated one|make GPU_ARCH=sm_90 dev/mpi/shard_gpu_check && mpirun --allow-run-as-root -np 2 dev/mpi/shard_gpu_check && mpirun --allow-run-as-root -np 2 -x TMD_COMM=mpi dev/mpi/shard_gpu_check"
"5|150|multi-GPU: context parallelism's DiT forward and backward on 2 GPUs against one GPU (the simulated build: fp32, in-repo GEMM, naive attention, where the velocity must match bit for bit), over NCCL, then staged through MPI|rm -f dev/mpi/cp_gpu_check && make GPU_ARCH=sm_90 PRECISION=FP32 GEMM=own ATTN=naive dev/mpi/cp_gpu_check \"$W\" && mpirun --allow-run-as-root -np 2 dev/mpi/cp_gpu_check && mpirun --allow-run-as-root -np 2 -x TMD_COMM=mpi dev/mpi/cp_gpu_check"
"5|150|multi-GPU: fully sharded (FSDP) training steps of a tiny DiT on 2 GPUs against the replicated steps (fp32, in-repo GEMM, naive attention: bit for bit), over NCCL (the gathers prefetched on a second stream, ordered by events: this is the first run of that path) with recompute, then staged through MPI|rm -f dev/mpi/fsdp_gpu_check && make GPU_ARCH=sm_90 PRECISION=FP32 GEMM=own ATTN=naive dev/mpi/fsdp_gpu_check \"$W\" && mpirun --allow-run-as-root -np 2 dev/mpi/fsdp_gpu_check --recompute && mpirun --allow-run-as-root -np 2 -x TMD_COMM=mpi dev/mpi/fsdp_gpu_check --recompute"
)

total=(0 0 0 0 0 0)
for s in "${STEPS[@]}"; do IFS='|' read -r t e _ _ <<< "$s"; total[$t]=$(( ${total[$t]} + e )); done
if [ $dry = 1 ]; then
    for t in 1 2 3 4 5; do
        echo "tier $t (estimated $(( ${total[$t]} )) s; estimates from arithmetic, not measured):"
        for s in "${STEPS[@]}"; do IFS='|' read -r st e what cmd <<< "$s"; [ "$st" = $t ] && printf "  %4d s  %s\n          \$ %s\n" "$e" "$what" "$cmd"; done
    done
    echo "tier 1 total: ${total[1]} s estimated (limit 540 s: 9 minutes of one 10-minute command)"
    [ "${total[1]}" -le 540 ] || { echo "tier 1's estimate exceeds 540 s: move steps to tier 2" >&2; exit 1; }
    exit 0
fi

# tier 4's world run (the former steps 4-4e of this script); sample_tmd writes .npy (no ffmpeg on the device image)
world_end_to_end() {
    local T=/tmp/gpu_check_teacher.safetensors f=0
    r() { echo "\$ $*"; "$@" || { echo "FAILED: $*"; f=1; }; }
    r ./train_tmd --stage teacher --preset world --steps 300 --batch 8 --lr 3e-4 --log-every 50 --out $T
    r ./sample_tmd --weights $T --batch 4 --steps 16 --out /tmp/gpu_check_samples.npy
    r ./train_tmd --stage stage1 --weights $T --steps 40 --batch 4 --log-every 10 --out /tmp/gpu_check_s1.safetensors
    r ./train_tmd --stage stage1 --weights $T --steps 20 --batch 4 --log-every 10 --out /tmp/gpu_check_s1_half.safetensors
    r ./train_tmd --stage stage1 --weights $T --steps 40 --batch 4 --log-every 10 --resume /tmp/gpu_check_s1_half.safetensors --out /tmp/gpu_check_s1_resumed.safetensors
    r cmp /tmp/gpu_check_s1.safetensors /tmp/gpu_check_s1_resumed.safetensors && echo "Stage 1 resume: 20 + 20 steps = 40 steps, bit for bit"
    r ./train_tmd --stage stage2 --weights $T --student /tmp/gpu_check_s1.safetensors --steps 50 --batch 4 --log-every 10 --out /tmp/gpu_check_s2.safetensors
    r ./train_tmd --stage stage2 --weights $T --student /tmp/gpu_check_s1.safetensors --steps 25 --batch 4 --log-every 10 --out /tmp/gpu_check_s2_half.safetensors
    r ./train_tmd --stage stage2 --weights $T --steps 50 --batch 4 --log-every 10 --resume /tmp/gpu_check_s2_half.safetensors --out /tmp/gpu_check_s2_resumed.safetensors
    r cmp /tmp/gpu_check_s2.safetensors /tmp/gpu_check_s2_resumed.safetensors && echo "Stage 2 resume: 25 + 25 steps = 50 steps, bit for bit"
    r ./train_tmd --stage stage1 --weights $T --steps 40 --batch 4 --log-every 10 --recompute on --out /tmp/gpu_check_s1_rc.safetensors
    r cmp /tmp/gpu_check_s1.safetensors /tmp/gpu_check_s1_rc.safetensors && echo "Stage 1 with --recompute on = without, bit for bit"
    r ./train_tmd --stage stage2 --weights $T --student /tmp/gpu_check_s1.safetensors --steps 50 --batch 4 --log-every 10 --recompute on --out /tmp/gpu_check_s2_rc.safetensors
    r cmp /tmp/gpu_check_s2.safetensors /tmp/gpu_check_s2_rc.safetensors && echo "Stage 2 with --recompute on = without, bit for bit"
    rm -f /tmp/gpu_check_kd_pairs.safetensors
    r ./train_tmd --stage kd --weights $T --kd-steps 40 --kd-pairs 32 --kd-cache /tmp/gpu_check_kd_pairs.safetensors --log-every 10 --out /tmp/gpu_check_kd.safetensors
    r ./train_tmd --stage baseline --weights $T --student /tmp/gpu_check_kd.safetensors --steps 50 --batch 4 --log-every 10 --out /tmp/gpu_check_base.safetensors
    for M in 1 2; do r ./sample_tmd --mode tmd --weights $T --student /tmp/gpu_check_s2.safetensors --M $M --N 2 --batch 4 --out /tmp/gpu_check_tmd_M$M.npy; done
    local R=/tmp/gpu_check_run; rm -rf $R; mkdir -p $R; cp $T $R/teacher.safetensors
    r ./train_tmd --run-dir $R --tmmf-steps 40 --dmd-iters 50 --kd-steps 40 --kd-pairs 32 --save-every 20 --eval-n 8 --log-every 10
    ./train_tmd --run-dir $R --tmmf-steps 40 --dmd-iters 50 --kd-steps 40 --kd-pairs 32 --save-every 20 --eval-n 8 --log-every 10 > /tmp/gpu_check_rerun.txt
    local n; n=$(grep -c "^== .*skipped" /tmp/gpu_check_rerun.txt); echo "rerun: $n of 6 stages skipped (want 6: teacher, stage1, stage2, kd, baseline_m1, baseline_m2)"; [ "$n" = 6 ] || f=1
    if [ "${FULL:-0}" = 1 ]; then
        rm -rf /tmp/gpu_check_full; local t0; t0=$(date +%s); r ./train_tmd --run-dir /tmp/gpu_check_full
        echo "default run: $(( $(date +%s) - t0 )) s wall (goal: < 1800 s on one H100)"
    fi
    return $f
}

dir="${OUT:-dev/results}"; mkdir -p "$dir"
out="$dir/gpu-check-tier$tier.txt"
[ -z "${OUT:-}" ] && out="$dir/gpu-check-tier$tier-$(date +%Y%m%d-%H%M%S).txt"
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
commit="$(git rev-parse HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
{
    if [ -n "$gpu" ]; then echo "rung: hardware ($gpu) | commit $commit | command: dev/gpu_check.sh ${*:+$* }(tier $tier)"
    else echo "rung: builds only, no GPU on this machine | commit $commit | command: dev/gpu_check.sh ${*:+$* }(tier $tier)"; fi
    date -u '+%Y-%m-%d %H:%M UTC'
    nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv 2>/dev/null
    nvcc --version | tail -1
    echo "tier $tier: estimated ${total[$tier]} s (arithmetic, see --dry-run)"
} > "$out"
exec > >(tee -a "$out") 2>&1
budget=$(( tier == 1 ? 540 : 570 ))   # one command may run 600 s: leave the file time to be written
t_start=$(date +%s); fail=0; first=1; nogpu=0
for s in "${STEPS[@]}"; do
    IFS='|' read -r st e what cmd <<< "$s"
    [ "$st" = "$tier" ] || continue
    used=$(( $(date +%s) - t_start ))
    if [ $first = 0 ] && [ -z "$gpu" ]; then echo; echo "==== SKIPPED (no GPU): $what"; nogpu=1; continue; fi
    if [ $(( used + e )) -gt $budget ] && [ $first = 0 ]; then echo; echo "==== SKIPPED (the tier's $budget s would be passed: $used s used, ~$e s estimated): $what"; fail=1; continue; fi
    echo; echo "==== $what (estimated $e s)"; echo "\$ $cmd"
    t0=$(date +%s)
    if [ "$cmd" = world_end_to_end ]; then world_end_to_end; rc=$?
    else timeout $(( budget - used )) bash -c "$cmd"; rc=$?; fi
    echo "---- exit $rc, $(( $(date +%s) - t0 )) s (estimated $e s)"
    [ $rc -ne 0 ] && fail=1
    first=0
done
if [ $nogpu = 1 ]; then verdict="no GPU on this machine: only the builds ran ($([ $fail = 0 ] && echo passed || echo FAILED))"
elif [ $fail = 0 ]; then verdict="every step passed"; else verdict="some steps FAILED or were skipped (see above)"; fi
echo; echo "tier $tier: $(( $(date +%s) - t_start )) s in all; $verdict"
echo "results file: $out"
exit $fail
