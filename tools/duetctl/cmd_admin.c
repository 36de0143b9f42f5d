// SPDX-License-Identifier: MIT
/*
 * duetctl primary / secondary / new-current-uuid / connect / disconnect /
 * invalidate / invalidate-remote / pause-sync / resume-sync / outdate /
 * resume-io: requests decided by the daemon's
 * state machine (docs/states.md); events: the daemon's stream of state
 * changes; wait-connect / wait-sync: poll the status until a condition
 * holds or a time-out.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ctl_client.h"
#include "duetctl.h"

#define ADMIN_TIMEOUT_MS 60000	/* a disconnect waits for the link to close */
#define WAIT_POLL_MS 100
#define WAIT_LINE_EVERY_MS 2000	/* plain progress lines, not on a tty */

static long long mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

/* ---- requests ---- */

struct admin_req {
	const char *name;
	const char *flag;	/* the one optional boolean option, or NULL */
	const char *key;	/* its request key */
};

static int run_request(const struct duetctl_global *g, int argc, char **argv,
		       const struct admin_req *a)
{
	struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ a->flag ? a->flag : "help", no_argument, NULL, 'f' },
		{ NULL, 0, NULL, 0 },
	};
	bool json = g->json, set = false;
	json_t *req, *resp = NULL;
	const char *res, *note;
	int opt, ret;

	while ((opt = getopt_long(argc, argv, "jh", opts, NULL)) != -1) {
		switch (opt) {
		case 'j':
			json = true;
			break;
		case 'f':
			if (a->flag) {
				set = true;
				break;
			}
			/* fall through */
		case 'h':
			printf("usage: duetctl %s RESOURCE%s%s%s [--json]\n",
			       a->name, a->flag ? " [--" : "",
			       a->flag ? a->flag : "", a->flag ? "]" : "");
			return EXIT_OK;
		default:
			return EXIT_USAGE;
		}
	}
	if (optind + 1 != argc) {
		duetctl_err(a->name, "expected one RESOURCE");
		return EXIT_USAGE;
	}
	res = argv[optind];
	req = json_pack("{s:s}", "cmd", a->name);
	if (a->key)
		json_object_set_new(req, a->key, json_boolean(set));
	ret = ctlc_call(g, res, req, &resp, ADMIN_TIMEOUT_MS);
	json_decref(req);
	ret = ctlc_result(a->name, res, ret, resp);
	if (ret == EXIT_OK) {
		note = json_string_value(json_object_get(resp, "note"));
		if (json) {
			json_object_del(resp, "ok");
			json_dumpf(resp, stdout, JSON_INDENT(2));
			putchar('\n');
		} else {
			if (!note)
				note = json_string_value(
					json_object_get(resp, "state"));
			printf("%s: %s\n", res, note ? note : "done");
		}
	}
	json_decref(resp);
	return ret;
}

#define ADMIN_REQUEST(fn, cmdname, flagname, keyname, argstr, sum)        \
	static int fn(const struct duetctl_global *g, int argc, char **argv) \
	{                                                                    \
		static const struct admin_req a = { cmdname, flagname,       \
						     keyname };              \
		return run_request(g, argc, argv, &a);                       \
	}                                                                    \
	static struct duetctl_cmd fn##_cmd = {                               \
		.name = cmdname,                                             \
		.args = argstr,                                              \
		.summary = sum,                                              \
		.run = fn,                                                   \
	};                                                                   \
	DUETCTL_COMMAND(fn##_cmd)

ADMIN_REQUEST(cmd_connect, "connect", "discard-my-data", "discard_my_data",
	      "RESOURCE [--discard-my-data]",
	      "connect to the peer again (--discard-my-data: lose this node's changes in a split brain)")
ADMIN_REQUEST(cmd_primary, "primary", "force", "force", "RESOURCE [--force]",
	      "promote: this node's device takes writes (--force: declare its data the newest)")
ADMIN_REQUEST(cmd_secondary, "secondary", NULL, NULL, "RESOURCE",
	      "demote: the device becomes read-only, the peer may be promoted")
ADMIN_REQUEST(cmd_new_uuid, "new-current-uuid", "clear-bitmap", "clear_bitmap",
	      "RESOURCE [--clear-bitmap]",
	      "start a new data generation (--clear-bitmap: a new pair with identical disks skips the initial sync)")
ADMIN_REQUEST(cmd_disconnect, "disconnect", NULL, NULL, "RESOURCE",
	      "drop the connection and stay StandAlone until connect")
ADMIN_REQUEST(cmd_resume_io, "resume-io", NULL, NULL, "RESOURCE [--json]",
	      "release I/O held by fencing (suspend-io) without fencing the peer")
ADMIN_REQUEST(cmd_invalidate, "invalidate", NULL, NULL, "RESOURCE",
	      "throw this node's data away: full resync from the peer")
ADMIN_REQUEST(cmd_invalidate_remote, "invalidate-remote", NULL, NULL,
	      "RESOURCE", "overwrite the peer's data: full resync to it")
ADMIN_REQUEST(cmd_pause_sync, "pause-sync", NULL, NULL, "RESOURCE",
	      "pause the running resync")
ADMIN_REQUEST(cmd_resume_sync, "resume-sync", NULL, NULL, "RESOURCE",
	      "resume a paused resync where it stopped")
ADMIN_REQUEST(cmd_outdate, "outdate", NULL, NULL, "RESOURCE",
	      "mark this (disconnected Secondary's) data Outdated")

/* ---- events ---- */

static const char *str(json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));

	return s ? s : "";
}

