#!/bin/bash
# bench-repl.sh — duet's replication against the same workload unreplicated.
#
#   tools/bench/bench-repl.sh [--rounds N] [--runtime SEC] [--size MIB]
#       [--device MIB] [--resync-rate RATE] [--max-io SIZE]
#       [--dir DIR] [--peer-dir DIR] [--skip-resync]
#       [--targets LIST] [--jobs LIST]
#
# On the host (no ublk needed): two network namespaces joined by a veth
# pair, node alpha in one and beta in the other, each with a zero-filled
# backing file of --device MiB (default 4096) plus its internal metadata
# in DIR (default /var/tmp; real blocks, so no run pays for allocation).
# fio runs in the root namespace against NBD exports on unix sockets; the
# replication traffic crosses the veth link. --peer-dir puts beta's file
# elsewhere (e.g. /dev/shm: a second "disk" that alpha's writes do not
# share, as on two machines; default: DIR too). Every round runs, in order:
#
#   raw      fio on alpha's backing file itself (O_DIRECT, libaio/psync)
#   nbdkit   nbdkit's file plugin (cache=none) serving that file
#   solo     duetd, a standalone resource on that file, its NBD export
#   replA    the alpha/beta pair, protocol A, through alpha's NBD export
#   replC    the same with protocol C
#
# each with three jobs confined to the first --size MiB (default 1024):
#
#   randwrite  4 KiB random writes, QD32                  -> IOPS
#   seqwrite   1 MiB sequential writes, QD8                -> MiB/s
#   syncwrite  4 KiB random writes, QD1, each followed by a flush
#              (raw: fdatasync; NBD: NBD_CMD_FLUSH)        -> mean/p99 us
#
# then:
#
#   link     fio's net engine, alpha -> beta over the veth: TCP MiB/s
#   both     without replication, what a replicated sequential write
#            needs, at once: the seqwrite job on the solo export, the
#            link, and the raw job on beta's file, all capped at one
#            rate; the highest rate that all three keep (searched from
#            min(raw disk, link) down). On one host they share the CPUs
#            (and, without --peer-dir, the disk).
#   copy     dd of alpha's data area (the device's size) over the same
#            link into beta's file, ending with fdatasync (conv=fdatasync)
#   resync   a fresh pair, `primary --force` on alpha: the full initial
#            sync of the device, timed from the command to beta UpToDate
#
# --targets (default "raw nbdkit solo replA replC link both resync") and --jobs
# (default "randwrite seqwrite syncwrite") run a subset, for quick
# comparisons; "resync" includes both copies. The table then shows only
# what ran (ratios whose terms did not run read 0).
#
# Every fio job (and the link) also gets the whole machine's busy CPU
# time per unit of work (/proc/stat over the job, all processes and the
# kernel): us per I/O, ms per MiB. On a host where both nodes and fio
# share the CPUs, that tells what a job costs, which IOPS alone do not.
#
# Page cache of both files is dropped before the copy and the resync.
# DUET_BUILD selects the directory of duetctl and duetd (default build/);
# copy them aside to keep a rebuild from changing them mid-run.
# The table is the median over the rounds; ratios are against the
# issue's targets. Each daemon's peak resident memory (VmHWM) is read
# before it stops and compared with 64 MiB + its bitmap. Per-job
# progress lines (stderr) also name each daemon's busiest threads and
# their share of one CPU, to see which one limits.

# "a && b || die" is meant; the perl and bash -c programs are quoted on
# purpose
# shellcheck disable=SC2015,SC2016
set -uo pipefail

HERE=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)
TOP=$(cd "$HERE/../.." && pwd)
BUILD=${DUET_BUILD:-$TOP/build}
DUETCTL=$BUILD/duetctl
ROUNDS=3
RUNTIME=10
SIZE_MIB=1024
DEV_MIB=4096
RESYNC_RATE=10G
MAX_IO=
DIR=/var/tmp
PEER_DIR=
SKIP_RESYNC=0
TARGETS="raw nbdkit solo replA replC link both resync"
JOBS="randwrite seqwrite syncwrite"

usage() {
	sed -n '2,/^$/p' "$0" | sed '$d; s/^# \{0,1\}//'
	exit "${1:-0}"
}

while [ $# -gt 0 ]; do
	case $1 in
	--rounds) ROUNDS=${2:?}; shift ;;
	--runtime) RUNTIME=${2:?}; shift ;;
	--size) SIZE_MIB=${2:?}; shift ;;
	--device) DEV_MIB=${2:?}; shift ;;
	--resync-rate) RESYNC_RATE=${2:?}; shift ;;
	--max-io) MAX_IO=${2:?}; shift ;;
	--dir) DIR=${2:?}; shift ;;
	--peer-dir) PEER_DIR=${2:?}; shift ;;
	--targets) TARGETS=${2:?}; shift ;;
	--jobs) JOBS=${2:?}; shift ;;
	--skip-resync) SKIP_RESYNC=1 ;;
	-h | --help) usage 0 ;;
	*) echo "bench-repl: unknown argument $1" >&2; usage 2 >&2 ;;
	esac
	shift
done

