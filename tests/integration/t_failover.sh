#!/bin/bash
# Failover scenarios, two nodes on this host over their NBD exports:
#  - planned switch-over: alpha `secondary`, beta `primary`; no resync, no
#    write lost, beta's writes replicate back to alpha;
#  - unplanned failover: kill -9 of the Primary (beta) in the middle of a
#    stream of writes; every write acknowledged before the kill is on
#    alpha's disk (protocol C); alpha is promoted without --force and keeps
#    writing; beta, restarted, knows it crashed as Primary, comes back as
#    Secondary and resyncs only what changed (alpha's writes plus the
#    extents beta's activity log held), not the device; the disks end
#    byte-identical;
#  - crashed Primary alone: kill -9 of alpha mid-write with beta down;
#    restarted alone it reports the crash and marks its hot extents out of
#    sync; when beta returns those regions (not the device) are resynced.
# timeout: 180
set -uo pipefail
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
# shellcheck source=tests/integration/pair.sh
. "$(dirname "$0")/pair.sh"

KiB=1024
mk_sparse "$T/alpha.img" 128M
mk_sparse "$T/beta.img" 128M
pair_resource 'resync-rate = "400M"; reconnect-min = 100; reconnect-max = 500; al-extents = 16;'
expect_rc 0 A create-md r0 --force
expect_rc 0 B create-md r0 --force
expect_rc 0 A up r0
expect_rc 0 B up r0
expect_rc 0 A wait-connect r0 --timeout 20
expect_rc 0 A new-current-uuid r0 --clear-bitmap
expect_rc 0 A primary r0
wait_until 20 synced || fail "not in sync: $(status A .state)"
data=$(status A .data_bytes)
run qemu-io -f raw "$NA" -c "write -P 0x11 0 8M"
assert_eq "$RC" 0 "writes through alpha"

no_listener() { ! ss -Hxl | grep -qF "$1 "; }
# crash NODE: kill -9 its daemon and wait until it is dead
crash() {
	local pid
	pid=$(status "$1" .pid)
	kill -9 "$pid"
	wait_until 10 proc_gone "$pid" || fail "$1's duetd ($pid) survived kill -9"
	# the kernel may close a dead process's last files a moment later
	# (delayed fput): wait until its NBD socket no longer listens
	wait_until 10 no_listener "$T/$( [ "$1" = A ] && echo a || echo b ).nbd" ||
		fail "$1's NBD socket still listens after its death"
}

# beta_synced: beta Primary, both UpToDate, Established
beta_synced() {
	[ "$(status B .state 2>/dev/null)" = \
		"Primary/Secondary UpToDate/UpToDate Connected Established" ]
}

step "planned switch-over: no resync, nothing lost"
rs0=$(status A .replication_stats.resync_bytes)
expect_rc 0 A secondary r0
expect_rc 0 B primary r0
run qemu-io -f raw "$NB" -c "write -P 0x22 16M 4M"
assert_eq "$RC" 0 "writes through beta"
wait_until 10 beta_synced || fail "after the switch: $(status B .state)"
assert_eq "$(status A .replication_stats.resync_bytes)" "$rs0" \
	"bytes resynced by the switch-over"
assert_eq "$(status B .bitmap.dirty_bytes)" 0 "beta's bitmap"
same_data "after the switch-over"

step "unplanned failover: kill -9 of the Primary during writes"
# 256 KiB writes one by one, each logged once acknowledged
writer() {
	local i
	for ((i = 0; i < 400; i++)); do
		qemu-io -f raw "$NB" \
			-c "write -P $((i % 200 + 30)) $((32 * 1024 + i * 256))k 256k" \
			>/dev/null 2>&1 || return 0
		echo "$i"
	done
}
bg_start writer writer
wait_until 20 [ -s "$T/writer.log" ] || fail "the writer never got going"
sleep 1
crash B
bg_stop writer
acked=$(wc -l <"$T/writer.log")
[ "$acked" -gt 0 ] || fail "no acknowledged write to check"
echo "  $acked writes acknowledged before the kill"
while read -r i; do
	cmp -n $((256 * KiB)) \
		<(head -c $((256 * KiB)) /dev/zero | tr '\0' "\\$(printf %03o $((i % 200 + 30)))") \
		<(tail -c +$(((32 * 1024 + i * 256) * KiB + 1)) "$T/alpha.img") ||
		fail "alpha lacks acknowledged write $i"
done <"$T/writer.log"
wait_until 20 field_is A .connection Connecting || fail "alpha did not notice"
assert_eq "$(status A .disk)" UpToDate "alpha's disk after losing the Primary"
expect_rc 0 A primary r0
run qemu-io -f raw "$NA" -c "write -P 0x44 100M 6M"
assert_eq "$RC" 0 "writes through alpha after the failover"
dirty=$(status A .bitmap.dirty_bytes)
[ "$dirty" -ge $((6 * MiB)) ] || fail "alpha marked only $dirty bytes"
rs0=$(status A .replication_stats.resync_bytes)
expect_rc 0 B up r0
assert_eq "$(status B .crashed_primary)" true "beta knows it crashed"
wait_until 60 synced || fail "beta did not come back: $(status A .state)"
assert_eq "$(status B .role)" Secondary "beta's role after its return"
got=$(($(status A .replication_stats.resync_bytes) - rs0))
[ "$got" -ge $((6 * MiB)) ] && [ "$got" -le $((6 * MiB + 16 * 4 * MiB)) ] ||
	fail "resynced $got bytes: expected alpha's 6 MiB plus at most beta's 16 AL extents"
same_data "after beta's return"

step "crashed Primary restarted alone: its hot extents are resynced"
expect_rc 0 B down r0
wait_until 10 field_is A .connection Connecting || fail "alpha did not notice"
run qemu-io -f raw "$NA" -c "write -P 0x55 60M 2M"
crash A
# what beta must get: alpha's 2 MiB (bitmap) and whatever its AL held
expect_rc 0 A up r0
assert_eq "$(status A .crashed_primary)" true "alpha knows it crashed"
dirty=$(status A .bitmap.dirty_bytes)
[ "$dirty" -ge $((2 * MiB)) ] && [ "$dirty" -lt "$data" ] ||
	fail "alpha's bitmap after the crash: $dirty bytes"
rs0=$(status A .replication_stats.resync_bytes)
expect_rc 0 A primary r0
expect_rc 0 B up r0
wait_until 60 synced || fail "no resync: $(status A .state)"
got=$(($(status A .replication_stats.resync_bytes) - rs0))
[ "$got" -ge $((2 * MiB)) ] && [ "$got" -lt "$data" ] ||
	fail "resynced $got bytes of a $data-byte device"
same_data "after the crashed primary's resync"
pass
