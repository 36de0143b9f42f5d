// SPDX-License-Identifier: MIT
/*
 * duetctl primary / secondary / new-current-uuid: role and generation
 * requests, decided by the daemon's state machine.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "ctl_client.h"
#include "duetctl.h"

/* Send @req to @res's daemon; print the refusal. Consumes @req. */
static int call(const struct duetctl_global *g, const char *cmd,
		const char *res, json_t *req)
{
	json_t *resp = NULL;
	int ret = ctlc_call(g, res, req, &resp, 30000);

	json_decref(req);
	ret = ctlc_result(cmd, res, ret, resp);
	if (ret) {
		json_decref(resp);
		return ret;
	}
	if (g->json) {
		json_object_del(resp, "ok");
		json_dumpf(resp, stdout, JSON_INDENT(2));
		putchar('\n');
	}
	json_decref(resp);
	return EXIT_OK;
}

/* COMMAND RESOURCE [--FLAG]: one optional boolean flag. */
static int run_flagged(const struct duetctl_global *g, int argc, char **argv,
		       const char *cmd, const char *flag, const char *key)
{
	struct option opts[] = {
		{ flag ? flag : "help", no_argument, NULL, 'f' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	bool set = false;
	json_t *req;
	int opt;

	while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (opt) {
		case 'f':
			if (flag) {
				set = true;
				break;
			}
			/* fall through */
		case 'h':
			printf("usage: duetctl %s RESOURCE%s%s%s\n", cmd,
			       flag ? " [--" : "", flag ? flag : "",
			       flag ? "]" : "");
			return EXIT_OK;
		default:
			return EXIT_USAGE;
		}
	}
	if (optind + 1 != argc) {
		duetctl_err(cmd, "expected one RESOURCE");
		return EXIT_USAGE;
	}
	req = json_pack("{s:s}", "cmd", cmd);
	if (key)
		json_object_set_new(req, key, json_boolean(set));
	return call(g, cmd, argv[optind], req);
}

static int cmd_primary(const struct duetctl_global *g, int argc, char **argv)
{
	return run_flagged(g, argc, argv, "primary", "force", "force");
}

static int cmd_secondary(const struct duetctl_global *g, int argc,
			 char **argv)
{
	return run_flagged(g, argc, argv, "secondary", NULL, NULL);
}

static int cmd_new_uuid(const struct duetctl_global *g, int argc, char **argv)
{
	return run_flagged(g, argc, argv, "new-current-uuid", "clear-bitmap",
			   "clear_bitmap");
}

static struct duetctl_cmd primary_cmd = {
	.name = "primary",
	.args = "RESOURCE [--force]",
	.summary = "promote: this node's device takes writes (--force: declare its data the newest)",
	.run = cmd_primary,
};
DUETCTL_COMMAND(primary_cmd)

static struct duetctl_cmd secondary_cmd = {
	.name = "secondary",
	.args = "RESOURCE",
	.summary = "demote: the device becomes read-only, the peer may be promoted",
	.run = cmd_secondary,
};
DUETCTL_COMMAND(secondary_cmd)

static struct duetctl_cmd new_uuid_cmd = {
	.name = "new-current-uuid",
	.args = "RESOURCE [--clear-bitmap]",
	.summary = "start a new data generation (--clear-bitmap: a new pair with identical disks skips the initial sync)",
	.run = cmd_new_uuid,
};
DUETCTL_COMMAND(new_uuid_cmd)
