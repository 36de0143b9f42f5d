/* SPDX-License-Identifier: MIT */
/*
 * duetctl — the admin CLI. Each subcommand lives in a cmd_*.c file and
 * registers itself with DUETCTL_COMMAND(); main() only dispatches.
 */
#ifndef DUETCTL_H
#define DUETCTL_H

#include <stdbool.h>
#include <stdio.h>

#include "cfg.h"

/*
 * Exit codes (docs/man/duetctl.8 lists them; tests check them).
 */
enum duetctl_exit {
	EXIT_OK = 0,
	EXIT_FAIL = 1,	      /* the operation failed; message says why */
	EXIT_USAGE = 2,	      /* bad command line */
	EXIT_CONFIG = 3,      /* configuration file missing or invalid */
	EXIT_MD_EXISTS = 4,   /* metadata present; --force required */
	EXIT_NO_MD = 5,	      /* no valid metadata found */
	EXIT_TOO_SMALL = 6,   /* device too small for the requested layout */
	EXIT_NO_DAEMON = 7,   /* resource not up / daemon not reachable */
	EXIT_REFUSED = 8,     /* refused by the state machine (reason given) */
	EXIT_TIMEOUT = 9,     /* wait-* gave up */
};

/* Options every command understands, parsed before the command's own. */
struct duetctl_global {
	const char *config_dir;	 /* --config-dir, $DUET_CONFIG_DIR, /etc/duet */
	const char *node;	 /* --node, $DUET_NODE, else the host name */
	const char *run_dir;	 /* --run-dir, $DUET_RUN_DIR, /run/duet */
	bool json;		 /* --json where supported */
};

struct duetctl_cmd {
	const char *name;
	const char *args;	 /* usage synopsis after the name */
	const char *summary;	 /* one line for `duetctl help` */
	int (*run)(const struct duetctl_global *g, int argc, char **argv);
	struct duetctl_cmd *next;
};

void duetctl_register(struct duetctl_cmd *cmd);

#define DUETCTL_COMMAND(var)                                         \
	static void __attribute__((constructor)) var##_register(void) \
	{                                                             \
		duetctl_register(&var);                               \
	}

/*
 * Load resource @name from g->config_dir into @r and find this node.
 * Prints the error (file, line, key) and returns EXIT_CONFIG on failure.
 */
int duetctl_load_resource(const struct duetctl_global *g, const char *name,
			  struct cfg_resource *r,
			  const struct cfg_node **self);

/* Print "duetctl CMD: <msg>" to stderr. */
void duetctl_err(const char *cmd, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#endif
