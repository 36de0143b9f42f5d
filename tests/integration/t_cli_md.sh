#!/bin/bash
# duetctl create-md / dump-md / wipe-md / show on sparse files: sizes, JSON
# output, refusals and exit codes, one- and two-slot corruption, and that
# the data area is never touched.
# timeout: 120
set -euo pipefail
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
require_bin duetctl
require_cmd jq sha256sum openssl truncate
export DUET_NODE=alpha

DISK=$T/alpha.img
DISK_BYTES=$((2 << 30))
TAIL_MIB=16	# the last MiB before internal metadata get a pattern too

# Sum of the data area that must survive every metadata command: the first
# 8 MiB and everything from 16 MiB before the end up to the metadata.
data_sums() {	# $1 md_offset
	local tail_off=$((DISK_BYTES - (TAIL_MIB << 20)))
	echo "$(sha_head "$DISK" 8)" \
		"$(dd if="$DISK" iflag=skip_bytes,count_bytes skip="$tail_off" \
			count=$(($1 - tail_off)) status=none | sha256sum)"
}

json() {	# jq FILTER over the last command's stdout
	jq -r "$1" <<<"$OUT"
}

# ------------------------------------------------------------ create-md
step "create-md on a 2 GiB sparse file with internal metadata"
mk_sparse "$DISK" "$DISK_BYTES"
fill_pattern "$DISK" 8 1
fill_pattern "$DISK" "$TAIL_MIB" 2 $(((DISK_BYTES >> 20) - TAIL_MIB))
write_resource r0 extra='bitmap-granularity = "4K";'
head_before=$(sha_head "$DISK" 8)
tail_before=$(dd if="$DISK" bs=1M skip=$(((DISK_BYTES >> 20) - TAIL_MIB)) \
	status=none | sha256sum)

expect_rc 0 "$DUETCTL" create-md r0
for k in "data size" "metadata size" "bitmap size" "AL extents"; do
	assert_match "$OUT" "^$k: +[0-9]" "create-md summary ($k)"
done
data_bytes=$(sed -n 's/^data size: *\([0-9]*\) bytes.*/\1/p' <<<"$OUT")
uuid=$(sed -n 's/^device uuid: *\([0-9a-f]*\)$/\1/p' <<<"$OUT")
md_off=$(sed -n 's/^metadata offset: *\([0-9]*\)$/\1/p' <<<"$OUT")
assert_match "$uuid" '^[0-9a-f]{16}$' "device uuid"
# internal metadata costs a little of the device, and sits at its end
if [ "$data_bytes" -ge "$DISK_BYTES" ] ||
	[ "$data_bytes" -le $((DISK_BYTES - (1 << 20))) ]; then
	fail "data size $data_bytes not just below $DISK_BYTES"
fi
assert_eq "$md_off" "$data_bytes" "metadata offset"
assert_eq "$(file_size "$DISK")" "$DISK_BYTES" "disk size after create-md"
assert_eq "$(sha_head "$DISK" 8)" "$head_before" "first 8 MiB after create-md"
sums=$(data_sums "$md_off")
# the tail pattern below the metadata was there before create-md
tail_now=$(dd if="$DISK" iflag=skip_bytes,count_bytes \
	skip=$((DISK_BYTES - (TAIL_MIB << 20))) \
	count=$((md_off - DISK_BYTES + (TAIL_MIB << 20))) status=none | sha256sum)
tail_ref=$({ pattern_stream 2 || true; } |
	head -c $((md_off - DISK_BYTES + (TAIL_MIB << 20))) | sha256sum)
assert_eq "$tail_now" "$tail_ref" "data just below the metadata"
assert_ne "$tail_before" "$(dd if="$DISK" bs=1M \
	skip=$(((DISK_BYTES >> 20) - TAIL_MIB)) status=none | sha256sum)" \
	"the metadata area (create-md wrote nothing?)"

# -------------------------------------------------------------- dump-md
step "dump-md, human-readable"
expect_rc 0 "$DUETCTL" dump-md r0
assert_match "$OUT" '^version: +1$' "dump-md version"
assert_match "$OUT" "^data size: +$data_bytes bytes \\(2\\.0 GiB\\)$" "dump-md data size"
assert_match "$OUT" '^bm granularity: +4096$' "dump-md granularity"
assert_match "$OUT" "^device uuid: +$uuid$" "dump-md uuid"
assert_match "$OUT" '^placement: +internal$' "dump-md placement"
assert_match "$OUT" '^slot 0: +valid, seq [0-9]+' "slot 0"
assert_match "$OUT" '^slot 1: +valid, seq [0-9]+' "slot 1"
assert_match "$OUT" '^dirty bits: +0$' "dirty bits"
assert_match "$OUT" '^al active: +0 of 1237$' "al"