static void print_event(json_t *e, bool json)
{
	char when[32] = "";
	double t = json_number_value(json_object_get(e, "time"));
	time_t sec = (time_t)t;
	struct tm tm;
	const char *reason;

	if (json) {
		json_dumpf(e, stdout, JSON_COMPACT);
		putchar('\n');
		return;
	}
	if (localtime_r(&sec, &tm))
		strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
	printf("%s.%03d %s %s %s: %s", when, (int)((long long)(t * 1000) % 1000),
	       str(e, "resource"), str(e, "event"), str(e, "what"),
	       str(e, "state"));
	if (!strcmp(str(e, "event"), "split-brain"))
		printf(" [%s, policy %s, rule %lld%s%s]",
		       json_is_true(json_object_get(e, "resolved")) ?
			       "resolved" :
			       "not resolved",
		       str(e, "policy"),
		       (long long)json_integer_value(json_object_get(e, "rule")),
		       json_is_string(json_object_get(e, "victim")) ?
			       ", discarded: " :
			       "",
		       str(e, "victim"));
	reason = str(e, "reason");
	if (*reason)
		printf(" (%s)", reason);
	putchar('\n');
}

/* The "exists" line: the state when the stream starts. */
static int print_exists(const struct duetctl_global *g, const char *res,
			bool json)
{
	json_t *req = json_pack("{s:s}", "cmd", "status"), *st = NULL, *e;
	struct timespec now;
	const char *keys[][2] = {
		{ "role", "role" },	      { "disk", "disk" },
		{ "conn", "connection" },     { "repl", "replication" },
		{ "peer_role", "peer_role" }, { "peer_disk", "peer_disk" },
		{ "state", "state" },
	};
	int ret = ctlc_call(g, res, req, &st, 5000);

	json_decref(req);
	ret = ctlc_result("events", res, ret, st);
	if (ret) {
		json_decref(st);
		return ret;
	}
	clock_gettime(CLOCK_REALTIME, &now);
	e = json_pack("{s:s,s:i,s:f,s:s,s:s,s:s}", "event", "exists", "seq",
		      0, "time",
		      (double)now.tv_sec + (double)now.tv_nsec / 1e9,
		      "resource", res, "node", str(st, "node"), "what",
		      "exists");
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		json_object_set_new(e, keys[i][0],
				    json_string(str(st, keys[i][1])));
	json_object_set_new(e, "reason", json_string(""));
	print_event(e, json);
	json_decref(e);
	json_decref(st);
	return EXIT_OK;
}

