#!/bin/bash
# A device whose bitmap is larger than the connection's send queue (16 MiB:
# 600 GiB at 4 KiB granularity has a 18.75 MiB bitmap): the bitmap exchange
# waits for room instead of failing the connection, the bitmap-based resync
# copies just the 1 MiB written while the peer was away, and both copies of
# that region are equal. Sparse files: nothing but metadata is ever stored.
# timeout: 150
set -uo pipefail
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
require_bin duetctl duetd
require_cmd qemu-io jq
[ -e /dev/ublk-control ] &&
	skip "this host has ublk: duetd would serve ublk, not NBD-only"
cd "$T"

MiB=$((1 << 20))
P1=$(free_port)
P2=$(free_port)
mkdir -p "$T/ra" "$T/rb"
A() { "$DUETCTL" --node alpha --run-dir "$T/ra" "$@"; }
B() { "$DUETCTL" --node beta --run-dir "$T/rb" "$@"; }
on_exit 'A down r0 >/dev/null 2>&1; B down r0 >/dev/null 2>&1'
status() { "$1" status r0 --json | jq -r "$2"; }
field_is() { [ "$(status "$1" "$2" 2>/dev/null)" = "$3" ]; }
synced() {
	[ "$(status A .state 2>/dev/null)" = \
		"Primary/Secondary UpToDate/UpToDate Connected Established" ]
}

truncate -s 600G "$T/alpha.img" "$T/beta.img" ||
	skip "no room for 600 GiB sparse files here"
write_resource r0 alpha_addr="127.0.0.1:$P1" beta_addr="127.0.0.1:$P2" \
	alpha_extra="nbd-listen = \"unix:$T/a.nbd\";" \
	beta_extra="nbd-listen = \"unix:$T/b.nbd\";" \
	extra='bitmap-granularity = "4K"; reconnect-min = 100; reconnect-max = 500;'
expect_rc 0 A create-md r0 --force
expect_rc 0 B create-md r0 --force

step "a fresh pair of identical (empty) disks skips the initial sync"
expect_rc 0 A up r0
expect_rc 0 B up r0
wait_until 20 field_is A .connection Connected ||
	fail "no connection: $(status A .replication_stats.last_error)"
expect_rc 0 A new-current-uuid r0 --clear-bitmap
expect_rc 0 A primary r0
wait_until 20 synced || fail "not in sync: $(status A .state)"

step "1 MiB written while beta is away; the resync exchanges 18.75 MiB bitmaps"
expect_rc 0 B down r0
wait_until 10 field_is A .connection Connecting || fail "alpha did not notice"
off=$((599 * 1024 * MiB))
run qemu-io -f raw "nbd+unix:///r0?socket=$T/a.nbd" -c "write -P 0x6b $off 1M"
assert_eq "$RC" 0 "the write through alpha"
assert_eq "$(status A .bitmap.dirty_bytes)" "$MiB" "alpha's dirty bytes"
rs0=$(status A .replication_stats.resync_bytes)
expect_rc 0 B up r0
wait_until 60 synced ||
	fail "no resync: $(status A .state) $(status A .replication_stats.last_error)"
assert_eq $(($(status A .replication_stats.resync_bytes) - rs0)) "$MiB" \
	"bytes resynced"
assert_eq "$(status A .replication_stats.losses)" 1 \
	"connections lost (only beta's down)"
cmp -n "$MiB" <(tail -c +$((off + 1)) "$T/alpha.img") \
	<(tail -c +$((off + 1)) "$T/beta.img") ||
	fail "the region written differs between the disks"
pass
