#!/bin/sh
# tap-mpi.sh: the LOG_COMPILER of `make check`. Runs one test program under mpiexec at each
# rank count it declares ("PROG --tap-ranks" prints them) and merges the TAP streams into one,
# each point's description prefixed with "[np=N]". A run that crashes, hangs past
# TSR_TEST_TIMEOUT seconds, exits non-zero or writes a sanitizer report (AddressSanitizer,
# LeakSanitizer, UBSan's "runtime error:") becomes a failed point of its own, never a skip.
#
# Environment: MPIEXEC (default mpiexec), MPIEXEC_FLAGS (e.g. --oversubscribe for Open MPI),
# TSR_TEST_MAX_RANKS (skip larger runs), TSR_TEST_TIMEOUT (seconds per run, default 300).
prog=$1
shift
if ! ranks=$("$prog" --tap-ranks); then
    echo "1..1"
    echo "not ok 1 - $prog --tap-ranks failed"
    exit 0
fi
mpiexec=${MPIEXEC:-mpiexec}
max=${TSR_TEST_MAX_RANKS:-64}
limit=${TSR_TEST_TIMEOUT:-300}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tap-mpi.XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT
k=0
for np in $ranks; do
    if [ "$np" -gt "$max" ]; then
        k=$((k + 1))
        echo "ok $k - [np=$np] # SKIP more than TSR_TEST_MAX_RANKS=$max ranks"
        continue
    fi
    # shellcheck disable=SC2086
    timeout "$limit" $mpiexec $MPIEXEC_FLAGS -n "$np" "$prog" "$@" >"$tmp/out" 2>"$tmp/err"
    status=$?
    cat "$tmp/err" >&2
    awk -v np="$np" -v k="$k" -v countfile="$tmp/k" '
        /^1\.\.0/ {
            reason = $0; sub(/^1\.\.0[ \t]*(#[ \t]*[Ss][Kk][Ii][Pp][ \t]*)?/, "", reason)
            print "ok " ++k " - [np=" np "] # SKIP " reason; next
        }
        /^1\.\./ { next }
        /^(not )?ok [0-9]+/ {
            verdict = ($1 == "not") ? "not ok" : "ok"; rest = $0
            sub(/^(not )?ok [0-9]+[ \t]*(- )?/, "", rest)
            fails += (verdict == "not ok")
            print verdict " " ++k " - [np=" np "] " rest; next
        }
        { print }
        END { print k, fails + 0 > countfile }' "$tmp/out"
    read -r k fails <"$tmp/k"
    if grep -q 'ERROR: AddressSanitizer\|ERROR: LeakSanitizer\|runtime error: ' "$tmp/err"; then
        k=$((k + 1))
        echo "not ok $k - [np=$np] $prog wrote a sanitizer report (see the log)"
    fi
    # A run whose failures are already in its TAP exits 1; any other non-zero exit is a point.
    if [ "$status" -ne 0 ] && ! { [ "$status" -eq 1 ] && [ "$fails" -gt 0 ]; }; then
        case $status in
        124) why="timed out after ${limit}s" ;;
        *) why="exited with status $status" ;;
        esac
        k=$((k + 1))
        echo "not ok $k - [np=$np] $prog $why"
    fi
done
echo "1..$k"
