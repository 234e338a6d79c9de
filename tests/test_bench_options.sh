#!/bin/sh
# test_bench_options.sh: every numeric option of tsr-bench is parsed whole and checked
# (issue 16): negative, malformed, non-finite and out-of-range values are refused with one
# line naming the option and what was expected, exit 1, before anything runs. Prints TAP.
# shellcheck disable=SC2016 # conditions are eval'd later
bin=${TSR_BUILDDIR:-.}/apps
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tsr-bench-options.XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/tap-sh.sh"
TIMEOUT=60
# refused SUBCOMMAND OPTION VALUE EXPECTED: tsr-bench SUBCOMMAND OPTION VALUE exits 1 with one
# line "tsr-bench SUBCOMMAND: OPTION VALUE: EXPECTED"
refused() {
    sub=$1 opt=$2 val=$3 want=$4
    run_tool tsr-bench 1 "$sub" "$opt" "$val"
    check "tsr-bench $sub $opt $val is refused: $want" eval 'test $status -eq 1 && one_error "tsr-bench $sub: $opt $val: $want"'
}
refused pipe --stages -3 "expected an integer in [1, 65536]"
refused pipe --micro-batches 2x "expected an integer in [1, 1048576]"
refused pipe --chunks 0 "expected an integer in [1, 1024]"
refused pipe --repeat "" "expected an integer in [1, 1048576]"
refused pipe --poll-us -1 "expected an integer in [0, 1000000]"
refused pipe --forward-ms inf "expected a finite number in [0, 1e+06]"
refused pipe --backward-ms nan "expected a finite number in [0, 1e+06]"
refused pipe --weight-ms -2 "expected a finite number in [0, 1e+06]"
refused zero --layers 0 "expected an integer in [1, 4096]"
refused zero --width 1e3 "expected an integer in [1, 65536]"
refused zero --stage 4 "expected an integer in [0, 3]"
refused ckpt --tensors abc "expected an integer in [1, 100000]"
refused ckpt --reps 1000 "expected an integer in [1, 100]"
refused tp --panel -8 "expected an integer in [1, 1048576]"
refused tp --reps 3.5 "expected an integer in [1, 1048576]"
refused tp --shapes "64,64,99999999999" "expected M,N,K[;M,N,K...] of integers in [1, 1048576]"
refused tp --shapes "64,64,64;" "expected M,N,K[;M,N,K...] of integers in [1, 1048576]"
refused train --batch 0 "expected an integer in [1, 2147483647]"
refused train --peak-tflops nan "expected a finite number >= 0"
refused generate --prompt-len 0 "expected an integer in [1, 1073741824]"
refused generate --batch 1.5 "expected an integer in [1, 65536]"
refused generate --runs -1 "expected an integer in [1, 1000000]"
run_tool tsr-bench 1 ckpt --bytes inf
check "tsr-bench ckpt --bytes inf is refused" \
    eval 'test $status -eq 1 && has "$err" "tsr-bench ckpt: --bytes: expected a positive size"'
echo "1..$n"
