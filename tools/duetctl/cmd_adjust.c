// SPDX-License-Identifier: MIT
/*
 * duetctl adjust RESOURCE: apply the resource file's adjustable keys (see
 * `duetctl show`: "# adjustable") to the running daemon. The file is
 * checked here first; the daemon reads it again and refuses, changing
 * nothing, if a key that is not adjustable differs from what it runs with.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "cfg.h"
#include "ctl_client.h"
#include "duetctl.h"

#define CMD "adjust"

static int cmd_adjust(const struct duetctl_global *g, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	static struct cfg_resource r;
	const struct cfg_node *self;
	json_t *req, *resp = NULL;
	const char *changed;
	int opt, ret;

	while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		if (opt != 'h')
			return EXIT_USAGE;
		printf("usage: duetctl adjust RESOURCE\n");
		return EXIT_OK;
	}
	if (optind + 1 != argc) {
		duetctl_err(CMD, "expected one RESOURCE");
		return EXIT_USAGE;
	}
	ret = duetctl_load_resource(g, argv[optind], &r, &self);
	if (ret)
		return ret;
	req = json_pack("{s:s}", "cmd", CMD);
	ret = ctlc_call(g, argv[optind], req, &resp, 30000);
	json_decref(req);
	ret = ctlc_result(CMD, argv[optind], ret, resp);
	if (!ret) {
		changed = json_string_value(json_object_get(resp, "changed"));
		if (changed && changed[0])
			printf("%s: adjusted: %s\n", argv[optind], changed);
		else
			printf("%s: nothing to adjust\n", argv[optind]);
	}
	json_decref(resp);
	return ret;
}

static struct duetctl_cmd adjust_cmd = {
	.name = CMD,
	.args = "RESOURCE",
	.summary = "apply the resource file's adjustable keys to the running daemon",
	.run = cmd_adjust,
};
DUETCTL_COMMAND(adjust_cmd)
