#!/bin/bash
# Two nodes in one guest, in network namespaces joined by a veth pair. A
# pair of zeroed disks skips the initial sync (new-current-uuid
# --clear-bitmap). Then:
#  - the link is cut (veth down) while the primary writes: the writes go on,
#    the bitmap records them; link back: the resync copies only them
#    (resynced bytes = bytes written during the outage, far below the
#    device size) and both data areas end identical;
#  - the same with the secondary killed (-9) in the middle of the
#    (rate-limited) resync and restarted;
#  - the same with the primary killed (-9) in the middle of the resync and
#    restarted (it takes its ublk device back and is promoted again).
# timeout: 400
set -uo pipefail
# shellcheck source=tests/vm/lib.sh
. "$(dirname "$0")/lib.sh"
vm_run_self --mem 1024 --cpus 2 --timeout 380 -- "$@"

# ---- in the guest from here on
set -e
# shellcheck source=tests/integration/lib.sh
. "$VM_TOP/tests/integration/lib.sh"
# shellcheck source=tests/vm/pair.sh
. "$(dirname "$0")/pair.sh"

pair_netns 11
link_cut() { ip -n na link set na-v down; }
link_mend() { ip -n na link set na-v up; }
# outage_then_resync BYTES: 12 MiB written with the link cut, the link back,
# and the resync under way: it has copied BYTES.
outage_then_resync() {
	link_cut
	write_alone "$adev" 12 8
	wait_until 10 field_ne A .connection Connected || fail "loss not seen"
	link_mend
	wait_until 30 field_ge A .resync.done_bytes "$1" ||
		fail "resync not progressing: $(status A .state)"
}

# fast loss detection; a slow resync so that it can be interrupted
pair_resource 128M 'ping-interval = 500; connect-timeout = 1000;
reconnect-min = 100; reconnect-max = 500;
resync-rate = "2M"; resync-min-rate = "1M";'
pair_up 20

step "zeroed pair: new-current-uuid --clear-bitmap skips the initial sync"
expect_rc 0 A new-current-uuid r0 --clear-bitmap
wait_until 10 field_is B .disk UpToDate || fail "beta: $(status B .state)"
assert_eq "$(status B .current_uuid)" "$(status A .current_uuid)" "generation"
expect_rc 0 A primary r0
wait_until 10 synced || fail "not replicating: $(status A .state)"
adev=$(status A .device)
data=$(status A .data_bytes)

step "link cut during writes: only the outage's writes are resynced"
dd if=/dev/urandom of="$adev" bs=1M count=4 oflag=direct status=none
link_cut
write_alone "$adev" 3 8
wait_until 10 field_ne A .connection Connected || fail "loss not seen"
assert_eq "$(status A .bitmap.dirty_bytes)" $((3 * MiB)) "bitmap after the outage"
link_mend
wait_until 60 synced || fail "no resync after the link came back"
assert_eq "$(last_resync)" $((3 * MiB)) "resynced bytes = outage writes"
[ "$(last_resync)" -lt $((data / 16)) ] || fail "resync not << device size"
same_data "after the link cut"

step "secondary killed (-9) mid-resync and restarted"
outage_then_resync $((2 * MiB))
kill -9 "$(status B .pid)"
wait_until 10 field_ne A .connection Connected || fail "loss not seen"
left=$(status A .bitmap.dirty_bytes)
[ "$left" -gt 0 ] && [ "$left" -lt $((12 * MiB)) ] ||
	fail "bitmap after the interrupted resync: $left"
expect_rc 0 B up r0
wait_until 90 synced || fail "resync did not resume: $(status A .state)"
# what was left, plus at most ~2 s of progress the killed target had not
# yet recorded in its on-disk bitmap (persisted every second)
got=$(last_resync)
[ "$got" -ge "$left" ] && [ "$got" -le $((left + 4 * MiB)) ] ||
	fail "the resumed resync sent $got bytes; $left were left"
same_data "after the secondary's crash"

step "primary killed (-9) mid-resync and restarted"
outage_then_resync $((3 * MiB))
kill -9 "$(status A .pid)"
wait_until 10 field_ne B .connection Connected || fail "loss not seen"
assert_eq "$(status B .disk)" Inconsistent "beta mid-resync"
expect_rc 0 A up r0
expect_rc 0 A primary r0
wait_until 90 synced || fail "resync did not resume: $(status A .state)"
# a crashed primary also resyncs its activity log's hot extents (they may
# hold writes the peer never saw), but not the whole device
[ "$(last_resync)" -lt "$data" ] ||
	fail "the resync covered the whole device: $(last_resync) bytes"
same_data "after the primary's crash"
pass
