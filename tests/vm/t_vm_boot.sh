#!/bin/bash
# timeout: 150
# The test-kernel harness itself: boot the guest, check inside that it is the
# 6.12 kernel with ublk, that the host tree, /tmp, network namespaces, veth,
# netem and rdma_rxe work, and check from the host that exit statuses,
# stdout/stderr, timeouts and boot failures come back as documented.
#
# The guest body exits 3 when every check passed (1 when one failed), so the
# same boot proves that a command's own status propagates.
. "$(dirname "$0")/lib.sh"

guest_body() {
	check "kernel is the prepared 6.12 ($TEST_VM_KVER)" \
		test "$(uname -r)" = "$TEST_VM_KVER"
	[[ $(uname -r) == 6.12.* ]] || check "uname -r starts with 6.12" false

	check "ublk_drv loaded by the harness" grep -q '^ublk_drv ' /proc/modules
	check "/dev/ublk-control is a character device" test -c /dev/ublk-control

	check "cwd is the host's cwd" test "$PWD" = "$TEST_VM_CWD"
	check "project tree visible at the same path" \
		test "$(sha256sum <"$VM_TOP/kernel/vm/duet-vm")" = "$TEST_VM_SUM"
	check "host root is read-only" \
		bash -c "! touch '$VM_TOP/.duet-vm-rw-probe' 2>/dev/null"
	check "host PATH passed through" test "$PATH" = "$TEST_VM_PATH"

	check "/tmp is tmpfs" test "$(stat -f -c %T /tmp)" = tmpfs
	check "/tmp is writable" bash -c 'echo hi >/tmp/x && test "$(cat /tmp/x)" = hi'
	check "/run is tmpfs" test "$(stat -f -c %T /run)" = tmpfs
	check "/dev/shm is writable" bash -c ': >/dev/shm/x'
	check "process substitution (/dev/fd)" bash -c 'test "$(cat <(echo y))" = y'
	check "writable share mounted" \
		bash -c 'echo from-guest >"$TEST_VM_SHARE/out"'

	check "--disk 1 is vda (16 MiB)" test "$(cat /sys/block/vda/size)" = 32768
	check "--disk 2 is vdb (8 MiB)" test "$(cat /sys/block/vdb/size)" = 16384
	check "write to vda with O_DIRECT" bash -c 'echo duet-disk-probe |
		dd of=/dev/vda bs=4096 conv=sync oflag=direct status=none'

	# veth is not loaded by hand: "ip link add type veth" asks the kernel,
	# which runs the harness's modprobe helper.
	check "netns pair over veth" vm_netns_pair duetA duetB 77
	check "ping between namespaces" \
		ip netns exec duetA bash -c ". '$VM_TOP/tests/vm/lib.sh' && vm_ping 10.77.0.2"
	check "tc netem (module loaded on demand)" \
		ip netns exec duetA tc qdisc add dev duetA-v root netem delay 1ms
	check "netem qdisc in place" \
		bash -c 'ip netns exec duetA tc qdisc show dev duetA-v | grep -q netem'

	check "rdma_rxe loads (crc32_generic first)" vm_modprobe rdma_rxe
	check "veth pair for rxe" bash -c 'ip link add rxe-a type veth peer name rxe-b &&
		ip link set rxe-a up && ip link set rxe-b up'
	check "rdma link add rxe0 on a veth" \
		rdma link add rxe0 type rxe netdev rxe-a
	check "rxe0 listed by rdma link" bash -c 'rdma link show | grep -q "rxe0/1"'
	if command -v ibv_devices >/dev/null; then
		check "libibverbs sees rxe0" bash -c 'ibv_devices | grep -q rxe0'
	fi

	echo "guest-stderr-line" >&2
	printf 'guest-tail-without-newline'
	check_failed && exit 1
	exit 3
}

if in_guest; then
	guest_body
fi

# --- host side ---------------------------------------------------------------
vm_require
tmp=$(mktemp -d) || fail "mktemp"
trap 'rm -rf "$tmp"' EXIT
export TEST_VM_KVER=$VM_KVER TEST_VM_CWD=$PWD TEST_VM_PATH=$PATH
export TEST_VM_SHARE=$tmp/share
TEST_VM_SUM=$(sha256sum <"$VM_TOP/kernel/vm/duet-vm")
export TEST_VM_SUM
mkdir -p "$TEST_VM_SHARE"
truncate -s 16M "$tmp/disk1" && truncate -s 8M "$tmp/disk2" || fail "truncate"

start=$(date +%s%N)
"$DUET_VM" run --timeout 90 --share "$TEST_VM_SHARE" \
	--disk "$tmp/disk1" --disk "$tmp/disk2,format=raw" -- \
	bash "$(readlink -f "$0")" >"$tmp/out" 2>"$tmp/err"
rc=$?
ms=$((($(date +%s%N) - start) / 1000000))
echo "--- guest stdout"
cat "$tmp/out"
echo
echo "--- guest stderr"
cat "$tmp/err"
echo "--- boot + checks took ${ms} ms"

failed=0
hcheck() {
	local what=$1
	shift
	if "$@"; then
		echo "ok - host: $what"
	else
		echo "not ok - host: $what"
		failed=1
	fi
}
hcheck "guest exit status 3 propagated (got $rc)" test "$rc" = 3
hcheck "every guest check passed" bash -c "! grep -q '^not ok' '$tmp/out'"
hcheck "guest checks ran" grep -q '^ok - rdma link add' "$tmp/out"
hcheck "output without final newline kept, marker removed" \
	test "$(tail -c 26 "$tmp/out")" = guest-tail-without-newline
hcheck "no marker on stdout" bash -c "! grep -q '@@DUET-VM' '$tmp/out'"
hcheck "stderr came on stderr" grep -qx guest-stderr-line "$tmp/err"
hcheck "stderr not on stdout" bash -c "! grep -q guest-stderr-line '$tmp/out'"
hcheck "guest write reached disk1" \
	test "$(head -c 15 "$tmp/disk1")" = duet-disk-probe
hcheck "share written back" test "$(cat "$TEST_VM_SHARE/out" 2>/dev/null)" = from-guest

"$DUET_VM" run --timeout 1 -- true >"$tmp/out" 2>"$tmp/err"
rc=$?
hcheck "timeout gives 124 (got $rc)" test "$rc" = 124
hcheck "timeout is reported" grep -q 'timeout' "$tmp/err"

"$DUET_VM" run --timeout 60 --modules duet_no_such_module -- true \
	>"$tmp/out" 2>"$tmp/err"
rc=$?
hcheck "guest setup failure gives 125 (got $rc)" test "$rc" = 125
hcheck "setup failure names the module" grep -q 'modprobe duet_no_such_module failed' "$tmp/err"
cat "$tmp/err"

exit $failed
