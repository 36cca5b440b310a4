#!/usr/bin/env bash
# dev/data_check.sh: ./train_tmd --weights TEACHER --data FILE end to end at the tiny preset, from the project's own
# tools only: dev/tiny_latent_data.c writes a random tiny teacher (wan.h's writer) and random .npy latents and contexts
# (stand-ins for ./test_tmd vae encode and ./test_tmd encode), ./test_tmd pack makes the dataset, then train_tmd runs
#   Stage 1 for 2 steps; Stage 1 for 1 step, resumed to 2 (must equal the 2-step checkpoint byte for byte: the data
#   position, the streams and the weights are all in the checkpoint); Stage 2 (GAN terms on) for 2 steps from Stage 1
#   (one student and one critic iteration with --update-every 2); the KD warm-up for 2 steps on 3 teacher pairs made
#   from the dataset's contexts (cached), again from the cache (must equal the first byte for byte); the DMD2-v
#   baseline for 2 steps from the KD-warmed student.
#   TRAIN=./train_tmd dev/data_check.sh                         on a GPU (make train_tmd first)
#   TRAIN=/tmp/train_tmd_sim RUN="nice -n 10 SIM/run.sh" dev/data_check.sh   under a functional simulator (a build with
#       GPU_ARCH=sm_80 CUDART=shared GEMM=own ATTN=naive PRECISION=FP32 NVFLAGS=-O3; ~10 minutes)
# Needs ./test_tmd (make test_tmd). Works in $WORK (default /tmp/tmd_data_check); exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
TRAIN=${TRAIN:-./train_tmd}; RUN=${RUN:-}; W=${WORK:-/tmp/tmd_data_check}
rm -rf "$W"; mkdir -p "$W"
[ -x ./test_tmd ] || make test_tmd >/dev/null
cc -O2 -std=c11 -D_POSIX_C_SOURCE=200809L dev/tiny_latent_data.c -o "$W/tiny_latent_data" -lm
"$W/tiny_latent_data" "$W/in"
./test_tmd pack --latents "$W/in/lat" --contexts "$W/in/ctx" --negative "$W/in/neg.npy" --captions "$W/in/captions.txt" --out "$W/data.safetensors"
T="--weights $W/in/tiny_teacher.safetensors --data $W/data.safetensors --batch 1 --log-every 1 --disc-width 16 --update-every 2"
t() { echo "\$ train_tmd $*"; $RUN $TRAIN $T "$@"; }
t --stage stage1 --steps 2 --out "$W/s1.safetensors"
t --stage stage1 --steps 1 --out "$W/s1_half.safetensors" > /dev/null
t --stage stage1 --steps 2 --resume "$W/s1_half.safetensors" --out "$W/s1_resumed.safetensors" | grep -E "resumed|TM-MF step"
cmp "$W/s1.safetensors" "$W/s1_resumed.safetensors" && echo "Stage 1 on --data: 1 + 1 resumed steps = 2 steps, byte for byte"
t --stage stage2 --student "$W/s1.safetensors" --steps 2 --out "$W/s2.safetensors"
K="--stage kd --kd-steps 2 --kd-pairs 3 --kd-batch 1 --kd-sampler-steps 2 --kd-cache $W/kd_pairs.safetensors"
t $K --out "$W/kd.safetensors"
t $K --out "$W/kd_again.safetensors" | grep -E "KD: .*loaded|KD step"
cmp "$W/kd.safetensors" "$W/kd_again.safetensors" && echo "KD on --data: the pairs reloaded from their cache train the same student, byte for byte"
t --stage baseline --student "$W/kd.safetensors" --steps 2 --out "$W/base.safetensors"
echo "data check: all passed"
