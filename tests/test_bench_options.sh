#!/bin/sh
# test_bench_options.sh: every numeric option of tsr-bench is parsed whole and checked
# (issue 16): negative, malformed, non-finite and out-of-range values are refused with one
# line naming the option and what was expected, exit 1, before anything runs. Prints TAP.
bin=${TSR_BUILDDIR:-.}/apps
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tsr-bench-options.XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT
n=0
check() { # check SUBCOMMAND OPTION VALUE EXPECTED
    # shellcheck disable=SC2086
    timeout 60 ${MPIEXEC:-mpiexec} $MPIEXEC_FLAGS -n 1 "$bin/tsr-bench" "$1" "$2" "$3" >"$tmp/out" 2>"$tmp/err"
    status=$?
    n=$((n + 1))
    if test "$status" -eq 1 && grep -qF -- "tsr-bench $1: $2 $3: $4" "$tmp/err" && test "$(wc -l <"$tmp/err")" -eq 1; then
        echo "ok $n - tsr-bench $1 $2 $3 is refused: $4"
    else
        echo "not ok $n - tsr-bench $1 $2 $3 is refused: $4 (exit $status)"
        sed 's/^/# /' "$tmp/err" "$tmp/out"
    fi
}
check pipe --stages -3 "expected an integer in [1, 65536]"
check pipe --micro-batches 2x "expected an integer in [1, 1048576]"
check pipe --chunks 0 "expected an integer in [1, 1024]"
check pipe --repeat "" "expected an integer in [1, 1048576]"
check pipe --poll-us -1 "expected an integer in [0, 1000000]"
check pipe --forward-ms inf "expected a finite number in [0, 1e+06]"
check pipe --backward-ms nan "expected a finite number in [0, 1e+06]"
check pipe --weight-ms -2 "expected a finite number in [0, 1e+06]"
check zero --layers 0 "expected an integer in [1, 4096]"
check zero --width 1e3 "expected an integer in [1, 65536]"
check zero --stage 4 "expected an integer in [0, 3]"
check ckpt --tensors abc "expected an integer in [1, 100000]"
check ckpt --reps 1000 "expected an integer in [1, 100]"
check tp --panel -8 "expected an integer in [1, 1048576]"
check tp --reps 3.5 "expected an integer in [1, 1048576]"
check tp --shapes "64,64,99999999999" "expected M,N,K[;M,N,K...] of integers in [1, 1048576]"
check tp --shapes "64,64,64;" "expected M,N,K[;M,N,K...] of integers in [1, 1048576]"
check train --batch 0 "expected an integer in [1, 2147483647]"
check train --peak-tflops nan "expected a finite number >= 0"
check generate --prompt-len 0 "expected an integer in [1, 1073741824]"
check generate --batch 1.5 "expected an integer in [1, 65536]"
check generate --runs -1 "expected an integer in [1, 1000000]"
# shellcheck disable=SC2086
timeout 60 ${MPIEXEC:-mpiexec} $MPIEXEC_FLAGS -n 1 "$bin/tsr-bench" ckpt --bytes inf >"$tmp/out" 2>"$tmp/err"
status=$?
n=$((n + 1))
if test "$status" -eq 1 && grep -q "tsr-bench ckpt: --bytes: expected a positive size" "$tmp/err"; then
    echo "ok $n - tsr-bench ckpt --bytes inf is refused"
else
    echo "not ok $n - tsr-bench ckpt --bytes inf is refused (exit $status)"
fi
echo "1..$n"
