#!/bin/sh
# test_data_tokenize.sh: tsr-tokenize makes byte-level shards in llm.c's format from a text
# file and from the synthetic corpus (deterministically), and refuses bad usage: a directory
# or a FIFO as input (no empty shard, no hang), a negative --seed, and a --synthetic size
# beyond a shard's 2^31 - 1 tokens at once (before generating anything). Prints TAP.
bin=${TSR_BUILDDIR:-.}/apps
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tsr-tokenize.XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/tap-sh.sh"
word() { od -An -t d4 -j "$1" -N 4 "$2" | tr -d ' '; }

printf 'hello, world\n' >"$tmp/in.txt"
"$bin/tsr-tokenize" "$tmp/in.txt" "$tmp/out.bin" >/dev/null 2>&1
check "a 13-byte text becomes a shard of 1024 + 26 bytes" test "$(wc -c <"$tmp/out.bin")" -eq 1050
check "header: magic 20240520, version 1, 13 tokens" \
    test "$(word 0 "$tmp/out.bin") $(word 4 "$tmp/out.bin") $(word 8 "$tmp/out.bin")" = "20240520 1 13"
check "the tokens are the bytes (h=104, e=101, newline=10)" \
    test "$(od -An -t u2 -j 1024 "$tmp/out.bin" | tr -s ' \n' ' ' | sed 's/^ //; s/ $//')" = \
    "104 101 108 108 111 44 32 119 111 114 108 100 10"
"$bin/tsr-tokenize" --synthetic 5000 "$tmp/s1.bin" >/dev/null 2>&1
"$bin/tsr-tokenize" --synthetic 5000 "$tmp/s2.bin" >/dev/null 2>&1
"$bin/tsr-tokenize" --synthetic 5000 --seed 2 "$tmp/s3.bin" >/dev/null 2>&1
check "the synthetic corpus is deterministic and depends on --seed" \
    eval 'cmp -s "$tmp/s1.bin" "$tmp/s2.bin" && ! cmp -s "$tmp/s1.bin" "$tmp/s3.bin" && test "$(word 8 "$tmp/s1.bin")" -eq 5000'
run_cmd "$bin/tsr-tokenize" "$tmp/nope.txt" "$tmp/x.bin"
check "a missing input is named, exit 1" eval 'test $status -eq 1 && grep -q nope.txt "$tmp/err" && test ! -e "$tmp/x.bin"'
run_cmd "$bin/tsr-tokenize" "$tmp/in.txt"
check "a missing output argument prints usage, exit 2" eval 'test $status -eq 2 && grep -q Usage "$tmp/err"'
run_cmd "$bin/tsr-tokenize" --synthetic -5 "$tmp/x.bin"
check "a bad --synthetic size is refused, exit 2" eval 'test $status -eq 2 && grep -q synthetic "$tmp/err"'
run_cmd "$bin/tsr-tokenize" "$tmp" "$tmp/dir.bin"
check "a directory as input is refused, no empty shard written" \
    eval 'test $status -eq 1 && grep -q "is a directory, not a regular file" "$tmp/err" && test ! -e "$tmp/dir.bin"'
mkfifo "$tmp/fifo"
TIMEOUT=10 run_cmd "$bin/tsr-tokenize" "$tmp/fifo" "$tmp/fifo.bin"
check "a FIFO as input is refused at once (no hang)" \
    eval 'test $status -eq 1 && grep -q "is a FIFO, not a regular file" "$tmp/err" && test ! -e "$tmp/fifo.bin"'
run_cmd "$bin/tsr-tokenize" --seed -1 --synthetic 100 "$tmp/x.bin"
check "--seed -1 is refused (not 2^64 - 1)" eval 'test $status -eq 2 && grep -q "seed -1: expected an integer" "$tmp/err"'
TIMEOUT=10 run_cmd "$bin/tsr-tokenize" --synthetic 3000000000 "$tmp/x.bin"
check "--synthetic 3000000000 is refused at once, before the text is made" \
    eval 'test $status -eq 2 && grep -q "at most 2147483647 tokens" "$tmp/err" && test ! -e "$tmp/x.bin"'
run_cmd "$bin/tsr-tokenize" --synthetic 12abc "$tmp/x.bin"
check "--synthetic 12abc is refused" eval 'test $status -eq 2 && grep -q "synthetic 12abc" "$tmp/err"'
echo "1..$n"
