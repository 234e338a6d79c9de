#!/bin/sh
# test_train_gpu.sh: tsr-train on a GPU (skipped where none is visible). The tiny model for 20
# steps with --device cuda matches the CPU's losses (fp32 within 1e-4, bf16 within 3e-2
# relative); a checkpoint written on the GPU at step 10 resumes on the CPU and one written on
# the CPU resumes on the GPU, each within bf16 tolerance of the uninterrupted run; ranks
# sharing the GPU (host-staged MPI) give the one-rank losses within 1e-4 in data and pipeline
# parallelism (dp=2, pp=2) and the CPU's in tensor parallelism (tp=1x2, tp=2x2). Prints TAP.
bin=${TSR_BUILDDIR:-.}/apps
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tsr-train-gpu.XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/tap-sh.sh"
model="--model tiny --batch 8 --steps 20 --lr 1e-3"
TIMEOUT=300

# run RANKS NAME ARGS...: tsr-train on RANKS ranks, JSON log in $tmp/NAME.json, standard error
# in $tmp/NAME.err; succeeds where tsr-train did. $tmp/err, which check shows, gathers the
# standard error of every run so far.
run() {
    ranks=$1 name=$2
    shift 2
    # shellcheck disable=SC2086
    run_tool tsr-train "$ranks" $model --log-json "$tmp/$name.json" "$@"
    cp "$tmp/err" "$tmp/$name.err"
    cat "$tmp"/*.err >"$tmp/err"
    test "$status" -eq 0
}
# losses_within FILE1 FILE2 TOL [FIRST]: every loss of --log-json FILE1 agrees within TOL
# relative with FILE2's from its line FIRST on (a resumed run logs only the steps after the
# checkpoint)
losses_within() {
    losses "$1" >"$tmp/a"
    losses "$2" "${4:-1}" >"$tmp/b"
    within "$tmp/b" "$tmp/a" "$3"
}

if ! run 1 probe --device cuda --steps 1; then
    if grep -q -i "no cuda device\|no cuda backend\|no GPU" "$tmp/probe.err"; then
        echo "1..0 # SKIP no GPU: $(head -1 "$tmp/probe.err")"
        exit 0
    fi
fi
echo "1..9"
run 1 cpu --device cpu
run 1 gpu32 --device cuda --precision fp32
check "cuda fp32: 20 losses within 1e-4 of the CPU" losses_within "$tmp/gpu32.json" "$tmp/cpu.json" 1e-4
run 1 gpu16 --device cuda --precision bf16
check "cuda bf16: 20 losses within 3e-2 of the CPU" losses_within "$tmp/gpu16.json" "$tmp/cpu.json" 3e-2
decreasing() { losses "$1" | awk 'NR == 1 { first = $1 } END { exit !(NR == 20 && $1 < first) }'; }
check "cuda bf16: the loss decreases over 20 steps" decreasing "$tmp/gpu16.json"
# GPU -> CPU: checkpoint at step 10 on the GPU, resume on the CPU
run 1 g10 --device cuda --precision bf16 --steps 10 --ckpt-dir "$tmp/g"
run 1 g2c --device cpu --ckpt-dir "$tmp/g" --resume latest
check "a bf16 GPU checkpoint resumes on the CPU: steps 11-20 within 3e-2" losses_within "$tmp/g2c.json" "$tmp/gpu16.json" 3e-2 11
# CPU -> GPU
run 1 c10 --device cpu --steps 10 --ckpt-dir "$tmp/c"
run 1 c2g --device cuda --precision bf16 --ckpt-dir "$tmp/c" --resume latest
check "a CPU checkpoint resumes on the GPU: steps 11-20 within 3e-2" losses_within "$tmp/c2g.json" "$tmp/cpu.json" 3e-2 11
# two ranks on the one GPU
run 2 dp2 --device cuda --precision fp32 --layout dp=2
check "dp=2 on one GPU: losses within 1e-4 of one rank" losses_within "$tmp/dp2.json" "$tmp/gpu32.json" 1e-4
run 2 pp2 --device cuda --precision fp32 --layout pp=2 --micro-batches 2
check "pp=2 on one GPU: losses within 1e-4 of one rank" losses_within "$tmp/pp2.json" "$tmp/gpu32.json" 1e-4
run 2 tp12 --device cuda --precision fp32 --layout tp=1x2
check "tp=1x2 on one GPU: losses within 1e-4 of the CPU" losses_within "$tmp/tp12.json" "$tmp/cpu.json" 1e-4
run 4 tp22 --device cuda --precision fp32 --layout tp=2x2
check "tp=2x2 on one GPU: losses within 1e-4 of the CPU" losses_within "$tmp/tp22.json" "$tmp/cpu.json" 1e-4
