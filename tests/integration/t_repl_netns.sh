#!/bin/bash
# Two-node replication on the host, each node in its own network namespace,
# the two joined by a veth pair; the link is cut with nftables drop rules, so
# no daemon stops and no packet says the connection is gone: it goes silent.
# Both nodes serve NBD only (the host has no ublk); clients run inside the
# node's namespace.
#  - a fresh pair, `primary --force`: the full initial sync; then protocol C,
#    fio --verify through the primary's export, both data areas identical;
#  - the link cut both ways (input and output dropped in the primary's
#    namespace) during a bounded write load: the primary keeps serving, the
#    status shows the peer gone within the configured timeouts, 8 MiB
#    written in distinct places during the outage land in the bitmap; the
#    rules removed, the reconnect resyncs only the bitmap (at least what the
#    outage wrote, far below the device size), then identical disks;
#  - the same cut on one side only, in each direction: only the secondary
#    drops what arrives, then only the primary. The TCP connection hangs
#    rather than resets (the secondary times out too, but its FIN stays
#    queued behind a segment that is never acked, see LAT_LIMIT_MS), so
#    alpha's keepalive must see the silence itself (its log says so)
#    and no application write may wait much longer than 2 x ping-interval
#    + connect-timeout (see LAT_LIMIT_MS): fio's longest write latency is
#    measured (reported as "longest write") and bounded;
#  - both down: nothing left running in either namespace, namespaces gone.
# timeout: 180
set -uo pipefail
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
require_root
require_bin duetctl duetd
require_cmd ip nft qemu-io jq fio
[ -e /dev/ublk-control ] &&
	skip "this host has ublk: duetd would serve ublk, not NBD-only"
cd "$T" || fail "cd $T"

MiB=$((1 << 20))
PING_MS=500
TIMEOUT_MS=1000
# The longest an application write may wait for a silent peer. A link is
# lost after ping-interval + connect-timeout without a byte from the peer.
# In a one-sided cut the peer's first PING after the cut (ping-interval
# later) still gets through; then its TCP, whose segment is never acked,
# retransmits it with a congestion window of one and sends nothing new, not
# even the FIN of its own timeout. Hence 2 x ping-interval + connect-timeout
# (2 s), plus 1.5 s for a loaded machine. TCP's own verdict
# (TCP_USER_TIMEOUT = 3 x (ping-interval + connect-timeout) = 4.5 s, see
# docs/replication.md) is above the limit: it must not be what ends a cut.
LAT_LIMIT_MS=$((2 * PING_MS + TIMEOUT_MS + 1500))

NSA=duet-a-$$
NSB=duet-b-$$
# each pair of namespaces is a network of its own: the same subnet in two
# runs at once does not clash
NET=10.213.7
IPA=$NET.1
IPB=$NET.2
netns_pair "$NSA" "$NSB" "$NET" ||
	skip "cannot build two network namespaces joined by veth (ip netns add, veth)"
# a table with a hooked chain and a rule, as link_cut loads
if ! ip netns exec "$NSA" nft -f - 2>"$T/nft.err" <<<'table inet duet_probe {
	chain input { type filter hook input priority 0; ip saddr 192.0.2.1 drop; }
}'; then
	skip "nft cannot load rules in a network namespace: $(cat "$T/nft.err")"
fi
ip netns exec "$NSA" nft delete table inet duet_probe ||
	fail "nft: cannot delete the probe table"
ip netns exec "$NSA" ping -c1 -W5 "$IPB" >/dev/null 2>&1 ||
	fail "the veth link does not carry traffic ($IPA -> $IPB)"

mkdir -p "$T/ra" "$T/rb"
A() { ip netns exec "$NSA" "$DUETCTL" --node alpha --run-dir "$T/ra" "$@"; }
B() { ip netns exec "$NSB" "$DUETCTL" --node beta --run-dir "$T/rb" "$@"; }
# registered after netns_pair's hooks, so it runs before them
on_exit 'A down r0 >/dev/null 2>&1; B down r0 >/dev/null 2>&1'
NA="nbd+unix:///r0?socket=$T/ra/nbd.sock"

