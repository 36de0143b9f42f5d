// SPDX-License-Identifier: MIT
/*
 * duetctl verify RESOURCE [--wait] [--timeout SEC]: online verify. The
 * daemon compares the digest of every block of the device with the peer's
 * and marks the blocks that differ out of sync; a later resync (disconnect
 * and connect) repairs them. --wait follows the verify to its end and
 * prints what it found.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ctl_client.h"
#include "duetctl.h"
#include "util.h"

#define CMD "verify"
#define POLL_MS 200

/* One request; @out gets the answer. Returns an exit code. */
static int ask(const struct duetctl_global *g, const char *res, json_t *req,
	       json_t **out)
{
	json_t *resp = NULL;
	int ret = ctlc_call(g, res, req, &resp, 30000);

	json_decref(req);
	ret = ctlc_result(CMD, res, ret, resp);
	if (ret) {
		json_decref(resp);
		return ret;
	}
	*out = resp;
	return EXIT_OK;
}

static json_int_t num(const json_t *o, const char *key)
{
	return json_integer_value(json_object_get(o, key));
}

static void print_result(bool json, const char *res, json_t *v)
{
	if (json) {
		json_dumpf(v, stdout, JSON_INDENT(2));
		putchar('\n');
		return;
	}
	printf("%s: verify %s: %lld bytes compared, %lld bytes in %lld blocks out of sync\n",
	       res,
	       json_is_true(json_object_get(v, "complete")) ? "done" :
							       "stopped early",
	       (long long)num(v, "done_bytes"), (long long)num(v, "oos_bytes"),
	       (long long)num(v, "oos_blocks"));
	if (num(v, "oos_bytes"))
		printf("%s: the blocks are marked; `duetctl disconnect %s` and `duetctl connect %s` resync them\n",
		       res, res, res);
}

/* Poll status until the verify is over. */
static int follow(const struct duetctl_global *g, const char *res, bool json,
		  long timeout_s, time_t started)
{
	time_t t0 = time(NULL);
	bool tty = isatty(STDERR_FILENO) && !json;

	for (;;) {
		json_t *st = NULL, *v;
		int rc = ask(g, res, json_pack("{s:s}", "cmd", "status"), &st);

		if (rc)
			return rc;
		v = json_object_get(st, "verify");
		if (json_is_object(v) &&
		    !json_is_true(json_object_get(v, "running")) &&
		    num(v, "ended") >= started) {
			if (tty)
				fputc('\n', stderr);
			print_result(json, res, v);
			rc = json_is_true(json_object_get(v, "complete")) ?
				     EXIT_OK :
				     EXIT_FAIL;
			if (rc)
				duetctl_err(CMD, "%s: the verify did not reach the end of the device (connection lost?)",
					    res);
			json_decref(st);
			return rc;
		}
		if (!json_is_object(v)) {
			duetctl_err(CMD, "%s: no verify is running", res);
			json_decref(st);
			return EXIT_FAIL;
		}
		if (tty && num(v, "total_bytes")) {
			double pct = 100.0 * (double)num(v, "done_bytes") /
				     (double)num(v, "total_bytes");

			fprintf(stderr, "\r%s: verify %5.1f%%, %lld bytes out of sync ",
				res, pct, (long long)num(v, "oos_bytes"));
		}
		json_decref(st);
		if (timeout_s && time(NULL) - t0 >= timeout_s) {
			if (tty)
				fputc('\n', stderr);
			duetctl_err(CMD, "%s: still verifying after %ld s", res,
				    timeout_s);
			return EXIT_TIMEOUT;
		}
		usleep(POLL_MS * 1000);
	}
}

static int cmd_verify(const struct duetctl_global *g, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "wait", no_argument, NULL, 'w' },
		{ "json", no_argument, NULL, 'j' },
		{ "timeout", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	bool wait = false, json = g->json;
	long timeout_s = 0;
	json_t *resp = NULL;
	time_t started;
	char *end;
	int opt, rc;

	while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (opt) {
		case 'w':
			wait = true;
			break;
		case 'j':
			json = true;
			break;
		case 't':
			errno = 0;
			timeout_s = strtol(optarg, &end, 10);
			if (errno || *end || timeout_s <= 0 ||
			    timeout_s > 7 * 86400) {
				duetctl_err(CMD, "--timeout: '%s' is not a number of seconds (1..604800)",
					    optarg);
				return EXIT_USAGE;
			}
			break;
		case 'h':
			printf("usage: duetctl verify RESOURCE [--wait [--timeout SEC]] [--json]\n");
			return EXIT_OK;
		default:
			return EXIT_USAGE;
		}
	}
	if (optind + 1 != argc) {
		duetctl_err(CMD, "expected one RESOURCE");
		return EXIT_USAGE;
	}
	if (timeout_s && !wait) {
		duetctl_err(CMD, "--timeout needs --wait");
		return EXIT_USAGE;
	}
	started = time(NULL);
	rc = ask(g, argv[optind], json_pack("{s:s}", "cmd", CMD), &resp);
	if (rc)
		return rc;
	json_decref(resp);
	if (!wait) {
		if (!json)
			printf("%s: verify started (follow it with `duetctl status %s`)\n",
			       argv[optind], argv[optind]);
		return EXIT_OK;
	}
	return follow(g, argv[optind], json, timeout_s, started);
}

static struct duetctl_cmd verify_cmd = {
	.name = CMD,
	.args = "RESOURCE [--wait [--timeout SEC]] [--json]",
	.summary = "online verify: compare the whole device with the peer's, mark what differs",
	.run = cmd_verify,
};
DUETCTL_COMMAND(verify_cmd)
