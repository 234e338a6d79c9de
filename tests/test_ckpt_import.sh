#!/bin/sh
# test_ckpt_import.sh: tsr-ckpt import and export (issue 19) on GPT-2 weights files of random
# values that tests/weights-craft writes on its own, in the exporter's canonical form: llm.c's
# fp32 (version 3, vocabulary 256 padded to 384) and bf16 (version 5, 250 padded to 256), and
# Hugging Face safetensors in F32, BF16 and F16 (with the prefix transformer., the mask buffers,
# a tied lm_head.weight and another key order). Each imports; import then export gives the input
# file back byte for byte (llm.c -> hf -> llm.c too); the imported model's loss on a fixed batch
# (tsr_gpt_eval, 1 rank and tp=1x2) equals weights-craft's double-precision forward of the
# file's own tensors within 1e-5 relative; tsr-train --resume trains one step on it and the
# result exports; tsr-generate decodes the same tokens from it on 1 rank and tp=1x2. Every
# malformed file (a model whose logits of one sequence would dwarf the file too) is one line on
# stderr, exit 1, and no output; a directory with checkpoints
# and an existing output file are left as they were. Prints TAP.
bin=${TSR_BUILDDIR:-.}/apps
craft=${TSR_BUILDDIR:-.}/tests/weights-craft
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tsr-ckpt-import.XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/tap-sh.sh"
seed=${TSR_TEST_SEED:-$(date +%s)}
echo "# seed $seed (TSR_TEST_SEED=$seed repeats this run)"
ckpt() { run_tool tsr-ckpt 1 "$@"; }
# loss KIND CKPT RANKS LAYOUT [ARGS...]: weights-craft's check of the imported model's loss
loss() {
    kind=$1 file=$2 ranks=$3 lay=$4
    shift 4
    run_tool "$craft" "$ranks" loss "$kind" "$file" --seed "$seed" --layout "$lay" "$@"
    echo "# $kind on $lay: $out"
}
ok_run() { test "$status" -eq 0; }
# failed_alone PART: exit 1, one line on stderr naming PART
failed_alone() { test "$status" -eq 1 && one_error "$1"; }

tiny=layers=2,dim=64,heads=4,vocab=256,seq=64

# ---- llm.c, fp32: V = 256 padded to 384 ----
"$craft" write llmc "$tmp/a.bin" --seed "$seed" 2>"$tmp/err"
check "weights-craft writes an llm.c file" test -s "$tmp/a.bin"
ckpt import llmc "$tmp/a.bin" "$tmp/ck"
check "import llmc: the model of the header, into DIR/step_0.h5" \
    eval 'ok_run && has "$out" "$tiny, 120576 parameters" && test -s "$tmp/ck/step_0.h5" -a -s "$tmp/ck/latest"'
ckpt verify "$tmp/ck"
check "the imported checkpoint verifies" ok_run
ckpt export llmc "$tmp/ck" "$tmp/b.bin" --padded-vocab 384
check "export llmc --padded-vocab 384: the input, byte for byte" eval 'ok_run && cmp -s "$tmp/a.bin" "$tmp/b.bin"'
loss llmc "$tmp/ck/step_0.h5" 1 dp=1
check "llmc: the imported model's loss is the reference's (1 rank)" ok_run
loss llmc "$tmp/ck/step_0.h5" 2 tp=1x2
check "llmc: the imported model's loss is the reference's (tp=1x2)" ok_run

run_tool tsr-train 1 --model $tiny --batch 2 --lr 1e-3 --steps 1 --ckpt-dir "$tmp/ck" --resume latest
check "tsr-train --resume trains one step on the import, without warnings" \
    eval 'ok_run && test -s "$tmp/ck/step_1.h5" && ! has "$err" "warning"'
ckpt export llmc "$tmp/ck" "$tmp/trained.bin" --padded-vocab 384
check "the trained checkpoint exports: another file of the same size" \
    eval 'ok_run && test "$(wc -c <"$tmp/trained.bin")" -eq "$(wc -c <"$tmp/a.bin")" && ! cmp -s "$tmp/trained.bin" "$tmp/a.bin"'

gen() { ranks=$1; shift; run_tool tsr-generate "$ranks" --ckpt "$tmp/ck/step_0.h5" --prompt-tokens 1,2,3 \
    --max-tokens 16 --temperature 0 --json "$@"; }
tokens() { echo "$1" | sed -e 's/.*"tokens":\[//' -e 's/\].*//'; } # the generated ids
gen 1
one=$(tokens "$out")
check "tsr-generate from the import on 1 rank: 16 tokens" \
    eval 'ok_run && test "$(echo "$one" | tr , "\n" | grep -c "^[0-9][0-9]*$")" -eq 16'
gen 2 --layout tp=1x2
check "the same tokens on tp=1x2" eval 'ok_run && test "$(tokens "$out")" = "$one"'