step "dump-md --json"
expect_rc 0 "$DUETCTL" dump-md r0 --json
jq -e . >/dev/null <<<"$OUT" || fail "dump-md --json is not JSON"
assert_eq "$(json .superblock.version)" 1 "json version"
assert_eq "$(json .superblock.data_bytes)" "$data_bytes" "json data_bytes"
assert_eq "$(json .superblock.bm_granularity)" 4096 "json granularity"
assert_eq "$(json .superblock.device_uuid)" "$uuid" "json device_uuid"
assert_eq "$(json .superblock.placement)" internal "json placement"
assert_eq "$(json .superblock.node_id)" 0 "json node_id"
assert_eq "$(json .superblock.md_offset)" "$md_off" "json md_offset"
assert_eq "$(json .superblock.md_dev_bytes)" "$DISK_BYTES" "json md_dev_bytes"
assert_eq "$(json .superblock.current_uuid)" 0000000000000000 "json current_uuid"
assert_eq "$(json '.superblock.history | length')" 4 "json history"
assert_eq "$(json '.superblock.peers | length')" 4 "json peers"
assert_eq "$(json '[.slots[].valid] | all')" true "json both slots valid"
assert_eq "$(json '[.slots[] | select(.in_use)] | length')" 1 "json slot in use"
assert_eq "$(json '.slots | map(.state) | join(",")')" valid,valid "json states"
assert_eq "$(json .disk)" "$DISK" "json disk"
assert_eq "$(json .meta_disk)" null "json meta_disk"
assert_eq "$(json .bitmap.granularity)" 4096 "json bitmap granularity"
assert_eq "$(json .bitmap.bits)" $((data_bytes / 4096)) "json bitmap bits"
assert_eq "$(json .bitmap.dirty_bits)" 0 "json dirty_bits"
assert_eq "$(json '.bitmap.extents | length')" 0 "json dirty extents"
assert_eq "$(json .activity_log.nr_slots)" 1237 "json al nr_slots"
assert_eq "$(json .activity_log.extent_bytes)" 4194304 "json al extent_bytes"
assert_eq "$(json .activity_log.active)" 0 "json al active"
sb0=$(json '.superblock.sb_offset[0]')
sb1=$(json '.superblock.sb_offset[1]')
assert_eq "$(json '.slots[0].offset'),$(json '.slots[1].offset')" "$sb0,$sb1" \
	"slot offsets"
if [ "$sb0" -lt "$md_off" ] || [ "$sb1" -ge "$DISK_BYTES" ]; then
	fail "superblocks at $sb0/$sb1 outside the metadata area"
fi

step "dump-md --disk (forensics, no configuration)"
expect_rc 0 "$DUETCTL" --config-dir /nonexistent dump-md --disk "$DISK" --json
assert_eq "$(json .superblock.device_uuid)" "$uuid" "forensic device_uuid"
expect_rc 0 "$DUETCTL" --config-dir /nonexistent dump-md --disk "$DISK" \
	--meta-disk internal
assert_match "$OUT" "^device uuid: +$uuid$" "forensic human uuid"

# ------------------------------------------------- refusals and --force
step "create-md over existing metadata"
expect_rc 4 "$DUETCTL" create-md r0
assert_contains "$ERR" "--force" "refusal message"
assert_contains "$ERR" "generation identifiers" "refusal message"
expect_rc 0 "$DUETCTL" dump-md r0 --json
assert_eq "$(json .superblock.device_uuid)" "$uuid" "uuid after refused create-md"

expect_rc 0 "$DUETCTL" create-md r0 --force
new_uuid=$(sed -n 's/^device uuid: *\([0-9a-f]*\)$/\1/p' <<<"$OUT")
assert_ne "$new_uuid" "$uuid" "device uuid after create-md --force"
assert_eq "$(data_sums "$md_off")" "$sums" "data area after create-md --force"

step "create-md --full-sync"
expect_rc 0 "$DUETCTL" create-md --force --full-sync r0
expect_rc 0 "$DUETCTL" dump-md r0 --json
assert_eq "$(json .bitmap.dirty_bits)" "$(json .bitmap.bits)" "full-sync dirty bits"
assert_eq "$(json .bitmap.dirty_bytes)" "$data_bytes" "full-sync dirty bytes"
assert_eq "$(json '.bitmap.extents | map("\(.sector)+\(.sectors)") | join(" ")')" \
	"0+$((data_bytes / 512))" "full-sync extents"
