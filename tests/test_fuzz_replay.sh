#!/bin/sh
# test_fuzz_replay.sh: the fuzz targets (tests/fuzz) run over their seeds (real tiny
# checkpoints, shards and GPT-2 weights files, damaged copies, and the minimized inputs of
# past findings: tests/fuzz/make-seeds.sh), built with this
# build's compiler and flags, so that make check (under the sanitizers too) covers them and
# keeps them compiling. A crash or a sanitizer report fails the test. Prints TAP.
build=${TSR_BUILDDIR:-.}
src=$(dirname "$0")
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tsr-fuzz-replay.XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT
. "$src/tap-sh.sh"
TSR_BUILDDIR=$build sh "$src/fuzz/make-seeds.sh" "$tmp/seeds" 2>"$tmp/err"
check "make-seeds.sh makes checkpoint, shard and weights seeds" \
    eval 'test $? -eq 0 && test "$(ls "$tmp/seeds/ckpt" | wc -l)" -ge 10 && test "$(ls "$tmp/seeds/shard" | wc -l)" -ge 5 && \
        test "$(ls "$tmp/seeds/weights" | wc -l)" -ge 5'
for target in ckpt:ckpt-edit ckpt_bytes:ckpt shard:shard weights:weights; do
    seeds=${target#*:}
    target=${target%%:*}
    TSR_FUZZ_DIR=$tmp timeout 300 "$build/tests/fuzz/replay_$target" "$tmp/seeds/$seeds" >"$tmp/out" 2>"$tmp/err"
    status=$?
    check "fuzz_$target runs over every seed: no crash, no sanitizer report" \
        eval 'test $status -eq 0 && grep -q "replay: [1-9][0-9]* inputs" "$tmp/out" && ! grep -q "Sanitizer\|runtime error" "$tmp/err"'
done
echo "1..$n"
