#!/bin/sh
# test_ps_ckpt.sh: checkpoints and faults of tsr-train with parameter servers (issue 18):
#   - a ps=1 run of 6 steps (dp=2, staleness 0) checkpoints at steps 3 and 6; resumed from
#     step 3 on ps=1 it logs the same losses for steps 4-6, to the last bit, and its step 6
#     checkpoint equals the uninterrupted run's (tsr-ckpt diff: no difference);
#   - the PS checkpoint of step 3 resumes on dp=2 --zero 2 and a ZeRO 2 checkpoint of step 3
#     resumes on ps=1 and on ps=2 (two servers), each reaching the other run's step 6
#     checkpoint bitwise (parameters and moments): what was read at the resume is what was
#     written, bit for bit, or the six values of a step would drift;
#   - --grad-clip 0 in these runs: the clipping norm is a sum whose order depends on how the
#     gradient is sharded, and clipping would carry its last bits into the parameters;
#   - at --staleness inf, with one replica delayed (TSR_PS_DELAY), the checkpoint of step K
#     holds the state after exactly K rounds (/optim step, read with h5dump);
#   - a resume that changes the optimizer (adamw to sgd) is one error line;
#   - faults: a server that fails writing the second checkpoint (TSR_CKPT_FAULT on server 1
#     of ps=2) ends the run with one error line, and the first checkpoint still verifies and
#     is the one latest names; a worker that fails in a step (a token beyond the vocabulary in
#     its share of step 2's batch) ends the run with its own error, while the other replica,
#     waiting for that worker's gradients, is released instead of hanging.
# Prints TAP.
bin=${TSR_BUILDDIR:-.}/apps
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tsr-ps-ckpt.XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/tap-sh.sh"
model="--model layers=2,dim=32,heads=4,vocab=256,seq=16 --batch 4 --grad-clip 0"

run() { run_tool tsr-train "$@"; } # run RANKS ARGS...: tsr-train on RANKS ranks (tap-sh.sh)
# same A B: checkpoints A and B hold the same datasets, bit for bit (tsr-ckpt diff exits 0).
same() { "$bin/tsr-ckpt" diff "$1" "$2" >"$tmp/diff" 2>>"$tmp/err"; }

run 3 $model --layout ps=1 --steps 6 --ckpt-dir "$tmp/ps" --ckpt-every 3 --log-json "$tmp/ps.json"
check "ps=1: 6 steps with checkpoints at 3 and 6" \
    eval 'test $status -eq 0 && test -f "$tmp/ps/step_3.h5" && test -f "$tmp/ps/step_6.h5"'
check "... which verify" eval '"$bin/tsr-ckpt" verify "$tmp/ps/step_3.h5" >/dev/null 2>>"$tmp/err" &&
    "$bin/tsr-ckpt" verify "$tmp/ps/step_6.h5" >/dev/null 2>>"$tmp/err"'
losses "$tmp/ps.json" 4 6 >"$tmp/ps.tail"

run 3 $model --layout ps=1 --steps 6 --ckpt-dir "$tmp/ps-r" --resume "$tmp/ps/step_3.h5" --log-json "$tmp/ps-r.json"
losses "$tmp/ps-r.json" 1 3 >"$tmp/ps-r.tail"
check "ps=1 resumed at step 3: steps 4-6 log the uninterrupted run's losses, bitwise" \
    eval 'test $status -eq 0 && has "$out" "resumed from" && test -s "$tmp/ps.tail" &&
        cmp -s "$tmp/ps.tail" "$tmp/ps-r.tail"'
check "... and its step 6 checkpoint is the uninterrupted run's" same "$tmp/ps/step_6.h5" "$tmp/ps-r/step_6.h5"

run 2 $model --layout dp=2 --zero 2 --steps 6 --ckpt-dir "$tmp/ps-z2" --resume "$tmp/ps/step_3.h5"
check "the ps=1 checkpoint resumes on dp=2 --zero 2 and reaches the PS run's step 6 bitwise" \
    eval 'test $status -eq 0 && same "$tmp/ps/step_6.h5" "$tmp/ps-z2/step_6.h5"'

