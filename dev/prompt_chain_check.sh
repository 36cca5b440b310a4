#!/usr/bin/env bash
# dev/prompt_chain_check.sh: the sentence-to-mp4 chain and the dataset recipe end to end at toy size, from the
# project's own tools only: dev/tiny_wan_folder.c writes a toy diffusers-style folder (random DiT with Wan's 16 latent
# channels, the committed tiny umT5, its tokenizer and the tiny Wan VAE), then
#   1. sample_tmd --wan F --prompt "..." : tokenizer -> umT5 (CPU reference) -> DiT teacher (UniPC, 2 steps, CFG
#      against the official negative prompt) -> VAE on the GPU -> mp4 (with ffmpeg), each stage's time and memory;
#      again: every context from the cache (the log says "2 from the cache, 0 encoded")
#   2. sample_tmd --mode teacher --prompts P --dataset D --kd-pairs 3 (3 prompts, shards of 2; then 3 KD teacher pairs
#      with skip-layer guidance, chunks of 2, assembled to D/kd_pairs.safetensors), again (nothing to make), then
#      train_tmd --weights F/transformer --data D --stage stage1 for 2 steps (reads the directory) and --stage kd for
#      2 steps with --kd-cache D/kd_pairs.safetensors (must load the pairs, not make them)
# Sizes: latent [16, 1, 4, 4] (one 32x32 frame; the tiny DiT's patch is (1, 4, 4)), the smallest the chain takes, so
# that it finishes under a simulator (latent [16, 2, 4, 4] did not in 15 minutes: the VAE decode of 5 frames).
#   SAMPLE=./sample_tmd TRAIN=./train_tmd dev/prompt_chain_check.sh     on a GPU (make sample_tmd train_tmd first)
#   SAMPLE=/tmp/sample_tmd_sim TRAIN=/tmp/train_tmd_sim RUN="nice -n 10 SIM/run.sh" dev/prompt_chain_check.sh
#       under a functional simulator (builds as in dev/data_check.sh)
# Works in $WORK (default /tmp/tmd_prompt_chain); exits non-zero on any failure. Random weights: mechanics only.
set -euo pipefail
cd "$(dirname "$0")/.."
SAMPLE=${SAMPLE:-./sample_tmd}; TRAIN=${TRAIN:-./train_tmd}; RUN=${RUN:-}; W=${WORK:-/tmp/tmd_prompt_chain}
rm -rf "$W"; mkdir -p "$W"
cc -O2 -std=c11 -D_POSIX_C_SOURCE=200809L dev/tiny_wan_folder.c -o "$W/tiny_wan_folder" -lm
"$W/tiny_wan_folder" "$W/Wan-toy"
S="--wan $W/Wan-toy --ctx-cache $W/cache --steps 2 --batch 1 --latent-frames 1 --latent-height 4 --latent-width 4"
echo "\$ sample_tmd $S --prompt ..."
$RUN $SAMPLE $S --prompt "A cat walks on the grass, realistic style." --out "$W/cat.npy"
ls -la "$W"/cat*
$RUN $SAMPLE $S --prompt "A cat walks on the grass, realistic style." --out "$W/cat2.npy" | grep -E "from the cache"
cmp "$W/cat.npy" "$W/cat2.npy" && echo "a rerun from the cached contexts: the same latents, byte for byte"
printf 'a red fox running in the snow\na tiny robot dancing\nrain over Paris at night\n' > "$W/prompts.txt"
K="--kd-pairs 3 --kd-sampler-steps 2 --kd-cfg 5 --kd-shift 5 --kd-skip-layer 2"
D="$S --mode teacher --prompts $W/prompts.txt --dataset $W/data --shard-size 2 $K"
echo "\$ sample_tmd $D"
$RUN $SAMPLE $D
$RUN $SAMPLE $D | grep -E "already there|nothing to do"
cat "$W/data/manifest.tsv"
echo "\$ train_tmd --weights $W/Wan-toy/transformer --data $W/data --stage stage1 --steps 2"
$RUN $TRAIN --weights "$W/Wan-toy/transformer" --data "$W/data" --stage stage1 --steps 2 --batch 1 --log-every 1 --out "$W/s1.safetensors"
echo "\$ train_tmd --weights $W/Wan-toy/transformer --data $W/data --stage kd --kd-steps 2 $K --kd-cache $W/data/kd_pairs.safetensors"
$RUN $TRAIN --weights "$W/Wan-toy/transformer" --data "$W/data" --stage kd --kd-steps 2 --kd-batch 1 $K --kd-cache "$W/data/kd_pairs.safetensors" \
    --log-every 1 --out "$W/kd.safetensors" | tee "$W/kd.log"
grep -q "teacher pairs loaded from $W/data/kd_pairs.safetensors" "$W/kd.log" || { echo "train_tmd made its own KD pairs instead of loading the dataset's"; exit 1; }
echo "prompt chain check: all passed"