die() {
	echo "bench-repl: $*" >&2
	exit 1
}

for v in ROUNDS RUNTIME SIZE_MIB DEV_MIB; do
	[[ "${!v}" =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer, got '${!v}'"
done
[ "$SIZE_MIB" -le "$DEV_MIB" ] || die "--size ($SIZE_MIB) exceeds --device ($DEV_MIB)"
[[ "$RESYNC_RATE" =~ ^[0-9]+[KMGkmg]?$ ]] || die "--resync-rate: a size like 10G, got '$RESYNC_RATE'"
[ -z "$MAX_IO" ] || [[ "$MAX_IO" =~ ^[0-9]+[KMkm]?$ ]] || die "--max-io: a size like 512K, got '$MAX_IO'"
for v in $TARGETS; do
	case $v in
	raw | nbdkit | solo | replA | replC | link | both | resync) ;;
	*) die "--targets: unknown target '$v' (raw nbdkit solo replA replC link both resync)" ;;
	esac
done
for v in $JOBS; do
	case $v in
	randwrite | seqwrite | syncwrite) ;;
	*) die "--jobs: unknown job '$v' (randwrite seqwrite syncwrite)" ;;
	esac
done
[ "$(id -u)" -eq 0 ] || die "needs root (network namespaces)"
[ -x "$DUETCTL" ] || die "$DUETCTL not built (run make)"
for c in fio jq nbdkit ip perl dd ss; do
	command -v "$c" >/dev/null || die "$c is not installed (tools/deps.sh)"
done
[ -d "$DIR" ] || die "$DIR is not a directory"
[ -z "$PEER_DIR" ] || [ -d "$PEER_DIR" ] || die "$PEER_DIR is not a directory"

# ------------------------------------------------------------------ setup
W=$(mktemp -d "$DIR/duet-bench-repl.XXXXXX") || exit 1
PW=$W
if [ -n "$PEER_DIR" ]; then
	PW=$(mktemp -d "$PEER_DIR/duet-bench-repl.XXXXXX") || exit 1
fi
BETA_IMG=$PW/beta.img
NSA=duetbr-a-$$
NSB=duetbr-b-$$
VA=dbr$$a
VB=dbr$$b
IPA=10.213.0.1
IPB=10.213.0.2
PORT=7789
LINK_PORT=5201
COPY_PORT=5202
export DUET_CONFIG_DIR=$W/etc
mkdir -p "$W/etc" "$W/ra" "$W/rb" "$W/nk" || exit 1
A() { "$DUETCTL" --node alpha --run-dir "$W/ra" "$@"; }
B() { "$DUETCTL" --node beta --run-dir "$W/rb" "$@"; }
INA() { ip netns exec "$NSA" "$@"; }
INB() { ip netns exec "$NSB" "$@"; }
NBDKIT_PID=

cleanup() {
	local n
	trap - EXIT
	for n in solo rA rC rS; do
		[ -f "$W/etc/$n.conf" ] || continue
		down_node A "$n"
		down_node B "$n"
	done
	[ -n "$NBDKIT_PID" ] && kill "$NBDKIT_PID" 2>/dev/null
	ip netns pids "$NSA" 2>/dev/null | xargs -r kill 2>/dev/null
	ip netns pids "$NSB" 2>/dev/null | xargs -r kill 2>/dev/null
	sleep 0.2
	ip netns del "$NSA" 2>/dev/null
	ip netns del "$NSB" 2>/dev/null
	rm -rf "$W" "$PW"
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

ip netns add "$NSA" && ip netns add "$NSB" || die "cannot create namespaces"
ip link add "$VA" type veth peer name "$VB" || die "cannot create the veth pair"
ip link set "$VA" netns "$NSA" && ip link set "$VB" netns "$NSB" &&
	ip -n "$NSA" addr add "$IPA/24" dev "$VA" &&
	ip -n "$NSB" addr add "$IPB/24" dev "$VB" &&
	ip -n "$NSA" link set lo up && ip -n "$NSB" link set lo up &&
	ip -n "$NSA" link set "$VA" up && ip -n "$NSB" link set "$VB" up ||
	die "cannot configure the veth link"

# Backing files: the device plus 1 MiB for internal metadata (152 KiB for
# 4 GiB at 4 KiB granularity), zero-filled so that the blocks exist.
echo "== preallocating 2 x $((DEV_MIB + 1)) MiB in $W and $PW" >&2
for f in "$W/alpha.img" "$BETA_IMG"; do
	dd if=/dev/zero of="$f" bs=1M count=$((DEV_MIB + 1)) \
		oflag=direct conv=fsync status=none || die "cannot write $f"
done

# resource NAME PROTOCOL [standalone]
resource() {
	local name=$1 proto=$2 solo=${3:-}
	{
		echo "resource = \"$name\";"
		echo "protocol = \"$proto\";"
		echo "secret = \"duet-bench-repl-secret\";"
		echo "resync-rate = \"$RESYNC_RATE\";"
		[ -z "$MAX_IO" ] || echo "max-io = \"$MAX_IO\";"
		echo "nodes = ("
		echo "  { name = \"alpha\"; id = 0; address = \"$IPA:$PORT\";"
		echo "    disk = \"$W/alpha.img\"; meta-disk = \"internal\";"
		echo "    nbd-listen = \"unix:$W/$name.nbd\"; }"
		if [ -z "$solo" ]; then
			echo "  , { name = \"beta\"; id = 1; address = \"$IPB:$PORT\";"
			echo "    disk = \"$BETA_IMG\"; meta-disk = \"internal\";"
			# NBD-only on a host without ublk: beta needs an export too
			echo "    nbd-listen = \"unix:$W/$name-b.nbd\"; }"
		fi
		echo ");"
	} >"$W/etc/$name.conf"
}
resource solo C standalone
resource rA A
resource rC C
resource rS C

field() {	# field NODE RES JQ (a status that fails is asked again, twice)
	local i out
	for i in 1 2 3; do
		out=$("$1" status "$2" --json 2>/dev/null) && [ -n "$out" ] &&
			break
		sleep 0.2
	done
	[ -n "$out" ] && jq -r "$3" <<<"$out" 2>/dev/null
}

# wait_for SECONDS CMD...: poll every 0.1 s
wait_for() {
	local secs=$1 i
	shift
	for ((i = 0; i < secs * 10; i++)); do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	return 1
}

is_connected() { [ "$(field A "$1" .connection)" = Connected ]; }
is_synced() {
	[ "$(field A "$1" .state)" = \
		"Primary/Secondary UpToDate/UpToDate Connected Established" ]
}

declare -A HWM	# HWM[role] = the highest VmHWM (KiB) seen for that role
declare -A PIDS	# PIDS[node] = duetd pid while up

vmhwm() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null; }

