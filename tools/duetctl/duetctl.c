// SPDX-License-Identifier: MIT
/* duetctl main: global options, subcommand dispatch, shared helpers. */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "duetctl.h"

static struct duetctl_cmd *commands;

void duetctl_register(struct duetctl_cmd *cmd)
{
	struct duetctl_cmd **p = &commands;

	/* keep the list sorted so `help` reads well */
	while (*p && strcmp((*p)->name, cmd->name) < 0)
		p = &(*p)->next;
	cmd->next = *p;
	*p = cmd;
}

void duetctl_err(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "duetctl %s: ", cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

int duetctl_load_resource(const struct duetctl_global *g, const char *name,
			  struct cfg_resource *r,
			  const struct cfg_node **self)
{
	char path[PATH_MAX], err[512];
	int ret;

	ret = cfg_resource_path(g->config_dir, name, path, sizeof(path));
	if (ret == -ENOENT) {
		fprintf(stderr,
			"duetctl: no configuration for resource '%s' (looked for %s)\n",
			name, path);
		return EXIT_CONFIG;
	}
	if (ret) {
		fprintf(stderr, "duetctl: invalid resource name '%s'\n", name);
		return EXIT_CONFIG;
	}
	if (cfg_load_file(path, r, err, sizeof(err))) {
		fprintf(stderr, "duetctl: %s\n", err);
		return EXIT_CONFIG;
	}
	if (self) {
		*self = cfg_local_node(r, g->node, err, sizeof(err));
		if (!*self) {
			fprintf(stderr, "duetctl: %s\n", err);
			return EXIT_CONFIG;
		}
	}
	return EXIT_OK;
}

static void usage(FILE *out)
{
	fprintf(out,
		"usage: duetctl [--config-dir DIR] [--node NAME] [--run-dir DIR] COMMAND [ARGS]\n\n"
		"commands:\n");
	for (struct duetctl_cmd *c = commands; c; c = c->next)
		fprintf(out, "  %-12s %-30s %s\n", c->name, c->args, c->summary);
	fprintf(out, "\nSee duetctl(8) and duetctl-COMMAND(8).\n");
}

static const char *env_or(const char *var, const char *def)
{
	const char *v = getenv(var);

	return v && *v ? v : def;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config-dir", required_argument, NULL, 'c' },
		{ "node", required_argument, NULL, 'n' },
		{ "run-dir", required_argument, NULL, 'r' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{}
	};
	struct duetctl_global g = {
		.config_dir = env_or("DUET_CONFIG_DIR", CFG_DEFAULT_DIR),
		.node = env_or("DUET_NODE", NULL),
		.run_dir = env_or("DUET_RUN_DIR", "/run/duet"),
	};
	int opt;

	/* '+': stop at the first non-option, the command name */
	while ((opt = getopt_long(argc, argv, "+c:n:r:hV", opts, NULL)) != -1) {
		switch (opt) {
		case 'c':
			g.config_dir = optarg;
			break;
		case 'n':
			g.node = optarg;
			break;
		case 'r':
			g.run_dir = optarg;
			break;
		case 'h':
			usage(stdout);
			return EXIT_OK;
		case 'V':
			printf("duetctl (duet) metadata format 1\n");
			return EXIT_OK;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (!strcmp(argv[optind], "help")) {
		usage(stdout);
		return EXIT_OK;
	}
	for (struct duetctl_cmd *c = commands; c; c = c->next) {
		if (strcmp(c->name, argv[optind]))
			continue;
		/* the command parses its own options from argv[0] = name */
		optind++;
		argc -= optind - 1;
		argv += optind - 1;
		optind = 0;
		return c->run(&g, argc, argv);
	}
	fprintf(stderr, "duetctl: unknown command '%s' (try 'duetctl help')\n",
		argv[optind]);
	return EXIT_USAGE;
}
