#!/bin/sh
# test_train_cli.sh: tsr-train under mpiexec. --help and --version; a one-line error and a
# non-zero exit (no crash, no hang) for an unknown option, a layout whose product is not the
# rank count, heads not divisible by the tp columns, a missing data file, a file with the
# wrong magic, a token id not below the vocabulary, --device cuda without a GPU, bf16 on the
# CPU, and resuming from a
# checkpoint of another model; --log-json and --trace; a checkpoint at step 5 and a resume
# that reproduces steps 6-10 bitwise on the same layout and within 1e-4 on another, also with
# activation recomputation; --recompute's and the retired --compute's errors; the lr of each step
# under each --lr-schedule with warmup; the optimizer options, stored in the checkpoint: a resume
# that changes one warns, one that changes --optimizer is refused; three llm.c shards (one of
# uint32 tokens) by a glob, resumed mid-shard bitwise, in order and shuffled; --batch changed on
# resume; a resume on other data warns; --peak-tflops as the MFU's denominator. Prints TAP.
bin=${TSR_BUILDDIR:-.}/apps
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tsr-train-cli.XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/tap-sh.sh"
model="--model layers=2,dim=32,heads=4,vocab=256,seq=16 --batch 4"

run() { run_tool tsr-train "$@"; } # run RANKS ARGS...: tsr-train on RANKS ranks (tap-sh.sh)

run 1 --help
check "--help prints the usage and exits 0" eval 'test $status -eq 0 && has "$out" "--layout dp=D,pp=P,tp=RxC"'
run 1 --version
check "--version names the program" eval 'test $status -eq 0 && has "$out" tsr-train'
run 1 --bogus
check "an unknown option is one line of error, exit 2" eval 'test $status -eq 2 && one_error "unknown option --bogus"'
run 2 --layout dp=4 $model
check "a layout of 4 ranks on 2 is refused naming both numbers" eval 'one_error "needs 4 ranks, but mpiexec started 2"'
run 2 --layout tp=1x2 --model layers=1,dim=12,heads=3
check "3 heads on 2 tp columns are refused" eval 'one_error "3 heads are not divisible by the 2 tp columns"'
run 2 $model --data "$tmp/missing.bin"
check "a missing data file is named" eval 'one_error "missing.bin"'
head -c 4096 /dev/zero | tr '\0' 'x' >"$tmp/text.bin"
run 2 $model --data "$tmp/text.bin"
check "a data file with the wrong magic is refused" eval 'one_error "magic"'
run 2 --model layers=1,dim=16,heads=2,vocab=64,seq=16 --batch 2 --data synthetic
check "a token id not below the vocabulary size is refused" eval 'one_error "not below the vocabulary size 64"'
if nvidia-smi -L >/dev/null 2>&1; then
    skip "--device cuda without a GPU is one line of error" "a GPU is present (tests/test_train_gpu.sh trains on it)"
else
    run 1 $model --device cuda
    check "--device cuda without a GPU (or CUDA backend) is one line of error" eval 'one_error "cuda"'
fi
run 1 $model --precision bf16
check "--precision bf16 on the CPU is refused" eval 'one_error "--precision bf16 needs --device cuda"'
run 2 $model --schedule interleaved
check "interleaved without its chunk count is refused" eval 'one_error "interleaved:V"'

run 2 $model --layout pp=2 --micro-batches 2 --steps 2 --trace "$tmp/trace.json" --log-json "$tmp/p.json"
check "pp=2 run writes a Chrome trace and one JSON line per step" \
    eval 'test $status -eq 0 && grep -q traceEvents "$tmp/trace.json" && test "$(grep -c "\"peak_bytes\"" "$tmp/p.json")" -eq 2'

# Checkpoint at step 5 of 10 on dp=2; resume from it on dp=2 and on tp=1x2 (ZeRO 1 and 3).
# --peak-tflops replaces the measured peak: MFU = (6P + 12LHT) tokens/s / peak, with P = 34176 and
# 12LHT = 12288 for this model, so 217344 FLOPs a token against 1 GFLOP/s.
run 1 $model --steps 2 --peak-tflops 0.001 --log-json "$tmp/peak.json"
check "--peak-tflops is the MFU's denominator" eval 'test $status -eq 0 && has "$out" "given fp32 GEMM peak 1.0 GFLOP/s" &&
    tail -n 1 "$tmp/peak.json" | sed "s/.*\"tokens_per_s\":\([^,]*\),\"mfu\":\([^,]*\).*/\1 \2/" |
    awk "{ d = \$2 - 217344 * \$1 / 1e9; if (d < 0) d = -d; exit !(\$2 > 0 && d <= 1e-3 * \$2) }"'
