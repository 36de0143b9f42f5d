// SPDX-License-Identifier: MIT
/*
 * duetctl up / down / status: start and stop a resource's daemon and show
 * what it reports over the control socket.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ctl_client.h"
#include "duetctl.h"
#include "util.h"

#define UP_TIMEOUT_MS 60000   /* TCG guests are slow to create devices */
#define DOWN_TIMEOUT_MS 60000

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

/* duetd next to this duetctl (build tree), else $DUETD, else $PATH. */
static void find_duetd(char *buf, size_t len)
{
	const char *env = getenv("DUETD");
	char self[PATH_MAX - 8];
	ssize_t n;

	if (env && *env) {
		snprintf(buf, len, "%s", env);
		return;
	}
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n > 0) {
		char *slash;

		self[n] = '\0';
		slash = strrchr(self, '/');
		if (slash) {
			*slash = '\0';
			snprintf(buf, len, "%s/duetd", self);
			if (!access(buf, X_OK))
				return;
		}
	}
	snprintf(buf, len, "duetd");
}

static void print_log_tail(const char *path)
{
	char line[1024];
	FILE *f = fopen(path, "r");
	long pos;

	if (!f)
		return;
	/* the last few KiB hold the reason */
	fseek(f, 0, SEEK_END);
	pos = ftell(f);
	fseek(f, pos > 4096 ? pos - 4096 : 0, SEEK_SET);
	if (pos > 4096 && !fgets(line, sizeof(line), f))
		goto out;
	while (fgets(line, sizeof(line), f))
		fprintf(stderr, "  duetd: %s", line);
out:
	fclose(f);
}

static int status_ok(const struct duetctl_global *g, const char *res)
{
	json_t *req = json_pack("{s:s}", "cmd", "status"), *resp = NULL;
	int ret = ctlc_call(g, res, req, &resp, 5000);

	if (!ret && !json_is_true(json_object_get(resp, "ok")))
		ret = -EIO;
	json_decref(req);
	json_decref(resp);
	return ret;
}

static int cmd_up(const struct duetctl_global *g, int argc, char **argv)
{
	static const struct option opts[] = { { "help", no_argument, NULL, 'h' },
					      {} };
	char duetd[PATH_MAX], logpath[PATH_MAX];
	struct cfg_resource *r;
	const char *res;
	long waited = 0;
	pid_t pid;
	int opt, ret, status;

	while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		if (opt == 'h') {
			printf("usage: duetctl up RESOURCE\n");
			return EXIT_OK;
		}
		return EXIT_USAGE;
	}
	if (optind != argc - 1) {
		duetctl_err("up", "expected exactly one RESOURCE");
		return EXIT_USAGE;
	}
	res = argv[optind];
	r = calloc(1, sizeof(*r));
	if (!r)
		return EXIT_FAIL;
	/* validate the config here so errors come with file:line:key */
	ret = duetctl_load_resource(g, res, r, NULL);
	free(r);
	if (ret)
		return ret;
	if (!status_ok(g, res)) {
		printf("%s: already up\n", res);
		return EXIT_OK;
	}
	if (mkdir(g->run_dir, 0755) < 0 && errno != EEXIST) {
		duetctl_err("up", "cannot create run directory %s: %s",
			    g->run_dir, strerror(errno));
		return EXIT_FAIL;
	}
	find_duetd(duetd, sizeof(duetd));
	snprintf(logpath, sizeof(logpath), "%s/%s.log", g->run_dir, res);

	pid = fork();
	if (pid < 0) {
		duetctl_err("up", "fork: %s", strerror(errno));
		return EXIT_FAIL;
	}
	if (pid == 0) {
		const char *args[16];
		int n = 0, fd;

		setsid();
		fd = open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC,
			  0640);
		if (fd >= 0) {
			dup2(fd, STDOUT_FILENO);
			dup2(fd, STDERR_FILENO);
		}
		fd = open("/dev/null", O_RDONLY);
		if (fd >= 0)
			dup2(fd, STDIN_FILENO);
		args[n++] = duetd;
		args[n++] = "--foreground";
		args[n++] = "--resource";
		args[n++] = res;
		args[n++] = "--config-dir";
		args[n++] = g->config_dir;
		args[n++] = "--run-dir";
		args[n++] = g->run_dir;
		if (g->node) {
			args[n++] = "--node";
			args[n++] = g->node;
		}
		args[n] = NULL;
		execvp(duetd, (char *const *)args);
		fprintf(stderr, "cannot execute %s: %s\n", duetd,
			strerror(errno));
		_exit(127);
	}

	/* wait until the daemon answers, or report why it died */
	for (;;) {
		if (waitpid(pid, &status, WNOHANG) == pid) {
			duetctl_err("up", "%s: duetd exited with status %d during start-up (log: %s):",
				    res,
				    WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status),
				    logpath);
			print_log_tail(logpath);
			return EXIT_FAIL;
		}
		if (!status_ok(g, res))
			break;
		if (waited >= UP_TIMEOUT_MS) {
			duetctl_err("up", "%s: duetd (pid %d) did not answer within %ld s; see %s",
				    res, pid, waited / 1000, logpath);
			return EXIT_TIMEOUT;
		}
		sleep_ms(50);
		waited += 50;
	}
	printf("%s: up (duetd pid %d, log %s)\n", res, pid, logpath);
	return EXIT_OK;
}

