// SPDX-License-Identifier: MIT
/*
 * duetd — the per-resource daemon: loads the configuration and this node's
 * metadata, brings the ublk device up (or takes it over from a duetd that
 * died), serves it, and answers on the control socket until told to stop.
 *
 * Exit codes:
 *   0 stopped cleanly            1 failure (message says why)
 *   2 bad command line           3 configuration missing or invalid
 *   5 no valid metadata          6 backing device smaller than the data area
 *  10 busy: resource already served, ublk id or backing device in use
 *  11 the kernel lacks ublk or a feature duetd needs
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <malloc.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "daemon.h"
#include "log.h"
#include "runfile.h"
#include "util.h"

#ifndef PR_SET_IO_FLUSHER
#define PR_SET_IO_FLUSHER 57
#endif

#define THREAD_STACK (256u << 10)
#define PARSE_HELP (-1)		/* parse_args: --help was printed */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: duetd --resource NAME [--config-dir DIR] [--node NAME]\n"
		"             [--run-dir DIR] [--foreground] [--log-level LEVEL]\n"
		"             [--debug CATS]\n"
		"\n"
		"Serve resource NAME's ublk device until `duetctl down NAME`\n"
		"(or SIGTERM). Defaults: --config-dir $DUET_CONFIG_DIR or %s,\n"
		"--node $DUET_NODE or the host name, --run-dir $DUET_RUN_DIR or\n"
		"%s. LEVEL: err, warn, notice, info, debug. CATS: md,bm,al,cfg,\n"
		"ublk,io,ctl,... or all.\n"
		"\n"
		"Exit codes: 0 ok, 1 failure, 2 usage, 3 configuration,\n"
		"5 no valid metadata, 6 backing device too small, 10 busy (already\n"
		"running, ublk id or backing device in use), 11 kernel lacks ublk\n"
		"or a needed feature.\n",
		CFG_DEFAULT_DIR, DAEMON_RUN_DIR);
}

static const char *env_or(const char *name, const char *def)
{
	const char *v = getenv(name);

	return v && *v ? v : def;
}

static int parse_args(struct daemon *d, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "resource", required_argument, NULL, 'r' },
		{ "config-dir", required_argument, NULL, 'c' },
		{ "node", required_argument, NULL, 'n' },
		{ "run-dir", required_argument, NULL, 'R' },
		{ "foreground", no_argument, NULL, 'f' },
		{ "log-level", required_argument, NULL, 'l' },
		{ "debug", required_argument, NULL, 'd' },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	const char *bad;
	uint32_t cats;
	int opt, lvl;

	d->config_dir = env_or("DUET_CONFIG_DIR", CFG_DEFAULT_DIR);
	d->node = env_or("DUET_NODE", NULL);
	d->run_dir = env_or("DUET_RUN_DIR", DAEMON_RUN_DIR);
	while ((opt = getopt_long(argc, argv, "r:c:n:R:fl:d:h", opts,
				  NULL)) != -1) {
		switch (opt) {
		case 'r':
			d->res = optarg;
			break;
		case 'c':
			d->config_dir = optarg;
			break;
		case 'n':
			d->node = optarg;
			break;
		case 'R':
			d->run_dir = optarg;
			break;
		case 'f':
			d->foreground = true;
			break;
		case 'l':
			lvl = log_parse_level(optarg);
			if (lvl < 0) {
				fprintf(stderr, "duetd: unknown log level '%s'\n",
					optarg);
				return DAEMON_EXIT_USAGE;
			}
			log_level = (enum log_level)lvl;
			break;
		case 'd':
			if (log_parse_cats(optarg, &cats, &bad)) {
				fprintf(stderr, "duetd: unknown debug category '%s'\n",
					bad);
				return DAEMON_EXIT_USAGE;
			}
			log_cats |= cats;
			log_level = LOG_LVL_DEBUG;
			break;
		case 'h':
			usage(stdout);
			return PARSE_HELP;
		default:
			usage(stderr);
			return DAEMON_EXIT_USAGE;
		}
	}
	if (optind != argc || !d->res) {
		fprintf(stderr, "duetd: %s\n",
			optind != argc ? "unexpected argument" :
					 "--resource is required");
		usage(stderr);
		return DAEMON_EXIT_USAGE;
	}
	return 0;
}

/*
 * Fork: the parent stays until the child reports ready (or fails), so that
 * `duetd` without --foreground still exits non-zero with the message on
 * the terminal when the device cannot be brought up.
 */
