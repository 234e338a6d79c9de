#!/bin/sh
# test_manpages.sh: every option that a tool's --help lists is in its man page, and every option
# the page describes (an option tag under .TP) is in --help, for tsr-train, tsr-generate,
# tsr-ckpt, tsr-tokenize, tsr-bench and tsr-plot; each subcommand of tsr-bench (from its --help) has a
# ".SS SUBCOMMAND" section of tsr-bench(1) holding every option of `tsr-bench SUBCOMMAND
# --help`. The options come from the programs, so options added later are checked as well.
# Every tool page has an ENVIRONMENT section naming TSR_LOG and the variables its program reads
# (getenv in apps/); the pages of the MPI tools (a usage line with mpiexec) name MPIEXEC,
# OMP_NUM_THREADS, OMP_WAIT_POLICY and OPENBLAS_NUM_THREADS; tessera(3) and tsr-train(1) name
# every TSR_* variable the library reads; tessera(3) has a section for every public header and
# points at no doc/*.md file that is not installed. Prints TAP.
bin=${TSR_BUILDDIR:-.}/apps
src=$(dirname "$0")/..
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tsr-manpages.XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT
. "$src/tests/tap-sh.sh"
: >"$tmp/err"

# help_options FILE: the --long options of a --help text, one a line: those on its usage lines
# and indented lines (the option table), not those that its prose names (Slurm's --signal).
help_options() {
    awk '/^[Uu]sage:/ || /^[ \t]/ || /^Options/' "$1" | grep -o -- '--[a-z][a-z0-9-]*' | sort -u
}
# plain PAGE: the roff source with \- as -, and without font changes and \&.
plain() { sed -e 's/\\-/-/g' -e 's/\\f[BIRP]//g' -e 's/\\f(..//g' -e 's/\\&//g' "$1"; }
# section TEXT NAME: the lines of .SS NAME up to the next .SS or .SH.
section() {
    awk -v name="$2" '/^\.S[HS] / { on = ($1 == ".SS" && $2 == name); next } on' "$1"
}
# tags TEXT: the --options of the tags of .TP paragraphs (the lines after .TP).
tags() { awk 'tp { print } { tp = ($0 == ".TP") }' "$1" | grep -o -- '--[a-z][a-z0-9-]*' | sort -u; }
# missing OPTIONS TEXT: the options (a file, one a line) that TEXT does not mention, on one line.
missing() {
    while read -r opt; do
        grep -q -E -- "(^|[^a-z0-9-])$opt([^a-z0-9-]|\$)" "$2" || printf '%s ' "$opt"
    done <"$1"
}
# not_in OPTIONS ALLOWED: the options (a file) that are not lines of ALLOWED (a file).
not_in() { comm -23 "$1" "$2" | tr '\n' ' '; }