assert_eq "$(json '.superblock.flag_names | index("full-sync") != null')" true \
	"full-sync flag"
expect_rc 0 "$DUETCTL" dump-md r0 --json --extents 0
assert_eq "$(json '.bitmap.extents | length')" 0 "--extents 0"
assert_eq "$(json .bitmap.extents_truncated)" true "--extents 0 truncation"
expect_rc 0 "$DUETCTL" dump-md r0
assert_match "$OUT" "^  dirty sectors 0-$((data_bytes / 512 - 1)) " "human extents"
expect_rc 0 "$DUETCTL" create-md --force r0
uuid=$(sed -n 's/^device uuid: *\([0-9a-f]*\)$/\1/p' <<<"$OUT")
assert_eq "$(data_sums "$md_off")" "$sums" "data area after --full-sync"

# ------------------------------------------------------------ too small
step "too small devices"
mk_sparse "$T/tiny.img" 64K
write_resource tiny alpha_disk="$T/tiny.img"
expect_rc 6 "$DUETCTL" create-md tiny
assert_contains "$ERR" "too small" "too-small message"
assert_eq "$(tr -d '\0' <"$T/tiny.img" | wc -c)" 0 "tiny disk untouched"

# ---------------------------------------------------- external metadata
step "external meta-disk"
EXT_DATA=$T/ext-data.img EXT_MD=$T/ext-md.img
mk_sparse "$EXT_DATA" 64M
mk_sparse "$EXT_MD" 4M
fill_pattern "$EXT_DATA" 64 3
ext_sum=$(sha256sum <"$EXT_DATA")
write_resource r1 alpha_disk="$EXT_DATA" alpha_meta="$EXT_MD"
expect_rc 0 "$DUETCTL" create-md r1
assert_match "$OUT" "^data size: +$((64 << 20)) bytes" "external data size"
expect_rc 0 "$DUETCTL" dump-md r1 --json
assert_eq "$(json .superblock.placement)" external "external placement"
assert_eq "$(json .meta_disk)" "$EXT_MD" "external meta_disk"
assert_eq "$(json .superblock.data_bytes)" $((64 << 20)) "external data_bytes"
assert_eq "$(json '.superblock.sb_offset | join(",")')" 0,4096 "external sb offsets"
assert_eq "$(json '[.slots[].valid] | all')" true "external slots"
ext_uuid=$(json .superblock.device_uuid)
expect_rc 0 "$DUETCTL" --config-dir /nonexistent dump-md --disk "$EXT_DATA" \
	--meta-disk "$EXT_MD" --json
assert_eq "$(json .superblock.device_uuid)" "$ext_uuid" "external forensic uuid"
expect_rc 4 "$DUETCTL" create-md r1
expect_rc 0 "$DUETCTL" wipe-md --force r1
expect_rc 5 "$DUETCTL" dump-md r1
assert_eq "$(sha256sum <"$EXT_DATA")" "$ext_sum" "external data after create/dump/wipe"
mk_sparse "$T/ext-md-tiny.img" 8K
write_resource r2 alpha_disk="$EXT_DATA" alpha_meta="$T/ext-md-tiny.img"
expect_rc 6 "$DUETCTL" create-md r2
assert_contains "$ERR" "too small" "external too-small message"

# ----------------------------------------------------------- corruption
step "corruption in both superblock slots"
dd if="$DISK" of="$T/slots.bak" iflag=skip_bytes,count_bytes skip="$sb0" \
	count=8192 status=none
restore_slots() {
	dd if="$T/slots.bak" of="$DISK" oflag=seek_bytes seek="$sb0" \
		conv=notrunc status=none
}
# magic, version, crc, seq, data_bytes, a peer, reserved bytes, last byte
for pos in 0 9 13 16 60 200 300 4095; do
	flip_byte "$DISK" $((sb0 + pos))
	flip_byte "$DISK" $((sb1 + pos))
	expect_rc 5 "$DUETCTL" dump-md r0
	assert_match "$ERR" 'slot 0 \(offset [0-9]+\)' "both-slot message (byte $pos)"
	assert_match "$ERR" 'slot 1 \(offset [0-9]+\)' "both-slot message (byte $pos)"
	if [ "$pos" -lt 8 ]; then
		assert_contains "$ERR" "magic" "message for byte $pos"
	else
		assert_contains "$ERR" "CRC mismatch" "message for byte $pos"
	fi
	restore_slots
done
expect_rc 0 "$DUETCTL" dump-md r0
expect_rc 4 "$DUETCTL" create-md r0