note_hwm() {	# note_hwm ROLE PID
	local v
	v=$(vmhwm "$2")
	[ -n "$v" ] || return 0
	[ "${HWM[$1]:-0}" -ge "$v" ] || HWM[$1]=$v
}

down_node() {	# down_node A|B RES: stop it, by duetctl, else its pid
	local pid
	pid=$(field "$1" "$2" .pid)
	[ -n "$pid" ] && [ "$pid" != null ] || return 0
	"$1" down "$2" >/dev/null 2>&1 && return 0
	kill "$pid" 2>/dev/null
}

# up_pair RES: a fresh pair (new metadata on both), connected.
up_pair() {
	local res=$1
	A create-md "$res" --force >/dev/null &&
		B create-md "$res" --force >/dev/null || die "create-md $res"
	INA "$DUETCTL" --node alpha --run-dir "$W/ra" up "$res" >/dev/null ||
		die "alpha: up $res"
	INB "$DUETCTL" --node beta --run-dir "$W/rb" up "$res" >/dev/null ||
		die "beta: up $res"
	PIDS[A]=$(field A "$res" .pid)
	PIDS[B]=$(field B "$res" .pid)
	wait_for 20 is_connected "$res" ||
		die "$res: no connection: $(field A "$res" .replication_stats.last_error)"
}

down_pair() {	# down_pair RES HWM-PREFIX
	note_hwm "$2.alpha" "${PIDS[A]}"
	note_hwm "$2.beta" "${PIDS[B]}"
	A down "$1" >/dev/null || die "alpha: down $1"
	B down "$1" >/dev/null || die "beta: down $1"
	PIDS=()
}

# ------------------------------------------------------------ CPU by thread
# cpu_snap PID...: "pid tid ticks" for every thread, and "pid all ticks"
# for the process (which keeps the time of threads that have exited)
cpu_snap() {
	local p t
	for p; do
		awk -v p="$p" '{ sub(/.*\) /, ""); print p, "all", $12 + $13 }' \
			"/proc/$p/stat" 2>/dev/null
		for t in /proc/"$p"/task/*; do
			# fields after the ")" of comm: utime is 12th, stime 13th
			awk -v p="$p" -v t="$(cat "$t/comm" 2>/dev/null)/${t##*/}" \
				'{ sub(/.*\) /, ""); print p, t, $12 + $13 }' \
				"$t/stat" 2>/dev/null
		done
	done
}

# cpu_top SECONDS LABEL=PID... < "before" snapshot; prints, per process,
# its total and its three busiest threads in % of one CPU
cpu_top() {
	local secs=$1 hz
	shift
	hz=$(getconf CLK_TCK)
	local -a pids=() labels=()
	local kv
	for kv; do
		labels+=("${kv%%=*}")
		pids+=("${kv#*=}")
	done
	awk -v secs="$secs" -v hz="$hz" -v labels="${labels[*]}" -v pids="${pids[*]}" '
		NR == FNR { b[$1 " " $2] = $3; next }
		$2 == "all" { tot[$1] = $3 - b[$1 " all"]; next }
		{ th[$1, $2] = $3 - b[$1 " " $2] }
		END {
			n = split(labels, L, " "); split(pids, P, " ")
			for (i = 1; i <= n; i++) {
				s = sprintf("%s %.0f%% (", L[i], 100 * tot[P[i]] / hz / secs)
				# three busiest threads, by tid
				for (k = 0; k < 3; k++) {
					best = ""; bv = -1
					for (key in th) {
						split(key, kk, SUBSEP)
						if (kk[1] != P[i] || (key in used)) continue
						if (th[key] > bv) { bv = th[key]; best = key }
					}
					if (best == "" || bv <= 0) break
					used[best] = 1; split(best, kk, SUBSEP)
					s = s sprintf("%s%s:%.0f%%", k ? " " : "", kk[2],
						100 * bv / hz / secs)
				}
				printf "%s) ", s
			}
		}' /dev/stdin <(cpu_snap "${pids[@]}")
}

