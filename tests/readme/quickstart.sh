#!/usr/bin/env bash
# quickstart.sh - runs the README's quick start as a newcomer would, so that
# it keeps working when followed literally.
#
#   tests/readme/quickstart.sh PATH/TO/dae-server PATH/TO/dae
#
# Every ```sh block of README.md's "## Quick start" section (up to the next
# "## " heading) is run, in order, by `bash -euo pipefail` against one
# fresh server, started as `make run` starts it but with everything it
# writes under a new temporary RUN_DIR (models/ seeded with copies of the
# committed models, state/, data/ seeded with tests/fixtures/mnist-mini) and
# on a free port, which replaces localhost:8080 in the blocks. The blocks
# run in an empty working directory where the checkout's files (samples/,
# models/, ...) are symlinked and build/ is the directory of the given dae,
# with no DAE_* variable set. A block that exits non-zero fails the test,
# naming the README line of the command that failed. So does a file the
# section names (samples/..., or a link or image target) that does not
# exist. Blocks marked ```console or ```text (make run, outputs) are not
# run. SHOW_OUTPUT=1 prints each block's output too, to refresh the README.
# Last, the README's copy of `make help` must be what make help prints.

set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
if [ $# -ne 2 ] || [ ! -x "$1" ] || [ ! -x "$2" ]; then
    echo "usage: $0 PATH/TO/dae-server PATH/TO/dae" >&2
    exit 2
fi
SERVER=$(realpath "$1")
DAE=$(realpath "$2")
source "$ROOT/tests/lib.sh" readme
README=$ROOT/README.md
SECTION="## Quick start"

# A newcomer's shell has none of the variables that change what the server
# or the CLI do (DAE_MODEL, DAE_ADMIN_TOKEN, DAE_DATA_DIR, ...).
for v in $(compgen -e); do
    case $v in DAE_*) unset "$v" ;; esac
done

# ------------------------------------------------------------ the blocks

# The quick start's ```sh blocks, each as a file $TMP/blocks/N.sh, and its
# first line's number in README.md as the file's first line (a comment).
mkdir -p "$TMP/blocks"
awk -v section="$SECTION" -v dir="$TMP/blocks" '
    $0 == section { inside = 1; next }
    inside && /^## / { exit }
    !inside { next }
    fence == "" && /^```/ { fence = $0; if (fence == "```sh") { n++; file = dir "/" n ".sh"; print "# README.md:" NR + 1 > file }; next }
    fence != "" && /^```[ \t]*$/ { if (fence == "```sh") close(file); fence = ""; next }
    fence == "```sh" { print > file }
' "$README"
nblocks=$(find "$TMP/blocks" -name '*.sh' | wc -l)
[ "$nblocks" -gt 0 ] || fatal "no \`\`\`sh block in the \"$SECTION\" section of README.md"

# Every file the section names must exist: samples/NAME anywhere in it,
# and the relative targets of its links and images.
missing=0
while read -r path; do
    if [ ! -e "$ROOT/$path" ]; then
        echo "FAIL: README.md \"$SECTION\" names $path, which does not exist" >&2
        missing=$((missing + 1))
    fi
done < <(awk -v section="$SECTION" '$0 == section { inside = 1; next } inside && /^## / { exit } inside' "$README" |
    grep -oE 'samples/[A-Za-z0-9._-]+|\]\([^):#]+\)' | sed -E 's/^\]\((.*)\)$/\1/' | sort -u)
[ "$missing" -eq 0 ]
ok "every file the quick start names exists"

# ------------------------------------------------------------ the server

# The working directory: the checkout's top-level files by symlink, and
# build/ the directory of the dae given (so build/dae is it).
WORK=$TMP/work
mkdir -p "$WORK"
for f in "$ROOT"/*; do
    case ${f##*/} in build | run) continue ;; esac
    ln -s "$f" "$WORK/${f##*/}"
done
ln -s "$(dirname "$DAE")" "$WORK/build"

# The server as `make run` starts it (keep the two in step): RUN_DIR seeded
# as on a first run, the settings as DAE_* variables, no --model (mnist by
# name), from the checkout; only the port differs: a free one.
RUN_DIR=$TMP/run
mkdir -p "$RUN_DIR/models" "$RUN_DIR/data" "$RUN_DIR/state"
cp "$ROOT"/models/*.safetensors "$RUN_DIR/models/"
cp -r "$ROOT/tests/fixtures/mnist-mini" "$RUN_DIR/data/"
(cd "$WORK" && DAE_BIND=127.0.0.1 DAE_PORT=0 DAE_MODELS_DIR="$RUN_DIR/models" DAE_DATA_DIR="$RUN_DIR/data" \
    DAE_STATE_DIR="$RUN_DIR/state" exec "$SERVER") >"$TMP/access.log" 2>"$TMP/server.log" &
SERVER_PID=$!
cleanup() {
    if [ -n "${SERVER_PID:-}" ] && kill -0 "$SERVER_PID" 2>/dev/null; then kill -KILL "$SERVER_PID"; fi
}
wait_until 30 grep -q 'listening on http://' "$TMP/server.log" ||
    { cat "$TMP/server.log" >&2; fatal "dae-server did not start"; }
PORT=$(sed -n 's|.*listening on http://[^ ]*:\([0-9]*\).*|\1|p' "$TMP/server.log" | head -1)

# ------------------------------------------------------------ running them

# run_block N: runs block N in $WORK with a 120 s limit; on failure prints
# the README line and text of the failing command and the block's output.
run_block() {
    local file=$TMP/blocks/$1.sh first rc
    first=$(head -1 "$file" | sed 's/.*://')
    sed -i "s/localhost:8080/localhost:$PORT/g; s/127\.0\.0\.1:8080/127.0.0.1:$PORT/g" "$file"
    # The ERR trap names the command that stopped the block: its line in
    # the block file, less the comment line, is its line in README.md.
    (cd "$WORK" && timeout 120 bash -euo pipefail -c '
        trap '\''echo "README.md:$((LINENO + $2 - 2)): exit $?: $BASH_COMMAND" >"$3"'\'' ERR
        source "$1"' _ "$file" "$first" "$TMP/failed") >"$TMP/out.log" 2>&1
    rc=$?
    if [ -n "${SHOW_OUTPUT:-}" ]; then sed 's/^/    | /' "$TMP/out.log"; fi
    if [ "$rc" -eq 0 ]; then
        echo "ok   block $1, README.md:$first: $(sed -n "${first}p" "$README" | cut -c1-72)"
        pass "block $1"
    else
        if [ "$rc" -eq 124 ]; then echo "README.md:$first: timed out after 120 s" >"$TMP/failed"; fi
        echo "FAIL block $1 (README.md:$first): $(cat "$TMP/failed" 2>/dev/null || echo "exit $rc")" >&2
        tail -40 "$TMP/out.log" | sed 's/^/    /' >&2
        fail "block $1"
    fi
    rm -f "$TMP/failed"
}

for n in $(seq 1 "$nblocks"); do run_block "$n"; done

stop_cleanly "$SERVER_PID" "$TMP/server.log"
SERVER_PID=

# The README's copy of `make help` (the block after "`make help` lists
# every target:") is what make help prints.
awk '$0 == "`make help` lists every target:" { found = 1; next }
     found && /^```/ { if (inside) exit; inside = 1; next }
     inside' "$README" >"$TMP/help.readme"
# (Not the calling make's job server, whose absence a sub-make warns of.)
env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -s --no-print-directory -C "$ROOT" help >"$TMP/help.make"
check "README's make help block is make help's output" diff -u "$TMP/help.readme" "$TMP/help.make"
finish
