#!/bin/sh
# test_bench_train.sh: tsr-bench train under mpiexec with the tiny model on the CPU. One JSON
# line on 1 rank and on 2 (dp=2, pp=2) with tokens_per_s > 0, a finite loss, peak total > 0
# and the layout; the same loss on every layout (the synthetic tokens do not depend on it);
# the text table; --breakdown's parts summing to the measured step within 5% on 1 rank, dp=2
# and tp=1x2, with the kernels and the communication of each axis named (on a GPU: by CUDA
# events, the device parts within 5% of the step); one-line errors and a non-zero exit for an
# unknown model, a layout that does not fit the ranks, a batch that does not divide, and
# --device cuda where this build has no CUDA backend or no GPU is visible. tsr-bench generate:
# one valid JSON line (tests/json_valid) with both speeds and the KV caches' bytes per rank
# equal to 2*L*B*T*C*4 over the ranks on 1 rank, tp=1x2, pp=2 and dp=2; the text table; its
# one-line errors. Prints TAP.
# shellcheck disable=SC2016,SC2086 # conditions are eval'd later; option lists are meant to split
bin=${TSR_BUILDDIR:-.}/apps
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tsr-bench-train.XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/tap-sh.sh"
short="--steps 2 --warmup 1"

run() { ranks=$1; shift; run_tool tsr-bench "$ranks" train "$@"; } # run RANKS ARGS...: tsr-bench train
# good_json LAYOUT: exit 0, one line, the layout, tokens_per_s > 0, a numeric loss, total peak > 0
good_json() {
    test "$status" -eq 0 && test "$(wc -l <"$tmp/out")" -eq 1 && test "$(field layout)" = "$1" &&
        awk -v t="$(field tokens_per_s)" -v l="$(field loss)" -v p="$(field total)" \
            'BEGIN { exit !(t + 0 > 0 && l ~ /^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$/ && p + 0 > 0) }'
}

run 1 --help
check "--help states the FLOPs formula and exits 0" eval 'test $status -eq 0 && has "$out" "6*P + 12*L*H*T"'

run 1 --json $short
check "1 rank: one JSON line with tokens_per_s > 0, a finite loss, peak total > 0, dp=1" \
    eval 'good_json dp=1,pp=1,tp=1x1'
check "1 rank on the CPU: MFU against the measured GEMM rate (mfu = sgemm_fraction > 0), threads >= 1, devices 1" \
    eval 'test "$(field mfu)" = "$(field sgemm_fraction)" && awk -v f="$(field mfu)" -v t="$(field threads)" \
              -v g="$(field sgemm_gflops_per_rank)" "BEGIN { exit !(f + 0 > 0 && t + 0 >= 1 && g + 0 > 0) }" &&
          test "$(field devices)" = 1 && test "$(field bench)" = train'
loss1=$(field loss)
check "1 rank: a timed step allocates no device memory (allocs_per_step 0)" test "$(field allocs_per_step)" = 0

run 2 --json $short --layout dp=2
check "2 ranks, dp=2: one JSON line, devices 2" eval 'good_json dp=2,pp=1,tp=1x1 && test "$(field devices)" = 2'
check "dp=2 ZeRO 0: a timed step allocates no device memory" test "$(field allocs_per_step)" = 0
check "dp=2 gives the 1-rank loss within 1e-4" close_to "$loss1" "$(field loss)"

run 2 --json $short --layout pp=2 --micro-batches 2
check "2 ranks, pp=2, 2 micro-batches: one JSON line" \
    eval 'good_json dp=1,pp=2,tp=1x1 && test "$(field micro_batches)" = 2 && test "$(field comm)" -gt 0'
check "pp=2 gives the 1-rank loss within 1e-4" close_to "$loss1" "$(field loss)"
check "the JSON names the default schedule, 1f1b" test "$(field schedule)" = 1f1b

run 2 --json $short --layout pp=2 --micro-batches 2 --schedule zb-h1
check "pp=2 zb-h1: the JSON names the schedule" test "$(field schedule)" = zb-h1
check "pp=2 zb-h1 gives the 1-rank loss within 1e-4" close_to "$loss1" "$(field loss)"

run 2 --json $short --layout pp=2 --micro-batches 4 --schedule interleaved:2 --model layers=4,dim=64,heads=4,vocab=256,seq=64
check "pp=2 interleaved:2: the JSON names the schedule as --schedule takes it" test "$(field schedule)" = interleaved:2

run 1 --steps 1 --warmup 0 --peak-tflops 1
check "the text table shows tokens/s and an MFU in percent" \
    eval 'test $status -eq 0 && has "$out" "tokens/s" && has "$out" "%" && has "$out" "peak MiB per rank"'

within5() { # within5 SUM STEP: STEP > 0 and |SUM - STEP| <= 5% of STEP
    awk -v s="$1" -v t="$2" 'BEGIN { d = s - t; if (d < 0) d = -d; exit !(t + 0 > 0 && d <= 0.05 * t) }'
}
run 1 --json --breakdown $short
check "1 rank --breakdown: the parts sum to the measured step within 5%, GEMMs named" \
    eval 'good_json dp=1,pp=1,tp=1x1 && within5 "$(field sum_ms)" "$(field step_ms)" &&
          has "$out" "\"cat\":\"kernel\",\"name\":\"gemm\"" && has "$out" "\"clock\":\"host\""'
run 2 --json --breakdown $short --layout dp=2
check "dp=2 --breakdown: the sum within 5% of the step, the dp allreduce named" \
    eval 'good_json dp=2,pp=1,tp=1x1 && within5 "$(field sum_ms)" "$(field step_ms)" &&
          has "$out" "\"name\":\"allreduce\",\"axis\":\"dp\""'
