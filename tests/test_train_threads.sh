#!/bin/sh
# test_train_threads.sh: the CPU threads per rank. tsr-train prints them at start (and how they
# were chosen); two runs with the same thread count give bitwise equal losses and gradient norms;
# one thread and two give the same losses within 1e-5 (the kernels' results do not depend on the
# thread count; a GEMM split differently may round differently). The model is sized so that every
# kernel family runs on a team of threads (above the sizes that stay on one thread). Prints TAP.
bin=${TSR_BUILDDIR:-.}/apps
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tsr-train-threads.XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/tap-sh.sh"
model="--model layers=2,dim=128,heads=4,vocab=512,seq=64 --batch 8 --steps 3"

train() { # train THREADS NAME: 3 steps on 1 rank with OMP_NUM_THREADS=THREADS; "loss grad_norm" lines in $tmp/NAME
    # shellcheck disable=SC2086
    OMP_NUM_THREADS=$1 run_tool tsr-train 1 $model --log-json "$tmp/$2.json"
    sed -n 's/.*"loss":\([^,]*\),"grad_norm":\([^,]*\),.*/\1 \2/p' "$tmp/$2.json" >"$tmp/$2" 2>/dev/null
}

echo "1..4"
train 2 a
if grep -q "^tsr-train: 1 CPU thread per rank (no OpenMP in this build" "$tmp/out"; then
    skip "OMP_NUM_THREADS=2: 2 CPU threads per rank" "this build has no OpenMP"
else
    check "OMP_NUM_THREADS=2: tsr-train says 2 CPU threads per rank, chosen by OMP_NUM_THREADS" \
        eval 'test $status -eq 0 && grep -q "^tsr-train: 2 CPU threads per rank (OMP_NUM_THREADS=2)" "$tmp/out"'
fi
train 2 b
check "two runs on 2 threads: bitwise equal losses and gradient norms over 3 steps" \
    eval 'test $status -eq 0 && test "$(wc -l <"$tmp/a")" -eq 3 && cmp -s "$tmp/a" "$tmp/b"'
train 1 c
check "1 thread: the losses of 2 threads within 1e-5" eval 'test $status -eq 0 && within "$tmp/a" "$tmp/c" 1e-5'
unset OMP_NUM_THREADS
# shellcheck disable=SC2086
run_tool tsr-train 2 $model --steps 1
check "2 ranks without OMP_NUM_THREADS: a positive thread count per rank and how it was chosen" \
    eval 'test $status -eq 0 && grep -Eq "^tsr-train: [1-9][0-9]* CPU threads? per rank \((affinity|[0-9]+ CPUs shared|no OpenMP)" "$tmp/out"'