static int cmd_events(const struct duetctl_global *g, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "timeout", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	bool json = g->json;
	long long deadline = -1;
	json_t *req, *resp = NULL;
	const char *res;
	char *end;
	double secs;
	int opt, fd, ret;

	while ((opt = getopt_long(argc, argv, "jt:h", opts, NULL)) != -1) {
		switch (opt) {
		case 'j':
			json = true;
			break;
		case 't':
			secs = strtod(optarg, &end);
			if (*end || !(secs >= 0 && secs <= 86400 * 365)) {
				duetctl_err("events", "--timeout wants seconds, got '%s'",
					    optarg);
				return EXIT_USAGE;
			}
			deadline = mono_ms() + (long long)(secs * 1000);
			break;
		case 'h':
			printf("usage: duetctl events RESOURCE [--json] [--timeout S]\n");
			return EXIT_OK;
		default:
			return EXIT_USAGE;
		}
	}
	if (optind + 1 != argc) {
		duetctl_err("events", "expected one RESOURCE");
		return EXIT_USAGE;
	}
	res = argv[optind];
	/* a follower reads each line as it comes */
	setvbuf(stdout, NULL, _IOLBF, 0);
	fd = ctlc_connect(g, res);
	if (fd < 0)
		return ctlc_result("events", res, fd, NULL);
	req = json_pack("{s:s}", "cmd", "events");
	ret = ctlc_send(fd, req);
	json_decref(req);
	if (!ret)
		ret = ctlc_recv(fd, &resp, 5000);
	ret = ctlc_result("events", res, ret, resp);
	json_decref(resp);
	if (!ret)
		ret = print_exists(g, res, json);
	while (!ret) {
		int wait = -1;

		if (deadline >= 0) {
			wait = (int)(deadline - mono_ms());
			if (wait <= 0)
				break;
		}
		resp = NULL;
		ret = ctlc_recv(fd, &resp, wait);
		if (ret == -ETIMEDOUT) {
			ret = EXIT_OK;
			break;
		}
		if (ret == -ECONNRESET) {
			/* the daemon went down: the stream is over */
			if (!json)
				fprintf(stderr, "duetctl events: %s: the daemon closed the stream (down)\n",
					res);
			ret = EXIT_OK;
			break;
		}
		if (ret) {
			duetctl_err("events", "%s: %s", res, strerror(-ret));
			ret = EXIT_FAIL;
			break;
		}
		print_event(resp, json);
		json_decref(resp);
	}
	close(fd);
	return ret;
}

static struct duetctl_cmd events_cmd = {
	.name = "events",
	.args = "RESOURCE [--json] [--timeout S]",
	.summary = "follow the resource's state changes, one line each",
	.run = cmd_events,
};
DUETCTL_COMMAND(events_cmd)

/* ---- wait-connect, wait-sync ---- */