# busy_snap: "busy total" jiffies of the whole machine, and the time (ns)
busy_snap() {
	awk '/^cpu / { b = $2 + $3 + $4 + $7 + $8 + $9; print b, b + $5 + $6 }' /proc/stat
	date +%s%N
}

# busy_cpus BEFORE: how many of the machine's CPUs were busy, on average,
# since BEFORE (the output of busy_snap)
busy_cpus() {
	local -a a b
	mapfile -t a <<<"$1"
	mapfile -t b < <(busy_snap)
	awk -v db=$((${b[0]%% *} - ${a[0]%% *})) -v dt=$((b[1] - a[1])) \
		-v hz="$(getconf CLK_TCK)" \
		'BEGIN { printf "%.3f", (dt > 0 ? db / hz / (dt / 1e9) : 0) }'
}

# ------------------------------------------------------------------- fio
# fio_job JOB TARGET: one job on TARGET ("raw" = the file, else an NBD
# URI), JSON on stdout
fio_job() {
	local job=$1 tgt=$2
	local -a common=(--name="$job" --size="${SIZE_MIB}M" --time_based
		--ramp_time=2 --runtime="$RUNTIME" --output-format=json
		--lat_percentiles=1 --randrepeat=0)
	local -a eng
	if [ "$tgt" = raw ]; then
		eng=(--filename="$W/alpha.img" --direct=1)
		case $job in
		syncwrite) eng+=(--ioengine=psync --fdatasync=1) ;;
		*) eng+=(--ioengine=libaio) ;;
		esac
	else
		# fio's nbd engine has no DDIR_DATASYNC: --fsync sends
		# NBD_CMD_FLUSH after every write
		eng=(--ioengine=nbd --uri="$tgt")
		[ "$job" = syncwrite ] && eng+=(--fsync=1)
	fi
	case $job in
	randwrite)
		fio "${common[@]}" "${eng[@]}" --rw=randwrite --bs=4k --iodepth=32 ;;
	seqwrite)
		fio "${common[@]}" "${eng[@]}" --rw=write --bs=1M --iodepth=8 ;;
	syncwrite)
		fio "${common[@]}" "${eng[@]}" --rw=randwrite --bs=4k --iodepth=1 ;;
	esac | sed -n '/^{/,$p'	# the nbd engine prints a line before the JSON
}

# metric JSON JOB: the number(s) the table shows. A sync write's latency
# is the write's plus the flush's (fio reports them apart): the mean
# exactly, the p99 as the sum of the two p99s (an upper bound).
metric() {
	case $2 in
	randwrite) jq '.jobs[0].write.iops' <<<"$1" ;;
	seqwrite) jq '.jobs[0].write.bw_bytes / 1048576' <<<"$1" ;;
	syncwrite) jq -r '.jobs[0] | [(.write.lat_ns.mean + .sync.lat_ns.mean) / 1000,
		(.write.lat_ns.percentile["99.000000"] +
		 .sync.lat_ns.percentile["99.000000"]) / 1000] | @tsv' <<<"$1" ;;
	esac
}

declare -A R	# R[target.metric] = "v1 v2 ..." over the rounds

add() { R[$1]+="$2 "; }
last() { local v=${R[$1]:-}; v=${v% }; echo "${v##* }"; }

# cost OUT JOB CPUS: the whole machine's CPU time per unit of work, for
# the table: us per I/O (randwrite, syncwrite) or ms per MiB (seqwrite)
cost() {
	case $2 in
	seqwrite) jq --argjson c "$3" '1000 * $c / (.jobs[0].write.bw_bytes / 1048576)' <<<"$1" ;;
	*) jq --argjson c "$3" '1e6 * $c / .jobs[0].write.iops' <<<"$1" ;;
	esac
}

