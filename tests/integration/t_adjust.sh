#!/bin/bash
# duetctl adjust on a running pair:
#  - resync-rate lowered in the file and adjusted: the next resync runs
#    under the new limit (status resync.limit_bps); raised again, it ends;
#  - a key that is not adjustable (protocol) changed in the file: refused
#    (exit 8) naming it, nothing taken, the pair keeps replicating;
#  - a broken file: exit 3 before the daemon is asked; nothing changed: "nothing to adjust".
# timeout: 120
set -uo pipefail
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
# shellcheck source=tests/integration/pair.sh
. "$(dirname "$0")/pair.sh"

conf() {	# conf RATE PROTOCOL
	pair_resource "resync-rate = \"$1\"; resync-min-rate = \"512K\"; reconnect-min = 100; reconnect-max = 500;" \
		protocol="$2"
}
mk_sparse "$T/alpha.img" 64M
mk_sparse "$T/beta.img" 64M
conf 400M C
expect_rc 0 A create-md r0 --force
expect_rc 0 B create-md r0 --force
expect_rc 0 A up r0
expect_rc 0 B up r0
expect_rc 0 A wait-connect r0 --timeout 20
expect_rc 0 A new-current-uuid r0 --clear-bitmap
expect_rc 0 A primary r0
wait_until 20 synced || fail "not in sync: $(status A .state)"

step "nothing changed"
expect_rc 0 A adjust r0
assert_contains "$OUT" "nothing to adjust" "adjust without a change"

step "resync-rate lowered: the next resync runs under it"
conf 1M C
expect_rc 0 A adjust r0
assert_contains "$OUT" "adjusted: resync-rate" "adjust's report"
grep -q 'adjusted: resync-rate' "$T/ra/r0.log" || fail "not logged"
expect_rc 0 B invalidate r0
wait_until 10 field_ge A .resync.limit_bps 1 || fail "no resync: $(status A .state)"
sleep 1
lim=$(status A .resync.limit_bps)
[ "$lim" -le $((1 << 20)) ] || fail "resync limit $lim B/s after adjusting to 1M"
left=$(status A .resync.left_bytes)
[ "$left" -gt $((32 << 20)) ] || fail "the resync went too fast: $left bytes left"
conf 400M C
expect_rc 0 A adjust r0
wait_until 30 synced || fail "the resync did not speed up: $(status A .resync.left_bytes) left"
same_data "after the resync"

step "a key that is not adjustable: refused, nothing taken"
conf 1M A
expect_rc 8 A adjust r0
assert_contains "$ERR" "not adjustable on a running resource: protocol" "the refusal"
assert_eq "$(status A .protocol)" C "protocol after the refusal"
run qemu-io -f raw "$NA" -c "write -P 0x66 0 1M"
assert_eq "$RC" 0 "writes after the refusal"
assert_eq "$(status A .bitmap.dirty_bytes)" 0 "still replicating"

step "a broken file: refused before the daemon is asked"
echo 'resync-rate = ;' >>"$CONF_DIR/r0.conf"
expect_rc 3 A adjust r0
pass
