# shellcheck shell=sh disable=SC2154 # $tmp and $bin are the sourcing script's
# tap-sh.sh: what the shell tests share, sourced after they set $tmp (their scratch
# directory) and $bin (the directory of the programs): TAP points; the running of a program
# (run_cmd, run_tool), which leaves $status, $out and $err and its output in $tmp/out and
# $tmp/err; checks of that outcome; values read from JSON lines and --log-json files.
n=0

# check DESCRIPTION CONDITION...: one TAP point; a failed one shows the exit status of the
# last command run and its output ($tmp/out, $tmp/err) as diagnostics.
check() {
    desc=$1
    shift
    n=$((n + 1))
    if "$@"; then
        echo "ok $n - $desc"
    else
        echo "not ok $n - $desc"
        echo "# the last command run exited ${status-(none run)}"
        if test -f "$tmp/out"; then sed 's/^/# stdout: /' "$tmp/out"; fi
        if test -f "$tmp/err"; then sed 's/^/# stderr: /' "$tmp/err"; fi
    fi
}

# skip DESCRIPTION REASON
skip() { n=$((n + 1)); echo "ok $n - $1 # SKIP $2"; }

# has TEXT PART: whether TEXT contains PART
has() { case $1 in *"$2"*) return 0 ;; esac; return 1; }

# one_error PART: the command failed (exit 1 or 2: not killed by a signal, not timed out)
# with one line on standard error containing PART.
one_error() { test "$status" -ge 1 -a "$status" -le 2 && has "$err" "$1" && test "$(wc -l <"$tmp/err")" -eq 1; }

# one_error_only PART: one_error PART, and nothing on standard output.
one_error_only() { one_error "$1" && test ! -s "$tmp/out"; }

# before_step1 PART: one_error PART, and tsr-train trained no step (no "step 1/" on stdout).
before_step1() { one_error "$1" && ! has "$out" "step 1/"; }

# run_cmd COMMAND...: COMMAND, stopped after $TIMEOUT s (120 where unset) and killed 10 s
# later (tsr-train takes SIGTERM as a request to stop after its step, which a hung run never
# finishes); sets $out, $err and $status (124 or 137: it hung) and leaves its output in
# $tmp/out and $tmp/err.
run_cmd() {
    timeout -k 10 "${TIMEOUT:-120}" "$@" >"$tmp/out" 2>"$tmp/err"
    status=$?
    out=$(cat "$tmp/out")
    err=$(cat "$tmp/err")
}

# run_tool TOOL RANKS ARGS...: run_cmd of TOOL on RANKS ranks under ${MPIEXEC:-mpiexec}; TOOL
# is a program of $bin, or a path where it holds a slash.
run_tool() {
    tool=$1
    ranks=$2
    shift 2
    case $tool in */*) ;; *) tool=$bin/$tool ;; esac
    # shellcheck disable=SC2086
    run_cmd ${MPIEXEC:-mpiexec} $MPIEXEC_FLAGS -n "$ranks" "$tool" "$@"
}

# field NAME [LINE]: the value of "NAME": in the JSON line LINE ($out where not given), a
# string without its quotes.
field() {
    printf '%s\n' "${2-$out}" | sed -n -e "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p; t" -e "s/.*\"$1\":\([^,}]*\).*/\1/p"
}

# close_to A B [TOL]: A and B are given and |A - B| <= TOL |A| (TOL 1e-4 where not given).
close_to() {
    awk -v a="$1" -v b="$2" -v tol="${3:-1e-4}" \
        'BEGIN { d = a - b; if (d < 0) d = -d; m = a < 0 ? -a : a; exit !(a != "" && b != "" && d <= tol * m) }'
}

# losses FILE [FIRST [LAST]]: the loss column of a --log-json file, one a line, of its lines
# (steps) FIRST to LAST (all where not given).
losses() { sed -n "${2:-1},${3:-\$}p" "$1" | sed 's/.*"loss":\([^,]*\),.*/\1/'; }

# within FILE1 FILE2 TOL: FILE1 and FILE2 have as many lines, at least one, and the first
# number on each line of FILE2 is within TOL relative of the one on that line of FILE1 (the
# reference, never 0); prints the worst relative difference as a TAP comment.
within() {
    awk -v tol="$3" 'NR == FNR { want[++n] = $1; next }
        { if (++m > n) next; e = ($1 - want[m]) / want[m]; if (e < 0) e = -e; if (e > worst) worst = e }
        END { if (m != n) printf "# %d lines against %d in the reference\n", m, n
              else printf "# worst relative difference %.3g (tolerance %g)\n", worst, tol
              exit !(n > 0 && m == n && worst <= tol) }' "$1" "$2"
}
