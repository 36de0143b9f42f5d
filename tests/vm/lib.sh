# shellcheck shell=bash
# Helpers for tests that run inside duet's test kernel (kernel/vm/duet-vm).
#
# A guest test is one script that is both the host-side launcher and the
# guest-side body:
#
#	#!/bin/bash
#	# timeout: 300
#	. "$(dirname "$0")/lib.sh"
#	vm_run_self --modules sch_netem -- "$@"	# on the host: boots, never returns
#	# from here on we are in the guest, in the same directory
#	vm_modprobe rdma_rxe || fail "no rdma_rxe"
#	...
#
# Exit codes follow tests/run.sh: 0 pass, 77 skip (after a "SKIP: why" line),
# anything else fail. In the guest, a test sources tests/integration/lib.sh
# for its helpers; the two-node replication tests then tests/vm/pair.sh.

VM_TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DUET_VM=$VM_TOP/kernel/vm/duet-vm

skip() {
	echo "SKIP: $*"
	exit 77
}

fail() {
	echo "FAIL: $*" >&2
	exit 1
}

# True inside a duet-vm guest. The variable alone could leak from a parent
# environment; /run/duet-vm/conf exists only on the guest's fresh /run.
in_guest() {
	[ "${DUET_VM_GUEST:-}" = 1 ] && [ -f /run/duet-vm/conf ]
}

# On the host: make sure a guest can be booted (qemu present, kernel fetched
# and cached), else skip the test with the reason. Sets VM_KVER, the guest's
# kernel release. In the guest: sets VM_KVER and returns.
vm_require() {
	local err info
	if in_guest; then
		VM_KVER=$(uname -r)
		return 0
	fi
	command -v "${DUET_VM_QEMU:-qemu-system-x86_64}" >/dev/null ||
		skip "${DUET_VM_QEMU:-qemu-system-x86_64} is not installed (tools/deps.sh installs qemu-system-x86)"
	command -v perl >/dev/null || skip "perl is not installed (duet-vm filters the console with it)"
	err=$(mktemp) || skip "mktemp failed"
	# `info` prepares the kernel only when none is cached: no apt lookup on
	# every test once set up.
	if ! info=$("$DUET_VM" info 2>"$err"); then
		local why
		why=$(grep -v '^Get:' "$err" | tail -n 1)
		rm -f "$err"
		skip "cannot prepare the test kernel: ${why:-duet-vm info failed}"
	fi
	rm -f "$err"
	VM_KVER=$(sed -n 's/^kernel: *//p' <<<"$info")
	[ -n "$VM_KVER" ] || skip "duet-vm info did not name a kernel"
}

# The launcher half of a guest test. On the host: vm_require, then replace
# this shell by `duet-vm run OPTIONS -- bash SCRIPT ARGS`, so the test's exit
# status is the guest body's. In the guest: return and let the body run.
# Usage: vm_run_self [duet-vm run options] -- "$@"
vm_run_self() {
	local -a opts=()
	in_guest && return 0
	while [ $# -gt 0 ] && [ "$1" != -- ]; do
		opts+=("$1")
		shift
	done
	[ "${1:-}" = -- ] && shift
	vm_require
	exec "$DUET_VM" run "${opts[@]}" -- bash "$(readlink -f "$0")" "$@"
}

# Load modules in the guest, each with its dependencies (modprobe reads the
# test kernel's modules.dep). Some needs are not in modules.dep because the
# module asks the crypto API for an algorithm by name: those come first.
vm_modprobe() {
	local m
	for m in "$@"; do
		case ${m//-/_} in
		rdma_rxe) vm_modprobe crc32_generic || return 1 ;;
		drbd) vm_modprobe crc32c_generic || return 1 ;;
		esac
		modprobe "$m" || {
			echo "vm_modprobe: cannot load $m into $(uname -r)" >&2
			return 1
		}
	done
}

# Two network namespaces joined by a veth pair, addressed 10.$3.0.1/24 and
# 10.$3.0.2/24, both ends up. Usage: vm_netns_pair NS_A NS_B SUBNET_OCTET
# The veth ends are named NS_A-v and NS_B-v inside their namespaces.
vm_netns_pair() {
	local a=$1 b=$2 n=$3
	ip netns add "$a" && ip netns add "$b" &&
		ip link add "$a-v" type veth peer name "$b-v" &&
		ip link set "$a-v" netns "$a" && ip link set "$b-v" netns "$b" &&
		ip -n "$a" addr add "10.$n.0.1/24" dev "$a-v" &&
		ip -n "$b" addr add "10.$n.0.2/24" dev "$b-v" &&
		ip -n "$a" link set "$a-v" up && ip -n "$b" link set "$b-v" up &&
		ip -n "$a" link set lo up && ip -n "$b" link set lo up
}

# One ICMP echo to $1 (within $2 seconds, default 5). iproute2 is on every
# host; iputils-ping may not be, busybox-static (the initramfs's) always is.
vm_ping() {
	local w=${2:-5}
	if command -v ping >/dev/null; then
		ping -c 1 -W "$w" "$1" >/dev/null
	else
		busybox ping -c 1 -W "$w" "$1" >/dev/null
	fi
}

# A small TAP-like checker: `check "what" command...` runs the command and
# prints "ok - what" or "not ok - what"; check_done exits 1 if any failed.
VM_CHECK_FAILED=0
check() {
	local what=$1
	shift
	if "$@"; then
		echo "ok - $what"
	else
		echo "not ok - $what"
		VM_CHECK_FAILED=$((VM_CHECK_FAILED + 1))
	fi
}

check_failed() { [ "$VM_CHECK_FAILED" -gt 0 ]; }
