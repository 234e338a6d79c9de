#!/bin/sh
# test_data_tokenize_stream.sh: tsr-tokenize streams its input (issue 17): a file larger than
# its 64 KiB read buffer gives the shard the whole-file version gave (header, then each byte
# as a uint16 or uint32 token, checked byte by byte); its memory does not grow with the input
# (where GNU time measures it); progress goes to stderr only when stderr is a terminal
# (checked through script(1) where it exists). Prints TAP.
bin=${TSR_BUILDDIR:-.}/apps
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tsr-tokenize-stream.XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/tap-sh.sh"
word() { od -An -t d4 -j "$1" -N 4 "$2" | tr -d ' '; }
numbers() { tr -s ' \n' '\n\n' | sed '/^$/d'; } # one number a line

# 300001 bytes: four and a half read buffers, every byte value
head -c 300001 /dev/urandom >"$tmp/in.txt" || exit 99
od -An -v -t u1 "$tmp/in.txt" | numbers >"$tmp/bytes"
"$bin/tsr-tokenize" "$tmp/in.txt" "$tmp/out.bin" >"$tmp/out" 2>"$tmp/err"
status=$?
check "a 300001-byte input (larger than the read buffer): exit 0, 1024 + 2 x 300001 bytes" \
    eval 'test $status -eq 0 && test "$(wc -c <"$tmp/out.bin")" -eq 601026'
check "... header: magic 20240520, version 1, 300001 tokens" \
    test "$(word 0 "$tmp/out.bin") $(word 4 "$tmp/out.bin") $(word 8 "$tmp/out.bin")" = "20240520 1 300001"
check "... the tokens are the input's bytes, in order" \
    eval 'od -An -v -t u2 -j 1024 "$tmp/out.bin" | numbers | cmp -s - "$tmp/bytes"'
check "... nothing on stderr when it is not a terminal" test ! -s "$tmp/err"
"$bin/tsr-tokenize" --uint32 "$tmp/in.txt" "$tmp/out32.bin" >/dev/null 2>"$tmp/err"
status=$?
check "--uint32: magic 20240801, 300001 tokens, each the input's byte" \
    eval 'test $status -eq 0 && test "$(word 0 "$tmp/out32.bin") $(word 8 "$tmp/out32.bin")" = "20240801 300001" &&
          od -An -v -t u4 -j 1024 "$tmp/out32.bin" | numbers | cmp -s - "$tmp/bytes"'

if script -qec true /dev/null >/dev/null 2>&1; then
    script -qec "'$bin/tsr-tokenize' '$tmp/in.txt' '$tmp/tty.bin'" /dev/null >"$tmp/tty" 2>&1
    check "on a terminal: a progress line that ends at 100%, and the same shard" \
        eval 'grep -q "tsr-tokenize: 100% (0.3 of 0.3 MB)" "$tmp/tty" && cmp -s "$tmp/tty.bin" "$tmp/out.bin"'
else
    skip "on a terminal: a progress line" "no script(1)"
fi

if /usr/bin/time -f %M true >/dev/null 2>&1; then
    head -c 1000000 /dev/urandom >"$tmp/small.txt"
    head -c 32000000 /dev/urandom >"$tmp/large.txt"
    /usr/bin/time -o "$tmp/small.rss" -f %M "$bin/tsr-tokenize" "$tmp/small.txt" "$tmp/small.bin" >/dev/null 2>&1
    /usr/bin/time -o "$tmp/large.rss" -f %M "$bin/tsr-tokenize" "$tmp/large.txt" "$tmp/large.bin" >/dev/null 2>&1
    s=$(tail -n 1 "$tmp/small.rss") l=$(tail -n 1 "$tmp/large.rss")
    check "memory independent of the input: 32 MB in $l KiB, 1 MB in $s KiB (within 4 MiB)" \
        eval 'test -n "$s" -a -n "$l" && test "$l" -lt $((s + 4096)) && test "$(word 8 "$tmp/large.bin")" -eq 32000000'
else
    skip "memory independent of the input" "no GNU time at /usr/bin/time"
fi
echo "1..$n"
