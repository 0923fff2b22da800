#!/bin/bash
# kernel-ref.sh — regenerate (or re-check) the kernel reference tables used by
# tests/kernel_diff.rs.
#
# For every capture under tests/pcaps/ (shared/ and scenarios/), runs
#   kernel-ct-ref --topspeed FILE
# (this machine's nf_conntrack, in throw-away network namespaces; see the
# header of /work/shared/tools/kernel-ct-ref) and stores
#   stdout -> tests/kernel-ref/<path relative to tests/pcaps, '/' -> '__'>.txt
#   stderr -> tests/kernel-ref/<same>.stderr.txt   (summary/counters, reference only)
# e.g. tests/pcaps/shared/icmp-echo.pcap -> tests/kernel-ref/shared__icmp-echo.pcap.txt
#
# Usage (as root, from anywhere):
#   scripts/kernel-ref.sh                 all captures, overwrite the references
#   scripts/kernel-ref.sh FILE.pcap ...   only these captures
#   scripts/kernel-ref.sh --check [FILE.pcap ...]
#                                         re-run and compare stdout with the stored
#                                         reference (determinism check); writes nothing
# Environment: KERNEL_CT_REF (default ../shared/tools/kernel-ct-ref beside the
#              repository), KERNEL_REF_DIR (default tests/kernel-ref; the SNAT
#              references: KERNEL_REF_DIR=tests/kernel-ref/snat),
#              KERNEL_CT_REF_ARGS (default: the reference directory's
#              kernel-ct-ref.args, which tests/kernel_diff.rs uses too when it
#              runs the kernel live).
# Exit status: 0 ok; 1 if any capture failed (or differed, with --check); 2 usage.
set -u -o pipefail
export LC_ALL=C

root=$(cd "$(dirname "$0")/.." && pwd)
pcapdir="$root/tests/pcaps"
refdir="${KERNEL_REF_DIR:-$root/tests/kernel-ref}"
tool=${KERNEL_CT_REF:-$root/../shared/tools/kernel-ct-ref}
args_file="$refdir/kernel-ct-ref.args"
if [ -z "${KERNEL_CT_REF_ARGS:-}" ] && [ ! -f "$args_file" ]; then
    echo "kernel-ref.sh: no $args_file (the kernel-ct-ref arguments of these references)" >&2
    exit 2
fi
# shellcheck disable=SC2206
extra=(${KERNEL_CT_REF_ARGS:-$(cat "$args_file")})

check=0
if [ "${1:-}" = "--check" ]; then
    check=1
    shift
fi
case "${1:-}" in
    -h|--help) sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "kernel-ref.sh: unknown option $1" >&2; exit 2 ;;
esac
if [ "$(id -u)" -ne 0 ]; then
    echo "kernel-ref.sh: must run as root (kernel-ct-ref needs network namespaces)" >&2
    exit 2
fi
if [ ! -x "$tool" ]; then
    echo "kernel-ref.sh: kernel-ct-ref not found or not executable: $tool" >&2
    exit 2
fi

files=()
if [ $# -gt 0 ]; then
    for f in "$@"; do
        a=$(realpath -e -- "$f") || { echo "kernel-ref.sh: no such file: $f" >&2; exit 2; }
        case "$a" in
            "$pcapdir"/*) files+=("$a") ;;
            *) echo "kernel-ref.sh: $f is not under $pcapdir" >&2; exit 2 ;;
        esac
    done
else
    while IFS= read -r -d '' f; do files+=("$f"); done \
        < <(find "$pcapdir" -type f \( -name '*.pcap' -o -name '*.pcapng' \) -print0 | sort -z)
fi
if [ ${#files[@]} -eq 0 ]; then
    echo "kernel-ref.sh: no captures found under $pcapdir" >&2
    exit 2
fi

mkdir -p "$refdir"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
n=0
for f in "${files[@]}"; do
    rel=${f#"$pcapdir"/}
    name=${rel//\//__}
    out="$refdir/$name.txt"
    err="$refdir/$name.stderr.txt"
    n=$((n + 1))
    if ! "$tool" "${extra[@]}" "$f" >"$tmp/out" 2>"$tmp/err"; then
        echo "FAIL  $rel: kernel-ct-ref exited non-zero:" >&2
        sed 's/^/      /' "$tmp/err" >&2
        fail=1
        continue
    fi
    lines=$(wc -l <"$tmp/out")
    if [ $check -eq 1 ]; then
        if [ ! -f "$out" ]; then
            echo "MISS  $rel: no stored reference $out" >&2
            fail=1
        elif cmp -s "$tmp/out" "$out"; then
            echo "same  $rel ($lines lines)"
        else
            echo "DIFF  $rel: kernel output differs from the stored reference:" >&2
            diff -u --label "stored $name.txt" --label "this run" "$out" "$tmp/out" >&2
            fail=1
        fi
    else
        mv "$tmp/out" "$out"
        mv "$tmp/err" "$err"
        echo "ok    $rel ($lines lines)"
    fi
done
if [ $check -eq 0 ] && [ $# -eq 0 ]; then
    # references whose capture is gone
    for r in "$refdir"/*.txt; do
        [ -e "$r" ] || continue
        b=$(basename "$r")
        case "$b" in *.stderr.txt|allowed-differences.txt) continue ;; esac
        relp=${b%.txt}
        p="$pcapdir/${relp//__//}"
        [ -f "$p" ] || echo "warning: stale reference (no capture ${p#"$pcapdir"/}): $r" >&2
    done
fi
echo "kernel-ref.sh: $n capture(s), $([ $fail -eq 0 ] && echo ok || echo FAILURES)"
exit $fail
