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
# shellcheck source=tests/integration/pair.sh
. "$(dirname "$0")/pair.sh"

truncate -s 600G "$T/alpha.img" "$T/beta.img" ||
	skip "no room for 600 GiB sparse files here"
pair_resource 'bitmap-granularity = "4K"; reconnect-min = 100; reconnect-max = 500;'
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
run qemu-io -f raw "$NA" -c "write -P 0x6b $off 1M"
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
