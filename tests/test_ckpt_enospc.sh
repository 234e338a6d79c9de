#!/bin/sh
# test_ckpt_enospc.sh: a disk that fills during a checkpoint write (issue 16). A run writes
# the checkpoint of step 1 on a small tmpfs; a filler file then leaves less room than the
# checkpoint of step 2 needs, and the run resumed there on 1, 2 or 4 ranks must stop with
# one line naming ENOSPC ("No space left on device") and the directory, exit 1 (no hang, no
# signal), remove its temporary files, and leave the checkpoint of step 1 verifying and
# `latest` naming it. Two fillings: room for half a checkpoint (the writer's metadata
# reserve cannot be made; 3efd635 hung there on 2 and 4 ranks and crashed on 1), and, on 1
# and 2 ranks, room for the reserve and half a checkpoint (a dataset's values cannot be
# reserved; or, with fallocate made to fail as where a file system lacks it, the values
# cannot be written).
#
# The tmpfs is mounted directly when this runs as root, else in a user namespace (unshare
# -rm); where neither is allowed the test is skipped. Prints TAP.
bin=${TSR_BUILDDIR:-.}/apps
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tsr-ckpt-enospc.XXXXXX") || exit 99
mnt=$tmp/fs
model="--model layers=2,dim=32,heads=4,vocab=256,seq=16 --batch 4"

if [ "$1" != "--inside" ]; then
    trap 'umount "$mnt" 2>/dev/null; rm -rf "$tmp"' EXIT
    # The size of one checkpoint and its number of datasets size the tmpfs and the fillings.
    # shellcheck disable=SC2086
    ${MPIEXEC:-mpiexec} $MPIEXEC_FLAGS -n 1 "$bin/tsr-train" $model --steps 1 --ckpt-dir "$tmp/probe" >/dev/null 2>&1
    kib=$(du -k "$tmp/probe/step_1.h5" 2>/dev/null | cut -f1)
    datasets=$("$bin/tsr-ckpt" list "$tmp/probe" 2>/dev/null | wc -l)
    if [ -z "$kib" ] || [ "$datasets" -eq 0 ]; then
        echo "1..1"
        echo "not ok 1 - a one-step run writes the checkpoint whose size sizes the tmpfs"
        exit 0
    fi
    size=$((3 * kib + 2048 + 4 * datasets))
    export TSR_ENOSPC_TMP=$tmp TSR_ENOSPC_KIB=$kib TSR_ENOSPC_DATASETS=$datasets
    mkdir -p "$mnt"
    if [ "$(id -u)" -eq 0 ] && mount -t tmpfs -o "size=${size}k" tmpfs "$mnt" 2>/dev/null; then
        sh "$0" --inside
    elif unshare -rm true 2>/dev/null; then
        TSR_ENOSPC_SIZE=$size unshare -rm sh "$0" --inside
    else
        echo "1..0 # SKIP cannot mount a tmpfs here (not root, no user namespaces)"
    fi
    exit 0
fi

# --inside: the tmpfs is (or is to be, in the namespace) mounted on $mnt.
tmp=$TSR_ENOSPC_TMP
mnt=$tmp/fs
if [ -n "$TSR_ENOSPC_SIZE" ] && ! mount -t tmpfs -o "size=${TSR_ENOSPC_SIZE}k" tmpfs "$mnt"; then
    echo "1..0 # SKIP cannot mount a tmpfs in a user namespace here"
    exit 0
fi
. "$(dirname "$0")/tap-sh.sh"
# One checkpoint (KiB), and the reserve its writer keeps: 1 MiB and 4 KiB per dataset.
kib=$TSR_ENOSPC_KIB
reserve=$((1024 + 4 * (TSR_ENOSPC_DATASETS + 8)))
# Where fallocate is missing, the write itself fails: preload tests/nofalloc.c (ASan, where
# the build has it, must let a preloaded library come before its own).
nofalloc="env LD_PRELOAD=${TSR_BUILDDIR:-.}/tests/.libs/nofalloc.so ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0"
for run in 1:reserve 2:reserve 4:reserve 1:data 2:data 1:nofalloc 2:nofalloc; do
    ranks=${run%%:*}
    wrap=
    case ${run#*:} in
    data) room=$((reserve + kib / 2)) what="a dataset's bytes cannot be reserved" ;;
    nofalloc) room=$((reserve + kib / 2)) what="without fallocate, a write fails" wrap=$nofalloc ;;
    *) room=$((kib / 2)) what="the metadata reserve cannot be made" ;;
    esac
    rm -rf "$mnt/ck" "$mnt/filler"
    # shellcheck disable=SC2086
    ${MPIEXEC:-mpiexec} $MPIEXEC_FLAGS -n "$ranks" "$bin/tsr-train" $model --steps 1 --ckpt-dir "$mnt/ck" \
        >/dev/null 2>"$tmp/err"
    avail=$(df -k "$mnt" | awk 'NR == 2 { print $4 }')
    if [ ! -f "$mnt/ck/step_1.h5" ] || [ "$avail" -le "$room" ] || ! fallocate -l "$((avail - room))K" "$mnt/filler"; then
        check "$ranks ranks, $what: the checkpoint of step 1 and the filler are written" false
        continue
    fi
    # shellcheck disable=SC2086
    timeout 300 ${MPIEXEC:-mpiexec} $MPIEXEC_FLAGS -n "$ranks" $wrap "$bin/tsr-train" $model --steps 3 --ckpt-every 1 \
        --ckpt-dir "$mnt/ck" --resume latest >"$tmp/out" 2>"$tmp/err"
    status=$?
    err=$(cat "$tmp/err")
    check "$ranks ranks, $what: exit 1, not a hang (124) or a signal" test "$status" -eq 1
    check "$ranks ranks, $what: one line naming ENOSPC and the directory" \
        eval 'has "$err" "No space left on device" && has "$err" "$mnt/ck/" && test "$(wc -l <"$tmp/err")" -eq 1'
    check "$ranks ranks, $what: no temporary file is left behind" \
        eval '! ls "$mnt/ck" | grep -q "\.tmp$\|\.reserve$"'
    "$bin/tsr-ckpt" verify "$mnt/ck/step_1.h5" >/dev/null 2>>"$tmp/err"
    verified=$?
    check "$ranks ranks, $what: the checkpoint of step 1 still verifies, and latest names it" \
        eval 'test $verified -eq 0 && test "$(cat "$mnt/ck/latest")" = step_1.h5 && test ! -e "$mnt/ck/step_2.h5"'
done
echo "1..$n"
