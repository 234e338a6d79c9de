#!/bin/sh
# test_train_progress.sh: what tsr-train tells while it runs (issue 17):
#   - the start-up summary (rank 0): the libraries with versions (MPI_Get_library_version's
#     first line, H5get_libversion), the ranks, layout and device, the threads per rank, the
#     model's build time and which blocks sit on which pipeline stage;
#   - checkpoint writes and reads: size, seconds and GB/s;
#   - peak memory in the per-step line: the maximum over the ranks, and which rank (with pp=2
#     and a large vocabulary, the head's stage, rank 1); in the JSON peak_max_bytes, peak_rank;
#   - the JSON's time (unix seconds) and tokens_seen;
#   - the checkpoint of a small model is not mostly padding (alignment only for datasets of
#     1 MiB or more): the tiny GPT's 1.45 MB of parameters and moments in under 2 MB.
# Prints TAP.
bin=${TSR_BUILDDIR:-.}/apps
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tsr-train-progress.XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/tap-sh.sh"

run() { run_tool tsr-train "$@"; } # run RANKS ARGS...: tsr-train on RANKS ranks (tap-sh.sh)
line() { echo "$out" | grep "$1"; } # line PATTERN: the output's lines matching PATTERN

t0=$(date +%s)
run 2 --layout pp=2 --model layers=2,dim=32,heads=4,vocab=4096,seq=16 --batch 4 --steps 3 --log-json "$tmp/a.json" \
    --ckpt-dir "$tmp/a" --ckpt-every 2
t1=$(date +%s)
check "the summary names the MPI library (MPI_Get_library_version) and HDF5 with versions" \
    eval 'test $status -eq 0 && line "^tsr-train: libraries: Tessera " | grep -Eq "; MPI: .*[0-9]+\.[0-9]+.*; HDF5 [0-9]+\.[0-9]+\.[0-9]+$"'
check "... the ranks, the layout and the device" \
    eval 'test -n "$(line "^tsr-train: 2 ranks, layout dp=1,pp=2,tp=1x1, device cpu$")"'
check "... the CPU threads per rank" eval 'test -n "$(line "^tsr-train: 1 CPU thread per rank (")"'
check "... the model's build time" eval 'line "^tsr-train: model built in " | grep -Eq "in [0-9]+\.[0-9]{2} s"'
check "... which blocks sit on which pipeline stage" \
    eval 'test -n "$(line "^tsr-train: blocks per pipeline stage: stage 0: 0-0 + embeddings; stage 1: 1-1 + head$")"'
check "a checkpoint write says its size, seconds and GB/s" \
    eval 'line "^tsr-train: checkpoint $tmp/a/step_2.h5 " | grep -Eq "\(wrote [0-9.]+ MB in [0-9.]+ s, [0-9.]+ GB/s\)$"'
check "peak memory: the head's stage (rank 1) has the most, and the step line says so" \
    eval 'test "$(line "^step " | grep -c "peak mem [0-9.]* MiB (rank 1)$")" -eq 3'
last=$(tail -n 1 "$tmp/a.json")
total=$(echo "$last" | sed 's/.*"total":\([0-9]*\)}.*/\1/')
max=$(echo "$last" | sed 's/.*"peak_max_bytes":\([0-9]*\),.*/\1/')
check "... the JSON: peak_rank 1, peak_max_bytes ($max) above rank 0's total ($total)" \
    eval 'has "$last" "\"peak_rank\":1}" && test "$max" -gt "$total"'
check "the JSON: tokens_seen 3 x 4 x 16 at step 3, a unix time within the run" \
    eval 'has "$last" "\"tokens_seen\":192," &&
          echo "$last" | sed "s/.*\"time\":\([0-9.]*\),.*/\1/" | awk -v a="$t0" -v b="$t1" "{ exit !(\$1 >= a && \$1 <= b + 1) }"'
run 1 --model layers=2,dim=32,heads=4,vocab=4096,seq=16 --batch 4 --steps 4 --ckpt-dir "$tmp/a" --resume
check "a checkpoint read (--resume) says its size, seconds and GB/s" \
    eval 'test $status -eq 0 && line "^tsr-train: resumed from $tmp/a/step_3.h5 at step 3 " | grep -Eq "\(read [0-9.]+ MB in [0-9.]+ s, [0-9.]+ GB/s\)$"'

run 1 --model tiny --steps 1 --ckpt-dir "$tmp/tiny"
size=$(wc -c <"$tmp/tiny/step_1.h5")
check "the tiny model's checkpoint ($size bytes) is under 2 MB (15.8 MB with every object of 64 KiB aligned)" \
    eval 'test $status -eq 0 && test "$size" -lt 2000000 && "$bin/tsr-ckpt" verify "$tmp/tiny/step_1.h5" >/dev/null'
echo "1..$n"
