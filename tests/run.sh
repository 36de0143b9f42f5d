#!/bin/bash
# Run every duet test and print one summary line: "N passed, N failed, N skipped".
#
#  - unit tests: every build/tests/unit/test_* binary (cmocka; each case
#    counts), then the same binaries built with ASan+UBSan (build-san/);
#  - integration tests: tests/integration/t_*.sh on this host;
#  - guest tests: tests/vm/t_*.sh (they boot the test kernel themselves).
#
# A test script exits 0 (pass), 77 (skip: its last "SKIP:" line says why) or
# anything else (fail). Each runs under a timeout (TEST_TIMEOUT, default 600 s,
# or a "# timeout: N" line in the script). Logs: build/test-logs/.
# Select with TESTS="pattern ..." (shell globs on the test name).
set -u
cd "$(dirname "$0")/.."
TOP=$PWD
LOGS=$TOP/build/test-logs
mkdir -p "$LOGS"
pass=0 fail=0 skip=0
failed=()

selected() {
	[ -z "${TESTS:-}" ] && return 0
	local p
	for p in $TESTS; do
		# shellcheck disable=SC2053
		[[ $1 == $p ]] && return 0
	done
	return 1
}

run_unit() {		# $1 binary, $2 label
	local bin=$1 name=$2 log=$LOGS/$2.log out np nf
	selected "$name" || return 0
	mkdir -p "$(dirname "$log")"
	if timeout 300 "$bin" >"$log" 2>&1; then :; fi
	np=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$log" | tail -1)
	nf=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$log" | tail -1)
	np=${np:-0} nf=${nf:-0}
	if [ "$np" -eq 0 ] && [ "$nf" -eq 0 ]; then
		nf=1 # crashed before cmocka could report
	fi
	pass=$((pass + np)) fail=$((fail + nf))
	if [ "$nf" -gt 0 ]; then
		failed+=("$name")
		echo "FAIL $name ($np passed, $nf failed)"
		tail -n 30 "$log" | sed 's/^/    /'
	else
		echo "PASS $name ($np cases)"
	fi
}

run_script() {		# $1 script
	local t=$1 name log rc start secs to reason
	name=$(basename "$(dirname "$t")")/$(basename "$t" .sh)
	selected "$name" || return 0
	log=$LOGS/${name//\//_}.log
	to=$(sed -n 's/^# timeout: *\([0-9]*\).*/\1/p' "$t" | head -1)
	to=${to:-${TEST_TIMEOUT:-600}}
	start=$(date +%s)
	timeout -k 10 "$to" bash "$t" >"$log" 2>&1 </dev/null
	rc=$?
	secs=$(($(date +%s) - start))
	case $rc in
	0) pass=$((pass + 1)); echo "PASS $name (${secs}s)" ;;
	77)
		skip=$((skip + 1))
		reason=$(grep -h '^SKIP:' "$log" | tail -1)
		echo "SKIP $name: ${reason#SKIP: }"
		;;
	*)
		fail=$((fail + 1)); failed+=("$name")
		[ $rc -eq 124 ] && echo "FAIL $name (timeout after ${to}s)" ||
			echo "FAIL $name (exit $rc, ${secs}s)"
		tail -n 40 "$log" | sed 's/^/    /'
		;;
	esac
}

for b in build/tests/unit/test_*; do
	[ -x "$b" ] && run_unit "$b" "unit/$(basename "$b")"
done
for b in build-san/tests/unit/test_*; do
	[ -x "$b" ] && run_unit "$b" "unit-asan/$(basename "$b")"
done
for t in tests/integration/t_*.sh tests/vm/t_*.sh; do
	[ -f "$t" ] && run_script "$t"
done

[ ${#failed[@]} -gt 0 ] && echo "failed: ${failed[*]}"
echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
