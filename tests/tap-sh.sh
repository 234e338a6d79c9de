# tap-sh.sh: what the shell tests share, sourced after they set $tmp (their scratch
# directory): TAP points, and checks of the outcome of the last command run, which left
# $status, $err and its standard error in $tmp/err.
n=0

# check DESCRIPTION CONDITION...: one TAP point; a failed one shows $tmp/err as diagnostics.
check() {
    desc=$1
    shift
    n=$((n + 1))
    if "$@"; then echo "ok $n - $desc"; else echo "not ok $n - $desc"; sed 's/^/# /' "$tmp/err"; fi
}

# skip DESCRIPTION REASON
skip() { n=$((n + 1)); echo "ok $n - $1 # SKIP $2"; }

# has TEXT PART: whether TEXT contains PART
has() { case $1 in *"$2"*) return 0 ;; esac; return 1; }

# one_error PART: the command failed (exit 1 or 2: not killed by a signal, not timed out)
# with one line on standard error containing PART.
one_error() { test "$status" -ge 1 -a "$status" -le 2 && has "$err" "$1" && test "$(wc -l <"$tmp/err")" -eq 1; }

# run_tool TOOL RANKS ARGS...: $bin/TOOL on RANKS ranks under ${MPIEXEC:-mpiexec}, killed after
# 120 s; sets $out, $err and $status (124: it hung) and leaves its output in $tmp/out and $tmp/err.
run_tool() {
    tool=$1
    ranks=$2
    shift 2
    # shellcheck disable=SC2086
    timeout 120 ${MPIEXEC:-mpiexec} $MPIEXEC_FLAGS -n "$ranks" "$bin/$tool" "$@" >"$tmp/out" 2>"$tmp/err"
    status=$?
    out=$(cat "$tmp/out")
    err=$(cat "$tmp/err")
}