# run_jobs TARGET URI|raw LABEL=PID...: the three jobs
run_jobs() {
	local t=$1 uri=$2 j out v snap fcpu bsnap cpus c
	shift 2
	for j in $JOBS; do
		snap=$(cpu_snap "${@#*=}")
		bsnap=$(busy_snap)
		out=$(fio_job "$j" "$uri") && v=$(metric "$out" "$j") &&
			[ -n "$v" ] || die "fio $j on $t failed: $out"
		cpus=$(busy_cpus "$bsnap")
		c=$(cost "$out" "$j" "$cpus")
		fcpu=$(jq -r '.jobs[0] | "\(.usr_cpu + .sys_cpu | floor)%"' <<<"$out")
		add "$t.$j" "${v//$'\t'/,}"
		add "$t.$j.cpu" "$c"
		printf '  %-6s %-9s %-20s busy %.2f CPUs, %.1f %s; fio %s' "$t" "$j" \
			"${v//$'\t'/ }" "$cpus" "$c" \
			"$([ "$j" = seqwrite ] && echo ms/MiB || echo us/IO)" "$fcpu" >&2
		[ $# -eq 0 ] || printf '; %s' \
			"$(cpu_top $((RUNTIME + 2)) "$@" <<<"$snap")" >&2
		echo >&2
	done
}

# -------------------------------------------------------------- targets
t_raw() { run_jobs raw raw; }

t_nbdkit() {
	local s=$W/nk/file.sock
	rm -f "$s" "$W/nk/pid"
	nbdkit -U "$s" -P "$W/nk/pid" file file="$W/alpha.img" cache=none ||
		die "nbdkit did not start"
	wait_for 10 test -s "$W/nk/pid" || die "nbdkit wrote no pid file"
	NBDKIT_PID=$(cat "$W/nk/pid")
	run_jobs nbdkit "nbd+unix:///?socket=$s" "nbdkit=$NBDKIT_PID"
	kill "$NBDKIT_PID"
	wait_for 10 eval '! kill -0 '"$NBDKIT_PID" || die "nbdkit did not stop"
	NBDKIT_PID=
}

t_solo() {
	local pid
	A create-md solo --force >/dev/null || die "create-md solo"
	A up solo >/dev/null || die "up solo"
	pid=$(field A solo .pid)
	run_jobs solo "nbd+unix:///solo?socket=$W/solo.nbd" "duetd=$pid"
	note_hwm solo "$pid"
	A down solo >/dev/null || die "down solo"
}

t_repl() {	# t_repl A|C
	local res=r$1 na
	up_pair "$res"
	# no initial sync: the disks differ (fio wrote alpha's alone), which
	# does not matter to a write benchmark
	A new-current-uuid "$res" --clear-bitmap >/dev/null ||
		die "$res: new-current-uuid --clear-bitmap"
	A primary "$res" >/dev/null || die "$res: primary"
	wait_for 20 is_synced "$res" || die "$res: not in sync: $(field A "$res" .state)"
	run_jobs "repl$1" "nbd+unix:///$res?socket=$W/$res.nbd" \
		"alpha=${PIDS[A]}" "beta=${PIDS[B]}"
	na=$(field A "$res" .replication_stats.not_acked)
	[ -n "$na" ] || die "$res: alpha does not answer: $(tail -5 "$W/ra/$res.log")"
	[ "$na" = 0 ] || die "$res: $na writes not acknowledged by the peer"
	down_pair "$res" "$res"
}

# link_rx OUT: fio's net engine receiving in beta's namespace (JSON into
# OUT), listening when this returns; its pid in LINK_RX
link_rx() {
	INB fio --name=rx --ioengine=net --protocol=tcp --listen \
		--port="$LINK_PORT" --rw=read --bs=1M --size=1000G \
		--output-format=json >"$1" 2>&1 &
	LINK_RX=$!
	wait_for 10 eval "INB ss -Htln 'sport = :$LINK_PORT' | grep -q ." ||
		die "the link receiver is not listening"
}

# Raw TCP over the veth: fio's net engine, a receiver in beta's namespace
t_link() {
	local out v bsnap cpus c
	local rx
	link_rx "$W/link-rx.json"
	rx=$LINK_RX
	bsnap=$(busy_snap)
	out=$(INA fio --name=tx --ioengine=net --protocol=tcp \
		--hostname="$IPB" --port="$LINK_PORT" --rw=write --bs=1M \
		--size=1000G --time_based --runtime="$RUNTIME" --ramp_time=1 \
		--output-format=json) || die "link sender failed: $out"
	cpus=$(busy_cpus "$bsnap")
	wait "$rx"
	v=$(jq '.jobs[0].write.bw_bytes / 1048576' <<<"$out")
	c=$(cost "$out" seqwrite "$cpus")
	add link.bw "$v"
	add link.cpu "$c"
	printf '  %-6s %-9s %s MiB/s, busy %.2f CPUs, %.2f ms/MiB\n' link tcp \
		"$v" "$cpus" "$c" >&2
}

# both_disk TARGET RATE OUT: the seqwrite job on TARGET (a file, O_DIRECT,
# or an NBD URI), capped at RATE MiB/s, JSON into OUT
both_disk() {
	local -a eng=(--ioengine=nbd --uri="$1")
	[[ "$1" == /* ]] && eng=(--filename="$1" --direct=1 --ioengine=libaio)
	fio --name=d "${eng[@]}" --rw=write --bs=1M --iodepth=8 \
		--size="${SIZE_MIB}M" --time_based --runtime="$RUNTIME" \
		--ramp_time=2 --rate="$2m" --output-format=json >"$3" 2>&1
}

bw_of() {	# bw_of JSONFILE: MiB/s written
	sed -n '/^{/,$p' "$1" | jq '.jobs[0].write.bw_bytes / 1048576'
}

# t_both: what this host can do at once of what a replicated sequential
# write through the NBD export needs, without replication: the seqwrite
# job on duet's unreplicated export of alpha's file (as t_solo), the link
# (as t_link) and the raw seqwrite job on beta's file, three fio runs at
# the same time, each capped at the same rate. At most six steps from
# min(raw disk, link) of this round: until a rate is kept (all three
# reach 97% of it), each step goes down to 93% of the last rate or, if
# lower, to what the slowest of the three managed; after that, halfway
# between the highest rate kept and the lowest not kept, until they are
# within 5% of the start. The figure is the highest rate kept (if none
# was, what the slowest managed in the last step).
t_both() {
	local disk link r0 r step rx pl pa pb va vl vb ok v bsnap cpus
	local lo=0 hi slow
	disk=$(last raw.seqwrite) link=$(last link.bw)
	if [ -z "$disk" ] || [ -z "$link" ]; then
		printf '  %-6s skipped: needs raw (seqwrite) and link in the same round\n' both >&2
		return
	fi
	A create-md solo --force >/dev/null || die "create-md solo"
	A up solo >/dev/null || die "up solo"
	r0=$(awk -v a="$disk" -v b="$link" 'BEGIN { printf "%d", (a < b ? a : b) }')
	r=$r0 hi=$r0
	for ((step = 0; step < 6; step++)); do
		link_rx "$W/both-rx.json"
		rx=$LINK_RX
		bsnap=$(busy_snap)
		INA fio --name=tx --ioengine=net --protocol=tcp \
			--hostname="$IPB" --port="$LINK_PORT" --rw=write --bs=1M \
			--size=1000G --time_based --runtime="$RUNTIME" \
			--ramp_time=2 --rate="${r}m" --output-format=json \
			>"$W/both-link.json" 2>&1 &
		pl=$!
		both_disk "nbd+unix:///solo?socket=$W/solo.nbd" "$r" \
			"$W/both-alpha.json" &
		pa=$!
		both_disk "$BETA_IMG" "$r" "$W/both-beta.json" &
		pb=$!
		wait "$pl" && wait "$pa" && wait "$pb" ||
			die "a fio run of the at-once measurement failed: $(tail -3 "$W"/both-*.json)"
		cpus=$(busy_cpus "$bsnap")
		wait "$rx"
		va=$(bw_of "$W/both-alpha.json") && vl=$(bw_of "$W/both-link.json") &&
			vb=$(bw_of "$W/both-beta.json") &&
			[ -n "$va" ] && [ -n "$vl" ] && [ -n "$vb" ] ||
			die "no figure from the at-once runs"
		ok=$(awk -v r="$r" -v a="$va" -v b="$vl" -v c="$vb" \
			'BEGIN { print (a >= .97 * r && b >= .97 * r && c >= .97 * r) }')
		printf '  %-6s %-9s capped at %d MiB/s: solo %.0f, link %.0f, beta file %.0f; busy %.2f CPUs%s\n' \
			both at-once "$r" "$va" "$vl" "$vb" "$cpus" \
			"$([ "$ok" = 1 ] && echo ', all kept the rate')" >&2
		slow=$(awk -v a="$va" -v b="$vl" -v c="$vb" \
			'BEGIN { m = a < b ? a : b; print (m < c ? m : c) }')
		if [ "$ok" = 1 ]; then
			lo=$r
		else
			hi=$r
		fi
		if [ "$lo" -gt 0 ]; then
			[ $((hi - lo)) -lt $((r0 / 20)) ] && break
			r=$(((lo + hi) / 2))
		else
			r=$(awk -v r="$r" -v m="$slow" \
				'BEGIN { n = .93 * r; printf "%d", (m < n ? m : n) }')
		fi
		[ "$r" -ge 1 ] || break
	done
	A down solo >/dev/null || die "down solo"
	if [ "$lo" -gt 0 ]; then
		v=$lo
	else
		v=$slow
	fi
	add both.bw "$v"
}

drop_cache() {	# drop_cache FILE...: write back, then evict its pages
	local f
	for f; do
		dd of="$f" oflag=nocache conv=notrunc,fdatasync count=0 \
			status=none && dd if="$f" iflag=nocache count=0 status=none ||
			die "cannot drop the cache of $f"
	done
}

# t_copy KEY BYTES [direct]: dd of alpha's data area over the link into
# beta's file: the same bytes a full resync moves, durable at the end
# (conv=fdatasync). Through the page cache, or with O_DIRECT at both ends.
t_copy() {
	local key=$1 bytes=$2 t0 t1 v rx iflag=count_bytes oflag=
	[ "${3:-}" = direct ] && iflag+=,direct oflag=oflag=direct
	drop_cache "$W/alpha.img" "$BETA_IMG"
	INB perl -MIO::Socket::INET -e '
		my $l = IO::Socket::INET->new(LocalAddr => $ARGV[0],
			LocalPort => $ARGV[1], Listen => 1, ReuseAddr => 1)
			or die "listen: $!";
		my $c = $l->accept or die "accept: $!";
		my ($buf, $n);
		while (($n = sysread($c, $buf, 1 << 20)) > 0) {
			my $off = 0;
			while ($off < $n) {
				my $w = syswrite(STDOUT, $buf, $n - $off, $off);
				die "write: $!" unless defined $w;
				$off += $w;
			}
		}
		die "read: $!" unless defined $n;' "$IPB" "$COPY_PORT" |
		INB dd of="$BETA_IMG" bs=1M iflag=fullblock $oflag \
			conv=notrunc,fdatasync status=none &
	rx=$!
	wait_for 10 eval "INB ss -Htln 'sport = :$COPY_PORT' | grep -q ." ||
		die "the copy receiver is not listening"
	t0=$(date +%s%N)
	INA bash -c 'dd if="$1" bs=1M iflag="$5" count="$2" status=none \
		>/dev/tcp/"$3"/"$4"' - "$W/alpha.img" "$bytes" "$IPB" \
		"$COPY_PORT" "$iflag" ||
		die "the copy sender failed"
	wait "$rx" || die "the copy receiver failed"
	t1=$(date +%s%N)
	v=$(awk -v b="$bytes" -v ns=$((t1 - t0)) 'BEGIN { printf "%.1f", b / 1048576 / (ns / 1e9) }')
	add "$key.bw" "$v"
	printf '  %-6s %-9s %s MiB/s (%d bytes in %.1f s)\n' "$key" dd "$v" "$bytes" \
		"$(awk -v ns=$((t1 - t0)) 'BEGIN { print ns / 1e9 }')" >&2
}

t_resync() {
	local bytes t0 t1 v snap secs log
	drop_cache "$W/alpha.img" "$BETA_IMG"
	up_pair rS
	bytes=$(field A rS .data_bytes)
	snap=$(cpu_snap "${PIDS[A]}" "${PIDS[B]}")
	t0=$(date +%s%N)
	A primary rS --force >/dev/null || die "rS: primary --force"
	wait_for 1200 is_synced rS || die "rS: the resync did not end: $(field A rS .state)"
	t1=$(date +%s%N)
	secs=$(awk -v ns=$((t1 - t0)) 'BEGIN { printf "%.1f", ns / 1e9 }')
	log=$(grep 'resync to beta done' "$W/ra/rS.log" 2>/dev/null | tail -1)
	case $log in
	*"done: $bytes bytes"*) ;;
	*) die "rS: the resync did not report $bytes bytes: ${log:-no log line}" ;;
	esac
	v=$(awk -v b="$bytes" -v ns=$((t1 - t0)) 'BEGIN { printf "%.1f", b / 1048576 / (ns / 1e9) }')
	add resync.bw "$v"
	printf '  %-6s %-9s %s MiB/s (%d bytes in %s s); %s\n' resync full "$v" \
		"$bytes" "$secs" "$(cpu_top "$secs" "alpha=${PIDS[A]}" \
		"beta=${PIDS[B]}" <<<"$snap")" >&2
	down_pair rS rS
	# the next round's resync starts again from a fresh pair
	: >"$W/ra/rS.log"
}

# ---------------------------------------------------------------- rounds
want() { [[ " $TARGETS " == *" $1 "* ]]; }

DATA_BYTES=
for ((r = 1; r <= ROUNDS; r++)); do
	echo "== round $r/$ROUNDS" >&2
	want raw && t_raw
	want nbdkit && t_nbdkit
	want solo && t_solo
	want replA && t_repl A
	want replC && t_repl C
	want link && t_link
	want both && t_both
	if [ "$SKIP_RESYNC" = 0 ] && want resync; then
		if [ -z "$DATA_BYTES" ]; then
			A create-md rS --force >/dev/null || die "create-md rS"
			DATA_BYTES=$("$DUETCTL" --node alpha dump-md rS --json |
				jq .superblock.data_bytes)
		fi
		t_copy copy "$DATA_BYTES"
		t_copy copyd "$DATA_BYTES" direct
		t_resync
	fi
done

# ---------------------------------------------------------------- table
# median [FIELD] < "v v v": field 1 or 2 of comma pairs
median() {
	tr ' ' '\n' | sed '/^$/d' | cut -d, -f"${1:-1}" | sort -g |
		awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2];
			else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
med() { median "${2:-1}" <<<"${R[$1]:-}"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
min() { awk -v a="$1" -v b="$2" 'BEGIN { print (a < b ? a : b) }'; }

echo
echo "duet replication over a veth pair between two network namespaces;" \
	"$(uname -r), $(nproc) CPUs, $(fio --version), nbdkit" \
	"$(nbdkit --version | cut -d' ' -f2); median of $ROUNDS rounds x" \
	"${RUNTIME}s; fio region ${SIZE_MIB} MiB; max-io ${MAX_IO:-default};" \
	"resync-rate $RESYNC_RATE; alpha's file in $DIR, beta's in" \
	"${PEER_DIR:-$DIR}"
echo
printf '| %-30s |' metric
for t in raw nbdkit solo replA replC; do printf ' %9s |' "$t"; done
echo
printf '| %-30s |' ---
for t in raw nbdkit solo replA replC; do printf ' %9s |' ---:; done
echo
row() {	# row LABEL JOB FIELD FORMAT
	printf '| %-30s |' "$1"
	for t in raw nbdkit solo replA replC; do
		# shellcheck disable=SC2059
		printf " $4 |" "$(med "$t.$2" "$3")"
	done
	echo
}
row "4 KiB randwrite QD32 (IOPS)" randwrite 1 '%9.0f'
row "  machine CPU per I/O (us)" randwrite.cpu 1 '%9.1f'
row "1 MiB seqwrite QD8 (MiB/s)" seqwrite 1 '%9.1f'
row "  machine CPU per MiB (ms)" seqwrite.cpu 1 '%9.2f'
row "4 KiB write+flush QD1 mean (us)" syncwrite 1 '%9.0f'
row "4 KiB write+flush QD1 p99 (us)" syncwrite 2 '%9.0f'

link=$(med link.bw)
raw_bw=$(med raw.seqwrite)
echo
echo "| target | measured | reference | ratio | goal |"
echo "| --- | ---: | ---: | ---: | ---: |"
ref=$(min "$raw_bw" "$link")
for p in A C; do
	v=$(med "repl$p.seqwrite")
	printf '| seqwrite, protocol %s vs min(raw disk %.0f, link %.0f) MiB/s | %.1f | %.1f | **%s** | >= 0.9 |\n' \
		"$p" "$raw_bw" "$link" "$v" "$ref" "$(ratio "$v" "$ref")"
done
printf '| the link alone, machine CPU per MiB (ms) | %.2f | | | |\n' "$(med link.cpu)"
both=$(med both.bw)
if [ -n "${R[both.bw]:-}" ]; then
	printf '| solo export, link and beta'"'"'s file at once: highest common rate vs min(raw disk, link) (MiB/s) | %.0f | %.1f | %s | |\n' \
		"$both" "$ref" "$(ratio "$both" "$ref")"
	for p in A C; do
		v=$(med "repl$p.seqwrite")
		printf '| seqwrite, protocol %s vs the same at once (MiB/s) | %.1f | %.0f | %s | |\n' \
			"$p" "$v" "$both" "$(ratio "$v" "$both")"
	done
fi
v=$(med replC.randwrite)
s=$(med solo.randwrite)
printf '| randwrite QD32 IOPS, protocol C vs solo | %.0f | %.0f | **%s** | >= 0.7 |\n' \
	"$v" "$s" "$(ratio "$v" "$s")"
v=$(med replA.randwrite)
printf '| randwrite QD32 IOPS, protocol A vs solo | %.0f | %.0f | %s | |\n' \
	"$v" "$s" "$(ratio "$v" "$s")"
for p in A C; do
	v=$(med "repl$p.syncwrite")
	s=$(med solo.syncwrite)
	printf '| write+flush mean us, protocol %s vs solo | %.0f | %.0f | %s | |\n' \
		"$p" "$v" "$s" "$(ratio "$v" "$s")"
done
if [ "$SKIP_RESYNC" = 0 ] && want resync; then
	v=$(med resync.bw)
	c=$(med copy.bw)
	d=$(med copyd.bw)
	printf '| full resync of %d bytes vs dd over the link, page cache (MiB/s) | %.1f | %.1f | %s | |\n' \
		"$DATA_BYTES" "$v" "$c" "$(ratio "$v" "$c")"
	printf '| full resync of %d bytes vs dd over the link, O_DIRECT (MiB/s) | %.1f | %.1f | %s | |\n' \
		"$DATA_BYTES" "$v" "$d" "$(ratio "$v" "$d")"
	m=$(awk -v a="$c" -v b="$d" 'BEGIN { print (a > b ? a : b) }')
	printf '| full resync vs the faster dd | %.1f | %.1f | **%s** | >= 0.9 |\n' \
		"$v" "$m" "$(ratio "$v" "$m")"
fi

# peak RSS: 64 MiB + the bitmap (1 bit per 4 KiB granule of the device)
bm_kib=$(((DATA_BYTES > 0 ? DATA_BYTES : DEV_MIB << 20) / 4096 / 8 / 1024))
budget=$((65536 + bm_kib))
echo
echo "| daemon | peak RSS (VmHWM) | budget 64 MiB + ${bm_kib} KiB bitmap | |"
echo "| --- | ---: | ---: | --- |"
for k in solo rA.alpha rA.beta rC.alpha rC.beta rS.alpha rS.beta; do
	[ -n "${HWM[$k]:-}" ] || continue
	printf '| %s | %.1f MiB | %.1f MiB | %s |\n' "$k" \
		"$(awk -v v="${HWM[$k]}" 'BEGIN { print v / 1024 }')" \
		"$(awk -v v="$budget" 'BEGIN { print v / 1024 }')" \
		"$([ "${HWM[$k]}" -le "$budget" ] && echo within || echo "**OVER**")"
done

echo
echo "per round:"
for k in raw.randwrite nbdkit.randwrite solo.randwrite replA.randwrite \
	replC.randwrite raw.seqwrite nbdkit.seqwrite solo.seqwrite \
	replA.seqwrite replC.seqwrite raw.syncwrite nbdkit.syncwrite \
	solo.syncwrite replA.syncwrite replC.syncwrite link.bw both.bw copy.bw \
	copyd.bw resync.bw; do
	[ -n "${R[$k]:-}" ] && echo "  $k: ${R[$k]}"
done
