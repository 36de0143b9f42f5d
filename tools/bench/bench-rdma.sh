#!/bin/bash
# bench-rdma.sh — replicated writes over the RDMA transport against TCP.
#
#   tools/bench/bench-rdma.sh [--runtime SEC] [--rounds N] [--size MIB]
#
# On the host: boots a duet-vm guest and runs itself there. In the guest:
# soft RoCE (rxe) on both ends of a veth pair in the initial namespace
# (as tests/vm/t_repl_rdma.sh sets it up: the traffic between the two
# local addresses crosses the veth, for TCP as for RDMA; 9000-byte MTU,
# rxe MTU 4096), two nodes with
# tmpfs-backed disks, protocol C, and for each transport the same two fio
# jobs through the primary's /dev/ublkbN:
#
#   seqwrite   1 MiB sequential writes, QD8, libaio  -> MiB/s
#   randwrite  4 KiB random writes, QD32, libaio     -> IOPS
#
# plus the CPU time per GiB written: of both duetd processes (utime +
# stime from /proc/PID/stat), and of every task in the guest (run time
# from /proc/schedstat), because much of rxe's packet work runs in kernel
# threads and softirqs that the daemons' figures do not show (and some
# runs inside the daemons' system calls: rxe processes a user QP's sends
# in the context of the posting call). Rounds alternate the transports;
# the table shows medians and the ratios rdma / tcp.
set -uo pipefail

HERE=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)
TOP=$(cd "$HERE/../.." && pwd)
ROUNDS=2
RUNTIME=10
SIZE_MIB=256
GUEST=0

usage() {
	sed -n '2,/^[^#]/p' "$0" | sed '$d; s/^# \{0,1\}//'
	exit "${1:-0}"
}

while [ $# -gt 0 ]; do
	case $1 in
	--rounds) ROUNDS=${2:?}; shift ;;
	--runtime) RUNTIME=${2:?}; shift ;;
	--size) SIZE_MIB=${2:?}; shift ;;
	--guest) GUEST=1 ;;
	-h | --help) usage 0 ;;
	*) echo "bench-rdma: unknown argument $1" >&2; usage 2 >&2 ;;
	esac
	shift
done
[[ "$ROUNDS$RUNTIME$SIZE_MIB" =~ ^[0-9]+$ ]] || usage 2 >&2

# ------------------------------------------------------------------ host
if [ "$GUEST" = 0 ]; then
	exec "$TOP/kernel/vm/duet-vm" run --mem 2048 --cpus 2 \
		--timeout $((ROUNDS * RUNTIME * 8 + 400)) -- \
		bash "$HERE/bench-rdma.sh" --guest --rounds "$ROUNDS" \
		--runtime "$RUNTIME" --size "$SIZE_MIB"
fi

# ----------------------------------------------------------------- guest
. "$TOP/tests/vm/lib.sh"
DUETCTL=${DUET_BUILD:-$TOP/build}/duetctl
IPA=10.12.0.1 IPB=10.12.0.2
W=$(mktemp -d /tmp/bench.XXXXXX)
export DUET_CONFIG_DIR=$W/etc
mkdir -p "$DUET_CONFIG_DIR" "$W/ra" "$W/rb"
cd "$W" || exit 1
die() { echo "bench-rdma: $*" >&2; exit 1; }

vm_modprobe rdma_rxe rdma_ucm ib_uverbs || die "cannot load rdma_rxe"
# 9000-byte frames, so that rxe uses its largest MTU (4096), as RoCE
# deployments do; TCP sees the same link.
ip link add va type veth peer name vb && ip addr add $IPA/24 dev va &&
	ip addr add $IPB/24 dev vb && ip link set va mtu 9000 &&
	ip link set vb mtu 9000 && ip link set va up && ip link set vb up ||
	die "cannot make the veth pair"
for d in va vb all default; do
	sysctl -qw net.ipv4.conf.$d.accept_local=1 net.ipv4.conf.$d.rp_filter=0
done
ip rule add pref 10 iif lo to $IPB lookup 100 &&
	ip rule add pref 11 iif lo to $IPA lookup 101 &&
	ip rule add pref 100 lookup local && ip rule del pref 0 lookup local &&
	ip route add $IPB dev va src $IPA table 100 &&
	ip route add $IPA dev vb src $IPB table 101 &&
	rdma link add rxa type rxe netdev va &&
	rdma link add rxb type rxe netdev vb || die "cannot set up rxe"

A() { "$DUETCTL" --node alpha --run-dir "$W/ra" "$@"; }
B() { "$DUETCTL" --node beta --run-dir "$W/rb" "$@"; }
status() { "$1" status r0 --json | jq -r "$2"; }
wait_for() {	# wait_for SEC NODE FIELD VALUE
	local i
	for ((i = 0; i < $1 * 10; i++)); do
		[ "$(status "$2" "$3" 2>/dev/null)" = "$4" ] && return 0
		sleep 0.1
	done
	die "$2 $3 is not $4 after $1 s: $(status "$2" .state)"
}