static int cmd_down(const struct duetctl_global *g, int argc, char **argv)
{
	static const struct option opts[] = { { "help", no_argument, NULL, 'h' },
					      {} };
	json_t *req, *resp = NULL;
	const char *res;
	long waited = 0;
	int opt, ret;

	while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		if (opt == 'h') {
			printf("usage: duetctl down RESOURCE\n");
			return EXIT_OK;
		}
		return EXIT_USAGE;
	}
	if (optind != argc - 1) {
		duetctl_err("down", "expected exactly one RESOURCE");
		return EXIT_USAGE;
	}
	res = argv[optind];
	req = json_pack("{s:s}", "cmd", "down");
	ret = ctlc_call(g, res, req, &resp, DOWN_TIMEOUT_MS);
	json_decref(req);
	if (ret == -ENOENT || ret == -ECONNREFUSED) {
		printf("%s: already down\n", res);
		return EXIT_OK;
	}
	if (ret && ret != -ECONNRESET) {
		duetctl_err("down", "%s: %s", res, strerror(-ret));
		return ret == -ETIMEDOUT ? EXIT_TIMEOUT : EXIT_FAIL;
	}
	if (resp && !json_is_true(json_object_get(resp, "ok"))) {
		duetctl_err("down", "%s: %s", res,
			    json_string_value(json_object_get(resp, "error")));
		json_decref(resp);
		return EXIT_REFUSED;
	}
	json_decref(resp);
	/* the daemon acknowledges, then tears down and removes its socket */
	for (;;) {
		int fd = ctlc_connect(g, res);

		if (fd < 0)
			break;
		close(fd);
		if (waited >= DOWN_TIMEOUT_MS) {
			duetctl_err("down", "%s: duetd still running after %ld s",
				    res, waited / 1000);
			return EXIT_TIMEOUT;
		}
		sleep_ms(50);
		waited += 50;
	}
	printf("%s: down\n", res);
	return EXIT_OK;
}

/* One human line per nested object: "  io: reads=3 writes=5". */
static void print_human(const char *res, json_t *st, bool verbose)
{
	const char *key;
	json_t *v;

	printf("%s:", res);
	json_object_foreach(st, key, v) {
		if (!strcmp(key, "ok") || json_is_object(v) || json_is_array(v))
			continue;
		if (json_is_string(v))
			printf(" %s=%s", key, json_string_value(v));
		else if (json_is_integer(v))
			printf(" %s=%lld", key, (long long)json_integer_value(v));
		else if (json_is_real(v))
			printf(" %s=%.1f", key, json_real_value(v));
		else if (json_is_boolean(v))
			printf(" %s=%s", key, json_is_true(v) ? "yes" : "no");
	}
	putchar('\n');
	json_object_foreach(st, key, v) {
		const char *k2;
		json_t *v2;

		if (!json_is_object(v))
			continue;
		if (!verbose && (!strcmp(key, "features")))
			continue;
		printf("  %s:", key);
		json_object_foreach(v, k2, v2) {
			char *s;

			if (json_is_object(v2) && !verbose)
				continue;
			s = json_is_string(v2) ? strdup(json_string_value(v2)) :
						 json_dumps(v2, JSON_ENCODE_ANY | JSON_COMPACT);
			printf(" %s=%s", k2, s ? s : "?");
			free(s);
		}
		putchar('\n');
	}
}

