#!/bin/sh
# test_plot.sh: tsr-plot, the loss-curve SVG (issue 17). From a tsr-train --log-json file of
# a real run with validation, and from hand-written lines (null values, two files): the SVG is
# well-formed XML (parsed by python3 where there is one; its structure checked with grep and
# awk everywhere), with axes, labels and one polyline per series holding the right number of
# points. Bad input: no file, a missing file, a malformed JSON line, a line without a step,
# a file without losses: one line and a non-zero exit, and no SVG written. Prints TAP.
bin=${TSR_BUILDDIR:-.}/apps
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tsr-plot.XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/tap-sh.sh"

plot() { # plot ARGS...: tsr-plot; sets $out, $err and $status
    "$bin/tsr-plot" "$@" >"$tmp/out" 2>"$tmp/err"
    status=$?
    out=$(cat "$tmp/out")
    err=$(cat "$tmp/err")
}
# points FILE: the number of points of each polyline, in order, on one line
points() { sed -n 's/.*<polyline [^>]* points="\([^"]*\)".*/\1/p' "$1" | awk '{ printf "%s%d", (NR > 1 ? " " : ""), NF }'; }
# wellformed FILE: an XML declaration, one svg root, every polyline and text closed
wellformed() {
    head -n 1 "$1" | grep -q '^<?xml version="1.0"' && test "$(grep -c '<svg ' "$1")" -eq 1 &&
        test "$(tail -n 1 "$1")" = "</svg>" &&
        test "$(grep -o '<polyline ' "$1" | wc -l)" -eq "$(grep -o '</polyline>' "$1" | wc -l)" &&
        test "$(grep -o '<text ' "$1" | wc -l)" -eq "$(grep -o '</text>' "$1" | wc -l)" &&
        if command -v python3 >/dev/null 2>&1; then
            python3 -c 'import sys, xml.etree.ElementTree as E; E.parse(sys.argv[1])' "$1" 2>>"$tmp/err"
        fi
}

# --- a real run: 12 steps, validation every 4 (steps 4, 8, 12) ---
"$bin/tsr-tokenize" --synthetic 20000 --seed 5 "$tmp/val.bin" >/dev/null || exit 99
# shellcheck disable=SC2086
timeout 120 ${MPIEXEC:-mpiexec} $MPIEXEC_FLAGS -n 1 "$bin/tsr-train" --model layers=1,dim=32,heads=4,vocab=256,seq=16 \
    --batch 4 --steps 12 --val-data "$tmp/val.bin" --val-every 4 --log-json "$tmp/run.json" >/dev/null 2>&1 || exit 99
plot --output "$tmp/run.svg" "$tmp/run.json"
check "a tsr-train log: exit 0, nothing on stdout or stderr, a well-formed SVG" \
    eval 'test $status -eq 0 && test -z "$out$err" && wellformed "$tmp/run.svg"'
check "... two polylines: 12 training points, 3 validation points" test "$(points "$tmp/run.svg")" = "12 3"
check "... axes labelled step and loss, and a legend naming both series" \
    eval 'grep -q ">step</text>" "$tmp/run.svg" && grep -q ">loss</text>" "$tmp/run.svg" &&
          grep -q ">run.json train</text>" "$tmp/run.svg" && grep -q ">run.json val</text>" "$tmp/run.svg"'

# --- hand-written lines: nulls add no point; two files, one without validation; to stdout ---
cat >"$tmp/a.json" <<'JSON'
{"step":1,"loss":5.5,"val_loss":null,"peak_bytes":{"params":1,"total":2}}
{"step":2,"loss":5.1,"val_loss":5.2,"list":[1,2.5e-3,"x",true,false,null]}

{"step":3,"loss":null,"val_loss":null}
{"step":4,"loss":4.0,"val_loss":4.4,"name":"a \"quoted\" \\ name"}
JSON
printf '{"step":10,"loss":3}\n{"step":20,"loss":2}\n' >"$tmp/b.json"
plot --title 'a <b> & "c"' "$tmp/a.json" "$tmp/b.json"
echo "$out" >"$tmp/ab.svg"
check "two files to stdout: exit 0, well-formed with an escaped title" \
    eval 'test $status -eq 0 && wellformed "$tmp/ab.svg" && grep -q "a &lt;b&gt; &amp; &quot;c&quot;" "$tmp/ab.svg"'
check "... three polylines: a train 3 points (a null skipped), a val 2, b train 2" \
    test "$(points "$tmp/ab.svg")" = "3 2 2"

# --- bad input ---
plot
check "no file: one line, exit 2" eval 'test $status -eq 2 && one_error "no log file given"'
plot --output "$tmp/x.svg" "$tmp/missing.json"
check "a missing file: one line naming it, exit 1, no SVG" \
    eval 'test $status -eq 1 && one_error "$tmp/missing.json: No such file or directory" && test ! -e "$tmp/x.svg"'
printf '{"step":1,"loss":5}\n{"step":2,"loss":}\n' >"$tmp/bad.json"
plot --output "$tmp/x.svg" "$tmp/bad.json"
check "a malformed JSON line: one line naming file and line, exit 1, no SVG" \
    eval 'test $status -eq 1 && one_error "$tmp/bad.json:2: malformed JSON at column 18: expected a value" &&
          test ! -e "$tmp/x.svg" && test ! -e "$tmp/x.svg.tmp"'
printf '{"step":1,"loss":5} trailing\n' >"$tmp/bad2.json"
plot "$tmp/bad2.json"
check "text after the object: one line, exit 1" eval 'test $status -eq 1 && one_error "bad2.json:1: malformed JSON"'
printf '{"loss":5}\n' >"$tmp/nostep.json"
plot "$tmp/nostep.json"
check "a line without a step: one line, exit 1" eval 'test $status -eq 1 && one_error "nostep.json:1: the object has no numeric \"step\""'
printf '{"step":1,"loss":null}\n' >"$tmp/empty.json"
plot "$tmp/empty.json"
check "a file without loss values: one line, exit 1" eval 'test $status -eq 1 && one_error "empty.json holds no loss values"'
plot --bogus "$tmp/a.json"
check "an unknown option: one line, exit 2" eval 'test $status -eq 2 && one_error "unknown option --bogus"'
echo "1..$n"