run 1 $model --steps 1 --peak-tflops 0
check "--peak-tflops 0 is refused" eval 'test $status -eq 2 && one_error "--peak-tflops 0: expected a finite positive number"'
run 2 $model --layout dp=2 --zero 1 --steps 10 --lr 3e-3 --ckpt-dir "$tmp/ck" --ckpt-every 5 --log-json "$tmp/a.json"
check "10 steps on dp=2 write checkpoints at steps 5 and 10" \
    eval 'test $status -eq 0 && test -f "$tmp/ck/step_5.h5" -a -f "$tmp/ck/step_10.h5" && test "$(wc -l <"$tmp/a.json")" -eq 10'
run 2 $model --layout dp=2 --zero 1 --steps 10 --lr 3e-3 --resume "$tmp/ck/step_5.h5" --log-json "$tmp/b.json"
losses "$tmp/a.json" 6 10 >"$tmp/a.loss"
losses "$tmp/b.json" 1 5 >"$tmp/b.loss"
check "resuming at step 5 on the same layout reproduces steps 6-10 bitwise" \
    eval 'test $status -eq 0 && test -s "$tmp/b.loss" && cmp -s "$tmp/a.loss" "$tmp/b.loss"'
run 2 $model --layout tp=1x2 --zero 3 --steps 10 --lr 3e-3 --resume "$tmp/ck/step_5.h5" --log-json "$tmp/c.json"
losses "$tmp/c.json" 1 5 >"$tmp/c.loss"
check "resuming at step 5 on tp=1x2 gives steps 6-10 within 1e-4" \
    eval 'test $status -eq 0 && test "$(wc -l <"$tmp/c.loss")" -eq 5 && within "$tmp/a.loss" "$tmp/c.loss" 1e-4'
# Recomputation changes nothing a checkpoint holds: a run with it resumes on another layout.
run 2 $model --layout pp=2 --micro-batches 2 --recompute block --steps 10 --lr 3e-3 --ckpt-dir "$tmp/kk" \
    --ckpt-every 5 --log-json "$tmp/e.json"
run 2 $model --layout dp=2 --zero 2 --recompute attention --steps 10 --lr 3e-3 --resume "$tmp/kk/step_5.h5" \
    --log-json "$tmp/f.json"
losses "$tmp/e.json" 6 10 >"$tmp/e.loss"
losses "$tmp/f.json" 1 5 >"$tmp/f.loss"
check "a pp=2 checkpoint with --recompute block resumes on dp=2 with attention recomputation: steps 6-10 within 1e-4" \
    eval 'test $status -eq 0 && test "$(wc -l <"$tmp/f.loss")" -eq 5 && within "$tmp/e.loss" "$tmp/f.loss" 1e-4'
run 1 $model --recompute some
check "--recompute some is a one-line error naming the choices" eval 'one_error "expected none, attention or block"'
run 1 $model --compute tp
check "--compute, retired, is a one-line error saying why" eval 'one_error "--compute is gone: the model has one engine"'
# Three llm.c shards, the second of uint32 tokens, named by a glob: checkpoint mid-shard at step 5,
# the resume reproduces steps 6-10 bitwise (the run crosses from the first shard into the second),
# in order and with --shuffle; the global batch may change on resume; other data warns.
"$bin/tsr-tokenize" --synthetic 1000 --seed 1 "$tmp/sh_000.bin" >/dev/null
"$bin/tsr-tokenize" --synthetic 800 --seed 2 --uint32 "$tmp/sh_001.bin" >/dev/null
"$bin/tsr-tokenize" --synthetic 900 --seed 3 "$tmp/sh_002.bin" >/dev/null
shards="--model layers=2,dim=32,heads=4,vocab=256,seq=16 --batch 8 --layout dp=2"
for shuffle in "" --shuffle; do
    d=$tmp/shard$shuffle
    run 2 $shards --data "$tmp/sh_*.bin" $shuffle --steps 10 --ckpt-dir "$d" --ckpt-every 5 --log-json "$d.a.json"
    run 2 $shards --data "$tmp/sh_*.bin" $shuffle --steps 10 --resume "$d/step_5.h5" --log-json "$d.b.json"
    losses "$d.a.json" 6 10 >"$d.a.loss"
    losses "$d.b.json" 1 5 >"$d.b.loss"
    check "3 shards (uint16, uint32, uint16) ${shuffle:-in order}: a resume mid-shard at step 5 reproduces steps 6-10 bitwise" \
        eval 'test $status -eq 0 && test "$(wc -l <"$d.b.loss")" -eq 5 && cmp -s "$d.a.loss" "$d.b.loss"'
done
run 2 $shards --data "$tmp/sh_*.bin" --steps 6 --batch 4 --resume "$tmp/shard/step_5.h5" --log-json "$tmp/rebatch.json"
check "a resume with another --batch goes on at the checkpoint's token position (tokens_seen 640 + 64)" \
    eval 'test $status -eq 0 && grep -q "\"tokens_seen\":704," "$tmp/rebatch.json"'
