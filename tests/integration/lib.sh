# shellcheck shell=bash
# tests/integration/lib.sh — helpers shared by duet's shell tests.
#
# Source it first thing in a test (tests/integration/t_*.sh, tests/vm/t_*.sh):
#
#	#!/bin/bash
#	# timeout: 60
#	. "$(dirname "$0")/../integration/lib.sh"   # or "$(dirname "$0")/lib.sh"
#	require_bin duetctl
#	mk_sparse "$T/disk" 2G
#	write_resource r0 alpha_disk="$T/disk"
#	expect_rc 0 "$DUETCTL" --node alpha create-md r0
#	assert_contains "$OUT" "data size"
#	pass
#
# A test exits 0 (pass), 77 (skip; its last "SKIP: reason" line says why) or
# anything else (fail); tests/run.sh counts them and enforces the time limit
# given by a "# timeout: N" line. The helpers print what they run and why they
# fail, so the log in build/test-logs/ tells the story without a rerun.
#
# Variables set on sourcing:
#   TOP        repository root
#   BUILD      build directory ($BUILD, else $DUET_BUILD, else $TOP/build)
#   DUETCTL    $BUILD/duetctl      DUETD    $BUILD/duetd
#   T          a fresh temporary directory, removed at exit
#              (DUET_KEEP_TMP=1 keeps it and prints where it is)
#   CONF_DIR   $T/etc, exported as DUET_CONFIG_DIR (duetctl --config-dir)
#   RUN_DIR    $T/run, exported as DUET_RUN_DIR (control sockets)
#   RC OUT ERR the last `run`/`expect_rc`: exit code, stdout, stderr
#
# Outcome:       pass | skip REASON | fail MESSAGE
# Requirements:  require_cmd CMD... | require_root | require_bin duetctl|duetd
#                | require_file PATH [REASON]
# Running:       run CMD... (never fails; sets RC OUT ERR)
#                expect_rc N CMD... (fails unless CMD exits N)
#                on_exit "shell code" (runs at exit, last registered first)
#                bg_start NAME CMD... / bg_stop NAME [SIGNAL] / bg_pid NAME
#                (background processes, output in $T/NAME.log, stopped at exit)
#                wait_until SECONDS CMD... (poll every 0.1 s; 0 when CMD
#                succeeded, 1 on time-out)
# Assertions:    assert_eq ACTUAL EXPECTED [WHAT] | assert_ne A B [WHAT]
#                assert_contains TEXT NEEDLE [WHAT] | assert_not_contains ...
#                assert_match TEXT ERE [WHAT] | assert_file_eq A B [WHAT]
# Files:         mk_sparse PATH SIZE (truncate syntax: 2G, 64K, 1048576)
#                fill_pattern PATH MIB [SEED [AT_MIB]] (deterministic data)
#                sha_head PATH MIB (sha256 of the first MIB MiB)
#                flip_byte PATH OFFSET | read_byte PATH OFFSET | file_size PATH
# Config:        write_conf NAME < text (raw $CONF_DIR/NAME.conf)
#                write_resource NAME [key=value...] (a two-node resource;
#                keys documented above the function)
# Network:       free_port (an unused loopback TCP port)
# Logging:       step MESSAGE (a "== MESSAGE" progress line)

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=${BUILD:-${DUET_BUILD:-$TOP/build}}
DUETCTL=$BUILD/duetctl
DUETD=$BUILD/duetd
RC=0 OUT='' ERR=''
declare -a _LIB_EXIT_HOOKS=()
declare -A _LIB_BG_PIDS=()

T=$(mktemp -d "${TMPDIR:-/tmp}/duet-test.XXXXXX") || {
	echo "FAIL: cannot create a temporary directory" >&2
	exit 1
}
CONF_DIR=$T/etc
RUN_DIR=$T/run
mkdir -p "$CONF_DIR" "$RUN_DIR"
export DUET_CONFIG_DIR=$CONF_DIR DUET_RUN_DIR=$RUN_DIR