run 2 --json --breakdown $short --layout tp=1x2
check "tp=1x2 --breakdown: the sum within 5% of the step, the tp row communication named" \
    eval 'good_json dp=1,pp=1,tp=1x2 && within5 "$(field sum_ms)" "$(field step_ms)" &&
          has "$out" "\"axis\":\"tp_row\""'
run 1 --breakdown $short
check "the text breakdown prints the parts, other and the sum against the step" \
    eval 'test $status -eq 0 && has "$out" "where a step'"'"'s time goes" && has "$out" "other (untracked)" &&
          has "$out" "measured step"'

run 2 --model huge
check "an unknown model is one line of error" eval 'one_error_only "--model huge"'
run 2 --layout dp=4
check "a layout of 4 ranks on 2 is refused naming both numbers" eval 'one_error_only "needs 4 ranks, but mpiexec started 2"'
run 2 --batch 5
check "a batch not divisible by dp is refused" eval 'one_error_only "--batch 5 is not divisible by dp=2"'
run 2 --layout pp=2 --model layers=1
check "a model with fewer layers than stages is one line from the model" eval 'one_error_only "cannot fill 2 pipeline stages"'
run 1 --device cuda --json --breakdown $short
if test "$status" -eq 0; then
    skip "--device cuda without CUDA or a GPU is refused" "a GPU is visible"
    check "cuda --breakdown: kernels by CUDA events, the device parts within 5% of the step" \
        eval 'test "$(field clock)" = "cuda events" && within5 "$(field sum_ms)" "$(field step_ms)" &&
              has "$out" "\"cat\":\"kernel\",\"name\":\"gemm"'
    check "cuda, 1 rank: a timed step makes no cudaMalloc (allocs_per_step 0)" test "$(field allocs_per_step)" = 0
else
    check "--device cuda without CUDA or a GPU is refused" \
        eval 'one_error_only "--device cuda: this build has no CUDA backend" || one_error_only "--device cuda: no GPU visible"'
    skip "cuda --breakdown: kernels by CUDA events, the device parts within 5% of the step" "no GPU"
    skip "cuda, 1 rank: a timed step makes no cudaMalloc (allocs_per_step 0)" "no GPU"
fi

# ---- tsr-bench generate ----
valid=${TSR_BUILDDIR:-.}/tests/json_valid
gen() { ranks=$1; shift; run_tool tsr-bench "$ranks" generate "$@"; } # gen RANKS ARGS...: tsr-bench generate
# good_gen LAYOUT KV: exit 0, one valid JSON line, the layout, both speeds > 0, the KV bytes per rank KV
# equal to the formula's share
good_gen() {
    test "$status" -eq 0 && test "$(wc -l <"$tmp/out")" -eq 1 && "$valid" "$tmp/out" && test "$(field layout)" = "$1" &&
        test "$(field bench)" = generate && test "$(field kv_cache_bytes)" = "$2" &&
        test "$(field kv_formula_bytes_per_rank)" = "$2" &&
        awk -v p="$(field prompt_tokens_per_s)" -v d="$(field decode_tokens_per_s)" -v m="$(field ms_per_token)" \
            'BEGIN { exit !(p + 0 > 0 && d + 0 > 0 && m + 0 > 0) }'
}
gshort="--runs 1 --warmup 0 --prompt-len 8 --max-tokens 8"
gen 1 --help
check "generate --help states the KV-cache formula and exits 0" eval 'test $status -eq 0 && has "$out" "2*L*B*T*C*bytes"'
# tiny: L=2, T=64, C=64, fp32: 2*2*B*64*64*4 = 65536 B bytes in all
gen 1 --json $gshort --batch 2
check "generate on 1 rank: valid JSON, both speeds, KV bytes 131072 (2*L*B*T*C*4, B=2)" eval 'good_gen dp=1,pp=1,tp=1x1 131072'
gen 2 --json $gshort --batch 2 --layout tp=1x2
check "generate on tp=1x2: the caches split by heads, 65536 bytes a rank" eval 'good_gen dp=1,pp=1,tp=1x2 65536'
gen 2 --json $gshort --batch 2 --layout pp=2
check "generate on pp=2: the caches split by blocks, 65536 bytes a rank" eval 'good_gen dp=1,pp=2,tp=1x1 65536'
gen 2 --json $gshort --batch 4 --layout dp=2
check "generate on dp=2: the caches split by sequences, 131072 bytes a rank" \
    eval 'good_gen dp=2,pp=1,tp=1x1 131072 && test "$(field kv_cache_bytes_total)" = 262144'
gen 1 $gshort
check "generate's text table: both speeds, ms/token and the KV line" \
    eval 'test $status -eq 0 && has "$out" "decode tokens/s" && has "$out" "ms/token" &&
          has "$out" "KV cache: 65536 bytes per rank"'
gen 1 --prompt-len 60 --max-tokens 10
check "generate: a prompt and decode past the context are refused" \
    eval 'one_error_only "--prompt-len 60 and --max-tokens 10 pass the model'"'"'s context of 64"'
gen 2 --batch 3
check "generate: a batch not divisible by dp is refused" eval 'one_error_only "--batch 3 is not divisible by dp=2"'
gen 1 --model tiny --ckpt "$tmp/none"
check "generate: --model and --ckpt together are refused" eval 'one_error_only "--model and --ckpt both name the model"'
gen 1 --ckpt "$tmp/none"
check "generate: a missing checkpoint is one line" eval 'one_error_only "No such file or directory"'
echo "1..$n"
