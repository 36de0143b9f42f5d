#!/bin/bash
# Replication over the RDMA transport (`transport rdma;`), soft RoCE (rxe)
# in the guest. Two nodes in one guest, both in the initial network
# namespace (6.12's rxe works only there), on the two ends of a veth pair
# with an rxe device on each end. Policy routing sends traffic between
# the two local addresses out through the veth instead of `lo`, so every
# packet crosses rxa -> va -> vb -> rxb (checked with the rxe and veth
# counters). Then, as t_repl_basic / t_repl_linkcut do over TCP:
#  - status says transport rdma; primary --force runs the full initial
#    sync (resync bytes = device size), data areas identical;
#  - fio --verify through the primary's /dev/ublkbN, protocol C; identical;
#  - link cut (every packet dropped) during writes: the loss is seen, the
#    bitmap holds exactly the outage's writes; link back: the resync copies
#    only them; identical;
#  - secondary killed (-9) while the primary writes on, restarted: resync
#    of what it missed, identical;
#  - failover: primary killed (-9), the secondary promoted writes on, the
#    old primary restarted comes back as Secondary over rdma and resyncs
#    the new primary's writes (plus its own hot extents, at most), identical.
# timeout: 300
set -uo pipefail
# shellcheck source=tests/vm/lib.sh
. "$(dirname "$0")/lib.sh"
vm_run_self --mem 1024 --cpus 2 --timeout 280 -- "$@"

# ---- in the guest from here on
set -e
# shellcheck source=tests/integration/lib.sh
. "$VM_TOP/tests/integration/lib.sh"
# shellcheck source=tests/vm/pair.sh
. "$(dirname "$0")/pair.sh"
require_cmd fio rdma tc

IPA=10.12.0.1 IPB=10.12.0.2

# rxe on both ends of a veth pair, in the initial namespace. Locally
# generated packets for the other end's address go out through the veth
# (rules for iif lo, ahead of the local table); what arrives on the veth
# is delivered locally (accept_local, no reverse-path filter).
rxe_pair() {
	vm_modprobe rdma_rxe rdma_ucm ib_uverbs || return 1
	ip link add va type veth peer name vb &&
		ip addr add $IPA/24 dev va && ip addr add $IPB/24 dev vb &&
		ip link set va up && ip link set vb up || return 1
	for d in va vb all default; do
		sysctl -qw net.ipv4.conf.$d.accept_local=1 \
			net.ipv4.conf.$d.rp_filter=0 || return 1
	done
	ip rule add pref 10 iif lo to $IPB lookup 100 &&
		ip rule add pref 11 iif lo to $IPA lookup 101 &&
		ip rule add pref 100 lookup local &&
		ip rule del pref 0 lookup local &&
		ip route add $IPB dev va src $IPA table 100 &&
		ip route add $IPA dev vb src $IPB table 101 &&
		rdma link add rxa type rxe netdev va &&
		rdma link add rxb type rxe netdev vb
}
# The link cut drops every packet on both veth ends (netem): the peer
# vanishes without a word, as when a cable is pulled between two hosts.
# (Taking va down is no cut here: the kernel then routes between the two
# local addresses through `lo` and rxe reconnects over its loopback. With
# a fallback route making the address unreachable meanwhile, the loss was
# seen at once (port error), but after va came back rxa sent no packet at
# all, not even an answer to beta's connect requests, and the pair never
# reconnected: 6.12's rxe, not duet, as far as we could tell.)
link_cut() {
	tc qdisc add dev va root netem loss 100% &&
		tc qdisc add dev vb root netem loss 100%
}
link_mend() { tc qdisc del dev va root && tc qdisc del dev vb root; }
rxe_pair || fail "cannot set up rxe on a veth pair"
on_exit '{ rdma link del rxa; rdma link del rxb; ip link del va; } >/dev/null 2>&1'
[ "$(ip route get $IPB | awk '{print $3; exit}')" = va ] ||
	fail "traffic to $IPB would not leave through va: $(ip route get $IPB)"
counter() { cat "/sys/class/infiniband/$1/ports/1/hw_counters/$2"; }

pair_resource 64M 'queues = 2; queue-depth = 32; resync-rate = "1G";
ping-interval = 500; connect-timeout = 2000;
reconnect-min = 100; reconnect-max = 500;' transport=rdma