run 2 $shards --steps 6 --data "$tmp/sh_000.bin,$tmp/sh_002.bin" --resume "$tmp/shard/step_5.h5"
check "a resume on other data warns once and trains" \
    eval 'test $status -eq 0 && has "$err" "warning: --data $tmp/sh_000.bin,$tmp/sh_002.bin (2 shards, 1900 tokens) is not the checkpoint'"'"'s" && test "$(wc -l <"$tmp/err")" -eq 1'
run 1 $model --data "$tmp/nothing_*.bin"
check "--data with a glob that matches nothing is one line naming it" eval 'one_error "nothing_*.bin matches no file"'

# The learning-rate schedule: warmup then cosine or linear decay to --min-lr at --steps, in the JSON.
lrs() { sed 's/.*"lr":\([^,]*\),.*/\1/' "$1"; }
expect_lr() { # expect_lr KIND WARMUP STEPS LR MIN: the expected lr of steps 1..STEPS, one a line
    awk -v k="$1" -v w="$2" -v n="$3" -v lr="$4" -v lo="$5" 'BEGIN { for (s = 1; s <= n; s++) {
        if (s <= w) x = lr * s / w; else { p = (s - w) / (n - w); if (p > 1) p = 1
            x = k == "constant" ? lr : lo + (lr - lo) * (k == "cosine" ? 0.5 * (1 + cos(3.141592653589793 * p)) : 1 - p) }
        printf "%.12g\n", x } }'
}
for kind in cosine linear constant; do
    run 1 $model --steps 8 --lr 2e-3 --lr-schedule $kind --warmup-steps 3 --min-lr 1e-4 --log-json "$tmp/lr.json"
    lrs "$tmp/lr.json" >"$tmp/lr.got"
    expect_lr $kind 3 8 2e-3 1e-4 >"$tmp/lr.want"
    check "--lr-schedule $kind --warmup-steps 3: the lr of each step in the JSON is the schedule's (to 1e-6)" \
        eval 'test $status -eq 0 && test "$(wc -l <"$tmp/lr.got")" -eq 8 && within "$tmp/lr.want" "$tmp/lr.got" 1e-6'
done
# Hyperparameters are stored in the checkpoint; a resume that changes them warns, a different optimizer is refused.
run 1 $model --steps 2 --optimizer sgd --momentum 0.8 --weight-decay 0 --grad-clip 0 --ckpt-dir "$tmp/sgd"
check "--optimizer sgd --momentum 0.8 trains and checkpoints" eval 'test $status -eq 0 && test -f "$tmp/sgd/step_2.h5"'
run 1 $model --steps 3 --optimizer sgd --momentum 0.8 --weight-decay 0 --grad-clip 0 --resume "$tmp/sgd/step_2.h5"
check "a resume with the same hyperparameters warns of nothing" eval 'test $status -eq 0 && test ! -s "$tmp/err"'
run 1 $model --steps 3 --optimizer sgd --momentum 0.5 --lr 2e-3 --weight-decay 0 --resume "$tmp/sgd/step_2.h5"
check "a resume with another --lr, --momentum and --grad-clip warns once for each and trains" \
    eval 'test $status -eq 0 && has "$out" "step 3/3" && test "$(grep -c "^tsr-train: warning: " "$tmp/err")" -eq 3 &&
          has "$err" "--lr 0.002 differs from the checkpoint'"'"'s 0.001" && has "$err" "--momentum 0.5 differs" &&
          has "$err" "--grad-clip 1 differs from the checkpoint'"'"'s 0"'
run 1 $model --steps 3 --resume "$tmp/sgd/step_2.h5"
check "a resume with --optimizer adamw from an sgd checkpoint is refused" \
    eval 'test $status -eq 1 && one_error "checkpoint /config optimizer is \"sgd\", this run has \"adamw\""'
run 1 $model --beta1 1
check "--beta1 1 is refused" eval 'test $status -eq 2 && one_error "--beta1 1: expected a number in [0, 1)"'
run 1 $model --lr-schedule step
check "--lr-schedule step is refused, naming the choices" eval 'test $status -eq 2 && one_error "expected constant, cosine or linear"'
run 1 $model --lr-schedule cosine --min-lr 1 --lr 1e-3
check "--min-lr above --lr is refused" eval 'test $status -eq 2 && one_error "--min-lr 1 is above --lr 0.001"'
run 1 $model --optimizer lion
check "--optimizer lion is refused" eval 'test $status -eq 2 && one_error "--optimizer lion: expected adamw or sgd"'
run 1 $model --grad-clip -1
check "--grad-clip -1 is refused" eval 'test $status -eq 2 && one_error "--grad-clip -1: expected a finite number >= 0"'

run 2 --model layers=3,dim=32,heads=4,vocab=256,seq=16 --batch 4 --resume "$tmp/ck/step_5.h5"
check "resuming from a checkpoint of another model is a one-line mismatch" \
    eval 'one_error "checkpoint was written for a different model: layers=2"'
echo "1..$n"
