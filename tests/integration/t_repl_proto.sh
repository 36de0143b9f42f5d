#!/bin/bash
# Protocols A, B and C on the host (two nodes on loopback, NBD front ends):
# a zeroed pair skips the initial sync (new-current-uuid --clear-bitmap),
# fio --verify runs through the primary (mixed sizes, FUA and flushes
# included), then the secondary's data area must equal the primary's and
# the status must show what each protocol waits for: ACK_WRITEs or
# ACK_RECVs counted as acknowledged (B, C), completions on hand-over (A).
# Also: new-current-uuid --clear-bitmap is refused without the peer, and
# for a pair that already has a generation; under C, sndbuf-size and
# rcvbuf-size (above net.core.[wr]mem_max) are on both ends' sockets.
# timeout: 120
set -uo pipefail
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
require_bin duetctl duetd
require_cmd jq fio ss
[ -e /dev/ublk-control ] &&
	skip "this host has ublk: duetd would serve ublk, not NBD-only"
cd "$T"

mkdir -p "$T/ra" "$T/rb"
A() { "$DUETCTL" --node alpha --run-dir "$T/ra" "$@"; }
B() { "$DUETCTL" --node beta --run-dir "$T/rb" "$@"; }
on_exit 'A down r0 >/dev/null 2>&1; B down r0 >/dev/null 2>&1'
status() { "$1" status r0 --json | jq -r "$2"; }
field_is() { [ "$(status "$1" "$2" 2>/dev/null)" = "$3" ]; }
synced() {
	field_is A .state \
		"Primary/Secondary UpToDate/UpToDate Connected Established"
}

# sockbufs PA PB: the replication connection's two sockets (between the
# nodes' ports) carry the configured buffers; Linux reports twice the size
sockbufs() {
	local skm n
	skm=$(ss -tmnH state established \
		"( sport = :$1 or dport = :$1 or sport = :$2 or dport = :$2 )")
	n=$(grep -c 'skmem:(r[0-9]*,rb10485760,t[0-9]*,tb12582912,' <<<"$skm")
	[ "$n" -eq 2 ] || fail "socket buffers (want rb10485760, tb12582912 on both ends): $skm"
}

one() {	# one PROTOCOL
	local p=$1 d pa pb extra='data-digest = "crc32c";'
	step "protocol $p"
	mk_sparse "$T/alpha.img" 64M
	mk_sparse "$T/beta.img" 64M
	pa=$(free_port)
	pb=$(free_port)
	[ "$p" = C ] && extra+=' sndbuf-size = "6M"; rcvbuf-size = "5M";'
	write_resource r0 protocol="$p" \
		alpha_addr="127.0.0.1:$pa" beta_addr="127.0.0.1:$pb" \
		alpha_extra="nbd-listen = \"unix:$T/a.nbd\";" \
		beta_extra="nbd-listen = \"unix:$T/b.nbd\";" \
		extra="$extra"
	expect_rc 0 A create-md r0 --force
	expect_rc 0 B create-md r0 --force
	expect_rc 0 A up r0
	expect_rc 8 A new-current-uuid r0 --clear-bitmap
	assert_contains "$ERR" "needs the peer connected" "clear-bitmap alone"
	expect_rc 0 B up r0
	wait_until 10 field_is A .connection Connected || fail "no connection"
	expect_rc 0 A new-current-uuid r0 --clear-bitmap
	wait_until 10 field_is B .disk UpToDate || fail "beta: $(status B .state)"
	expect_rc 8 B new-current-uuid r0 --clear-bitmap
	assert_contains "$ERR" "already has a generation" "second clear-bitmap"
	expect_rc 0 A primary r0
	wait_until 10 synced || fail "not replicating: $(status A .state)"
	assert_eq "$(status A .protocol)" "$p" "protocol in status"
	if [ "$p" = C ] && [ "$(id -u)" -eq 0 ]; then
		sockbufs "$pa" "$pb"
	fi
	run fio --name=w --ioengine=nbd --uri="nbd+unix:///r0?socket=$T/a.nbd" \
		--rw=randwrite --bs=4k-128k --size=48M --io_size=16M \
		--iodepth=8 --fsync=7 --verify=crc32c --verify_fatal=1 \
		--do_verify=1
	[ "$RC" -eq 0 ] || fail "fio (protocol $p): $OUT"
	wait_until 10 field_is A .replication_stats.in_flight 0 ||
		fail "requests still waiting for the peer"
	[ "$(status A .replication_stats.acked)" -gt 100 ] ||
		fail "acknowledged: $(status A .replication_stats.acked)"
	assert_eq "$(status A .replication_stats.not_acked)" 0 "not acked"
	assert_eq "$(status A .bitmap.dirty_bytes)" 0 "bitmap"
	# a clean stop of the secondary applies what it has received first
	expect_rc 0 A down r0
	expect_rc 0 B down r0
	d=$(A dump-md r0 --json | jq .superblock.data_bytes)
	cmp -n "$d" "$T/alpha.img" "$T/beta.img" ||
		fail "protocol $p: the data areas differ"
}

one C
one B
one A
pass