_lib_exit() {
	local rc=$? i
	trap - EXIT
	for ((i = ${#_LIB_EXIT_HOOKS[@]} - 1; i >= 0; i--)); do
		eval "${_LIB_EXIT_HOOKS[i]}" || true
	done
	for i in "${!_LIB_BG_PIDS[@]}"; do
		bg_stop "$i" >/dev/null 2>&1 || true
	done
	if [ -n "${DUET_KEEP_TMP:-}" ]; then
		echo "kept temporary directory $T"
	else
		rm -rf "$T"
	fi
	exit "$rc"
}
trap _lib_exit EXIT
# A time-out (tests/run.sh sends SIGTERM) or ^C still cleans up.
trap 'exit 143' TERM
trap 'exit 130' INT

# ---------------------------------------------------------------- outcome

pass() {
	echo "PASS: $(basename "$0")"
	exit 0
}

skip() {
	echo "SKIP: $*"
	exit 77
}

# fail MESSAGE: say where (caller's line) and show the last command's output.
fail() {
	local where="${BASH_SOURCE[1]##*/}:${BASH_LINENO[0]}"
	# called from an assert_*: name the test's line, not lib.sh's
	[ "${BASH_SOURCE[1]##*/}" = lib.sh ] &&
		where="${BASH_SOURCE[2]##*/}:${BASH_LINENO[1]}"
	echo "FAIL: $where: $*" >&2
	if [ -n "$OUT$ERR" ]; then
		echo "--- last command exited $RC; stdout:" >&2
		printf '%s\n' "$OUT" | tail -n 40 >&2
		echo "--- stderr:" >&2
		printf '%s\n' "$ERR" | tail -n 40 >&2
	fi
	exit 1
}

step() {
	echo "== $*"
}

# ---------------------------------------------------------- requirements

require_cmd() {
	local c
	for c; do
		command -v "$c" >/dev/null 2>&1 || skip "$c is not installed"
	done
}

require_root() {
	[ "$(id -u)" -eq 0 ] || skip "needs root"
}

require_file() {
	[ -e "$1" ] || skip "${2:-$1 does not exist}"
}

# A missing binary is a broken build, not an absent capability: fail.
require_bin() {
	local b
	for b; do
		case $b in
		duetctl) [ -x "$DUETCTL" ] || fail "$DUETCTL not built (run make)" ;;
		duetd) [ -x "$DUETD" ] || fail "$DUETD not built (run make)" ;;
		*) [ -x "$BUILD/$b" ] || fail "$BUILD/$b not built (run make)" ;;
		esac
	done
}

# ---------------------------------------------------------------- running

on_exit() {
	_LIB_EXIT_HOOKS+=("$1")
}

# run CMD...: capture exit code, stdout and stderr; echo them to the log.
run() {
	local errf=$T/.stderr.$$
	echo "+ $*" >&2
	RC=0
	OUT=$("$@" 2>"$errf") || RC=$?
	ERR=$(cat "$errf")
	rm -f "$errf"
	[ -z "$OUT" ] || printf '%s\n' "$OUT" | sed 's/^/  | /' >&2
	[ -z "$ERR" ] || printf '%s\n' "$ERR" | sed 's/^/  ! /' >&2
	echo "  -> exit $RC" >&2
	return 0
}

# expect_rc N CMD...: run CMD and fail unless it exits with N.
expect_rc() {
	local want=$1
	shift
	run "$@"
	[ "$RC" -eq "$want" ] || fail "'$*' exited $RC, expected $want"
}

bg_start() {
	local name=$1
	shift
	echo "+ (background $name) $*" >&2
	"$@" >"$T/$name.log" 2>&1 &
	_LIB_BG_PIDS[$name]=$!
}

bg_pid() {
	echo "${_LIB_BG_PIDS[$1]:-}"
}

# bg_stop NAME [SIGNAL]: signal the process (TERM), wait up to 5 s, then
# KILL. Only the PID bg_start recorded is touched. Returns its exit code.
bg_stop() {
	local name=$1 sig=${2:-TERM} pid rc=0 i
	pid=${_LIB_BG_PIDS[$name]:-}
	[ -n "$pid" ] || return 0
	unset "_LIB_BG_PIDS[$name]"
	kill -s "$sig" "$pid" 2>/dev/null || true
	for ((i = 0; i < 50; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -0 "$pid" 2>/dev/null && kill -s KILL "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null || rc=$?
	return "$rc"
}

wait_until() {
	local secs=$1 deadline
	shift
	deadline=$(($(date +%s%N) + secs * 1000000000))
	while ! "$@" >/dev/null 2>&1; do
		[ "$(date +%s%N)" -lt "$deadline" ] || return 1
		sleep 0.1
	done
	return 0
}

# ------------------------------------------------------------- assertions

assert_eq() {
	[ "$1" = "$2" ] ||
		fail "${3:-value}: got '$1', expected '$2'"
}

assert_ne() {
	[ "$1" != "$2" ] ||
		fail "${3:-value}: got '$1', expected anything else"
}

assert_contains() {
	case $1 in
	*"$2"*) ;;
	*) fail "${3:-output} does not contain '$2'" ;;
	esac
}

