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
require_bin duetctl duetd
require_cmd jq sha256sum ip
cd "$T"

MiB=$((1 << 20))
vm_netns_pair na nb 11 || fail "cannot build the namespaces"
mkdir -p "$T/ra" "$T/rb"
A() { ip netns exec na "$DUETCTL" --node alpha --run-dir "$T/ra" "$@"; }
B() { ip netns exec nb "$DUETCTL" --node beta --run-dir "$T/rb" "$@"; }
on_exit 'A down r0 >/dev/null 2>&1; B down r0 >/dev/null 2>&1'
status() { "$1" status r0 --json | jq -r "$2"; }
field_is() { [ "$(status "$1" "$2" 2>/dev/null)" = "$3" ]; }
field_ne() { [ "$(status "$1" "$2" 2>/dev/null)" != "$3" ]; }
field_ge() {
	local v
	v=$(status "$1" "$2" 2>/dev/null)
	[[ "$v" =~ ^[0-9]+$ ]] && [ "$v" -ge "$3" ]
}
synced() {
	field_is A .state \
		"Primary/Secondary UpToDate/UpToDate Connected Established"
}
data_sha() {
	head -c "$(status A .data_bytes)" "$1" | sha256sum | cut -d' ' -f1
}
same_data() {
	assert_eq "$(data_sha "$T/alpha.img")" "$(data_sha "$T/beta.img")" \
		"data areas $1"
}
last_resync() {
	grep 'resync to beta done' "$T/ra/r0.log" | tail -1 |
		sed 's/.*done: \([0-9]*\) bytes.*/\1/'
}
link_cut() { ip -n na link set na-v down; }
link_mend() { ip -n na link set na-v up; }
# write_alone MIB: MIB MiB of random data at 1 MiB steps from 8 MiB, while
# the peer is unreachable; each write completes once the loss is seen
write_alone() {
	local i
	for ((i = 0; i < $1; i++)); do
		dd if=/dev/urandom of="$adev" bs=1M count=1 seek=$((8 + 2 * i)) \
			oflag=direct status=none || fail "write $i during the outage"
	done
}

mk_sparse "$T/alpha.img" 128M
mk_sparse "$T/beta.img" 128M
# fast loss detection; a slow resync so that it can be interrupted
write_resource r0 alpha_addr=10.11.0.1:7789 beta_addr=10.11.0.2:7789 \
	extra='ping-interval = 500; connect-timeout = 1000;
reconnect-min = 100; reconnect-max = 500;
resync-rate = "2M"; resync-min-rate = "1M";'
expect_rc 0 A create-md r0 --force
expect_rc 0 B create-md r0 --force
expect_rc 0 A up r0
expect_rc 0 B up r0
wait_until 20 field_is A .connection Connected || fail "no connection"

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
write_alone 3
wait_until 10 field_ne A .connection Connected || fail "loss not seen"
assert_eq "$(status A .bitmap.dirty_bytes)" $((3 * MiB)) "bitmap after the outage"
link_mend
wait_until 60 synced || fail "no resync after the link came back"
assert_eq "$(last_resync)" $((3 * MiB)) "resynced bytes = outage writes"
[ "$(last_resync)" -lt $((data / 16)) ] || fail "resync not << device size"
same_data "after the link cut"

step "secondary killed (-9) mid-resync and restarted"
link_cut
write_alone 12
wait_until 10 field_ne A .connection Connected || fail "loss not seen"
link_mend
wait_until 30 field_ge A .resync.done_bytes $((2 * MiB)) ||
	fail "resync not progressing: $(status A .state)"
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
link_cut
write_alone 12
wait_until 10 field_ne A .connection Connected || fail "loss not seen"
link_mend
wait_until 30 field_ge A .resync.done_bytes $((3 * MiB)) ||
	fail "resync not progressing: $(status A .state)"
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
