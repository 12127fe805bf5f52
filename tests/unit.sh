#!/usr/bin/env bash
# tests/unit.sh TEST_BIN [CRITERION FLAGS...]: runs the unit tests and ends
# with what was skipped and why (the tests that need the full data sets
# skip without DAE_DATA_DIR), so a green run never hides a skipped test.
# Exit status: the tests'.
set -uo pipefail
bin=$1
shift
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# --verbose names each test as it runs and each skip with its reason; the
# runs and passes are left out of what is shown.
"$bin" --jobs 2 --verbose "$@" 2>&1 | tee "$log" | grep -vE '^\[(RUN |PASS)\]'
status=${PIPESTATUS[0]}
skipped=$(grep -E '^\[SKIP\]' "$log" | grep -v ': Test is disabled$' | sed 's/^\[SKIP\] //')
if [ -n "$skipped" ]; then
    echo "unit: skipped $(echo "$skipped" | wc -l) test(s):"
    echo "$skipped" | sed 's/^/  /'
else
    echo "unit: nothing skipped"
fi
exit "$status"