static int daemonize(struct daemon *d)
{
	int p[2], status;
	uint8_t code;
	pid_t pid;

	if (pipe2(p, O_CLOEXEC))
		return -errno;
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid > 0) {
		close(p[1]);
		if (read(p[0], &code, 1) == 1)
			_exit(code);
		/* died before saying anything */
		if (waitpid(pid, &status, 0) == pid && WIFEXITED(status))
			_exit(WEXITSTATUS(status) ? WEXITSTATUS(status) : 1);
		_exit(DAEMON_EXIT_FAIL);
	}
	close(p[0]);
	d->ready_fd = p[1];
	if (setsid() < 0)
		log_warn("setsid: %s", strerror(errno));
	if (chdir("/"))
		log_warn("chdir /: %s", strerror(errno));
	return 0;
}

/* Tell the waiting parent how start-up ended; detach from the terminal. */
static void report_start(struct daemon *d, int code)
{
	uint8_t c = (uint8_t)code;
	int null;

	if (d->ready_fd < 0)
		return;
	if (write(d->ready_fd, &c, 1) != 1)
		log_warn("cannot report to the parent: %s", strerror(errno));
	close(d->ready_fd);
	d->ready_fd = -1;
	if (code)
		return;
	log_use_syslog("duetd");
	null = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (null >= 0) {
		dup2(null, 0);
		dup2(null, 1);
		dup2(null, 2);
		close(null);
	}
}

/* Be a good citizen of the I/O path; none of this is fatal. */
static void harden(void)
{
	pthread_attr_t a;

	/* We write back pages: never recurse into reclaim I/O. */
	if (prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0))
		log_warn("PR_SET_IO_FLUSHER: %s", strerror(errno));

	/* Locked memory is all memory: small stacks, few malloc arenas. */
	if (!pthread_attr_init(&a)) {
		pthread_attr_setstacksize(&a, THREAD_STACK);
		pthread_setattr_default_np(&a);
		pthread_attr_destroy(&a);
	}
	mallopt(M_ARENA_MAX, 2);
	/* A page fault must never wait for the device we serve. (Not under
	 * AddressSanitizer: it would lock terabytes of shadow mappings.) */
#ifndef __SANITIZE_ADDRESS__
	if (mlockall(MCL_CURRENT | MCL_FUTURE))
		log_warn("mlockall: %s", strerror(errno));
#endif

	/*
	 * No mount namespace of our own: a copy of the mount table would hold
	 * every filesystem mounted when we started (another duet device's
	 * among them) alive after the admin unmounts it, unflushed. We hold
	 * no mount: the working directory is / (daemonize).
	 */
}

static int wait_for_stop(struct daemon *d)
{
	struct signalfd_siginfo si;
	struct pollfd pfd[2];
	sigset_t set;
	uint64_t v;
	int sfd;

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sfd = signalfd(-1, &set, SFD_CLOEXEC);
	if (sfd < 0) {
		log_err("signalfd: %s", strerror(errno));
		return -errno;
	}
	pfd[0] = (struct pollfd){ .fd = sfd, .events = POLLIN };
	pfd[1] = (struct pollfd){ .fd = d->down_efd, .events = POLLIN };
	for (;;) {
		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			log_err("poll: %s", strerror(errno));
			break;
		}
		if (pfd[0].revents &&
		    read(sfd, &si, sizeof(si)) == sizeof(si)) {
			log_notice("signal %u: stopping", si.ssi_signo);
			break;
		}
		if (pfd[1].revents && read(d->down_efd, &v, sizeof(v)) > 0) {
			log_notice("stop requested on the control socket");
			break;
		}
	}
	close(sfd);
	return 0;
}

int main(int argc, char **argv)
{
	struct daemon *d;
	sigset_t set;
	int ret;

	d = calloc(1, sizeof(*d));
	if (!d)
		return DAEMON_EXIT_FAIL;
	daemon_init(d);
	ret = parse_args(d, argc, argv);
	if (ret == PARSE_HELP) {
		ret = DAEMON_EXIT_OK;
		goto out_free;
	}
	if (!ret)
		ret = daemon_load_config(d);
	if (ret)
		goto out_cleanup;
	log_set_prefix(d->res);

	if (!d->foreground && daemonize(d)) {
		log_err("cannot fork: %s", strerror(errno));
		ret = DAEMON_EXIT_FAIL;
		goto out_cleanup;
	}
	/* Signals are taken by the main thread's signalfd only. */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGHUP, SIG_IGN);

	ret = daemon_lock(d);
	if (!ret) {
		harden();
		ret = daemon_start(d);
	}
	if (ret) {
		daemon_cleanup(d);
		report_start(d, ret);
		goto out_free;
	}
	report_start(d, 0);
	wait_for_stop(d);
	ret = daemon_stop(d);
out_cleanup:
	daemon_cleanup(d);
out_free:
	free(d);
	return ret;
}
