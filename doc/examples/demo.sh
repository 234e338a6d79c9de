#!/bin/sh
# demo.sh: the README's main job, run from the top of a built tree. A tiny GPT trains on 4 MPI
# ranks on the synthetic corpus (offline): 60 steps data- and tensor-parallel (dp=2, tp=1x2,
# ZeRO 1) with a checkpoint every 30 steps, then it resumes from the latest checkpoint on
# another layout (pipeline pp=2 with tp=1x2) for 60 more. tsr-ckpt verifies the last file, and
# tsr-generate writes a line of text from it on yet another layout (pp=2 alone), greedily.
set -e
mpiexec=${MPIEXEC:-mpiexec}
dir=${1:-demo-run}
rm -rf "$dir"
mkdir -p "$dir"
# shellcheck disable=SC2086
$mpiexec $MPIEXEC_FLAGS -n 4 apps/tsr-train --layout dp=2,tp=1x2 --zero 1 --lr 1e-2 --steps 60 \
    --ckpt-dir "$dir/ckpt" --ckpt-every 30 --log-json "$dir/log.jsonl"
# shellcheck disable=SC2086
$mpiexec $MPIEXEC_FLAGS -n 4 apps/tsr-train --layout pp=2,tp=1x2 --micro-batches 2 --zero 1 --lr 1e-2 --steps 120 \
    --ckpt-dir "$dir/ckpt" --resume latest --log-json "$dir/log.jsonl"
apps/tsr-ckpt verify "$dir/ckpt"
first=$(head -1 "$dir/log.jsonl" | sed 's/.*"loss": *\([0-9.]*\).*/\1/')
last=$(tail -1 "$dir/log.jsonl" | sed 's/.*"loss": *\([0-9.]*\).*/\1/')
# shellcheck disable=SC2086
$mpiexec $MPIEXEC_FLAGS -n 2 apps/tsr-generate --ckpt "$dir/ckpt" --layout pp=2 --prompt "The " \
    --max-tokens 56 --temperature 0 >"$dir/generated.txt"
printf 'demo: generated: %s\n' "$(cat "$dir/generated.txt")"
printf 'demo: loss %.4f at step 1, %.4f at step 120 (resumed at step 60 on another layout); files in %s\n' \
    "$first" "$last" "$dir"