assert_not_contains() {
	case $1 in
	*"$2"*) fail "${3:-output} contains '$2'" ;;
	*) ;;
	esac
}

# assert_match TEXT ERE [WHAT]: some line of TEXT matches the extended regex.
assert_match() {
	# a here-string, not a pipe: grep -q exits at the first match and
	# the writer's SIGPIPE would fail the pipeline under pipefail
	grep -Eq -- "$2" <<<"$1" ||
		fail "${3:-output} does not match /$2/"
}

assert_file_eq() {
	cmp -s -- "$1" "$2" || fail "${3:-files} differ: $1 $2"
}

# ------------------------------------------------------------------ files

mk_sparse() {
	rm -f "$1"
	truncate -s "$2" "$1" || fail "cannot create $1 ($2)"
}

# fill_pattern PATH MIB [SEED [AT_MIB]]: overwrite MIB MiB starting at
# AT_MIB MiB (default 0) with data that depends on SEED (default 1) and on
# the position, so that misplaced or missing writes change the checksum.
# The bytes are the AES-128-CTR keystream of "duet-SEED": pattern_stream
# SEED reproduces them. Does not truncate the file.
pattern_stream() {
	openssl enc -aes-128-ctr -nosalt -pass "pass:duet-$1" -pbkdf2 \
		-in /dev/zero 2>/dev/null
}

fill_pattern() {
	local path=$1 mib=$2 seed=${3:-1} at=${4:-0}
	# fast, deterministic, incompressible; pipefail would report the
	# SIGPIPE that ends openssl, so only dd's status counts
	{ pattern_stream "$seed" || true; } |
		dd of="$path" bs=1M count="$mib" seek="$at" iflag=fullblock \
			conv=notrunc status=none || fail "cannot fill $path"
}

sha_head() {
	dd if="$1" bs=1M count="$2" status=none | sha256sum | cut -d' ' -f1
}

file_size() {
	stat -c %s -- "$1"
}

read_byte() {
	od -An -tu1 -j "$2" -N1 -- "$1" | tr -d ' '
}

# flip_byte PATH OFFSET: invert every bit of one byte, in place.
flip_byte() {
	local v
	v=$(read_byte "$1" "$2")
	[ -n "$v" ] || fail "flip_byte: $1 has no byte at offset $2"
	# shellcheck disable=SC2059
	printf "\\x$(printf %02x $((v ^ 0xff)))" |
		dd of="$1" bs=1 seek="$2" conv=notrunc status=none ||
		fail "flip_byte: cannot write $1 at $2"
}

# ----------------------------------------------------------------- config

# write_conf NAME: stdin becomes $CONF_DIR/NAME.conf.
write_conf() {
	cat >"$CONF_DIR/$1.conf"
}