step "up over rdma; primary --force runs the full initial sync"
pair_up 30
assert_eq "$(status A .replication_stats.transport)" rdma "alpha's transport"
assert_eq "$(status B .replication_stats.transport)" rdma "beta's transport"
pkts0=$(counter rxb rcvd_pkts)
expect_rc 0 A primary r0 --force
wait_until 120 synced || fail "initial sync did not end: $(status A .state)"
data=$(status A .data_bytes)
assert_eq "$(last_resync)" "$data" "initial sync bytes = device size"
same_data "after the initial sync"
# 64 MiB in RoCE packets of at most 4 KiB: the sync went through rxb
pkts=$(($(counter rxb rcvd_pkts) - pkts0))
[ "$pkts" -ge $((data / 4096)) ] ||
	fail "rxb received $pkts packets for a $data-byte sync"
vbytes=$(ip -s -j link show vb | jq '.[0].stats64.rx.bytes')
[ "$vbytes" -ge "$data" ] || fail "vb received only $vbytes bytes"
echo "rxb: $pkts packets in; vb: $vbytes bytes in"

step "protocol C: fio --verify through the primary"
adev=$(status A .device)
[ -b "$adev" ] || fail "no device: $adev"
sent0=$(status A .replication_stats.wire_bytes_sent)
fio_verify "$adev" --bsrange=4k-256k --size=24M --offset_increment=28M \
	--io_size=8M
assert_eq "$(status A .replication_stats.not_acked)" 0 "unacknowledged writes"
assert_eq "$(status A .bitmap.dirty_bytes)" 0 "bitmap while connected"
[ "$(status B .replication_stats.applied_bytes)" -ge $((16 * MiB)) ] ||
	fail "beta applied $(status B .replication_stats.applied_bytes) bytes"
[ $(($(status A .replication_stats.wire_bytes_sent) - sent0)) -ge \
	$((16 * MiB)) ] || fail "the writes did not go over the rdma link"
same_data "after fio"

step "link cut during writes: only the outage's writes are resynced"
dd if=/dev/urandom of="$adev" bs=1M count=2 oflag=direct status=none
link_cut || fail "cannot cut the link"
write_alone "$adev" 3 8
wait_until 10 field_ne A .connection Connected || fail "loss not seen"
echo "alpha: $(status A .replication_stats.last_error)"
assert_eq "$(status A .bitmap.dirty_bytes)" $((3 * MiB)) "bitmap after the outage"
link_mend || fail "cannot mend the link"
wait_until 60 synced || fail "no resync after the link came back: $(status A .state) $(status A .replication_stats.last_error)"
assert_eq "$(last_resync)" $((3 * MiB)) "resynced bytes = outage writes"
same_data "after the link cut"

step "secondary killed (-9) while the primary writes, restarted"
kill -9 "$(status B .pid)"
write_alone "$adev" 4 30
wait_until 10 field_ne A .connection Connected || fail "loss not seen"
assert_eq "$(status A .bitmap.dirty_bytes)" $((4 * MiB)) "bitmap while beta is down"
expect_rc 0 B up r0
wait_until 60 synced || fail "no resync after beta's restart: $(status A .state)"
assert_eq "$(last_resync)" $((4 * MiB)) "resynced bytes = writes beta missed"
same_data "after the secondary's restart"

step "failover: primary killed (-9), beta promoted, alpha returns as Secondary"
apid=$(status A .pid)
kill -9 "$apid"
wait_until 10 field_ne B .connection Connected || fail "beta did not notice"
assert_eq "$(status B .disk)" UpToDate "beta's disk after losing the Primary"
expect_rc 0 B primary r0
bdev=$(status B .device)
write_alone "$bdev" 5 40
assert_eq "$(status B .bitmap.dirty_bytes)" $((5 * MiB)) "beta's bitmap"
wait_until 10 proc_gone "$apid" || fail "alpha's daemon survived kill -9"
expect_rc 0 A up r0
wait_until 60 synced B || fail "no resync after alpha's return: $(status B .state)"
assert_eq "$(status A .role)" Secondary "alpha's role after its return"
got=$(last_resync alpha)
[ "$got" -ge $((5 * MiB)) ] && [ "$got" -lt "$data" ] ||
	fail "resynced $got bytes to alpha (beta wrote 5 MiB; device $data)"
assert_eq "$(status B .replication_stats.transport)" rdma "transport after it all"
same_data "after the failover"
pass
