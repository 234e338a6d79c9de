#!/bin/sh
# test_ckpt_hostile.sh: checkpoints damaged on purpose (tests/ckpt-craft, as h5py could) are
# refused by tsr-ckpt and tsr-train --resume with one line naming what is wrong and a
# non-zero exit, never a crash or a hang (issue 16):
#   - a dataset of 3 dimensions and a checksum attribute of 64 values (reads bounded by
#     what was checked);
#   - resume state: /data/tokens, /optim step, good_steps and loss_scale changed, with and
#     without a matching metadata checksum;
#   - NaN, Inf and a negative second moment with a matching dataset checksum;
#   - a file missing /params/wte, or with a /config that is not a valid model, "verifies";
#   - messages: a 1 x 32 dataset where 32 is expected, an int32 dataset, h5py's NULLPAD
#     strings, a format attribute of the wrong type, a damaged superblock;
#   - a FIFO and a directory given as the checkpoint file.
# Prints TAP.
bin=${TSR_BUILDDIR:-.}/apps
craft=${TSR_BUILDDIR:-.}/tests/ckpt-craft
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tsr-ckpt-hostile.XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/tap-sh.sh"
model="--model layers=2,dim=32,heads=4,vocab=256,seq=16 --batch 4"

# shellcheck disable=SC2086 # $model is meant to split
train() { ranks=$1; shift; run_tool tsr-train "$ranks" $model "$@"; } # train RANKS ARGS...
# failed without a signal or a timeout, each line on stderr a tsr-ckpt error, one containing TEXT
errors_name() { test "$status" -ge 1 -a "$status" -le 2 && has "$err" "$1" && ! grep -qv '^tsr-ckpt: ' "$tmp/err"; }
craft() { # craft NAME OP ARGS...: a copy of the good checkpoint as $tmp/NAME.h5, edited
    name=$1
    shift
    cp "$good" "$tmp/$name.h5" && "$craft" "$tmp/$name.h5" "$@"
}

train 1 --steps 3 --ckpt-dir "$tmp/ck"
good=$tmp/ck/step_3.h5
check "a 3-step run writes the checkpoint the cases below damage" test "$status" -eq 0 -a -f "$good"
run_cmd "$bin/tsr-ckpt" verify "$good"
check "the intact checkpoint verifies" test "$status" -eq 0

# --- reads bounded by what was checked ---
craft rank3 rank3 /params/h0.attn.q.w
run_cmd "$bin/tsr-ckpt" list "$tmp/rank3.h5"
check "list of a file with a 2x2x2 dataset names it, no crash" eval 'one_error "/params/h0.attn.q.w has 3 dimensions"'
run_cmd "$bin/tsr-ckpt" verify "$tmp/rank3.h5"
check "verify of that file names it, no crash" eval 'errors_name "/params/h0.attn.q.w has 3 dimensions"'
train 2 --steps 4 --resume "$tmp/rank3.h5"
check "resuming that file on 2 ranks is one line, no crash" eval 'one_error "has 3 dimensions"'
craft wide wide-checksum /params/wpe
run_cmd "$bin/tsr-ckpt" verify "$tmp/wide.h5"
check "a checksum attribute of 64 values is refused, not read into one" \
    eval 'errors_name "the checksum attribute of dataset /params/wpe is not one 64-bit integer"'

# --- resume state covered by checksums and consistent ---
craft datastep write-i64 /data/tokens 1
train 1 --steps 6 --resume "$tmp/datastep.h5"
check "/data/tokens changed to 1 (its checksum matching): resume refused, the position named" \
    eval 'one_error "/data/tokens is 1, but the checkpoint'"'"'s tokens_seen is"'
craft optstep set-i64 /optim step 1
train 1 --steps 6 --resume "$tmp/optstep.h5"
check "/optim step changed: resume refused by the metadata checksum" eval 'one_error "attributes fail their checksum"'
run_cmd "$bin/tsr-ckpt" verify "$tmp/optstep.h5"
check "... and verify says so" eval 'errors_name "attributes fail their checksum"'
craft scale set-f64 /optim loss_scale 1024
train 1 --steps 6 --resume "$tmp/scale.h5"
check "loss_scale 1024 on an fp32 run: refused by the metadata checksum" eval 'one_error "attributes fail their checksum"'
craft scale2 set-f64 /optim loss_scale 1024 && "$craft" "$tmp/scale2.h5" seal
train 1 --steps 6 --resume "$tmp/scale2.h5"
check "loss_scale 1024 re-sealed: refused, an fp32 run does not scale its loss" \
    eval 'one_error "loss_scale is 1024 and good_steps 0, but this run does not scale its loss"'
craft good set-i64 /optim good_steps 5 && "$craft" "$tmp/good.h5" seal
train 1 --steps 6 --resume "$tmp/good.h5"
check "good_steps 5 re-sealed on a run without loss scaling: refused" eval 'one_error "good_steps 5"'
craft root set-i64 / tokens_seen 1 && "$craft" "$tmp/root.h5" seal
train 1 --steps 6 --resume "$tmp/root.h5"
check "the root tokens_seen changed and re-sealed: the data position disagrees, refused" \
    eval 'one_error "but the checkpoint'"'"'s tokens_seen is 1"'
