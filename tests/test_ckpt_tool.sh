#!/bin/sh
# test_ckpt_tool.sh: tsr-ckpt on a checkpoint written by `tsr-bench ckpt` under mpiexec:
# info, list, verify and diff, and a one-line error with a non-zero exit for a flipped byte
# (naming the dataset), a truncated file, a missing file, a file that is not HDF5, and a
# directory without `latest`. Prints TAP.
bin=${TSR_BUILDDIR:-.}/apps
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tsr-ckpt-tool.XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/tap-sh.sh"

run_tool tsr-bench 2 ckpt --bytes 1M --tensors 3 --reps 1 --dir "$tmp/a" --keep
check "tsr-bench ckpt wrote a checkpoint on 2 ranks" test "$status" -eq 0 -a -f "$tmp/a/step_1.h5" -a -f "$tmp/a/latest"
file=$tmp/a/step_1.h5

run_cmd "$bin/tsr-ckpt" info "$tmp/a"
check "info of the directory shows format and step" eval 'test $status -eq 0 && has "$out" tessera-ckpt && has "$out" step'
run_cmd "$bin/tsr-ckpt" list "$file"
check "list shows the 3 tensors in their global shape" \
    eval 'test $status -eq 0 && test "$(grep -c "float32 85 x 1024" "$tmp/out")" -eq 3'
run_cmd "$bin/tsr-ckpt" verify "$file"
check "verify passes on the intact file" eval 'test $status -eq 0 && has "$out" "3 datasets verified"'
run_cmd "$bin/tsr-ckpt" diff "$file" "$tmp/a"
check "diff of a file with itself finds no difference" eval 'test $status -eq 0 && has "$out" /optim/tensor001/m'

# Flip one byte in the middle of /optim/tensor001/m's data.
offset=$(h5dump -p -H -d /optim/tensor001/m "$file" | sed -n 's/.*OFFSET \([0-9]*\).*/\1/p' | head -1)
cp "$file" "$tmp/flipped.h5"
at=$((offset + 1000))
byte=$(od -An -tu1 -j "$at" -N1 "$tmp/flipped.h5" | tr -d ' ')
printf "$(printf '\\%03o' $((byte ^ 16)))" | dd of="$tmp/flipped.h5" bs=1 seek="$at" conv=notrunc 2>/dev/null
run_cmd "$bin/tsr-ckpt" verify "$tmp/flipped.h5"
check "verify of a flipped byte exits 1 naming /optim/tensor001/m" \
    eval 'test $status -eq 1 && one_error "/optim/tensor001/m fails its checksum"'
run_cmd "$bin/tsr-ckpt" diff "$file" "$tmp/flipped.h5"
check "diff reports the flipped dataset and exits 1" \
    eval 'test $status -eq 1 && grep /optim/tensor001/m "$tmp/out" | grep -qv " 0 *0$"'

head -c 20000 "$file" >"$tmp/truncated.h5"
run_cmd "$bin/tsr-ckpt" verify "$tmp/truncated.h5"
check "a truncated file is one line of error, exit 2" eval 'test $status -eq 2 && one_error truncated'
run_cmd "$bin/tsr-ckpt" info "$tmp/missing.h5"
check "a missing file is named, exit 2" eval 'test $status -eq 2 && has "$err" missing.h5'
echo "not a checkpoint" >"$tmp/text.h5"
run_cmd "$bin/tsr-ckpt" list "$tmp/text.h5"
check "a text file is not HDF5, exit 2" eval 'test $status -eq 2 && has "$err" "not an HDF5 file"'
mkdir "$tmp/empty"
run_cmd "$bin/tsr-ckpt" info "$tmp/empty"
check "a directory without latest is named, exit 2" eval 'test $status -eq 2 && has "$err" latest'
run_cmd "$bin/tsr-ckpt" frobnicate "$file"
check "an unknown command prints usage, exit 2" eval 'test $status -eq 2 && has "$err" Usage'
echo "1..$n"
