#!/bin/sh
# test_generate_cli.sh: tsr-generate under mpiexec on a checkpoint tsr-train writes (a tiny
# byte-level model, 10 steps). Greedy generation gives the same text on 1 rank, pp=2, tp=1x2
# and dp=2 (two sequences); sampling with a fixed seed is the same run to run, and another
# seed differs; --json holds the tokens and both speeds; DIR, DIR/latest and FILE name the
# checkpoint. One-line errors, exit non-zero: a prompt longer than the context, --max-tokens
# past it, a token id outside the vocabulary, top-p outside (0, 1], a file that is no
# checkpoint, a layout of another rank count. Prints TAP.
bin=${TSR_BUILDDIR:-.}/apps
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tsr-generate-cli.XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/tap-sh.sh"
gen() { ranks=$1; shift; run_tool tsr-generate "$ranks" --ckpt "$tmp/ck" --prompt "The cat " "$@"; }

run_tool tsr-train 2 --model layers=2,dim=32,heads=4,vocab=256,seq=48 --batch 4 --lr 1e-2 --steps 10 \
    --ckpt-dir "$tmp/ck"
check "tsr-train writes the checkpoint" test "$status" -eq 0
run_tool tsr-generate 1 --help
check "--help prints the usage" eval 'test $status -eq 0 && has "$out" "--prompt-tokens IDS"'

gen 1 --max-tokens 32 --temperature 0
one=$out
check "greedy on 1 rank: the prompt and 32 bytes, then the speeds on stderr" \
    eval 'test $status -eq 0 && test ${#one} -eq 40 && has "$err" "tokens decoded at"'
for lay in pp=2 tp=1x2; do
    gen 2 --layout $lay --max-tokens 32 --temperature 0
    check "greedy on $lay: the same text" eval 'test $status -eq 0 && test "$out" = "$one"'
done
gen 2 --layout dp=2 --batch 2 --max-tokens 32 --temperature 0
check "greedy on dp=2, two sequences: both the same text" eval 'test "$out" = "$(printf "%s\n%s" "$one" "$one")"'

gen 1 --max-tokens 24 --top-k 20 --top-p 0.9 --seed 5 --json
first=$out
gen 1 --max-tokens 24 --top-k 20 --top-p 0.9 --seed 5 --json
tokens() { echo "$1" | sed 's/,"prompt_tokens_per_s.*//'; } # the JSON without the speeds
check "sampling with a fixed seed: the same tokens run to run" eval 'test $status -eq 0 && test "$(tokens "$out")" = "$(tokens "$first")"'
gen 1 --max-tokens 24 --top-k 20 --top-p 0.9 --seed 6 --json
check "another seed: other tokens" eval 'test "$(tokens "$out")" != "$(tokens "$first")"'
check "--json: tokens, text and both speeds" eval 'has "$first" "\"tokens\":[" && has "$first" "\"text\":\"" && \
    has "$first" "\"decode_tokens_per_s\":"'
run_tool tsr-generate 1 --ckpt "$tmp/ck/latest" --prompt-tokens "84,104,101" --max-tokens 4 --temperature 0
check "DIR/latest and --prompt-tokens" eval 'test $status -eq 0 && has "$out" "The"'
run_tool tsr-generate 1 --ckpt "$tmp/ck/step_10.h5" --prompt "The cat " --max-tokens 32 --temperature 0
check "a checkpoint file" eval 'test "$out" = "$one"'

long=$(printf '%049d' 0)
run_tool tsr-generate 1 --ckpt "$tmp/ck" --prompt "$long"
check "a prompt longer than the context is refused" \
    eval 'one_error "the prompt of 49 tokens is longer than the model'"'"'s context of 48"'
gen 1 --max-tokens 41
check "--max-tokens past the context is refused" eval 'one_error "--max-tokens 41 after a prompt of 8 tokens passes"'
run_tool tsr-generate 1 --ckpt "$tmp/ck" --prompt-tokens "1,256"
check "a token id outside the vocabulary is refused" eval 'one_error "token id 256 is outside the vocabulary (expected 0 to 255)"'
for p in 0 1.5; do
    gen 1 --top-p $p
    check "top-p $p is refused" eval 'one_error "top-p '$p' is outside (0, 1]"'
done
head -c 5000 /dev/urandom >"$tmp/junk.h5"
run_tool tsr-generate 1 --ckpt "$tmp/junk.h5" --prompt x
check "a file that is no checkpoint is refused" eval 'one_error "junk.h5"'
run_tool tsr-generate 2 --ckpt "$tmp/ck" --layout tp=1x4 --prompt x
check "a layout of 4 ranks on 2 is refused" eval 'one_error "needs 4 ranks, but mpiexec started 2"'
echo "1..$n"