# write_resource NAME [key=value...]: a resource with nodes alpha (id 0)
# and beta (id 1) on loopback. Keys (defaults in brackets):
#   nodes=alpha,beta     node names; a single name gives a standalone resource
#   protocol=[C]  secret=[duet-test-secret]  transport=[unset: tcp]
#   NODE_disk=[$T/NODE.img]  NODE_meta=[internal]
#   NODE_addr=[127.0.0.1:7789 for the first node, :7790 for the second]
#   NODE_id=[0, 1]  NODE_extra="raw lines inside the node's group"
#   extra="raw top-level lines", e.g. extra='bm-granularity = 8192;'
# Values are written as strings, except ids.
write_resource() {
	local name=$1 kvp k n i=0
	shift
	local -A o=([nodes]='alpha,beta' [protocol]=C [secret]=duet-test-secret)
	for kvp; do
		k=${kvp%%=*}
		[ "$k" != "$kvp" ] || fail "write_resource: '$kvp' is not key=value"
		o[$k]=${kvp#*=}
	done
	{
		echo "resource = \"$name\";"
		echo "protocol = \"${o[protocol]}\";"
		echo "secret = \"${o[secret]}\";"
		[ -z "${o[transport]:-}" ] || echo "transport = \"${o[transport]}\";"
		[ -z "${o[extra]:-}" ] || printf '%s\n' "${o[extra]}"
		echo "nodes = ("
		for n in ${o[nodes]//,/ }; do
			[ "$i" -eq 0 ] || echo "  ,"
			echo "  {"
			echo "    name = \"$n\";"
			echo "    id = ${o[${n}_id]:-$i};"
			echo "    address = \"${o[${n}_addr]:-127.0.0.1:$((7789 + i))}\";"
			echo "    disk = \"${o[${n}_disk]:-$T/$n.img}\";"
			echo "    meta-disk = \"${o[${n}_meta]:-internal}\";"
			[ -z "${o[${n}_extra]:-}" ] || printf '    %s\n' "${o[${n}_extra]}"
			echo "  }"
			i=$((i + 1))
		done
		echo ");"
	} >"$CONF_DIR/$name.conf"
}

# ---------------------------------------------------------------- network

# free_port: a loopback TCP port nobody listens on right now. (Racy by
# nature; tests that bind it immediately are fine.)
free_port() {
	local p i
	for ((i = 0; i < 100; i++)); do
		p=$((20000 + RANDOM % 30000))
		if ! ss -Htln "sport = :$p" 2>/dev/null | grep -q .; then
			echo "$p"
			return 0
		fi
	done
	fail "free_port: no free port found"
}

# ----------------------------------------------------- network namespaces

# netns_pair NS_A NS_B NET: two network namespaces joined by a veth pair,
# NS_A's end (named veth0) at NET.1/24, NS_B's (veth0 too) at NET.2/24,
# e.g. NET=10.77.3. The pair is created inside NS_A with its peer moved to
# NS_B at once, so no interface name ever appears in the host's namespace
# and parallel tests only need distinct namespace names (put $$ in them).
# Both namespaces are deleted at exit (netns_del). Returns 1, saying why,
# when the kernel or iproute2 cannot do it: the caller skips.
netns_pair() {
	local a=$1 b=$2 net=$3
	ip netns add "$a" || {
		echo "netns_pair: ip netns add $a failed" >&2
		return 1
	}
	on_exit "netns_del $a"
	ip netns add "$b" || {
		echo "netns_pair: ip netns add $b failed" >&2
		return 1
	}
	on_exit "netns_del $b"
	ip -n "$a" link add veth0 type veth peer name veth0 netns "$b" &&
		ip -n "$a" addr add "$net.1/24" dev veth0 &&
		ip -n "$b" addr add "$net.2/24" dev veth0 &&
		ip -n "$a" link set lo up && ip -n "$b" link set lo up &&
		ip -n "$a" link set veth0 up && ip -n "$b" link set veth0 up || {
		echo "netns_pair: cannot build the veth link $a <-> $b" >&2
		return 1
	}
}

# netns_exists NS: NS is a named network namespace (ip netns list).
netns_exists() {
	local l
	l=$(ip netns list 2>/dev/null | cut -d' ' -f1)
	grep -qxF -- "$1" <<<"$l"
}

# netns_del NS: end what still runs in NS (it can only be this test's:
# the name is the test's own), then delete NS. Quiet when NS is gone.
netns_del() {
	local ns=$1 pids i
	netns_exists "$ns" || return 0
	pids=$(ip netns pids "$ns" 2>/dev/null)
	if [ -n "$pids" ]; then
		echo "netns_del: $ns still runs: $pids; stopping them" >&2
		# shellcheck disable=SC2086
		kill -TERM $pids 2>/dev/null
		for ((i = 0; i < 30; i++)); do
			[ -z "$(ip netns pids "$ns" 2>/dev/null)" ] && break
			sleep 0.1
		done
		pids=$(ip netns pids "$ns" 2>/dev/null)
		# shellcheck disable=SC2086
		[ -z "$pids" ] || kill -KILL $pids 2>/dev/null
	fi
	ip netns del "$ns"
}

# proc_gone PID: the process has exited: no such process, or a zombie whose
# other threads have exited too (until then they hold its files, sockets
# included). For wait_until after a kill -9.
proc_gone() {
	! kill -0 "$1" 2>/dev/null && return 0
	grep -q '^[0-9]* ([^)]*) Z' "/proc/$1/stat" 2>/dev/null &&
		[ "$(ls "/proc/$1/task" 2>/dev/null | wc -l)" -le 1 ]
}
