#!/bin/sh
# test_ps_train.sh: tsr-train with parameter servers (issue 18):
#   - --layout ps=1,tp=1x2 on 5 ranks (dp inferred: 2) prints the losses of dp=2,tp=1x2 on 4
#     ranks at staleness 0 (to the 4 decimals printed), and so the validation losses of
#     --val-data, and --staleness inf runs to the end;
#   - bad input gets one line and exit 2 before step 1: ps=0, more servers than ranks, a
#     negative staleness, --staleness without ps, worker ranks that do not make whole
#     pp x tp groups, a layout of the wrong size, a ZeRO stage above 0, a malformed
#     TSR_PS_DELAY (exit 1), a staleness that is not a number, and what is not built with
#     servers yet (--trace); a non-finite loss at staleness 1 stops every replica at one
#     step. Checkpoints and faults: test_ps_ckpt.sh.
# Prints TAP.
bin=${TSR_BUILDDIR:-.}/apps
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tsr-ps-train.XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/tap-sh.sh"
model="--model layers=2,dim=32,heads=4,vocab=256,seq=16 --batch 4 --steps 3"

run() { run_tool tsr-train "$@"; } # run RANKS ARGS...: tsr-train on RANKS ranks (tap-sh.sh)
# printed_losses: the loss of each step line tsr-train printed ($tmp/out)
printed_losses() { grep '^step' "$tmp/out" | awk '{print $4}' | tr '\n' ' '; }

run 4 $model --layout dp=2,tp=1x2
sync=$(printed_losses)
run 5 $model --layout ps=1,tp=1x2
check "ps=1,tp=1x2 on 5 ranks: staleness 0 gives dp=2,tp=1x2's losses ($sync)" \
    eval 'test $status -eq 0 && test "$(printed_losses)" = "$sync" && has "$out" "layout ps=1,dp=2,pp=1,tp=1x2, staleness 0"'
printf 'Validation text, not the training text: a sentence or two, repeated. %.0s' $(seq 30) >"$tmp/val.txt"
"$bin/tsr-tokenize" "$tmp/val.txt" "$tmp/val.bin" >/dev/null 2>&1
vlosses() { grep '^step' "$tmp/out" | sed 's/.*val loss \([0-9.]*\).*/\1/' | tr '\n' ' '; }
run 4 $model --layout dp=2,tp=1x2 --val-data "$tmp/val.bin" --val-every 1
vsync=$(vlosses)
run 5 $model --layout ps=1,tp=1x2 --val-data "$tmp/val.bin" --val-every 1
check "ps=1,tp=1x2 --val-data: the validation losses of dp=2,tp=1x2 ($vsync)" \
    eval 'test $status -eq 0 && has "$vsync" "." && test "$(vlosses)" = "$vsync"'
run 3 $model --layout ps=1 --staleness inf
check "ps=1 on 3 ranks, --staleness inf: 3 steps" eval 'test $status -eq 0 && has "$out" "step 3/3"'

# usage_before_step1 PART: exit 2 and before_step1 PART (tap-sh.sh)
usage_before_step1() { test "$status" -eq 2 && before_step1 "$1"; }
run 3 $model --layout ps=0
check "ps=0 is refused" usage_before_step1 'bad layout item "ps=0"'
run 3 $model --layout ps=3
check "more servers than ranks is refused" usage_before_step1 "3 servers leave no worker rank of the 3 ranks"
run 3 $model --layout ps=1 --staleness -1
check "a negative staleness is refused" usage_before_step1 "--staleness -1: expected a non-negative integer or inf"
run 2 $model --staleness 1
check "--staleness without ps is refused" usage_before_step1 "--staleness needs parameter servers"
run 4 $model --layout ps=1,tp=1x2
check "3 worker ranks in groups of tp=1x2 are refused" usage_before_step1 "the 3 worker ranks (4 minus ps=1) do not divide"
run 4 $model --layout ps=2,dp=4
check "ps=2,dp=4 on 4 ranks is refused" usage_before_step1 "needs 6 ranks, but mpiexec started 4"
run 3 $model --layout ps=1 --zero 2
check "ZeRO 2 with servers is refused" \
    eval 'test $status -eq 1 && one_error "the servers hold the optimizer state: the ZeRO stage must be 0, got 2"'
TSR_PS_DELAY=x run 3 $model --layout ps=1
check "a malformed TSR_PS_DELAY is refused" eval 'test $status -eq 1 && one_error "TSR_PS_DELAY=x: expected WORKER:MS"'
run 3 $model --layout ps=1 --staleness 2x
check "a staleness that is not a number is refused" usage_before_step1 "--staleness 2x: expected a non-negative integer or inf"
run 3 $model --layout ps=1 --trace "$tmp/trace.json"
check "--trace with servers says it is not built yet" usage_before_step1 "--trace is not built with parameter servers"
# A diverging run at staleness 1 with one slow replica: the replicas hear the loss of different
# rounds at one step, and must still stop at the same step (they agree), not hang.
TSR_PS_DELAY=1:150 run 3 $model --layout ps=1,dp=2 --staleness 1 --steps 8 --lr 1e30
check "a non-finite loss at staleness 1 with a slow replica ends the run on every worker (exit 1, no hang)" \
    eval 'test $status -eq 1 && has "$err" "(expected a finite number; try a lower --lr)"'
echo "1..$n"
