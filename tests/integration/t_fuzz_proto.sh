#!/bin/bash
# Fuzz the replication protocol (frame parser and decoders, handshake) for
# FUZZ_SECONDS (default 30) per target; fails on any crash or oracle
# violation. Skips when clang or the libFuzzer runtime is missing.
# timeout: 300
set -u
cd "$(dirname "$0")/../.."

CC=${FUZZ_CC:-$(command -v clang-14 || command -v clang || true)}
if [ -z "$CC" ]; then
	echo "SKIP: clang is not installed (apt-get install clang-14)"
	exit 77
fi
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
cat >"$probe/p.c" <<'EOF'
#include <stddef.h>
#include <stdint.h>
int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);
int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }
EOF
if ! "$CC" -fsanitize=fuzzer,address,undefined "$probe/p.c" -o "$probe/p" \
	>"$probe/log" 2>&1; then
	cat "$probe/log"
	echo "SKIP: $CC cannot link libFuzzer (apt-get install libclang-rt-14-dev)"
	exit 77
fi

exec tests/fuzz/run.sh "${FUZZ_SECONDS:-30}"
