#!/bin/sh
# test_train_trace.sh: tsr-train --trace on every layout. On 1 rank (pp=1) with a checkpoint
# each step: valid JSON, the process named by its coordinates "dp0 pp0 tp0,0", events of the
# step, data loading, pipeline actions, communication, the optimizer and checkpoint I/O, no
# kernels unless --trace-kernels asks for them (which alone is an error). On 2 ranks pp=2,
# dp=2 and tp=1x2, and on 4 ranks dp=2,pp=2: every rank a process named by its coordinates,
# pipeline waits and the communication of each axis labelled by it. Prints TAP.
# shellcheck disable=SC2016 # conditions are eval'd later
bin=${TSR_BUILDDIR:-.}/apps
valid=${TSR_BUILDDIR:-.}/tests/json_valid
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tsr-train-trace.XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT
model="--model layers=2,dim=32,heads=4,vocab=256,seq=16 --batch 4 --steps 2"
. "$(dirname "$0")/tap-sh.sh"

run() { rm -f "$tmp/t.json"; run_tool tsr-train "$@"; } # run RANKS ARGS...: tsr-train, the trace $tmp/t.json anew
traced() { test "$status" -eq 0 && "$valid" "$tmp/t.json" 2>>"$tmp/err"; }
holds() { # holds TEXT...: the trace contains every TEXT
    for text; do grep -qF "$text" "$tmp/t.json" || { echo "trace lacks $text" >>"$tmp/err"; return 1; }; done
}
cat_of() { printf '"cat":"%s"' "$1"; }
named() { printf '"args":{"name":"%s"}' "$1"; }

run 1 $model --trace "$tmp/t.json" --ckpt-dir "$tmp/ck" --ckpt-every 1
check "pp=1 on 1 rank writes a valid JSON trace" traced
check "the process is named by its coordinates" holds "$(named "dp0 pp0 tp0,0")"
check "the trace covers the step: step, data, pipeline, communication, optimizer, checkpoint" \
    holds "$(cat_of step)" "$(cat_of host)" "$(cat_of pipe)" "$(cat_of comm)" "$(cat_of optim)" "$(cat_of ckpt)" \
    '"name":"F pp"' '"name":"save checkpoint"' '"name":"write"'
check "kernels are not in the trace without --trace-kernels" eval '! holds "$(cat_of kernel)" 2>/dev/null'
run 1 $model --trace "$tmp/t.json" --trace-kernels
check "--trace-kernels adds the kernels by family" eval 'traced && holds "$(cat_of kernel)" "\"name\":\"gemm+bias\""'

run 1 $model --trace-kernels
check "--trace-kernels without --trace is one line of error, exit 2" \
    eval 'test $status -eq 2 && one_error "--trace-kernels needs --trace FILE"'

run 2 $model --layout pp=2 --micro-batches 2 --trace "$tmp/t.json"
check "pp=2: both stages named by coordinates, pipeline waits and pp messages" \
    eval 'traced && holds "$(named "dp0 pp0 tp0,0")" "$(named "dp0 pp1 tp0,0")" "$(cat_of wait)" "\"name\":\"send pp\""'
run 2 $model --layout dp=2 --trace "$tmp/t.json"
check "dp=2: both replicas named, the gradient allreduce on the dp axis" \
    eval 'traced && holds "$(named "dp0 pp0 tp0,0")" "$(named "dp1 pp0 tp0,0")" "\"name\":\"allreduce dp\""'
run 2 $model --layout tp=1x2 --trace "$tmp/t.json"
check "tp=1x2: both columns named, communication on the tp row" \
    eval 'traced && holds "$(named "dp0 pp0 tp0,0")" "$(named "dp0 pp0 tp0,1")" " tp_row\""'
run 4 $model --layout dp=2,pp=2 --micro-batches 2 --trace "$tmp/t.json"
check "dp=2,pp=2: four processes named by coordinates, dp and pp communication" \
    eval 'traced && holds "$(named "dp0 pp0 tp0,0")" "$(named "dp0 pp1 tp0,0")" "$(named "dp1 pp0 tp0,0")" \
              "$(named "dp1 pp1 tp0,0")" "\"name\":\"allreduce dp\"" "\"name\":\"recv pp\""'
echo "1..$n"