run_cmd "$bin/tsr-ckpt" verify "$tmp/root.h5"
check "... and verify says so" eval 'errors_name "but the checkpoint'"'"'s tokens_seen is 1"'
craft rootstep set-i64 / step 1 && "$craft" "$tmp/rootstep.h5" seal
train 1 --steps 6 --resume "$tmp/rootstep.h5"
check "the root step changed to 1 and re-sealed: the optimizer's 3 steps are past it, refused" \
    eval 'one_error "/optim step is 3, past the checkpoint'"'"'s step 1"'

# --- values that are not finite, with matching checksums ---
craft nan poke /params/wte 5 nan
run_cmd "$bin/tsr-ckpt" verify "$tmp/nan.h5"
check "verify refuses a NaN parameter, naming the dataset and the element" \
    eval 'errors_name "dataset /params/wte holds nan at element 5"'
train 1 --steps 6 --resume "$tmp/nan.h5"
check "resume refuses it" eval 'one_error "dataset /params/wte holds a non-finite value at element 5"'
craft inf poke /optim/h0.mlp.fc.w/m 3 inf
run_cmd "$bin/tsr-ckpt" verify "$tmp/inf.h5"
check "verify refuses an infinite first moment" eval 'errors_name "dataset /optim/h0.mlp.fc.w/m holds inf at element 3"'
craft neg poke /optim/wpe/v 0 -1
run_cmd "$bin/tsr-ckpt" verify "$tmp/neg.h5"
check "verify refuses a negative second moment" eval 'errors_name "/optim/wpe/v holds -1 at element 0 (expected no negative"'
train 1 --steps 6 --resume "$tmp/neg.h5"
check "resume refuses it" eval 'one_error "dataset /optim/wpe/v holds a negative or non-finite value at element 0"'

# --- verify: a complete checkpoint of its own /config ---
craft nowte delete /params/wte
run_cmd "$bin/tsr-ckpt" verify "$tmp/nowte.h5"
check "verify of a file without /params/wte fails naming it" eval 'errors_name "/params/wte"'
craft nowte2 delete /params/wte && "$craft" "$tmp/nowte2.h5" delete /optim/wte/m &&
    "$craft" "$tmp/nowte2.h5" delete /optim/wte/v
run_cmd "$bin/tsr-ckpt" verify "$tmp/nowte2.h5"
check "... also with its moments gone: the model of /config needs it" \
    eval 'errors_name "the checkpoint has no dataset /params/wte, which its model (layers=2,dim=32,heads=4,vocab=256,seq=16) needs"'
craft heads set-i64 /config n_head 5 && "$craft" "$tmp/heads.h5" seal
run_cmd "$bin/tsr-ckpt" verify "$tmp/heads.h5"
check "verify checks the configuration itself: 32 dims on 5 heads" \
    eval 'errors_name "checkpoint /config is not a valid model: model dim=32 is not a multiple of heads=5"'

# --- messages ---
craft vec reshape /params/ln_f.w 1 32
train 1 --steps 6 --resume "$tmp/vec.h5"
check "a 1 x 32 dataset where 32 is expected: the shapes as they are (no stray 0)" \
    eval 'one_error "checkpoint dataset /params/ln_f.w is 1 x 32, this model has 32" && test "${err%has 32}" != "$err"'
craft int32 retype /params/ln_f.b
train 1 --steps 6 --resume "$tmp/int32.h5"
check "an int32 dataset is called int32" eval 'one_error "checkpoint dataset /params/ln_f.b is int32 32, this model has float32 32"'
craft nullpad set-str / format tessera-ckpt nullpad && "$craft" "$tmp/nullpad.h5" set-str /layout schedule 1f1b nullpad &&
    "$craft" "$tmp/nullpad.h5" seal
run_cmd "$bin/tsr-ckpt" info "$tmp/nullpad.h5"
check "h5py's NULLPAD strings are read whole (format, schedule)" \
    eval 'test $status -eq 0 && grep -q "schedule  *1f1b$" "$tmp/out"'
craft fmt set-i64 / format 7
run_cmd "$bin/tsr-ckpt" info "$tmp/fmt.h5"
check "a format attribute of the wrong type is called that, not missing" \
    eval 'one_error "root attribute format is an integer (expected a string)"'
cp "$good" "$tmp/super.h5"
printf '\023\067\377\177' | dd of="$tmp/super.h5" bs=1 seek=104 conv=notrunc 2>/dev/null
run_cmd "$bin/tsr-ckpt" verify "$tmp/super.h5"
check "a damaged superblock is one short line, no HDF5 noise, its parenthesis closed" \
    eval 'one_error "is truncated or damaged" && ! has "$err" "infinite loop" && test ${#err} -lt 200 &&
          test "$(printf %s "$err" | tr -cd "(" | wc -c)" -eq "$(printf %s "$err" | tr -cd ")" | wc -c)"'

# --- inputs that must be regular files ---
mkfifo "$tmp/fifo.h5"
run_cmd "$bin/tsr-ckpt" verify "$tmp/fifo.h5"
check "a FIFO as the checkpoint is refused at once (no hang)" eval 'one_error "fifo.h5 is a FIFO, not a regular file"'
train 1 --steps 6 --resume "$tmp/fifo.h5"
check "... by --resume too" eval 'one_error "is a FIFO, not a regular file"'
mkdir "$tmp/ckdir"
train 1 --steps 6 --resume "$tmp/ckdir"
check "a directory as --resume FILE is refused naming it" eval 'one_error "ckdir is a directory, not a regular file"'
echo "1..$n"
