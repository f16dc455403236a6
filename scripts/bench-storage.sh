#!/usr/bin/env bash
# Storage engine benchmark: zodbctl's FileStorage against Python ZODB 6.4 on the same files.
#
#   scripts/bench-storage.sh [SIZE_MB]        (default 500; ROUNDS=3)
#
# Generates target/bench-storage/Big.fs (SIZE_MB, with Python's Data.fs.index) and Small.fs
# (5 MB) once with tools/make_datafs.py, then runs benches/storage.rs (release build) and
# scripts/bench_storage.py with the test virtualenv's Python on them, and prints a Markdown
# table of both sides and the ratios. PYTHON overrides the interpreter (it needs ZODB 6.4;
# default: target/pyenv/bin/python, the integration tests' virtualenv, created if missing).
# BIG=path uses an existing generated file instead of generating one (it is hard-linked).
set -euo pipefail
cd "$(dirname "$0")/.."

size_mb=${1:-500}
dir=target/bench-storage
mkdir -p "$dir"
py=${PYTHON:-}
if [ -z "$py" ]; then
    py=target/pyenv/bin/python
    if [ ! -x "$py" ]; then
        # The same pinned virtualenv the integration tests build (tests/support/mod.rs).
        echo "creating the test virtualenv in target/pyenv (once)" >&2
        python3 -m venv target/pyenv
        "$py" -m pip install -q --disable-pip-version-check -r tests/requirements.txt
        cp tests/requirements.txt target/pyenv/requirements.txt
    fi
fi

if [ ! -f "$dir/Big.fs" ]; then
    if [ -n "${BIG:-}" ]; then
        ln "$BIG" "$dir/Big.fs"
        [ -f "$BIG.index" ] && cp "$BIG.index" "$dir/Big.fs.index"
    else
        echo "generating $dir/Big.fs ($size_mb MB; takes a while)" >&2
        "$py" tools/make_datafs.py "$dir/Big.fs" --size-mb "$size_mb" >&2
    fi
fi
if [ ! -f "$dir/Big.fs.index" ]; then
    # Python writes the index when it opens read-write without one.
    "$py" -c 'import sys, ZODB.FileStorage as F; F.FileStorage(sys.argv[1]).close()' "$dir/Big.fs"
fi
[ -f "$dir/Big-noindex.fs" ] || ln "$dir/Big.fs" "$dir/Big-noindex.fs"
rm -f "$dir/Big-noindex.fs.index"
if [ ! -f "$dir/Small.fs" ]; then
    "$py" tools/make_datafs.py "$dir/Small.fs" --size-mb 5 >&2
fi

# Alternate the two sides a few times (ROUNDS, default 3) and report medians: the commit
# figures are fsync-bound and the machine is shared.
cargo bench -q --bench storage --no-run
: > "$dir/rust.jsonl"
: > "$dir/python.jsonl"
for round in $(seq "${ROUNDS:-3}"); do
    cargo bench -q --bench storage -- "$PWD/$dir" | tee -a "$dir/rust.jsonl" | sed "s/^/zodbctl round $round: /" >&2
    "$py" scripts/bench_storage.py measure "$dir" | tee -a "$dir/python.jsonl" | sed "s/^/python  round $round: /" >&2
done
"$py" scripts/bench_storage.py report "$dir/rust.jsonl" "$dir/python.jsonl"