step "corruption in one slot"
for slot in 0 1; do
	off=$([ "$slot" -eq 0 ] && echo "$sb0" || echo "$sb1")
	for pos in 20 100 2000; do
		flip_byte "$DISK" $((off + pos))
		expect_rc 0 "$DUETCTL" dump-md r0 --json
		assert_eq "$(json ".slots[$slot].valid")" false "slot $slot valid"
		assert_eq "$(json ".slots[$slot].state")" bad-crc "slot $slot state"
		assert_contains "$(json ".slots[$slot].detail")" "CRC mismatch" \
			"slot $slot detail"
		assert_eq "$(json ".slots[$((1 - slot))].in_use")" true \
			"other slot in use"
		assert_eq "$(json .superblock.device_uuid)" "$uuid" \
			"uuid from the surviving slot"
		expect_rc 0 "$DUETCTL" dump-md r0
		assert_match "$OUT" "^slot $slot: +bad-crc: .*CRC mismatch" \
			"human report of slot $slot"
		assert_match "$OUT" "^slot $((1 - slot)): +valid, seq [0-9]+, in use" \
			"human report of the other slot"
		restore_slots
	done
done
assert_eq "$(data_sums "$md_off")" "$sums" "data area after dump-md"

# Bitmap pages carry no checksum (docs/metadata-format.md), so bits can be
# set from here: byte b, bit k is granule 8b+k (4 KiB = 8 sectors each).
step "dirty bitmap extents"
expect_rc 0 "$DUETCTL" dump-md r0 --json
bm_off=$(json .superblock.bm_offset)
nbits=$(json .bitmap.bits)
bm_bytes=$(json .superblock.bm_bytes)
poke() {	# poke OFFSET BYTE
	# shellcheck disable=SC2059
	printf "\\x$(printf %02x "$2")" |
		dd of="$DISK" bs=1 seek="$1" conv=notrunc status=none
}
poke "$bm_off" 1			# granule 0
poke $((bm_off + 1)) 15			# granules 8..11
poke $((bm_off + 4096)) 128		# granule 32775 (second page)
expect_rc 0 "$DUETCTL" dump-md r0 --json
assert_eq "$(json .bitmap.dirty_bits)" 6 "dirty bits"
assert_eq "$(json .bitmap.dirty_bytes)" $((6 * 4096)) "dirty bytes"
assert_eq "$(json '.bitmap.extents | map("\(.sector)+\(.sectors)") | join(" ")')" \
	"0+8 64+32 $((32775 * 8))+8" "dirty extents"
assert_eq "$(json .bitmap.extents_truncated)" false "extents not truncated"
expect_rc 0 "$DUETCTL" dump-md r0 --json --extents 2
assert_eq "$(json '.bitmap.extents | length')" 2 "--extents 2"
assert_eq "$(json .bitmap.extents_truncated)" true "--extents 2 truncation"
expect_rc 0 "$DUETCTL" dump-md r0 --extents 2
assert_match "$OUT" '^dirty bits: +6$' "human dirty bits"
assert_match "$OUT" '^  dirty sectors 64-95 \(16\.0 KiB\)$' "human extent"
assert_match "$OUT" 'more dirty extents' "human truncation"
# a bit past the end of the data area: the page is not ours
poke $((bm_off + nbits / 8)) $((1 << (nbits % 8)))
expect_rc 5 "$DUETCTL" dump-md r0
assert_contains "$ERR" "bitmap page $((nbits / 32768))" "bad bitmap message"
dd if=/dev/zero of="$DISK" bs=4096 seek=$((bm_off / 4096)) \
	count=$((bm_bytes / 4096)) conv=notrunc status=none
expect_rc 0 "$DUETCTL" dump-md r0 --json
assert_eq "$(json .bitmap.dirty_bits)" 0 "bitmap cleared again"

# ---------------------------------------------------------------- wipe
step "wipe-md"
expect_rc 2 "$DUETCTL" wipe-md r0
assert_contains "$ERR" "--force" "wipe-md refusal"
expect_rc 0 "$DUETCTL" dump-md r0
expect_rc 0 "$DUETCTL" wipe-md r0 --force
expect_rc 5 "$DUETCTL" dump-md r0
assert_contains "$ERR" "no valid metadata" "after wipe"
assert_contains "$ERR" "no superblock" "after wipe"
dd if="$DISK" iflag=skip_bytes,count_bytes skip="$sb0" count=4096 status=none |
	cmp -s - <(head -c 4096 /dev/zero) || fail "slot 0 not zeroed"
dd if="$DISK" iflag=skip_bytes,count_bytes skip="$sb1" count=4096 status=none |
	cmp -s - <(head -c 4096 /dev/zero) || fail "slot 1 not zeroed"
