#!/bin/sh
# test_train_guard.sh: tsr-train refuses what would lose a job or a result, with one line on
# stderr and a non-zero exit, before step 1 where it can (issue 16):
#   - non-finite numbers (--lr inf), a run whose loss turns NaN (no NaN in --log-json);
#   - a second job on a --ckpt-dir that a running job holds (named in the error);
#   - a --ckpt-dir that is a file, under /proc, empty or read-only, and an unwritable --trace,
#     all before the first step;
#   - --model "", duplicate keys, trailing commas; a malformed TSR_CKPT_FAULT;
#   - layouts whose rank count overflows, a batch whose token count overflows;
#   - a failed synthetic-data write (reported once);
#   - a --resume path of more than 1024 bytes (it works);
#   - a FIFO or a directory as --data (no hang);
#   - resuming at or past --steps (says so, exit 0).
# Prints TAP.
bin=${TSR_BUILDDIR:-.}/apps
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tsr-train-guard.XXXXXX") || exit 99
holder=
trap 'test -n "$holder" && kill "$holder" 2>/dev/null; rm -rf "$tmp"' EXIT
. "$(dirname "$0")/tap-sh.sh"
model="--model layers=2,dim=32,heads=4,vocab=256,seq=16 --batch 4"

TIMEOUT=60
run() { run_tool tsr-train "$@"; } # run RANKS ARGS...: tsr-train on RANKS ranks (tap-sh.sh)

# --- non-finite values ---
for lr in inf nan 1e999 -inf; do
    run 1 $model --lr "$lr"
    check "--lr $lr is refused" eval 'test $status -eq 2 && one_error "--lr $lr: expected a finite positive number"'
done
run 1 $model --steps 4 --lr 1e30 --log-json "$tmp/nan.json"
check "a run whose loss turns NaN stops at that step with one line, exit 1" \
    eval 'test $status -eq 1 && one_error "step 2: the loss is NaN (expected a finite number"'
check "... and its JSON log holds step 1 only, no nan" \
    eval 'test "$(wc -l <"$tmp/nan.json")" -eq 1 && ! grep -qi nan "$tmp/nan.json"'

# --- one job per checkpoint directory ---
# shellcheck disable=SC2086
${MPIEXEC:-mpiexec} $MPIEXEC_FLAGS -n 1 "$bin/tsr-train" $model --steps 100000000 --ckpt-dir "$tmp/shared" \
    >/dev/null 2>&1 &
holder=$!
for _ in $(seq 600); do
    grep -q "^pid " "$tmp/shared/lock" 2>/dev/null && break
    sleep 0.1
done
pid=$(sed -n 's/^pid \([0-9]*\) .*/\1/p' "$tmp/shared/lock" 2>/dev/null)
run 1 $model --steps 2 --ckpt-dir "$tmp/shared"
check "a second job on a held --ckpt-dir is refused before step 1, naming the holder" \
    eval 'test -n "$pid" && before_step1 "checkpoint directory $tmp/shared is in use by another job (pid $pid on"'
kill "$holder" 2>/dev/null
wait "$holder" 2>/dev/null
holder=
run 1 $model --steps 2 --ckpt-dir "$tmp/shared"
check "once that job is gone (killed), the directory takes a new job" \
    eval 'test $status -eq 0 && test -f "$tmp/shared/step_2.h5" && ! ls "$tmp/shared" | grep -q "tmp\|reserve"'

# --- output paths checked before step 1 ---
echo "a file" >"$tmp/file"
run 1 $model --steps 2 --ckpt-dir "$tmp/file"
check "--ckpt-dir that is a file fails before step 1" eval 'before_step1 "is a regular file, not a directory"'
run 1 $model --steps 2 --ckpt-dir /proc/tsr-ckpt
check "--ckpt-dir under /proc fails before step 1" eval 'before_step1 "cannot create directory /proc/tsr-ckpt"'
run 1 $model --steps 2 --ckpt-dir ""
check "--ckpt-dir \"\" is a usage error" eval 'test $status -eq 2 && one_error "--ckpt-dir is empty"'
mkdir "$tmp/ro"
chmod 555 "$tmp/ro"
if touch "$tmp/ro/probe" 2>/dev/null; then
    rm -f "$tmp/ro/probe"
    if mount -t tmpfs -o ro,size=64k tmpfs "$tmp/ro" 2>/dev/null; then
        run 1 $model --steps 2 --ckpt-dir "$tmp/ro"
        check "a read-only --ckpt-dir (a read-only mount, as root) fails before step 1" \
            eval 'before_step1 "Read-only file system"'
        umount "$tmp/ro"
    else
        skip "a read-only --ckpt-dir fails before step 1" "root, and no read-only mount possible here"
    fi
