// SPDX-License-Identifier: MIT
/*
 * duetctl resume-io: release application I/O that fencing (suspend-io)
 * holds, without fencing the peer (docs/man/duetctl-resume-io.8).
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "ctl_client.h"
#include "duetctl.h"

#define RESUME_TIMEOUT_MS 10000

static int cmd_resume_io(const struct duetctl_global *g, int argc,
			 char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	bool json = g->json;
	json_t *req, *resp = NULL;
	const char *res, *note, *err;
	int opt, ret;

	while ((opt = getopt_long(argc, argv, "jh", opts, NULL)) != -1) {
		switch (opt) {
		case 'j':
			json = true;
			break;
		case 'h':
			printf("usage: duetctl resume-io RESOURCE [--json]\n");
			return EXIT_OK;
		default:
			return EXIT_USAGE;
		}
	}
	if (optind + 1 != argc) {
		duetctl_err("resume-io", "expected one RESOURCE");
		return EXIT_USAGE;
	}
	res = argv[optind];
	req = json_pack("{s:s}", "cmd", "resume-io");
	if (!req)
		return EXIT_FAIL;
	ret = ctlc_call(g, res, req, &resp, RESUME_TIMEOUT_MS);
	json_decref(req);
	if (ret == -ENOENT || ret == -ECONNREFUSED) {
		duetctl_err("resume-io", "%s is not up (start it with `duetctl up %s`)",
			    res, res);
		return EXIT_NO_DAEMON;
	}
	if (ret == -ETIMEDOUT) {
		duetctl_err("resume-io", "%s: the daemon did not answer in time",
			    res);
		return EXIT_TIMEOUT;
	}
	if (ret) {
		duetctl_err("resume-io", "%s: %s", res, strerror(-ret));
		return EXIT_FAIL;
	}
	if (!json_is_true(json_object_get(resp, "ok"))) {
		err = json_string_value(json_object_get(resp, "error"));
		duetctl_err("resume-io", "%s: %s", res, err ? err : "refused");
		json_decref(resp);
		return EXIT_REFUSED;
	}
	if (json) {
		json_object_del(resp, "ok");
		json_dumpf(resp, stdout, JSON_INDENT(2));
		putchar('\n');
	} else {
		note = json_string_value(json_object_get(resp, "note"));
		printf("%s: %s\n", res,
		       note ? note :
			      json_string_value(json_object_get(resp, "state")));
	}
	json_decref(resp);
	return EXIT_OK;
}

static struct duetctl_cmd resume_io_cmd = {
	.name = "resume-io",
	.args = "RESOURCE [--json]",
	.summary = "release I/O held by fencing (suspend-io) without fencing the peer",
	.run = cmd_resume_io,
};
DUETCTL_COMMAND(resume_io_cmd)