# ---- llm.c, bf16: V = 250 padded to 256 (llm.c's rounding, the default) ----
small=2,64,4,250,256,64
"$craft" write llmc-bf16 "$tmp/c.bin" --seed "$seed" --model $small 2>"$tmp/err"
ckpt import llmc "$tmp/c.bin" "$tmp/ckc"
check "import llmc version 5 (bf16)" eval 'ok_run && has "$out" "vocab=250"'
ckpt export llmc "$tmp/ckc" "$tmp/d.bin" --dtype bf16
check "export llmc --dtype bf16: the input, byte for byte" eval 'ok_run && cmp -s "$tmp/c.bin" "$tmp/d.bin"'
loss llmc-bf16 "$tmp/ckc/step_0.h5" 1 dp=1 --model $small
check "llmc bf16: the imported model's loss is the reference's" ok_run

# ---- Hugging Face safetensors ----
"$craft" write hf "$tmp/a.safetensors" --seed "$seed" 2>"$tmp/err"
ckpt import hf "$tmp/a.safetensors" "$tmp/ckh" --heads 4
check "import hf --heads 4" eval 'ok_run && has "$out" "$tiny"'
ckpt export hf "$tmp/ckh" "$tmp/b.safetensors"
check "export hf: the input, byte for byte" eval 'ok_run && cmp -s "$tmp/a.safetensors" "$tmp/b.safetensors"'
loss hf "$tmp/ckh/step_0.h5" 1 dp=1
check "hf: the imported model's loss is the reference's (1 rank)" ok_run
loss hf "$tmp/ckh/step_0.h5" 2 tp=1x2
check "hf: the imported model's loss is the reference's (tp=1x2)" ok_run
for kind in hf-bf16 hf-f16; do
    "$craft" write $kind "$tmp/$kind.safetensors" --seed "$seed" --prefix --mask --lm-head --shuffle 2>"$tmp/err"
    ckpt import hf "$tmp/$kind.safetensors" "$tmp/ck-$kind" --heads 4
    check "import $kind with the prefix transformer., mask buffers, a tied lm_head, keys reordered" ok_run
    loss $kind "$tmp/ck-$kind/step_0.h5" 1 dp=1
    check "$kind: the imported model's loss is the reference's" ok_run
    "$craft" write $kind "$tmp/$kind-f32.safetensors" --seed "$seed" --as-f32 2>"$tmp/err"
    ckpt export hf "$tmp/ck-$kind" "$tmp/$kind-out.safetensors"
    check "$kind exports as the canonical F32 file of its values" \
        eval 'ok_run && cmp -s "$tmp/$kind-f32.safetensors" "$tmp/$kind-out.safetensors"'
done
ckpt export hf "$tmp/ck/step_0.h5" "$tmp/x.safetensors"
ckpt import hf "$tmp/x.safetensors" "$tmp/ckx" --heads 4
ckpt export llmc "$tmp/ckx" "$tmp/x.bin" --padded-vocab 384
check "llm.c -> Tessera -> hf -> Tessera -> llm.c: the first file, byte for byte" \
    eval 'ok_run && cmp -s "$tmp/a.bin" "$tmp/x.bin"'