run 2 $model --layout dp=2 --zero 2 --steps 6 --ckpt-dir "$tmp/z2" --ckpt-every 3
check "dp=2 --zero 2: checkpoints at 3 and 6" eval 'test $status -eq 0 && test -f "$tmp/z2/step_3.h5"'
run 3 $model --layout ps=1 --steps 6 --ckpt-dir "$tmp/z2-ps1" --resume "$tmp/z2/step_3.h5"
check "the ZeRO 2 checkpoint resumes on ps=1 and reaches its step 6 bitwise" \
    eval 'test $status -eq 0 && same "$tmp/z2/step_6.h5" "$tmp/z2-ps1/step_6.h5"'
run 4 $model --layout ps=2 --steps 6 --ckpt-dir "$tmp/z2-ps2" --resume "$tmp/z2/step_3.h5"
check "... and on ps=2, two servers writing one checkpoint" \
    eval 'test $status -eq 0 && same "$tmp/z2/step_6.h5" "$tmp/z2-ps2/step_6.h5"'

TSR_PS_DELAY=1:20 run 3 $model --layout ps=1 --staleness inf --steps 4 --ckpt-dir "$tmp/inf" --ckpt-every 2
check "--staleness inf with replica 1 delayed: the checkpoints verify" \
    eval 'test $status -eq 0 && "$bin/tsr-ckpt" verify "$tmp/inf/step_2.h5" >/dev/null 2>>"$tmp/err" &&
        "$bin/tsr-ckpt" verify "$tmp/inf/step_4.h5" >/dev/null 2>>"$tmp/err"'
if command -v h5dump >/dev/null 2>&1; then
    optim_step() { h5dump -a /optim/step "$1" 2>/dev/null | sed -n 's/.*(0): *//p'; }
    check "... and hold every round up to their step (the barrier drained the servers)" \
        eval 'test "$(optim_step "$tmp/inf/step_2.h5")" = 2 && test "$(optim_step "$tmp/inf/step_4.h5")" = 4'
else
    skip "... and hold every round up to their step" "no h5dump"
fi

run 3 $model --layout ps=1 --steps 6 --optimizer sgd --ckpt-dir "$tmp/sgd" --resume "$tmp/ps/step_3.h5"
check "a resume on ps=1 that changes the optimizer is an error" \
    eval 'one_error "--resume: checkpoint /config optimizer is \"adamw\", this run has \"sgd\"" && ! has "$out" "step 4/"'

mkdir "$tmp/fault" && cp "$tmp/ps/step_3.h5" "$tmp/fault/" && printf 'step_3.h5\n' >"$tmp/fault/latest"
TSR_CKPT_FAULT=1:/params/wte run 4 $model --layout ps=2 --steps 5 --ckpt-dir "$tmp/fault" --resume latest
check "server 1 failing the second checkpoint (TSR_CKPT_FAULT) ends the run with one error" \
    eval 'test $status -eq 1 && one_error "checkpoint: rank 1 failed writing /params/wte" && has "$out" "step 5/5"'
check "... the first checkpoint still verifies" eval '"$bin/tsr-ckpt" verify "$tmp/fault/step_3.h5" >/dev/null 2>>"$tmp/err"'
check "... latest still names it, and nothing else is left" \
    eval 'test "$(cat "$tmp/fault/latest")" = step_3.h5 && test "$(ls "$tmp/fault")" = "$(printf "latest\nlock\nstep_3.h5")"'

# A shard whose token at position 6 x 16 + 5 (step 2's third sequence: replica 1's) is 300.
python3 -c '
import struct, sys
n, T = 4096, 16
tok = [(i * 7) % 256 for i in range(n)]
tok[6 * T + 5] = 300
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<256i", 20240520, 1, n, *([0] * 253)))
    f.write(struct.pack("<%dH" % n, *tok))' "$tmp/bad.bin" 2>/dev/null
if test -f "$tmp/bad.bin"; then
    run 3 $model --layout ps=1 --steps 4 --data "$tmp/bad.bin"
    check "a worker failing in step 2 ends the run with its error; the waiting replica is released" \
        eval 'test $status -eq 1 && one_error "token 300 at position 101 is not below the vocabulary size 256"'
else
    skip "a worker failing in step 2 ends the run with its error" "no python3 to write the shard"
fi
echo "1..$n"