# up TRANSPORT: a fresh zeroed pair, connected and replicating
up() {
	local n
	A down r0 >/dev/null 2>&1
	B down r0 >/dev/null 2>&1
	rm -f "$W"/*.img
	cat >"$DUET_CONFIG_DIR/r0.conf" <<EOF
resource = "r0";
protocol = "C";
secret = "duet-bench-secret";
transport = "$1";
queues = 2;
queue-depth = 64;
nodes = (
  { name = "alpha"; id = 0; address = "$IPA:7789";
    disk = "$W/alpha.img"; meta-disk = "internal"; },
  { name = "beta"; id = 1; address = "$IPB:7789";
    disk = "$W/beta.img"; meta-disk = "internal"; }
);
EOF
	for n in alpha beta; do
		truncate -s $((SIZE_MIB + 16))M "$W/$n.img" || die "truncate"
	done
	A create-md r0 --force >/dev/null && B create-md r0 --force >/dev/null &&
		A up r0 >/dev/null && B up r0 >/dev/null || die "up ($1)"
	wait_for 30 A .connection Connected
	A new-current-uuid r0 --clear-bitmap >/dev/null || die "new-current-uuid"
	wait_for 10 B .disk UpToDate
	A primary r0 >/dev/null || die "primary"
	wait_for 10 A .replication Established
	[ "$(status A .replication_stats.transport)" = "$1" ] ||
		die "transport is $(status A .replication_stats.transport), not $1"
	DEV=$(status A .device)
	PIDS="$(status A .pid) $(status B .pid)"
}

# CPU seconds: of the two daemons (utime + stime), of every task in the
# guest (the run time the scheduler accounted on each CPU, in
# /proc/schedstat: precise like the per-process figures, where the tick
# samples of /proc/stat are not)
daemon_cpu() {
	local p t=0
	for p in $PIDS; do
		t=$((t + $(awk '{ print $14 + $15 }' "/proc/$p/stat")))
	done
	awk -v t=$t -v h="$HZ" 'BEGIN { printf "%.3f", t / h }'
}
guest_cpu() { awk '/^cpu/ { s += $8 } END { printf "%.3f", s / 1e9 }' /proc/schedstat; }

fio_job() {	# fio_job JOB: JSON on stdout
	local -a common=(--name="$1" --filename="$DEV" --direct=1
		--size="${SIZE_MIB}M" --time_based --runtime="$RUNTIME"
		--ioengine=libaio --output-format=json)
	case $1 in
	seqwrite) fio "${common[@]}" --rw=write --bs=1M --iodepth=8 ;;
	randwrite) fio "${common[@]}" --rw=randwrite --bs=4k --iodepth=32 \
		--randrepeat=0 ;;
	esac
}

HZ=$(getconf CLK_TCK)
declare -A R	# R[transport.job.metric] = "v1 v2 ..." over the rounds
run_all() {	# run_all TRANSPORT
	local j out d0 g0 d1 g1 bytes v gib
	for j in seqwrite randwrite; do
		d0=$(daemon_cpu) g0=$(guest_cpu)
		out=$(fio_job "$j") || die "fio $j over $1 failed"
		d1=$(daemon_cpu) g1=$(guest_cpu)
		bytes=$(jq '.jobs[0].write.io_bytes' <<<"$out")
		[ "$bytes" -gt 0 ] || die "fio $j over $1 wrote nothing"
		gib=$(awk -v b="$bytes" 'BEGIN { print b / 1073741824 }')
		case $j in
		seqwrite) v=$(jq '.jobs[0].write.bw_bytes / 1048576' <<<"$out") ;;
		randwrite) v=$(jq '.jobs[0].write.iops' <<<"$out") ;;
		esac
		R[$1.$j.perf]+="$v "
		R[$1.$j.dcpu]+="$(awk -v a="$d0" -v b="$d1" -v g="$gib" \
			'BEGIN { print (b - a) / g }') "
		R[$1.$j.gcpu]+="$(awk -v a="$g0" -v b="$g1" -v g="$gib" \
			'BEGIN { print (b - a) / g }') "
		printf '  %s %s: %.1f, daemons %.2f s/GiB, guest %.2f s/GiB\n' \
			"$1" "$j" "$v" "$(echo "${R[$1.$j.dcpu]}" | awk '{ print $NF }')" \
			"$(echo "${R[$1.$j.gcpu]}" | awk '{ print $NF }')" >&2
	done
	[ "$(status A .bitmap.dirty_bytes)" = 0 ] ||
		die "$1: the connection dropped during the run ($(status A .replication_stats.last_error))"
}

median() {
	tr ' ' '\n' | sed '/^$/d' | sort -g |
		awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2];
			else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

for ((r = 1; r <= ROUNDS; r++)); do
	for t in tcp rdma; do
		echo "== round $r/$ROUNDS: $t" >&2
		up "$t"
		run_all "$t"
	done
done
A down r0 >/dev/null 2>&1
B down r0 >/dev/null 2>&1

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
echo
echo "duet replication, protocol C, rdma (rxe) vs tcp over one veth pair;" \
	"$(uname -r), $(nproc) vCPU, $(fio --version); median of $ROUNDS" \
	"rounds x ${RUNTIME}s"
printf '%-34s %9s %9s %6s\n' metric tcp rdma ratio
for j in seqwrite randwrite; do
	case $j in
	seqwrite) name="1 MiB seqwrite QD8 (MiB/s)" ;;
	randwrite) name="4 KiB randwrite QD32 (IOPS)" ;;
	esac
	for m in perf dcpu gcpu; do
		tv=$(median <<<"${R[tcp.$j.$m]}")
		rv=$(median <<<"${R[rdma.$j.$m]}")
		case $m in
		perf) label=$name ;;
		dcpu) label="  duetd CPU s/GiB" ;;
		gcpu) label="  guest CPU s/GiB" ;;
		esac
		printf '%-34s %9.2f %9.2f %6s\n' "$label" "$tv" "$rv" \
			"$(ratio "$rv" "$tv")"
	done
done
echo "per round (tcp | rdma):"
for j in seqwrite randwrite; do
	echo "  $j: ${R[tcp.$j.perf]}| ${R[rdma.$j.perf]}"
done
rm -rf "$W"
