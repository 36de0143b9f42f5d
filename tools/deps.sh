#!/bin/bash
# Install duet's build and test dependencies from Debian 12's archive.
# Safe to re-run: it only calls apt-get when something is missing.
set -euo pipefail

PKGS=(
	build-essential pkg-config clang llvm libclang-rt-14-dev
	liburing-dev libaio-dev libcmocka-dev libconfig-dev libjansson-dev
	libssl-dev libisal-dev libibverbs-dev librdmacm-dev rdma-core
	ibverbs-utils
	fio jq xz-utils cpio kmod e2fsprogs util-linux iproute2 nftables
	procps psmisc zstd iputils-ping
	qemu-system-x86 qemu-utils busybox-static
	nbdkit libnbd-bin
)

missing=()
for p in "${PKGS[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
		missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "deps: installing ${missing[*]}"
SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
	"${missing[@]}" >/dev/null
