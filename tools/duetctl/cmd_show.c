// SPDX-License-Identifier: MIT
/*
 * duetctl show: the effective configuration (defaults filled in) of one
 * resource or of every resource in the config dir, in the files' own syntax
 * so that the output can be saved and loaded again.
 */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "duetctl.h"

#define CONF_SUFFIX ".conf"

static void show_usage(FILE *out)
{
	fprintf(out,
		"usage: duetctl show [RESOURCE]\n"
		"  without RESOURCE, every *" CONF_SUFFIX
		" file of the config dir\n"
		"See duetctl-show(8).\n");
}

static int conf_filter(const struct dirent *d)
{
	size_t n = strlen(d->d_name), sl = strlen(CONF_SUFFIX);

	/* "x.conf" but not ".conf", hidden files or editor leftovers */
	return d->d_name[0] != '.' && n > sl &&
	       !strcmp(d->d_name + n - sl, CONF_SUFFIX);
}

/*
 * Print every resource. A file that does not parse is reported and skipped
 * so that one typo does not hide the others; the exit code still says so.
 */
static int show_all(const struct duetctl_global *g)
{
	struct dirent **list;
	struct cfg_resource *r;
	int n, ret = EXIT_OK;
	char path[PATH_MAX], err[512];

	n = scandir(g->config_dir, &list, conf_filter, alphasort);
	if (n < 0) {
		fprintf(stderr,
			"duetctl show: cannot read config dir %s: %s (set --config-dir or DUET_CONFIG_DIR)\n",
			g->config_dir, strerror(errno));
		return EXIT_CONFIG;
	}
	if (!n)
		fprintf(stderr, "duetctl show: no *" CONF_SUFFIX " files in %s\n",
			g->config_dir);
	r = malloc(sizeof(*r));
	if (!r) {
		fprintf(stderr, "duetctl show: out of memory\n");
		ret = EXIT_FAIL;
		goto out_free;
	}
	for (int i = 0; i < n; i++) {
		if ((size_t)snprintf(path, sizeof(path), "%s/%s",
				     g->config_dir, list[i]->d_name) >=
		    sizeof(path)) {
			fprintf(stderr, "duetctl show: path too long: %s/%s\n",
				g->config_dir, list[i]->d_name);
			ret = EXIT_CONFIG;
			continue;
		}
		if (cfg_load_file(path, r, err, sizeof(err))) {
			fprintf(stderr, "duetctl: %s\n", err);
			ret = EXIT_CONFIG;
			continue;
		}
		/* cfg_print starts with a comment naming the file */
		if (i)
			putchar('\n');
		cfg_print(r, stdout);
	}
	free(r);
out_free:
	for (int i = 0; i < n; i++)
		free(list[i]);
	free(list);
	return ret;
}

static int cmd_show(const struct duetctl_global *g, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	struct cfg_resource *r;
	int opt, ret;

	while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (opt) {
		case 'h':
			show_usage(stdout);
			return EXIT_OK;
		default:
			show_usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (argc - optind > 1) {
		duetctl_err("show", "expected at most one RESOURCE");
		show_usage(stderr);
		return EXIT_USAGE;
	}
	if (argc == optind)
		ret = show_all(g);
	else {
		/* on the heap: a cfg_resource carries a dozen PATH_MAX paths */
		r = malloc(sizeof(*r));
		if (!r) {
			duetctl_err("show", "out of memory");
			return EXIT_FAIL;
		}
		ret = duetctl_load_resource(g, argv[optind], r, NULL);
		if (!ret)
			cfg_print(r, stdout);
		free(r);
	}
	if (fflush(stdout) && !ret) {
		duetctl_err("show", "cannot write the output: %s",
			    strerror(errno));
		ret = EXIT_FAIL;
	}
	return ret;
}

static struct duetctl_cmd show = {
	.name = "show",
	.args = "[RESOURCE]",
	.summary = "print the effective configuration",
	.run = cmd_show,
};
DUETCTL_COMMAND(show)
