#!/bin/bash
# The README's run command works: tools/demo.sh (what `make demo` runs after
# deps and build) goes through initial sync, failover, the old primary's
# return and resync, and ends with both disks byte-identical. On this host
# (no ublk) its device part boots the test kernel, as a user's run does.
# timeout: 480
set -uo pipefail
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
require_bin duetctl duetd
require_cmd jq ip
[ -e /dev/ublk-control ] || [ -x "$TOP/kernel/vm/duet-vm" ] ||
	skip "neither ublk nor the test kernel harness"

run env DEMO_DIR="$T/demo" DUET_BUILD="$BUILD" "$TOP/tools/demo.sh"
printf '%s\n' "$OUT" >"$T/demo.out"
[ "$RC" -eq 0 ] || { tail -40 "$T/demo.out"; fail "the demo failed (exit $RC)"; }
assert_contains "$OUT" "every file intact on beta" "failover check"
assert_contains "$OUT" "resync to alpha done" "the old primary's resync"
a=$(sed -n "s/.*alpha's data area: *//p" <<<"$OUT")
b=$(sed -n "s/.*beta's data area: *//p" <<<"$OUT")
[ -n "$a" ] && assert_eq "$a" "$b" "the two data areas"
# only what changed: less than the whole device went over as data
sent=$(sed -n 's/.*resync to alpha done: \([0-9]*\) bytes in [0-9]* s, \([0-9]*\) of them.*/\1 \2/p' <<<"$OUT")
[ -n "$sent" ] || fail "no resync figures in the demo's output"
read -r total same <<<"$sent"
[ $((total - same)) -lt $((64 << 20)) ] ||
	fail "the returning node got $((total - same)) bytes of data"
[ -d "$T/demo" ] && fail "the demo left $T/demo behind"
pass