static int status_one(const struct duetctl_global *g, const char *res,
		      bool json, bool verbose, json_t *all)
{
	json_t *req = json_pack("{s:s,s:b}", "cmd", "status", "verbose",
				verbose);
	json_t *resp = NULL;
	int ret = ctlc_call(g, res, req, &resp, 5000);

	json_decref(req);
	if (ret == -ENOENT || ret == -ECONNREFUSED) {
		resp = json_pack("{s:s,s:b}", "resource", res, "up", 0);
		ret = EXIT_NO_DAEMON;
	} else if (ret) {
		duetctl_err("status", "%s: %s", res, strerror(-ret));
		return EXIT_FAIL;
	} else if (!json_is_true(json_object_get(resp, "ok"))) {
		duetctl_err("status", "%s: %s", res,
			    json_string_value(json_object_get(resp, "error")));
		json_decref(resp);
		return EXIT_FAIL;
	} else {
		json_object_del(resp, "ok");
		json_object_set_new(resp, "up", json_true());
		ret = EXIT_OK;
	}
	if (json && all)
		json_array_append(all, resp);
	else if (json) {
		json_dumpf(resp, stdout, JSON_INDENT(2));
		putchar('\n');
	} else if (ret == EXIT_NO_DAEMON)
		printf("%s: down (duetd not running)\n", res);
	else
		print_human(res, resp, verbose);
	json_decref(resp);
	return ret;
}

static int cmd_status(const struct duetctl_global *g, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	bool json = g->json, verbose = false;
	json_t *all;
	struct dirent *de;
	DIR *d;
	int opt;

	while ((opt = getopt_long(argc, argv, "jvh", opts, NULL)) != -1) {
		switch (opt) {
		case 'j':
			json = true;
			break;
		case 'v':
			verbose = true;
			break;
		case 'h':
			printf("usage: duetctl status [RESOURCE] [--json] [--verbose]\n");
			return EXIT_OK;
		default:
			return EXIT_USAGE;
		}
	}
	if (optind == argc - 1)
		return status_one(g, argv[optind], json, verbose, NULL);
	if (optind != argc) {
		duetctl_err("status", "expected at most one RESOURCE");
		return EXIT_USAGE;
	}

	/* every configured resource */
	d = opendir(g->config_dir);
	if (!d) {
		duetctl_err("status", "cannot read %s: %s", g->config_dir,
			    strerror(errno));
		return EXIT_CONFIG;
	}
	all = json ? json_array() : NULL;
	while ((de = readdir(d))) {
		size_t n = strlen(de->d_name);
		char name[CFG_NAME_MAX];

		if (n <= 5 || n - 5 >= sizeof(name) ||
		    strcmp(de->d_name + n - 5, ".conf"))
			continue;
		memcpy(name, de->d_name, n - 5);
		name[n - 5] = '\0';
		status_one(g, name, json, verbose, all);
	}
	closedir(d);
	if (all) {
		json_dumpf(all, stdout, JSON_INDENT(2));
		putchar('\n');
		json_decref(all);
	}
	return EXIT_OK;
}

static struct duetctl_cmd up_cmd = {
	.name = "up",
	.args = "RESOURCE",
	.summary = "start the resource's daemon and device",
	.run = cmd_up,
};
DUETCTL_COMMAND(up_cmd)

static struct duetctl_cmd down_cmd = {
	.name = "down",
	.args = "RESOURCE",
	.summary = "stop the device and the daemon",
	.run = cmd_down,
};
DUETCTL_COMMAND(down_cmd)

static struct duetctl_cmd status_cmd = {
	.name = "status",
	.args = "[RESOURCE] [--json] [--verbose]",
	.summary = "show what the daemon reports",
	.run = cmd_status,
};
DUETCTL_COMMAND(status_cmd)