static void human_bytes(uint64_t b, char *buf, size_t len)
{
	static const char *const unit[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	double v = (double)b;
	unsigned int i = 0;

	while (v >= 1024 && i + 1 < sizeof(unit) / sizeof(unit[0])) {
		v /= 1024;
		i++;
	}
	snprintf(buf, len, i ? "%.1f %s" : "%.0f %s", v, unit[i]);
}

static int64_t num(json_t *o, const char *key)
{
	return (int64_t)json_integer_value(json_object_get(o, key));
}

/* One progress report: a bar redrawn in place on a tty, else a line. */
static void progress(const char *res, json_t *st, bool tty)
{
	json_t *rs = json_object_get(st, "resync");
	uint64_t total, left;
	char l[32], t[32], rate[32];
	double pct;
	int64_t eta;
	int bar = 30, fill;

	if (!json_is_object(rs))
		return;
	total = (uint64_t)num(rs, "total_bytes");
	left = (uint64_t)num(rs, "left_bytes");
	if (left > total)
		total = left;
	pct = total ? 100.0 * (double)(total - left) / (double)total : 0;
	human_bytes(left, l, sizeof(l));
	human_bytes(total, t, sizeof(t));
	human_bytes((uint64_t)num(rs, "rate_bps"), rate, sizeof(rate));
	eta = json_is_integer(json_object_get(rs, "eta_s")) ?
		      num(rs, "eta_s") :
		      -1;
	if (tty) {
		fill = (int)(pct * bar / 100.0);
		printf("\r%s: %s [", res, str(st, "replication"));
		for (int i = 0; i < bar; i++)
			putchar(i < fill ? '=' : i == fill ? '>' : ' ');
		printf("] %5.1f%% %s/s", pct, rate);
		if (eta >= 0)
			printf(" ETA %lld:%02lld ", (long long)eta / 60,
			       (long long)eta % 60);
		else
			printf("          ");
		fflush(stdout);
	} else {
		printf("%s: %s %.1f%% (%s of %s left, %s/s", res,
		       str(st, "replication"), pct, l, t, rate);
		if (eta >= 0)
			printf(", ETA %llds", (long long)eta);
		printf(")\n");
		fflush(stdout);
	}
}

static bool is_synced(json_t *st)
{
	return !strcmp(str(st, "connection"), "Connected") &&
	       !strcmp(str(st, "replication"), "Established") &&
	       !strcmp(str(st, "disk"), "UpToDate") &&
	       !strcmp(str(st, "peer_disk"), "UpToDate");
}

static int run_wait(const struct duetctl_global *g, int argc, char **argv,
		    const char *cmd, bool sync)
{
	static const struct option opts[] = {
		{ "timeout", required_argument, NULL, 't' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	long long deadline = -1, next_line = 0;
	bool tty = isatty(STDOUT_FILENO), quiet = false, drew = false;
	json_t *req, *st;
	const char *res;
	char *end;
	double secs;
	int opt, ret;

	while ((opt = getopt_long(argc, argv, "t:qh", opts, NULL)) != -1) {
		switch (opt) {
		case 't':
			secs = strtod(optarg, &end);
			if (*end || !(secs >= 0 && secs <= 86400 * 365)) {
				duetctl_err(cmd, "--timeout wants seconds, got '%s'",
					    optarg);
				return EXIT_USAGE;
			}
			deadline = mono_ms() + (long long)(secs * 1000);
			break;
		case 'q':
			quiet = true;
			break;
		case 'h':
			printf("usage: duetctl %s RESOURCE [--timeout S]%s\n",
			       cmd, sync ? " [--quiet]" : "");
			return EXIT_OK;
		default:
			return EXIT_USAGE;
		}
	}
	if (optind + 1 != argc) {
		duetctl_err(cmd, "expected one RESOURCE");
		return EXIT_USAGE;
	}
	res = argv[optind];
	for (;;) {
		st = NULL;
		req = json_pack("{s:s}", "cmd", "status");
		ret = ctlc_call(g, res, req, &st, 5000);
		json_decref(req);
		ret = ctlc_result(cmd, res, ret, st);
		if (ret)
			break;
		if (!json_is_string(json_object_get(st, "connection"))) {
			duetctl_err(cmd, "%s has no peer: nothing to wait for",
				    res);
			ret = EXIT_USAGE;
			break;
		}
		if (sync ? is_synced(st) :
			   !strcmp(str(st, "connection"), "Connected"))
			break;
		if (!strcmp(str(st, "connection"), "StandAlone")) {
			if (drew)
				putchar('\n');
			duetctl_err(cmd, "%s is StandAlone: it will not connect until `duetctl connect %s`%s",
				    res, res,
				    json_is_object(json_object_get(st, "handshake")) &&
						    json_is_true(json_object_get(
							    json_object_get(st, "handshake"),
							    "split_brain")) ?
					    " (split brain: see duetctl-connect(8))" :
					    "");
			ret = EXIT_REFUSED;
			break;
		}
		if (sync && !quiet && json_is_object(json_object_get(st, "resync")) &&
		    (tty || mono_ms() >= next_line)) {
			progress(res, st, tty);
			drew = tty;
			next_line = mono_ms() + WAIT_LINE_EVERY_MS;
		}
		json_decref(st);
		st = NULL;
		if (deadline >= 0 && mono_ms() >= deadline) {
			if (drew)
				putchar('\n');
			duetctl_err(cmd, "%s: gave up waiting (timeout)", res);
			return EXIT_TIMEOUT;
		}
		sleep_ms(WAIT_POLL_MS);
	}
	if (drew)
		putchar('\n');
	if (!ret && !quiet)
		printf("%s: %s\n", res, str(st, "state"));
	json_decref(st);
	return ret;
}

static int cmd_wait_connect(const struct duetctl_global *g, int argc,
			    char **argv)
{
	return run_wait(g, argc, argv, "wait-connect", false);
}

static int cmd_wait_sync(const struct duetctl_global *g, int argc,
			 char **argv)
{
	return run_wait(g, argc, argv, "wait-sync", true);
}

static struct duetctl_cmd wait_connect_cmd = {
	.name = "wait-connect",
	.args = "RESOURCE [--timeout S]",
	.summary = "wait until the peer is connected",
	.run = cmd_wait_connect,
};
DUETCTL_COMMAND(wait_connect_cmd)

static struct duetctl_cmd wait_sync_cmd = {
	.name = "wait-sync",
	.args = "RESOURCE [--timeout S] [--quiet]",
	.summary = "wait until both disks are UpToDate (progress bar on a tty)",
	.run = cmd_wait_sync,
};
DUETCTL_COMMAND(wait_sync_cmd)
