#!/bin/bash
# bench-device.sh — duet's ublk device against the raw disk under it.
#
#   tools/bench/bench-device.sh [--engine io_uring|libaio] [--queues N]
#       [--depth N] [--max-io SIZE] [--runtime SEC] [--rounds N] [--disk FILE]
#       [--size MIB]
#
# On the host: attaches FILE (default: a fresh zero-filled file in
# /var/tmp) to a duet-vm guest as virtio-blk (cache=none,aio=native) and
# runs itself in the guest. In the guest: the same three fio jobs on the raw
# disk (/dev/vda) and on duet's /dev/ublkbN backed by that disk:
#
#   randwrite  4 KiB random writes, QD32, libaio           -> IOPS
#   seqwrite   1 MiB sequential writes, QD8, libaio        -> MiB/s
#   syncwrite  4 KiB writes, QD1, O_SYNC (psync, --sync=1) -> clat mean/p99
#
# Both targets see the same byte range (the first SIZE MiB). Each round
# runs every job on raw, then on ublk (duetd stays up, idle during the raw
# runs); the table shows the median over the rounds and the ratios
# (ublk / raw; for latency lower is better).
set -uo pipefail

HERE=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)
TOP=$(cd "$HERE/../.." && pwd)
ENGINE=io_uring
QUEUES=2
DEPTH=		# queue-depth; empty: the daemon's default
MAX_IO=256K
ROUNDS=3
RUNTIME=10
DISK=
SIZE_MIB=512
GUEST=0

usage() {
	sed -n '2,/^[^#]/p' "$0" | sed '$d; s/^# \{0,1\}//'
	exit "${1:-0}"
}

while [ $# -gt 0 ]; do
	case $1 in
	--engine) ENGINE=${2:?}; shift ;;
	--queues) QUEUES=${2:?}; shift ;;
	--depth) DEPTH=${2:?}; shift ;;
	--max-io) MAX_IO=${2:?}; shift ;;
	--rounds) ROUNDS=${2:?}; shift ;;
	--runtime) RUNTIME=${2:?}; shift ;;
	--disk) DISK=${2:?}; shift ;;
	--size) SIZE_MIB=${2:?}; shift ;;
	--guest) GUEST=1 ;;
	-h | --help) usage 0 ;;
	*) echo "bench-device: unknown argument $1" >&2; usage 2 >&2 ;;
	esac
	shift
done

# ------------------------------------------------------------------ host
if [ "$GUEST" = 0 ]; then
	made=
	if [ -z "$DISK" ]; then
		DISK=$(mktemp /var/tmp/duet-bench.XXXXXX) || exit 1
		made=$DISK
		# real blocks, so that neither run pays for allocation
		dd if=/dev/zero of="$DISK" bs=1M count=$((SIZE_MIB + 64)) \
			oflag=direct status=none || exit 1
	fi
	trap '[ -n "$made" ] && rm -f "$made"' EXIT
	"$TOP/kernel/vm/duet-vm" run --mem 2048 --cpus 2 \
		--timeout $((ROUNDS * RUNTIME * 10 + 300)) --disk "$DISK" -- \
		bash "$HERE/bench-device.sh" --guest --engine "$ENGINE" \
		--queues "$QUEUES" ${DEPTH:+--depth "$DEPTH"} \
		--max-io "$MAX_IO" --rounds "$ROUNDS" \
		--runtime "$RUNTIME" --size "$SIZE_MIB"
	exit $?
fi

# ----------------------------------------------------------------- guest
DUETCTL=${DUET_BUILD:-$TOP/build}/duetctl
W=$(mktemp -d /tmp/bench.XXXXXX)
export DUET_CONFIG_DIR=$W/etc DUET_RUN_DIR=$W/run DUET_NODE=bench
mkdir -p "$DUET_CONFIG_DIR" "$DUET_RUN_DIR"
RAW=/dev/vda
[ -b "$RAW" ] || { echo "bench-device: no $RAW in the guest" >&2; exit 1; }
cd "$W" || exit 1

cat >"$DUET_CONFIG_DIR/bench.conf" <<EOF
resource = "bench";
protocol = "C";
secret = "duet-bench-secret";
io-engine = "$ENGINE";
queues = $QUEUES;
${DEPTH:+queue-depth = $DEPTH;}
max-io = "$MAX_IO";
nodes = (
  { name = "bench"; id = 0; address = "127.0.0.1:7789";
    disk = "$RAW"; meta-disk = "internal"; }
);
EOF

