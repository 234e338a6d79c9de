#!/bin/sh
# make-seeds.sh OUT: seed inputs for the fuzz targets, made by this build's programs
# (TSR_BUILDDIR, default .): OUT/ckpt/ holds real tiny checkpoints (tsr-train on the model
# of tests/fuzz/fuzz.h, tsr-bench ckpt) and copies damaged by tests/ckpt-craft (for
# fuzz_ckpt_bytes); OUT/ckpt-edit/ holds edit scripts (for fuzz_ckpt: bytes that pick
# edits); OUT/shard/ holds token shards of tsr-tokenize, whole, truncated and with a wrong
# magic number; OUT/weights/ holds small GPT-2 weights files of tests/weights-craft (llm.c fp32
# and bf16, safetensors F32, BF16 and F16, for fuzz_weights) and the minimized inputs of its
# past findings, written here.
out=$1
build=${TSR_BUILDDIR:-.}
test -n "$out" || { echo "usage: make-seeds.sh OUT" >&2; exit 2; }
mkdir -p "$out/ckpt" "$out/ckpt-edit" "$out/shard" "$out/weights" "$out/work" || exit 1
# shellcheck disable=SC2086
${MPIEXEC:-mpiexec} $MPIEXEC_FLAGS -n 1 "$build/apps/tsr-train" --model layers=1,dim=4,heads=1,vocab=256,seq=4 \
    --batch 1 --steps 1 --ckpt-dir "$out/work/train" >/dev/null || exit 1
# shellcheck disable=SC2086
${MPIEXEC:-mpiexec} $MPIEXEC_FLAGS -n 1 "$build/apps/tsr-bench" ckpt --bytes 8k --tensors 2 --reps 1 \
    --dir "$out/work/bench" --keep >/dev/null || exit 1
good=$out/work/train/step_1.h5
cp "$good" "$out/ckpt/train.h5" && cp "$out/work/bench/step_1.h5" "$out/ckpt/bench.h5" || exit 1
variant() { # variant NAME OP ARGS...
    name=$1
    shift
    cp "$good" "$out/ckpt/$name.h5" && "$build/tests/ckpt-craft" "$out/ckpt/$name.h5" "$@"
}
variant rank3 rank3 /params/h0.attn.q.w
variant nan poke /params/wte 3 nan
variant neg poke /optim/wpe/v 1 -1
variant nowte delete /params/wte
variant nullpad set-str / format tessera-ckpt nullpad
variant wide wide-checksum /params/wpe
variant step write-i64 /data/tokens 7
variant scale set-f64 /optim loss_scale 1024
variant int32 retype /params/ln_f.b
head -c 4000 "$good" >"$out/ckpt/truncated.h5"

# Edit scripts: fixed pseudo-random bytes, one file per seed (the same on every machine).
for seed in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16; do
    awk -v seed="$seed" 'BEGIN { x = seed; for (i = 0; i < 96; i++) { x = (x * 1103515245 + 12345) % 2147483648;
        printf "%c", int(x / 65536) % 256 } }' </dev/null >"$out/ckpt-edit/script$seed"
done

printf 'Hello, shards.\n' >"$out/work/text.txt"
"$build/apps/tsr-tokenize" "$out/work/text.txt" "$out/shard/text.bin" >/dev/null || exit 1
"$build/apps/tsr-tokenize" --synthetic 300 "$out/shard/synthetic.bin" >/dev/null || exit 1
head -c 1030 "$out/shard/synthetic.bin" >"$out/shard/truncated.bin"
head -c 1024 "$out/shard/synthetic.bin" >"$out/shard/header.bin"
{ printf 'XXXX'; tail -c +5 "$out/shard/text.bin"; } >"$out/shard/magic.bin"

# Weights files of a model of 1 block, dim 4, 1 head, vocabulary 8 (llm.c pads it to 16), 4
# positions: about 1.3 kB of values.
weights() { # weights KIND NAME [OPTIONS...]
    kind=$1 name=$2
    shift 2
    "$build/tests/weights-craft" write "$kind" "$out/weights/$name" --seed 1 --model 1,4,1,8,16,4 "$@"
}
weights llmc llmc.bin && weights llmc-bf16 llmc-bf16.bin && weights hf hf.safetensors &&
    weights hf-bf16 hf-bf16.safetensors --prefix --mask --lm-head --shuffle &&
    weights hf-f16 hf-f16.safetensors --lm-head || exit 1
rm -rf "$out/work"