else
    run 1 $model --steps 2 --ckpt-dir "$tmp/ro"
    check "a read-only --ckpt-dir fails before step 1" eval 'before_step1 "Permission denied"'
fi
chmod 755 "$tmp/ro"
run 1 $model --steps 2 --trace "$tmp/missing-dir/trace.json"
check "an unwritable --trace fails before step 1" eval 'before_step1 "cannot write $tmp/missing-dir/trace.json"'

# --- values refused ---
run 1 --model ""
check "--model \"\" is refused (not tiny)" eval 'test $status -eq 2 && one_error "model is empty"'
run 1 --model layers=2,layers=3
check "--model with a key twice is refused" eval 'test $status -eq 2 && one_error "gives layers twice"'
run 1 --model layers=2,
check "--model with a trailing comma is refused" eval 'test $status -eq 2 && one_error "ends with a comma"'
TSR_CKPT_FAULT=garbage run 1 $model --steps 1 --ckpt-dir "$tmp/fault"
check "a malformed TSR_CKPT_FAULT is an error, not no fault" \
    eval 'test $status -eq 1 && one_error "TSR_CKPT_FAULT=garbage: expected RANK:DATASET"'
TSR_CKPT_FAULT=3:/params/wte run 1 $model --steps 1 --ckpt-dir "$tmp/fault"
check "TSR_CKPT_FAULT naming a rank the job lacks is an error" eval 'one_error "rank 3 is not a rank of this job"'

# --- overflow ---
run 1 $model --layout dp=1048576,pp=1048576
check "a layout of 2^40 ranks is refused (not \"needs 0 ranks\")" \
    eval 'test $status -eq 2 && one_error "more than the 2147483647 an MPI communicator holds"'
run 1 $model --layout dp=9,pp=67,tp=683x20857
check "a layout whose product wraps to 1 is refused on 1 rank" \
    eval 'test $status -eq 2 && one_error "more than the 2147483647"'
run 1 $model --batch 2147483647
check "--batch 2147483647 is refused before any size wraps" eval 'test $status -eq 2 && one_error "--batch 2147483647: "'
run 1 $model --steps 9223372036854775807
check "--steps whose token count overflows is refused" eval 'test $status -eq 2 && one_error "overflow the count of tokens"'

# --- one line for a failed synthetic-data write ---
TMPDIR=/proc/no-such-dir run 1 $model --steps 1
check "a failed synthetic-data write is reported once" eval 'test $status -eq 1 && one_error "--data synthetic"'

# --- a --resume path of more than 1024 bytes ---
deep=$tmp
for i in 1 2 3 4 5; do deep=$deep/$(printf 'd%0250d' "$i"); done
mkdir -p "$deep" && cp "$tmp/shared/step_2.h5" "$deep/step_2.h5"
run 1 $model --steps 3 --resume "$deep/step_2.h5"
check "--resume of a path of ${#deep} bytes resumes (no truncation)" \
    eval 'test $status -eq 0 && has "$out" "resumed from $deep/step_2.h5 at step 2" && has "$out" "step 3/3"'

# --- inputs that must be regular files ---
mkfifo "$tmp/fifo.bin"
run 1 $model --steps 1 --data "$tmp/fifo.bin"
check "--data FIFO is refused at once (no hang)" eval 'one_error "fifo.bin is a FIFO, not a regular file"'
run 1 $model --steps 1 --data "$tmp"
check "--data DIRECTORY says so (not \"No such device\")" eval 'one_error "is a directory, not a regular file"'

# --- nothing to train ---
run 1 $model --steps 2 --resume "$tmp/shared/step_2.h5"
check "resuming a step-2 checkpoint with --steps 2 says there is nothing to train, exit 0" \
    eval 'test $status -eq 0 && has "$out" "nothing to train: the checkpoint is at step 2, not before --steps 2"'
run 1 $model --steps 1 --resume "$tmp/shared/step_2.h5"
check "... and with --steps 1" eval 'test $status -eq 0 && has "$out" "nothing to train" && ! has "$out" "step 2/"'
echo "1..$n"
