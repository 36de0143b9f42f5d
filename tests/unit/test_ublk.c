// SPDX-License-Identifier: MIT
/*
 * The ublk ABI helpers that need no kernel: the per-queue descriptor
 * offsets, the feature and state names, the ownership tag, and the
 * control channel's answer on a host without the ublk driver.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "dev.h"
#include "ublk_probe.h"

static void test_desc_offsets(void **state)
{
	(void)state;
	/* 4096 descriptors of 24 bytes = 96 KiB per queue, page aligned */
	assert_int_equal(ublk_io_desc_offset(0, 4096), 0);
	assert_int_equal(ublk_io_desc_offset(1, 4096), 98304);
	assert_int_equal(ublk_io_desc_offset(3, 4096), 3 * 98304);
	/* with 64 KiB pages the stride rounds up to 128 KiB */
	assert_int_equal(ublk_io_desc_offset(2, 65536), 2 * 131072);
}

static void test_feature_names(void **state)
{
	char buf[256];

	(void)state;
	/* what the 6.12 test kernel reports */
	assert_string_equal(ublk_features_str(0x1fe, buf, sizeof(buf)),
			    "comp-in-task,need-get-data,recovery,"
			    "recovery-reissue,unprivileged,cmd-ioctl-encode,"
			    "user-copy,zoned");
	assert_string_equal(ublk_features_str(0, buf, sizeof(buf)), "");
	assert_string_equal(ublk_features_str(UBLK_F_USER_RECOVERY |
						      (1ULL << 40),
					      buf, sizeof(buf)),
			    "recovery,0x10000000000");
	/* truncation keeps a terminated string */
	ublk_features_str(0x1fe, buf, 12);
	assert_true(strlen(buf) < 12);
}

static void test_state_names(void **state)
{
	(void)state;
	assert_string_equal(ublk_state_name(UBLK_S_DEV_DEAD), "dead");
	assert_string_equal(ublk_state_name(UBLK_S_DEV_LIVE), "live");
	assert_string_equal(ublk_state_name(UBLK_S_DEV_QUIESCED), "quiesced");
	assert_string_equal(ublk_state_name(UBLK_S_DEV_FAIL_IO), "fail-io");
	assert_string_equal(ublk_state_name(77), "unknown");
}

static void test_abi_encoding(void **state)
{
	(void)state;
	/* the documented ioctl numbers ('u', nr, 32-byte command) */
	assert_int_equal(UBLK_U_CMD_ADD_DEV, 0xc0207504u);
	assert_int_equal(UBLK_U_CMD_GET_FEATURES, 0x80207513u);
	assert_int_equal(UBLK_U_IO_FETCH_REQ, 0xc0107520u);
	assert_int_equal(UBLK_U_IO_COMMIT_AND_FETCH_REQ, 0xc0107521u);
}

static void test_tag(void **state)
{
	(void)state;
	assert_int_equal(dev_tag("r0") >> 32, 0x44554554u);
	assert_true(dev_tag("r0") != dev_tag("r1"));
	assert_int_equal(dev_tag("r0"), dev_tag("r0"));
}

/* On a kernel without ublk_drv: a clear errno, no crash. */
static void test_probe_without_driver(void **state)
{
	uint64_t f = 0;
	int ret;

	(void)state;
	if (!access(UBLK_CONTROL_PATH, F_OK))
		skip();
	ret = ublk_probe_features(&f);
	assert_int_equal(ret, -ENOENT);
	assert_null(ublk_ctrl_open());
	assert_int_equal(errno, ENOENT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_desc_offsets),
		cmocka_unit_test(test_feature_names),
		cmocka_unit_test(test_state_names),
		cmocka_unit_test(test_abi_encoding),
		cmocka_unit_test(test_tag),
		cmocka_unit_test(test_probe_without_driver),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
