#!/bin/sh
# test_train_val.sh: tsr-train's validation loss (issue 17): --val-data, --val-every,
# --val-batches. The mean loss over the first N x --batch sequences of the validation data,
# never shuffled; each sequence's summed loss is added in sequence order in double, so the
# sum does not depend on the layout:
#   - pp=2 equals 1 rank's bitwise (its training is bitwise too);
#   - dp=2 and tp=1x2 equal it within 1e-6 relative (their gradients are summed in another
#     order, so their parameters differ in the last bits after a step);
#   - printed in the per-step line and as val_loss in --log-json (null between);
#   - bad input: validation data of another vocabulary, too short, --val-every or
#     --val-batches without --val-data, --val-batches 0.
# Prints TAP.
bin=${TSR_BUILDDIR:-.}/apps
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tsr-train-val.XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/tap-sh.sh"
model="--model layers=2,dim=32,heads=4,vocab=256,seq=16 --batch 4 --steps 3"

run() { run_tool tsr-train "$@"; } # run RANKS ARGS...: tsr-train on RANKS ranks (tap-sh.sh)
# The val_loss column of a --log-json file, one line per step.
vals() { sed 's/.*"val_loss":\([^,]*\),.*/\1/' "$1" | tr '\n' ' '; }
# close A B: every pair of numbers of the lists A and B within 1e-6 relative (nulls equal)
close() {
    echo "$1
$2" | awk 'NR == 1 { n = split($0, a, " ") } NR == 2 { m = split($0, b, " ") }
        END { if (n != m || n == 0) exit 1
              for (i = 1; i <= n; i++) {
                  if (a[i] == "null" || b[i] == "null") { if (a[i] != b[i]) exit 1; continue }
                  d = a[i] - b[i]; if (d < 0) d = -d
                  if (d > 1e-6 * (a[i] < 0 ? -a[i] : a[i])) exit 1 } }'
}

"$bin/tsr-tokenize" --synthetic 20000 --seed 7 "$tmp/val.bin" >/dev/null || exit 99
val="--val-data $tmp/val.bin --val-every 2 --val-batches 3"

run 1 $model $val --log-json "$tmp/one.json"
ref=$(vals "$tmp/one.json")
check "1 rank: val_loss null at step 1, a number at steps 2 (--val-every 2) and 3 (the last)" \
    eval 'test $status -eq 0 && echo "$ref" | grep -Eq "^null [0-9.]+ [0-9.]+ $"'
check "... the per-step line of step 2 shows it" \
    eval 'echo "$out" | grep "^step 2/3 " | grep -q "  val loss [0-9]\.[0-9][0-9][0-9][0-9]  "'
run 2 --layout pp=2 $model $val --log-json "$tmp/pp.json"
check "pp=2: the validation losses equal 1 rank's bitwise" eval 'test $status -eq 0 && test "$(vals "$tmp/pp.json")" = "$ref"'
run 2 --layout dp=2 $model $val --log-json "$tmp/dp.json"
check "dp=2: the validation losses equal 1 rank's within 1e-6 relative" \
    eval 'test $status -eq 0 && close "$ref" "$(vals "$tmp/dp.json")"'
run 2 --layout tp=1x2 $model $val --log-json "$tmp/tp.json"
check "tp=1x2: the validation losses equal 1 rank's within 1e-6 relative" \
    eval 'test $status -eq 0 && close "$ref" "$(vals "$tmp/tp.json")"'
run 1 $model --val-data "$tmp/val.bin" --log-json "$tmp/last.json"
check "without --val-every: validation at the last step only" \
    eval 'test $status -eq 0 && echo "$(vals "$tmp/last.json")" | grep -Eq "^null null [0-9.]+ $"'

# --- bad input ---
printf 'caf\303\251 cr\303\250me br\303\273l\303\251e, na\303\257ve fa\303\247ade. %.0s' $(seq 20) >"$tmp/utf8.txt"
"$bin/tsr-tokenize" "$tmp/utf8.txt" "$tmp/utf8.bin" >/dev/null || exit 99
run 1 --model layers=1,dim=16,heads=2,vocab=128,seq=16 --batch 2 --steps 1 --val-data "$tmp/utf8.bin"
check "validation data of another vocabulary (bytes >= 128 for vocab=128): one line, exit 1" \
    eval 'test $status -eq 1 && one_error "--val-data: $tmp/utf8.bin: token 195 at position 3 is not below the vocabulary size 128"'
run 1 $model --val-data "$tmp/utf8.bin" --val-batches 100
check "validation data shorter than --val-batches x --batch: one line, exit 1" \
    eval 'test $status -eq 1 && one_error "fewer than --val-batches 100 x --batch 4 = 400"'
run 1 $model --val-every 2
check "--val-every without --val-data: one line, exit 2" eval 'test $status -eq 2 && one_error "--val-every needs --val-data"'
run 1 $model --val-batches 2
check "--val-batches without --val-data: one line, exit 2" eval 'test $status -eq 2 && one_error "--val-batches needs --val-data"'
run 1 $model --val-data "$tmp/val.bin" --val-batches 0
check "--val-batches 0: one line, exit 2" eval 'test $status -eq 2 && one_error "--val-batches 0: expected an integer in [1,"'
run 1 $model --val-data ""
check "--val-data empty: one line, exit 2" eval 'test $status -eq 2 && one_error "--val-data is empty"'
echo "1..$n"