# fio JOB TARGET: one job, JSON on stdout
fio_job() {
	local job=$1 dev=$2
	local -a common=(--name="$job" --filename="$dev" --direct=1
		--size="${SIZE_MIB}M" --time_based --ramp_time=3
		--runtime="$RUNTIME" --output-format=json)
	case $job in
	randwrite)
		fio "${common[@]}" --ioengine=libaio --rw=randwrite --bs=4k \
			--iodepth=32 --randrepeat=0 ;;
	seqwrite)
		fio "${common[@]}" --ioengine=libaio --rw=write --bs=1M \
			--iodepth=8 ;;
	syncwrite)
		fio "${common[@]}" --ioengine=psync --rw=randwrite --bs=4k \
			--sync=1 --iodepth=1 --randrepeat=0 ;;
	esac
}

# metric JSON JOB: the number the table shows
metric() {
	case $2 in
	randwrite) jq '.jobs[0].write.iops' <<<"$1" ;;
	seqwrite) jq '.jobs[0].write.bw_bytes / 1048576' <<<"$1" ;;
	syncwrite) jq -r '[.jobs[0].write.clat_ns.mean / 1000,
		.jobs[0].write.clat_ns.percentile["99.000000"] / 1000] | @tsv' <<<"$1" ;;
	esac
}

declare -A R	# R[target.job] = "v1 v2 ..." over the rounds
run_all() {	# run_all TARGET DEVICE
	local j out v
	for j in randwrite seqwrite syncwrite; do
		out=$(fio_job "$j" "$2") || {
			echo "bench-device: fio $j on $2 failed" >&2
			exit 1
		}
		v=$(metric "$out" "$j")
		R[$1.$j]+="${v//$'\t'/,} "
		echo "  $1 $j: $v" >&2
	done
}

# median [FIELD] < "v v v": the median of the values (field 1 or 2 of
# comma pairs)
median() {
	tr ' ' '\n' | sed '/^$/d' | cut -d, -f"${1:-1}" | sort -g |
		awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2];
			else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

"$DUETCTL" create-md bench --force >/dev/null || exit 1
"$DUETCTL" up bench || exit 1
DEV=$("$DUETCTL" status bench --json | jq -r .device)
for ((r = 1; r <= ROUNDS; r++)); do
	echo "== round $r/$ROUNDS: raw $RAW" >&2
	run_all raw "$RAW"
	echo "== round $r/$ROUNDS: duet $DEV ($ENGINE engine) on $RAW" >&2
	run_all ublk "$DEV"
done
STATUS=$("$DUETCTL" status bench --json)
HWM=$(awk '/VmHWM/ { print $2 }' "/proc/$(jq -r .pid <<<"$STATUS")/status")
"$DUETCTL" down bench >/dev/null || exit 1

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
raw_iops=$(median <<<"${R[raw.randwrite]}")
ublk_iops=$(median <<<"${R[ublk.randwrite]}")
raw_bw=$(median <<<"${R[raw.seqwrite]}")
ublk_bw=$(median <<<"${R[ublk.seqwrite]}")
raw_mean=$(median 1 <<<"${R[raw.syncwrite]}")
ublk_mean=$(median 1 <<<"${R[ublk.syncwrite]}")
raw_p99=$(median 2 <<<"${R[raw.syncwrite]}")
ublk_p99=$(median 2 <<<"${R[ublk.syncwrite]}")

echo
echo "duet ublk ($ENGINE engine, $QUEUES queue(s), depth $(jq -r .queue_depth <<<"$STATUS"), max-io $MAX_IO) vs raw" \
	"virtio-blk; $(uname -r), $(nproc) vCPU, $(fio --version);" \
	"median of $ROUNDS rounds x ${RUNTIME}s"
printf '%-32s %10s %10s %7s %7s\n' metric raw ublk ratio target
printf '%-32s %10.0f %10.0f %7s %7s\n' "4 KiB randwrite QD32 (IOPS)" \
	"$raw_iops" "$ublk_iops" "$(ratio "$ublk_iops" "$raw_iops")" ">=1.5"
printf '%-32s %10.1f %10.1f %7s %7s\n' "1 MiB seqwrite QD8 (MiB/s)" \
	"$raw_bw" "$ublk_bw" "$(ratio "$ublk_bw" "$raw_bw")" ">=0.45"
printf '%-32s %10.0f %10.0f %7s %7s\n' "4 KiB sync write QD1 mean (us)" \
	"$raw_mean" "$ublk_mean" "$(ratio "$ublk_mean" "$raw_mean")" "<=1.6"
printf '%-32s %10.0f %10.0f %7s %7s\n' "4 KiB sync write QD1 p99 (us)" \
	"$raw_p99" "$ublk_p99" "$(ratio "$ublk_p99" "$raw_p99")" ""
echo "per round (raw | ublk):"
for j in randwrite seqwrite syncwrite; do
	echo "  $j: ${R[raw.$j]}| ${R[ublk.$j]}"
done
echo "duet counters: $(jq -c '.io' <<<"$STATUS")"
echo "duetd peak resident memory (VmHWM): $((HWM / 1024)) MiB"
rm -rf "$W"