status() { "$1" status r0 --json | jq -r "$2"; }
field_is() { [ "$(status "$1" "$2" 2>/dev/null)" = "$3" ]; }
field_ne() { [ "$(status "$1" "$2" 2>/dev/null)" != "$3" ]; }
synced() {
	field_is A .state \
		"Primary/Secondary UpToDate/UpToDate Connected Established"
}
data_sha() {
	head -c "$DATA" "$1" | sha256sum | cut -d' ' -f1
}
same_data() {
	assert_eq "$(data_sha "$T/alpha.img")" "$(data_sha "$T/beta.img")" \
		"sha256 of the data areas $1"
}
# the bytes of the last "resync to beta done" line; the status has the
# figures only while a resync runs (.resync is null afterwards)
last_resync() {
	grep 'resync to beta done' "$T/ra/r0.log" | tail -1 |
		sed 's/.*done: \([0-9]*\) bytes.*/\1/'
}
# how many times alpha lost beta to silence (conn_'s keepalive verdict)
ping_timeouts() {
	grep -ac 'connection to beta lost (nothing received for' "$T/ra/r0.log"
}
ms_now() { echo $(($(date +%s%N) / 1000000)); }

# link_cut NS HOOKS...: drop every packet from/to the peer's address in NS, in
# the given hooks (input, output); link_mend NS removes the table
link_cut() {
	local ns=$1 peer d rules=''
	shift
	[ "$ns" = "$NSA" ] && peer=$IPB || peer=$IPA
	for d; do
		[ "$d" = input ] && rules+="
	chain $d { type filter hook $d priority 0; ip saddr $peer drop; }"
		[ "$d" = output ] && rules+="
	chain $d { type filter hook $d priority 0; ip daddr $peer drop; }"
	done
	echo "+ cut in $ns: $* (peer $peer)"
	ip netns exec "$ns" nft -f - <<<"table inet duet_cut {$rules
}" || fail "nft: cannot load the drop rules in $ns"
	CUT_AT=$(ms_now)
}
link_mend() {
	echo "+ mend $1"
	ip netns exec "$1" nft delete table inet duet_cut ||
		fail "nft: cannot delete the drop rules in $1"
}

mk_sparse "$T/alpha.img" 128M
mk_sparse "$T/beta.img" 128M
write_resource r0 alpha_addr="$IPA:7789" beta_addr="$IPB:7789" \
	alpha_extra="nbd-listen = \"unix:$T/ra/nbd.sock\";" \
	beta_extra="nbd-listen = \"unix:$T/rb/nbd.sock\";" \
	extra="ping-interval = $PING_MS; connect-timeout = $TIMEOUT_MS;
reconnect-min = 100; reconnect-max = 500;"
expect_rc 0 A create-md r0 --force
expect_rc 0 B create-md r0 --force

step "fresh pair in two namespaces: primary --force, full initial sync"
qemu-io -f raw "$T/alpha.img" -c "write -P 0x5a 0 16M" >/dev/null ||
	fail "qemu-io on alpha.img"
expect_rc 0 A up r0
expect_rc 0 B up r0
PIDA=$(status A .pid)
PIDB=$(status B .pid)
[ "$(ip netns identify "$PIDA")" = "$NSA" ] ||
	fail "alpha's duetd ($PIDA) is not in $NSA"
[ "$(ip netns identify "$PIDB")" = "$NSB" ] ||
	fail "beta's duetd ($PIDB) is not in $NSB"
wait_until 20 field_is A .connection Connected ||
	fail "no connection: $(status A .replication_stats.last_error)"
# across the veth, not some other way
assert_match "$(status A .replication_stats.peer_addr)" "^${IPB//./\\.}:" \
	"alpha's peer address"
expect_rc 0 A primary r0 --force
wait_until 60 synced || fail "initial sync did not end: $(status A .state)"
DATA=$(status A .data_bytes)
assert_eq "$(last_resync)" "$DATA" "initial sync bytes = device size"
assert_eq "$(status B .current_uuid)" "$(status A .current_uuid)" \
	"both on the same generation"
same_data "after the initial sync"

step "protocol C: fio --verify through the primary's export, identical replicas"
assert_eq "$(status A .protocol)" C "protocol"
ip netns exec "$NSA" fio --name=w --ioengine=nbd --uri="$NA" \
	--rw=randwrite --bs=4k-256k --size=64M --io_size=24M --iodepth=8 \
	--verify=crc32c --verify_fatal=1 --do_verify=1 --direct=1 \
	>"$T/fio.log" 2>&1 || {
	cat "$T/fio.log"
	fail "fio --verify through alpha"
}
assert_eq "$(status A .replication_stats.not_acked)" 0 "writes the peer failed"
assert_eq "$(status A .bitmap.dirty_bytes)" 0 "bitmap while connected"
same_data "after fio"

