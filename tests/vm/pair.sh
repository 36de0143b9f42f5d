# shellcheck shell=bash
# Two nodes in one guest, alpha and beta, each with its own backing file
# ($T/alpha.img, $T/beta.img) and run directory ($T/ra, $T/rb), both
# serving the ublk device of resource r0. Sourced in the guest, after
# tests/integration/lib.sh, by the guest replication tests (the host's
# two-node tests have tests/integration/pair.sh: NBD-only, on loopback). It
# checks the tools, cds to $T, and gives:
#   A ARGS / B ARGS       duetctl as alpha / beta (inside na / nb after
#                         pair_netns)
#   IPA, IPB              alpha's and beta's addresses: set by pair_netns,
#                         else by the test before pair_resource
#   MiB                   1048576
#   pair_netns NET        alpha in namespace na, beta in nb, joined by a veth
#                         pair (vm_netns_pair: na-v 10.NET.0.1, nb-v .2)
#   pair_resource SIZE EXTRA [KEY=VALUE...]   backing files of SIZE, r0.conf
#                         (alpha at $IPA:7789, beta at $IPB:7789, top-level
#                         lines EXTRA, more write_resource keys), create-md
#                         on both
#   pair_up SECS          up on both, connected within SECS s, else fail;
#                         from then on both daemons are taken down at exit
#   status NODE JQ        one field of NODE's status --json
#   field_is / field_ne NODE JQ VALUE, field_ge NODE JQ N   (for wait_until)
#   synced [NODE]         NODE (A) Primary, both UpToDate, Established
#   same_data WHEN        the data areas' sha256 are equal, else fail
#   last_resync [PEER]    bytes of the last "resync to PEER done" line in the
#                         other node's log (PEER: beta)
#   write_alone DEV MIB AT   MIB MiB of random data through DEV, 1 MiB at
#                         every other MiB from AT MiB
#   fio_verify DEV FIO_ARGS...   fio random writes through DEV, verified
#                         (crc32c), else fail

require_bin duetctl duetd
require_cmd jq sha256sum ip
cd "$T" || fail "cd $T"

# shellcheck disable=SC2034 # for the tests
MiB=$((1 << 20))
PAIR_NSA='' PAIR_NSB=''
mkdir -p "$T/ra" "$T/rb"

# pair_in NS CMD...: CMD inside network namespace NS, or here if NS is ''.
pair_in() {
	local ns=$1
	shift
	if [ -n "$ns" ]; then
		ip netns exec "$ns" "$@"
	else
		"$@"
	fi
}
A() { pair_in "$PAIR_NSA" "$DUETCTL" --node alpha --run-dir "$T/ra" "$@"; }
B() { pair_in "$PAIR_NSB" "$DUETCTL" --node beta --run-dir "$T/rb" "$@"; }

pair_netns() {
	vm_netns_pair na nb "$1" || fail "cannot build the namespaces"
	PAIR_NSA=na PAIR_NSB=nb
	IPA=10.$1.0.1 IPB=10.$1.0.2
}

pair_resource() {
	local size=$1 extra=$2
	shift 2
	mk_sparse "$T/alpha.img" "$size"
	mk_sparse "$T/beta.img" "$size"
	write_resource r0 alpha_addr="$IPA:7789" beta_addr="$IPB:7789" \
		extra="$extra" "$@"
	expect_rc 0 A create-md r0 --force
	expect_rc 0 B create-md r0 --force
}

# The exit hook is registered here, not on sourcing, so that it runs before
# the hooks of what the test set up earlier (rdma links, veths): the daemons
# go down before the devices under them.
pair_up() {
	on_exit 'A down r0 >/dev/null 2>&1; B down r0 >/dev/null 2>&1'
	expect_rc 0 A up r0
	expect_rc 0 B up r0
	wait_until "$1" field_is A .connection Connected ||
		fail "not connected: $(status A .replication_stats.last_error)"
}

status() { "$1" status r0 --json | jq -r "$2"; }
field_is() { [ "$(status "$1" "$2" 2>/dev/null)" = "$3" ]; }
field_ne() { [ "$(status "$1" "$2" 2>/dev/null)" != "$3" ]; }
field_ge() {
	local v
	v=$(status "$1" "$2" 2>/dev/null)
	[[ "$v" =~ ^[0-9]+$ ]] && [ "$v" -ge "$3" ]
}
synced() {
	field_is "${1:-A}" .state \
		"Primary/Secondary UpToDate/UpToDate Connected Established"
}

data_sha() {	# data_sha FILE: sha256 of the data area
	head -c "$(status A .data_bytes)" "$1" | sha256sum | cut -d' ' -f1
}
same_data() {
	assert_eq "$(data_sha "$T/alpha.img")" "$(data_sha "$T/beta.img")" \
		"data areas $1"
}

# The status has the figures only while a resync runs; the sender's log
# keeps them.
# shellcheck disable=SC2120 # PEER is optional
last_resync() {
	local to=${1:-beta} log=$T/ra/r0.log
	if [ "$to" = alpha ]; then
		log=$T/rb/r0.log
	fi
	grep "resync to $to done" "$log" | tail -1 |
		sed 's/.*done: \([0-9]*\) bytes.*/\1/'
}

# Writes done while the peer is unreachable complete once the loss is seen.
write_alone() {
	local dev=$1 mib=$2 at=$3 i
	for ((i = 0; i < mib; i++)); do
		dd if=/dev/urandom of="$dev" bs=1M count=1 \
			seek=$((at + 2 * i)) oflag=direct status=none ||
			fail "write $i of $mib through $dev"
	done
}

fio_verify() {
	local dev=$1
	shift
	run fio --name=verify --filename="$dev" --ioengine=io_uring \
		--direct=1 --rw=randwrite --iodepth=16 --numjobs=2 \
		--verify=crc32c --do_verify=1 --verify_fatal=1 \
		--group_reporting "$@"
	[ "$RC" -eq 0 ] || fail "fio verify failed (exit $RC)"
	assert_contains "$OUT" "err= 0" "fio error count"
}