# ---- malformed files: one line, exit 1, nothing written ----
expect() { # expect CASE PART [IMPORT ARGS...]
    case=$1 part=$2
    shift 2
    "$craft" bad "$case" "$tmp/bad" --seed "$seed" 2>"$tmp/err"
    format=${case%%-*}
    ckpt import "$format" "$tmp/bad" "$tmp/nothing" "$@"
    check "$case is refused: $part" eval 'failed_alone "$part" && test ! -e "$tmp/nothing"'
}
expect llmc-short "shorter than the 1024-byte header of an llm.c model file"
expect llmc-magic "magic number 20240520, expected 20240326"
expect llmc-version "version 4, expected 3 (fp32) or 5 (bf16)"
expect llmc-zero "the header's L is 0 (expected a positive size)"
expect llmc-heads "channels C=64 are not a multiple of its heads NH=5"
expect llmc-vp "padded vocabulary Vp=128 is smaller than its vocabulary V=256"
expect llmc-size "(maxT=64, V=256, L=3, NH=4, C=64, Vp=384, fp32) need 716032 bytes, the file has 516096"
expect llmc-huge "need more than"
expect llmc-layers "the header's L=5000 layers are more than the 4096 this reader takes"
expect llmc-nan "tensor fcw (layer 0) holds nan at element 77 (expected finite weights)"
cp "$tmp/a.bin" "$tmp/bad"
truncate -s -4 "$tmp/bad"
ckpt import llmc "$tmp/bad" "$tmp/nothing"
check "a truncated llm.c file is refused" eval 'failed_alone "need 516096 bytes, the file has 516092" && test ! -e "$tmp/nothing"'
expect hf-short "shorter than the 8-byte header length of a safetensors file"
expect hf-hlen "the safetensors header length 1099511627776 passes the end of the file"
expect hf-limit "the safetensors header length 150000000 is over the format's limit of 100000000 bytes"
expect hf-json "the safetensors header is not valid: expected"
expect hf-trailing "the safetensors header has more than one JSON object"
expect hf-range "tensor h.0.ln_2.bias's data_offsets [1073891072, 1073891328] are out of range"
expect hf-overlap "overlap"
expect hf-gap "belong to no tensor (expected the tensors to cover the data)"
expect hf-missing "has no tensor h.1.mlp.c_proj.bias (a GPT-2 of 2 layers needs it)"
expect hf-extra "unexpected tensor h.0.attn.c_attn.scale"
expect hf-shape "tensor h.1.mlp.c_fc.weight has shape [256, 64], expected [64, 256]"
expect hf-dtype "tensor h.0.attn.c_proj.bias has dtype I32, expected F32, BF16 or F16"
expect hf-unknown-dtype "unknown dtype \"F33\""
expect hf-inf "tensor h.1.ln_1.weight holds inf at element 5"
expect hf-lm-head "lm_head.weight differs from wte.weight (element 100:"
expect hf-twice "tensor ln_f.bias appears twice"
expect hf-name "a name with the character U+000A before byte"
expect hf-no-heads "dim 48 is not a multiple of GPT-2's head size 64, so the file does not say its heads"
ckpt import hf "$tmp/bad" "$tmp/nothing" --heads 5
check "hf heads that do not divide the dim are refused" eval 'failed_alone "dim=48 is not a multiple of heads=5"'
ckpt import hf "$tmp/bad" "$tmp/nothing48" --heads 4
check "... and with --heads 4 it imports" ok_run
cp "$tmp/a.safetensors" "$tmp/bad"
truncate -s -4 "$tmp/bad"
ckpt import hf "$tmp/bad" "$tmp/nothing"
check "a truncated safetensors file is refused" eval 'failed_alone "are out of range" && test ! -e "$tmp/nothing"'
# a file of 270 kB whose model would ask import for 512 MiB of logits (seq x vocab, batch 1)
for kind in llmc hf; do
    "$craft" write $kind "$tmp/bad" --seed "$seed" --model 1,1,1,65536,65536,2048 2>"$tmp/err"
    heads=
    test $kind = hf && heads="--heads 1"
    # shellcheck disable=SC2086
    ckpt import $kind "$tmp/bad" "$tmp/nothing" $heads
    check "$kind: a tiny file of a model with logits out of proportion (seq 2048, vocab 65536, dim 1) is refused" \
        eval 'failed_alone "seq=2048 x vocab=65536 = 134217728 values, are more than 2^26 and 4 times its 67611 \
parameters" && test ! -e "$tmp/nothing"'
done
ckpt import llmc "$tmp/missing.bin" "$tmp/nothing"
check "a missing file is refused" eval 'failed_alone "missing.bin: No such file or directory"'
ckpt import hf "$tmp" "$tmp/nothing"
check "a directory is refused" eval 'failed_alone "is a directory, not a regular file"'

# ---- what is there is not damaged ----
cp "$tmp/ck/step_0.h5" "$tmp/keep.h5"
ckpt import llmc "$tmp/a.bin" "$tmp/ck"
check "import into a directory with checkpoints is refused" \
    eval 'failed_alone "already holds checkpoints" && cmp -s "$tmp/ck/step_0.h5" "$tmp/keep.h5"'
cp "$tmp/b.bin" "$tmp/keep.bin"
ckpt export llmc "$tmp/ck/step_0.h5" "$tmp/b.bin" --padded-vocab 100
check "a padded vocabulary below the vocabulary is refused; the existing output is untouched" \
    eval 'failed_alone "a padded vocabulary of 100 rows cannot hold the model'"'"'s vocabulary of 256" && \
        cmp -s "$tmp/b.bin" "$tmp/keep.bin" && test -z "$(ls "$tmp" | grep "\.tmp$")"'
ckpt export hf "$tmp/ck/step_0.h5" "$tmp/ck/step_0.h5"
check "export over the checkpoint it reads is refused" \
    eval 'failed_alone "is the checkpoint being exported" && cmp -s "$tmp/ck/step_0.h5" "$tmp/keep.h5"'
head -c 5000 /dev/urandom >"$tmp/junk.h5"
ckpt export hf "$tmp/junk.h5" "$tmp/junk.safetensors"
check "export of a file that is no checkpoint is refused" eval 'failed_alone "junk.h5" && test ! -e "$tmp/junk.safetensors"'
ckpt export hf "$tmp/ck" "$tmp/y.safetensors" --dtype bf16
check "--dtype with hf is a usage error" eval 'test $status -eq 2 && one_error "--dtype is an option of export llmc"'
ckpt import llmc "$tmp/a.bin" "$tmp/nothing" --heads 4
check "--heads with llmc is a usage error" eval 'test $status -eq 2 && one_error "--heads is an option of import hf"'
ckpt import gguf "$tmp/a.bin" "$tmp/nothing"
check "an unknown format is a usage error" eval 'test $status -eq 2 && one_error "unknown weights format \"gguf\" (expected llmc or hf)"'
echo "1..$n"