assert_eq "$(data_sums "$md_off")" "$sums" "data area after wipe-md"
expect_rc 0 "$DUETCTL" wipe-md r0 --force
assert_contains "$OUT" "no valid metadata was present" "second wipe"
expect_rc 0 "$DUETCTL" create-md r0
assert_eq "$(data_sums "$md_off")" "$sums" "data area after re-create"

# ----------------------------------------------------- a resource is up
if command -v python3 >/dev/null; then
	step "refusals while the resource is up"
	bg_start fake-daemon python3 -c '
import socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
s.listen(8)
time.sleep(60)' "$RUN_DIR/r0.sock"
	wait_until 10 test -S "$RUN_DIR/r0.sock" || fail "fake daemon did not start"
	expect_rc 8 "$DUETCTL" create-md --force r0
	assert_contains "$ERR" "is up" "create-md while up"
	expect_rc 8 "$DUETCTL" wipe-md --force r0
	expect_rc 0 "$DUETCTL" dump-md r0
	bg_stop fake-daemon || true
	# the socket file of a dead daemon does not count
	[ -S "$RUN_DIR/r0.sock" ] || fail "expected a stale socket"
	expect_rc 0 "$DUETCTL" create-md --force r0
else
	echo "python3 missing: not testing the refusal while up"
fi

# ----------------------------------------------------------------- show
step "show"
expect_rc 0 "$DUETCTL" show r0
shown=$OUT
assert_match "$shown" '^resource = "r0";$' "show resource"
assert_match "$shown" '^bitmap-granularity = "4K";$' "show granularity"
assert_match "$shown" '^al-extents = 1237;' "show default al-extents"
assert_contains "$shown" "\"$DISK\"" "show disk"
mkdir "$T/etc2"
printf '%s\n' "$shown" >"$T/etc2/r0.conf"
expect_rc 0 "$DUETCTL" --config-dir "$T/etc2" show r0
# only the header comment (it names the file) may differ
assert_eq "$(grep -v '^#' <<<"$OUT")" "$(grep -v '^#' <<<"$shown")" \
	"show output parsed back"
expect_rc 0 "$DUETCTL" show
for r in r0 r1 r2 tiny; do
	assert_match "$OUT" "^resource = \"$r\";$" "show all ($r)"
done

# ---------------------------------------------------------- bad config
step "bad configuration"
write_conf bad <<EOF
resource = "bad";
protocol = "D";
secret = "duet-test-secret";
nodes = ( { name = "alpha"; id = 0; address = "127.0.0.1:7789";
	    disk = "$T/alpha.img"; } );
EOF
for cmd in "show bad" "create-md bad" "dump-md bad" "wipe-md --force bad"; do
	# shellcheck disable=SC2086
	expect_rc 3 "$DUETCTL" $cmd
	assert_contains "$ERR" "$CONF_DIR/bad.conf:2: protocol" "'$cmd' message"
done
expect_rc 3 "$DUETCTL" show
assert_contains "$ERR" "bad.conf:2: protocol" "show all with a bad file"
assert_match "$OUT" '^resource = "r0";$' "show all still prints the good ones"
expect_rc 3 "$DUETCTL" create-md nosuch
assert_contains "$ERR" "nosuch" "missing resource"
expect_rc 3 "$DUETCTL" --node gamma create-md r0
assert_contains "$ERR" "gamma" "unknown node"
rm "$CONF_DIR/bad.conf"

# ---------------------------------------------------------------- usage
step "usage errors"
expect_rc 2 "$DUETCTL" frobnicate
assert_contains "$ERR" "unknown command" "unknown command"
expect_rc 2 "$DUETCTL" create-md --bogus r0
expect_rc 2 "$DUETCTL" create-md
expect_rc 2 "$DUETCTL" create-md r0 r1
expect_rc 2 "$DUETCTL" dump-md
expect_rc 2 "$DUETCTL" dump-md r0 --extents many
expect_rc 2 "$DUETCTL" dump-md --meta-disk "$EXT_MD" r1
expect_rc 2 "$DUETCTL" dump-md --disk "$DISK" r0
expect_rc 2 "$DUETCTL" wipe-md
expect_rc 2 "$DUETCTL" show r0 r1
expect_rc 2 "$DUETCTL" show --bogus
for c in create-md dump-md wipe-md show; do
	expect_rc 0 "$DUETCTL" "$c" --help
	assert_contains "$OUT" "usage: duetctl $c" "$c --help"
done

assert_eq "$(data_sums "$md_off")" "$sums" "data area at the end"
pass