# outage CASE LOAD_AT OUTAGE_AT NS HOOKS...: one link cut during a bounded
# write load through the primary.
#  - fio writes 6 MiB from LOAD_AT sequentially, 256 KiB at a time at
#    1 MiB/s, and reads it back to verify (distinct places, a known byte
#    count, its longest completion latency in its JSON);
#  - once it has replicated something, the cut; the status must show the
#    peer gone within the timeouts;
#  - 8 x 1 MiB written by qemu-io at OUTAGE_AT, 2 MiB apart, while the
#    peer is gone: they must complete (the primary keeps serving);
#  - fio ends; the bitmap then holds at least the outage's writes (the
#    8 MiB, and fio's writes but those sent before the cut) and at most
#    those plus fio's; mended, the resync copies exactly the bitmap and
#    the data areas end identical.
outage() {
	local case=$1 load_at=$2 out_at=$3 ns=$4 sent sent_cut pid i det
	local fio_bytes lat_ms t0 el dirty got lo hi timeouts
	local -a writes=()
	shift 4
	sent=$(status A .replication_stats.bytes_sent)
	# shellcheck disable=SC2034 # read by the eval in wait_until below
	timeouts=$(ping_timeouts)
	ip netns exec "$NSA" fio --name=load --ioengine=nbd --uri="$NA" \
		--rw=write --bs=256k --offset="$load_at" --size=6M \
		--rate_iops=4 --iodepth=1 \
		--direct=1 --verify=crc32c --verify_fatal=1 --do_verify=1 \
		--output-format=json --output="$T/load-$case.json" \
		>"$T/load-$case.log" 2>&1 &
	pid=$!
	wait_until 20 field_ge_n A .replication_stats.bytes_sent \
		$((sent + MiB)) || fail "$case: the load does not replicate"
	link_cut "$ns" "$@"
	# fio's writes that may have reached beta: those sent by now
	sent_cut=$(status A .replication_stats.bytes_sent)
	wait_until 15 field_ne A .connection Connected ||
		fail "$case: the primary still reports the peer connected"
	det=$(($(ms_now) - CUT_AT))
	echo "$case: loss seen in the status ${det} ms after the cut"
	# by alpha's own keepalive, not by TCP giving up or by a reset
	wait_until 5 eval '[ "$(ping_timeouts)" -eq $((timeouts + 1)) ]' ||
		fail "$case: not one new ping timeout in alpha's log: $(grep -a 'connection to beta lost' "$T/ra/r0.log" | tail -2)"
	assert_eq "$(status A .role)/$(status A .peer_disk)" Primary/DUnknown \
		"$case: alpha's role/peer disk during the cut"
	for ((i = 0; i < 8; i++)); do
		writes+=(-c "write -P $((0x40 + i)) $((out_at + 2 * i * MiB)) 1M")
	done
	t0=$(ms_now)
	timeout 30 ip netns exec "$NSA" qemu-io -f raw "$NA" "${writes[@]}" \
		>"$T/out-$case.log" 2>&1 ||
		fail "$case: writes during the outage: $(cat "$T/out-$case.log")"
	el=$(($(ms_now) - t0))
	echo "$case: 8 MiB written during the outage in ${el} ms"
	# the peer is known gone: nothing waits for it
	[ "$el" -le "$LAT_LIMIT_MS" ] ||
		fail "$case: 8 x 1 MiB took ${el} ms with the peer gone"
	field_ne A .connection Connected ||
		fail "$case: reconnected through the cut: $(status A .state)"
	for ((i = 0; i < 300; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -0 "$pid" 2>/dev/null && fail "$case: fio's 6 s load still runs after 30 s"
	wait "$pid" || {
		cat "$T/load-$case.log" "$T/load-$case.json"
		fail "$case: the load through the primary failed (fio exit)"
	}
	# fio may put a warning line before its JSON
	sed -n '/^{/,$p' "$T/load-$case.json" >"$T/load-$case.j"
	fio_bytes=$(jq '.jobs[0].write.io_bytes' "$T/load-$case.j")
	lat_ms=$(jq '.jobs[0].write.clat_ns.max / 1000000 | floor' \
		"$T/load-$case.j")
	assert_eq "$fio_bytes" $((6 * MiB)) "$case: bytes fio wrote"
	[[ "$lat_ms" =~ ^[0-9]+$ ]] || fail "$case: fio's clat max: '$lat_ms'"
	echo "$case: fio wrote $fio_bytes bytes; longest write ${lat_ms} ms (limit ${LAT_LIMIT_MS} ms)"
	[ "$lat_ms" -le "$LAT_LIMIT_MS" ] ||
		fail "$case: a write waited ${lat_ms} ms for the silent peer (limit ${LAT_LIMIT_MS} ms)"
	dirty=$(status A .bitmap.dirty_bytes)
	lo=$((8 * MiB + fio_bytes - (sent_cut - sent)))
	hi=$((8 * MiB + fio_bytes))
	echo "$case: $dirty bytes out of sync before the link comes back (written during the outage: $lo..$hi)"
	[ "$dirty" -ge "$lo" ] && [ "$dirty" -le "$hi" ] ||
		fail "$case: bitmap $dirty bytes, outside [$lo, $hi]"
	[ $((dirty % (256 * 1024))) -eq 0 ] ||
		fail "$case: bitmap $dirty bytes: not whole 256 KiB writes"
	link_mend "$ns"
	wait_until 60 synced ||
		fail "$case: no resync after the link came back: $(status A .state)"
	got=$(last_resync)
	echo "$case: resynced $got bytes (device $DATA)"
	assert_eq "$got" "$dirty" "$case: resynced bytes = the bitmap at the cut's end"
	[ "$got" -lt $((2 * lo + 2 * 256 * 1024)) ] && [ "$got" -lt $((DATA / 8)) ] ||
		fail "$case: the resync copied $got bytes for $lo written during the outage"
	assert_eq "$(status A .bitmap.dirty_bytes)" 0 "$case: bitmap after the resync"
	assert_eq "$(status B .disk)" UpToDate "$case: beta's disk"
	same_data "after $case"
	LAST_LAT=$lat_ms LAST_DET=$det
}
field_ge_n() {
	local v
	v=$(status "$1" "$2" 2>/dev/null)
	[[ "$v" =~ ^[0-9]+$ ]] && [ "$v" -ge "$3" ]
}

step "link cut both ways (nft in alpha's namespace) during writes"
outage both $((64 * MiB)) $((96 * MiB)) "$NSA" input output
lat_both=$LAST_LAT det_both=$LAST_DET

step "one-sided cut: only beta drops what arrives (the connection hangs)"
outage beta-in $((80 * MiB)) $((98 * MiB)) "$NSB" input
lat_bin=$LAST_LAT det_bin=$LAST_DET

step "one-sided cut: only alpha drops what arrives (alpha must time out alone)"
outage alpha-in $((64 * MiB)) $((97 * MiB)) "$NSA" input
lat_ain=$LAST_LAT det_ain=$LAST_DET
echo "longest write during a cut: both ${lat_both} ms, beta-in ${lat_bin} ms, alpha-in ${lat_ain} ms (limit ${LAT_LIMIT_MS} ms)"
echo "loss seen after: both ${det_both} ms, beta-in ${det_bin} ms, alpha-in ${det_ain} ms"
[ "$(status A .replication_stats.losses)" -ge 3 ] ||
	fail "alpha counted $(status A .replication_stats.losses) losses for 3 cuts"

step "both down: nothing left in the namespaces"
expect_rc 0 A down r0
expect_rc 0 B down r0
wait_until 10 eval '! kill -0 "$PIDA" 2>/dev/null && ! kill -0 "$PIDB" 2>/dev/null' ||
	fail "a duetd still runs after down ($PIDA, $PIDB)"
for ns in "$NSA" "$NSB"; do
	left=$(ip netns pids "$ns")
	[ -z "$left" ] || fail "processes left in $ns: $(ps -o pid=,args= -p "${left//$'\n'/,}")"
	ip netns del "$ns" || fail "cannot delete $ns"
	! netns_exists "$ns" || fail "$ns still listed"
done
pass
