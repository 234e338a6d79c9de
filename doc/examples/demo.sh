#!/bin/sh
# demo.sh: the README's main job. A tiny GPT trains on 4 MPI ranks on the synthetic corpus
# (offline): 60 steps data- and tensor-parallel (dp=2, tp=1x2, ZeRO 1) with a checkpoint every
# 30 steps, then it resumes from the latest checkpoint on another layout (pipeline pp=2 with
# tp=1x2) for 60 more. tsr-ckpt verifies the last file, and tsr-generate writes a line of text
# from it on yet another layout (pp=2 alone), greedily.
#
# Run it from the top of a build tree (the programs in apps/), or anywhere once Tessera is
# installed (this script is in share/doc/tessera/examples; the installed tools on PATH). Usage:
# sh demo.sh [DIR] (default demo-run). The launcher: MPIEXEC and MPIEXEC_FLAGS from the
# environment, else configure's, from tessera.pc (the build tree's, else the installed one),
# else plain mpiexec.
set -e
if [ -x apps/tsr-train ]; then
    bin=apps/
    pc=tessera.pc
else
    bin=
    tool=$(command -v tsr-train) ||
        { echo "demo.sh: no apps/tsr-train here and no tsr-train on PATH (expected the top of a build tree, or Tessera installed)" >&2; exit 2; }
    prefix=$(cd "$(dirname "$tool")/.." && pwd)
    pc=
    for d in "$prefix/lib/pkgconfig" "$prefix/lib64/pkgconfig" "$prefix"/lib/*/pkgconfig; do
        [ -f "$d/tessera.pc" ] && pc=$d/tessera.pc && break
    done
    [ -n "$pc" ] || pc=$(pkg-config --variable=pcfiledir tessera 2>/dev/null)/tessera.pc || pc=
fi
# pc_var NAME: the variable NAME of tessera.pc (configure's launcher), empty if none.
pc_var() { [ -f "$pc" ] && sed -n "s/^$1=//p" "$pc" | head -1; }
if [ -n "${MPIEXEC:-}" ]; then
    mpiexec=$MPIEXEC
    flags=${MPIEXEC_FLAGS:-}
else
    mpiexec=$(pc_var mpiexec)
    flags=${MPIEXEC_FLAGS-$(pc_var mpiexec_flags)}
fi
mpiexec=${mpiexec:-mpiexec}
dir=${1:-demo-run}
rm -rf "$dir"
mkdir -p "$dir"
# shellcheck disable=SC2086
$mpiexec $flags -n 4 "${bin}tsr-train" --layout dp=2,tp=1x2 --zero 1 --lr 1e-2 --steps 60 \
    --ckpt-dir "$dir/ckpt" --ckpt-every 30 --log-json "$dir/log.jsonl"
# shellcheck disable=SC2086
$mpiexec $flags -n 4 "${bin}tsr-train" --layout pp=2,tp=1x2 --micro-batches 2 --zero 1 --lr 1e-2 --steps 120 \
    --ckpt-dir "$dir/ckpt" --resume latest --log-json "$dir/log.jsonl"
"${bin}tsr-ckpt" verify "$dir/ckpt"
first=$(head -1 "$dir/log.jsonl" | sed 's/.*"loss": *\([0-9.]*\).*/\1/')
last=$(tail -1 "$dir/log.jsonl" | sed 's/.*"loss": *\([0-9.]*\).*/\1/')
# shellcheck disable=SC2086
$mpiexec $flags -n 2 "${bin}tsr-generate" --ckpt "$dir/ckpt" --layout pp=2 --prompt "The " \
    --max-tokens 56 --temperature 0 >"$dir/generated.txt"
printf 'demo: generated: %s\n' "$(cat "$dir/generated.txt")"
printf 'demo: loss %.4f at step 1, %.4f at step 120 (resumed at step 60 on another layout); files in %s\n' \
    "$first" "$last" "$dir"