for tool in tsr-train tsr-generate tsr-ckpt tsr-tokenize tsr-bench tsr-plot; do
    page=$src/doc/$tool.1
    "$bin/$tool" --help >"$tmp/help" 2>"$tmp/err"
    status=$?
    check "$tool --help exits 0 and lists options" eval 'test $status -eq 0 && test -n "$(help_options "$tmp/help")"'
    plain "$page" >"$tmp/page"
    help_options "$tmp/help" >"$tmp/opts"
    cp "$tmp/opts" "$tmp/all"   # what the page may describe: the options of every --help
    cp "$tmp/opts" "$tmp/top"   # tsr-bench's options for all subcommands, described once
    gaps=$(missing "$tmp/opts" "$tmp/page")
    echo "$tool(1) lacks: $gaps" >"$tmp/err"
    check "$tool(1) describes every option of $tool --help" test -z "$gaps"
    if [ "$tool" = tsr-bench ]; then
        subs=$(awk '/^Subcommands:/ { on = 1; next } on && /^  [a-z]/ { print $1 } on && /^$/ && seen { exit } /^  [a-z]/ { seen = 1 }' "$tmp/help")
        check "tsr-bench --help lists subcommands" test -n "$subs"
        for sub in $subs; do
            "$bin/$tool" "$sub" --help >"$tmp/help" 2>"$tmp/err"
            status=$?
            check "tsr-bench $sub --help exits 0" test "$status" -eq 0
            help_options "$tmp/help" | not_in - "$tmp/top" | tr ' ' '\n' | sed '/^$/d' >"$tmp/opts"
            sort -u "$tmp/all" "$tmp/opts" -o "$tmp/all"
            section "$tmp/page" "$sub" >"$tmp/sect"
            gaps=$(missing "$tmp/opts" "$tmp/sect")
            echo "tsr-bench(1), section \"$sub\" (.SS $sub), lacks: $gaps" >"$tmp/err"
            check "tsr-bench(1) has a section $sub describing every option of tsr-bench $sub --help" \
                eval 'test -s "$tmp/sect" && test -z "$gaps"'
        done
    fi
    extra=$(tags "$tmp/page" | not_in - "$tmp/all")
    echo "$tool(1) describes options that --help does not list: $extra" >"$tmp/err"
    check "every option $tool(1) describes is in --help" test -z "$extra"

    section_env=$(awk '/^\.SH / { on = ($2 == "ENVIRONMENT"); next } on' "$tmp/page")
    vars=TSR_LOG
    if grep -q '^[Uu]sage: *mpiexec' "$tmp/help" || [ "$tool" = tsr-bench ]; then
        vars="$vars MPIEXEC OMP_NUM_THREADS OMP_WAIT_POLICY OPENBLAS_NUM_THREADS"
    fi
    case $tool in
    tsr-bench) sources="$src/apps/tsr-bench.c $src/apps/bench_*.c" ;;
    *) sources=$src/apps/$tool.c ;;
    esac
    # shellcheck disable=SC2086
    vars="$vars $(grep -oh 'getenv("[A-Z_]*")' $sources | sed 's/getenv("\(.*\)")/\1/' | sort -u)"
    gaps=
    for v in $vars; do has "$section_env" "$v" || gaps="$gaps $v"; done
    echo "$tool(1)'s ENVIRONMENT lacks:$gaps" >"$tmp/err"
    check "$tool(1) has an ENVIRONMENT section naming $(echo $vars | tr ' ' ',')" \
        eval 'test -n "$section_env" && test -z "$gaps"'
done

# The library's TSR_* variables, in tessera(3) and in tsr-train(1), which uses all of it.
lib_vars=$(grep -roh 'getenv("TSR_[A-Z_]*")' "$src/lib" | sed 's/getenv("\(.*\)")/\1/' | sort -u)
for page in tessera.3 tsr-train.1; do
    env=$(plain "$src/doc/$page" | awk '/^\.SH / { on = ($2 == "ENVIRONMENT"); next } on')
    gaps=
    for v in $lib_vars; do has "$env" "$v" || gaps="$gaps $v"; done
    echo "$page's ENVIRONMENT lacks:$gaps" >"$tmp/err"
    check "$page's ENVIRONMENT names every TSR_* variable the library reads ($(echo $lib_vars | tr ' ' ','))" \
        eval 'test -n "$lib_vars" && test -z "$gaps"'
done

# tessera(3): a section for every public header, no pointer to an uninstalled doc/*.md.
plain "$src/doc/tessera.3" >"$tmp/page"
gaps=
for h in "$src"/lib/include/tessera/*.h "$src"/lib/include/tessera/*.h.in; do
    [ -f "$h" ] || continue
    name=$(basename "$h" .in)
    grep -q "^\.SS .*tessera/$name" "$tmp/page" || gaps="$gaps $name"
done
echo "tessera(3) has no .SS section naming:$gaps" >"$tmp/err"
check "tessera(3) has a section for every public header" test -z "$gaps"
awk '/^(dist_)?doc_DATA/ { on = 1 } on { print } on && !/\\$/ { on = 0 }' "$src/doc/local.mk" >"$tmp/docs"
gaps=
for md in $(grep -o '[A-Za-z0-9_-]*\.md' "$tmp/page" | sort -u); do
    grep -q "doc/$md" "$tmp/docs" || gaps="$gaps $md"
done
echo "tessera(3) points at documents that are not installed (doc_DATA in doc/local.mk):$gaps" >"$tmp/err"
check "every document tessera(3) points at is installed" test -z "$gaps"
check "tessera(3) says where the documents are installed" eval 'grep -q "share/doc/tessera" "$tmp/page"'
echo "1..$n"
