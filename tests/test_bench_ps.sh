#!/bin/sh
# test_bench_ps.sh: tsr-bench ps on 3 ranks (ps=1,dp=2) with a small model. --json prints one
# valid JSON object per configuration (dp and ps at each staleness, per straggler); every PS
# run applies exactly --rounds rounds, its push and reply bytes equal tessera/ps.h's formula
# (comm's counters), staleness 0 ends at the synchronous run's validation loss (within 1e-5
# relative: the same samples and the same updates), every loss is finite and below the
# untrained model's ln(256); the text table; one-line errors and a non-zero exit for a
# layout without servers, a layout that does not fit the ranks, a bad staleness, an unknown
# straggler and a batch that does not divide. Prints TAP.
# shellcheck disable=SC2016 # conditions are eval'd later
bin=${TSR_BUILDDIR:-.}/apps
valid=${TSR_BUILDDIR:-.}/tests/json_valid
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tsr-bench-ps.XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/tap-sh.sh"
model="--model layers=2,dim=32,heads=4,vocab=256,seq=16 --rounds 6 --val-batches 2"

if [ "${TSR_TEST_MAX_RANKS:-64}" -lt 3 ]; then
    echo "1..0 # SKIP needs 3 ranks, TSR_TEST_MAX_RANKS=$TSR_TEST_MAX_RANKS"
    exit 0
fi
run() { ranks=$1; shift; run_tool tsr-bench "$ranks" ps "$@"; } # run RANKS ARGS...
# every_line_valid: each line of $tmp/out is one JSON value
every_line_valid() {
    i=0
    while IFS= read -r line; do
        i=$((i + 1))
        printf '%s\n' "$line" >"$tmp/line.json"
        "$valid" "$tmp/line.json" || return 1
    done <"$tmp/out"
    test "$i" -gt 0
}
# ps_lines CONDITION: CONDITION (an awk expression over r, f, m, p, pf, rb, rf) holds on every
# ps line; r = server_rounds, m = bytes_match, p/pf = push bytes and formula, rb/rf = replies
ps_lines() {
    grep '"mode":"ps"' "$tmp/out" >"$tmp/ps" || return 1
    while IFS= read -r line; do
        awk -v r="$(field server_rounds "$line")" -v m="$(field bytes_match "$line")" \
            -v p="$(field push_bytes_per_step "$line")" -v pf="$(field push_bytes_formula "$line")" \
            -v rb="$(field reply_bytes "$line")" -v rf="$(field reply_bytes_formula "$line")" \
            "BEGIN { exit !($1) }" || return 1
    done <"$tmp/ps"
}
# losses_sane: every val_loss finite, positive, below ln(256) = 5.545
losses_sane() {
    while IFS= read -r line; do
        awk -v l="$(field val_loss "$line")" 'BEGIN { exit !(l ~ /^[0-9]+\.[0-9]+$/ && l > 0 && l < 5.545) }' ||
            return 1
    done <"$tmp/out"
}
# s0_equals_sync STRAGGLER: staleness 0's val_loss within 1e-5 of dp's under STRAGGLER
s0_equals_sync() {
    a=$(grep "\"staleness\":\"sync\",\"straggler\":\"$1\"" "$tmp/out")
    b=$(grep "\"staleness\":\"0\",\"straggler\":\"$1\"" "$tmp/out")
    close_to "$(field val_loss "$a")" "$(field val_loss "$b")" 1e-5
}

run 3 --layout ps=1,dp=2 $model --staleness 0,2,inf --straggler none,fixed --delay-ms 5 --json
check "--json: exit 0, 8 lines (dp and 3 staleness bounds, 2 stragglers), each valid JSON" \
    eval 'test $status -eq 0 && test "$(wc -l <"$tmp/out")" -eq 8 && every_line_valid'
check "every PS run applied exactly --rounds 6 rounds" ps_lines 'r == 6'
check "push and reply bytes per worker equal the formula of tessera/ps.h (comm counters)" \
    ps_lines 'm == "true" && p == pf && p > 0 && rb == rf && rb > 0'
check "every validation loss finite and below ln 256" losses_sane
check "staleness 0 ends at the synchronous run's validation loss (no straggler)" s0_equals_sync none
check "staleness 0 ends at the synchronous run's validation loss (fixed straggler)" s0_equals_sync fixed
check "the straggler's delay is reported" eval 'grep -q "\"straggler\":\"fixed\",\"delay_ms\":5.000" "$tmp/out"'

run 3 --layout ps=1,dp=2 $model --staleness inf --straggler moving
check "the text table: a dp and a ps line for the moving straggler" \
    eval 'test $status -eq 0 && has "$out" "straggler delay" && printf "%s\n" "$out" | grep -q "^dp  *sync  *moving" &&
          printf "%s\n" "$out" | grep -q "^ps  *inf  *moving .*= formula"'

run 3 --layout dp=3 $model
check "a layout without servers: one-line error" one_error "expected ps=S,dp=W"
run 3 --layout ps=1,dp=3 $model
check "a layout that does not fit the ranks: one-line error" one_error "needs 4 ranks, but mpiexec started 3"
run 3 --layout ps=1,dp=2 $model --staleness -1
check "a negative staleness: one-line error" one_error "expected a non-negative integer or inf"
run 3 --layout ps=1,dp=2 $model --straggler slow
check "an unknown straggler: one-line error" one_error "is not none, fixed or moving"
run 3 --layout ps=1,dp=2 $model --batch 7
check "a batch that does not divide over the replicas: one-line error" one_error "--batch 7 is not divisible by dp=2"
echo "1..$n"
