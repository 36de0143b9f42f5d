// SPDX-License-Identifier: MIT
/*
 * duetctl create-md, dump-md, wipe-md: the metadata area of one node.
 *
 * These commands work on the backing devices directly, with mdio's
 * synchronous pread/pwrite path; no daemon is involved. None of them ever
 * reads or writes the data area: create-md and wipe-md touch only the
 * metadata area (superblock slots, bitmap, AL ring), dump-md only reads it.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ctl_client.h"
#include "duetctl.h"
#include "md.h"
#include "mdio.h"
#include "util.h"

#define DUMP_EXTENTS_DEFAULT 16

/* Where one node's metadata lives: from the config, or from --disk. */
struct md_target {
	char disk[PATH_MAX];
	char meta[PATH_MAX];	/* "" for internal */
	char origin[PATH_MAX + 128]; /* for messages: which config said so */
};

static bool meta_is_internal(const char *meta)
{
	return !*meta || !strcmp(meta, "internal");
}

static const char *target_meta(const struct md_target *t)
{
	return *t->meta ? t->meta : NULL;
}

static int target_from_config(const struct duetctl_global *g,
			      const char *resource, struct cfg_resource *r,
			      struct md_target *t, const struct cfg_node **selfp)
{
	const struct cfg_node *self;
	int ret;

	ret = duetctl_load_resource(g, resource, r, &self);
	if (ret)
		return ret;
	snprintf(t->disk, sizeof(t->disk), "%s", self->disk);
	snprintf(t->meta, sizeof(t->meta), "%s",
		 meta_is_internal(self->meta_disk) ? "" : self->meta_disk);
	snprintf(t->origin, sizeof(t->origin),
		 "check disk and meta-disk of node '%s' in %s", self->name,
		 r->file);
	if (selfp)
		*selfp = self;
	return EXIT_OK;
}

/*
 * Is the resource up, i.e. does a live daemon answer on its control socket?
 * Rewriting metadata under a running duetd would corrupt it: the daemon
 * keeps the bitmap and the AL in memory and writes them back. A socket we
 * may not connect to (EACCES) still means somebody's daemon is running.
 */
static bool resource_is_up(const struct duetctl_global *g, const char *name)
{
	int fd = ctlc_connect(g, name);

	if (fd >= 0)
		close(fd);
	return fd >= 0 || fd == -EACCES;
}

static const char *fmt_bytes(uint64_t v, char *buf, size_t len)
{
	char h[32];

	snprintf(buf, len, "%" PRIu64 " bytes (%s)", v,
		 util_fmt_size(v, h, sizeof(h)));
	return buf;
}

/* One aligned "key: value" line of the human-readable output. */
static void __attribute__((format(printf, 2, 3)))
kv(const char *key, const char *fmt, ...)
{
	char k[64];
	va_list ap;

	snprintf(k, sizeof(k), "%s:", key);
	printf("%-20s ", k);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
}

/* ---------------------------------------------------------------- create */

static void create_usage(FILE *out)
{
	fprintf(out,
		"usage: duetctl create-md RESOURCE [--force] [--full-sync]\n"
		"  -f, --force      overwrite existing metadata (discards the bitmap\n"
		"                   and the generation identifiers)\n"
		"      --full-sync  mark the whole device out of sync\n"
		"See duetctl-create-md(8).\n");
}

static void create_summary(const struct mdio *m, const struct md_target *t)
{
	const struct md_super *sb = &m->sb;
	char buf[96];

	printf("created metadata version %" PRIu32 " on %s (%s%s%s)\n",
	       sb->version, t->disk, md_placement_name(sb->placement),
	       *t->meta ? " " : "", t->meta);
	kv("data size", "%s", fmt_bytes(sb->data_bytes, buf, sizeof(buf)));
	kv("metadata size", "%s", fmt_bytes(sb->md_bytes, buf, sizeof(buf)));
	kv("metadata offset", "%" PRIu64, sb->md_offset);
	kv("bitmap size", "%s", fmt_bytes(sb->bm_bytes, buf, sizeof(buf)));
	kv("bitmap granularity", "%" PRIu32 " bytes", sb->bm_granularity);
	kv("AL extents", "%" PRIu32 " x %s", sb->al_nr_slots,
	   util_fmt_size(1ull << sb->al_extent_shift, buf, sizeof(buf)));
	kv("node id", "%" PRIu32, sb->node_id);
	kv("device uuid", "%016" PRIx64, sb->device_uuid);
	kv("dirty bytes", "%s",
	   fmt_bytes(bm_dirty_bytes(m->bm), buf, sizeof(buf)));
}

static int cmd_create_md(const struct duetctl_global *g, int argc,
			 char **argv)
{
	static const struct option opts[] = {
		{ "force", no_argument, NULL, 'f' },
		{ "full-sync", no_argument, NULL, 'F' },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	static const char *cmd = "create-md";
	bool force = false, full_sync = false;
	struct cfg_resource r;
	struct md_target t;
	struct md_geometry geo = { 0 };
	struct md_super sb;
	struct mdio m = { 0 };
	const struct cfg_node *self;
	char why[512];
	int opt, ret;

	while ((opt = getopt_long(argc, argv, "fh", opts, NULL)) != -1) {
		switch (opt) {
		case 'f':
			force = true;
			break;
		case 'F':
			full_sync = true;
			break;
		case 'h':
			create_usage(stdout);
			return EXIT_OK;
		default:
			create_usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (argc - optind != 1) {
		duetctl_err(cmd, "expected exactly one RESOURCE");
		create_usage(stderr);
		return EXIT_USAGE;
	}
	ret = target_from_config(g, argv[optind], &r, &t, &self);
	if (ret)
		return ret;
	if (resource_is_up(g, r.name)) {
		duetctl_err(cmd, "resource '%s' is up; bring it down first (duetctl down %s)",
			    r.name, r.name);
		return EXIT_REFUSED;
	}

	if (mdio_open(&m, t.disk, target_meta(&t), 0, why, sizeof(why))) {
		duetctl_err(cmd, "%s (%s)", why, t.origin);
		return EXIT_FAIL;
	}

	geo.placement = *t.meta ? MD_EXTERNAL : MD_INTERNAL;
	geo.backing_bytes = m.data_dev_bytes;
	geo.md_dev_bytes = *t.meta ? m.md_dev_bytes : 0;
	geo.bm_granularity = r.bm_granularity;
	geo.al_nr_slots = r.al_extents;
	geo.node_id = self->id;
	/* Lay out first, without I/O: a device that is too small is an
	 * answer in itself, whatever it holds. */
	ret = md_layout(&geo, &sb, why, sizeof(why));
	if (ret == -ENOSPC) {
		duetctl_err(cmd, "%s: %s", t.disk, why);
		ret = EXIT_TOO_SMALL;
		goto out_close;
	}
	if (ret) {
		duetctl_err(cmd, "invalid geometry: %s (%s)", why, t.origin);
		ret = EXIT_CONFIG;
		goto out_close;
	}

	ret = mdio_probe(&m, why, sizeof(why));
	if (ret < 0) {
		duetctl_err(cmd, "%s", why);
		ret = EXIT_FAIL;
		goto out_close;
	}
	if (ret > 0 && !force) {
		duetctl_err(cmd,
			    "%s already holds duet metadata (%s); use --force to overwrite; this discards the bitmap and generation identifiers",
			    *t.meta ? t.meta : t.disk, why);
		ret = EXIT_MD_EXISTS;
		goto out_close;
	}

	ret = mdio_create(&m, &geo, full_sync, why, sizeof(why));
	if (ret) {
		duetctl_err(cmd, "writing metadata failed: %s", why);
		ret = ret == -ENOSPC ? EXIT_TOO_SMALL : EXIT_FAIL;
		goto out_close;
	}
	/* The summary shows what reads back from the disk, not what we meant
	 * to write. mdio_create loads it already; its contract does not say
	 * so, hence the check. */
	if (!m.bm && mdio_load(&m, why, sizeof(why))) {
		duetctl_err(cmd, "metadata written but does not read back: %s",
			    why);
		ret = EXIT_FAIL;
		goto out_close;
	}
	create_summary(&m, &t);
	ret = EXIT_OK;
out_close:
	mdio_close(&m);
	return ret;
}

static struct duetctl_cmd create_md = {
	.name = "create-md",
	.args = "RESOURCE [--force] [--full-sync]",
	.summary = "write fresh metadata for this node",
	.run = cmd_create_md,
};
DUETCTL_COMMAND(create_md)

/* ------------------------------------------------------------------ dump */

/* What one superblock slot holds, decoded on its own. */
struct slot_info {
	uint64_t offset;
	bool valid;
	bool in_use;		/* the slot mdio_load picked */
	uint64_t seq;
	int err;		/* md_decode's -errno, or a read error */
	char why[256];
};

static const char *slot_err_name(int err)
{
	switch (err) {
	case 0:
		return "valid";
	case -ENODATA:
		return "empty";
	case -EPROTO:
		return "unknown-version";
	case -EBADMSG:
		return "bad-crc";
	case -EUCLEAN:
		return "bad-field";
	default:
		return "unreadable";
	}
}

/*
 * Decode both slots independently of mdio_load's choice so that dump-md can
 * show a damaged slot next to the one that was used: that is the evidence
 * a forensics session needs. md_decode gives the category and the full
 * message; mdio's slot_state (filled by mdio_load) adds the checks only
 * mdio can make (placement, slot offset, backing size), so a slot that
 * decodes but that mdio rejected is reported with mdio's reason.
 */
static void slots_inspect(const struct mdio *m, struct slot_info si[2])
{
	uint64_t off[2];
	struct md_super sb;
	void *buf = NULL;

	memset(si, 0, 2 * sizeof(*si));
	if (md_sb_offsets(m->internal ? MD_INTERNAL : MD_EXTERNAL,
			  m->md_dev_bytes, off) ||
	    posix_memalign(&buf, MD_SB_SIZE, MD_SB_SIZE)) {
		for (int i = 0; i < 2; i++) {
			si[i].err = -EINVAL;
			snprintf(si[i].why, sizeof(si[i].why),
				 "device too small for a superblock");
		}
		return;
	}
	for (int i = 0; i < 2; i++) {
		ssize_t n;

		si[i].offset = off[i];
		n = pread(m->md_fd, buf, MD_SB_SIZE, (off_t)off[i]);
		if (n != MD_SB_SIZE) {
			si[i].err = n < 0 ? -errno : -EIO;
			snprintf(si[i].why, sizeof(si[i].why),
				 "read at offset %" PRIu64 " failed: %s",
				 off[i], strerror(-si[i].err));
			continue;
		}
		si[i].err = md_decode(buf, m->md_dev_bytes, &sb, si[i].why,
				      sizeof(si[i].why));
		if (!si[i].err && m->slot_state[i][0] &&
		    strncmp(m->slot_state[i], "valid", 5)) {
			si[i].err = -EUCLEAN;
			snprintf(si[i].why, sizeof(si[i].why), "%s",
				 m->slot_state[i]);
		}
		si[i].valid = !si[i].err;
		if (si[i].valid)
			si[i].seq = sb.seq;
	}
	free(buf);
}

/* What to do next, by mdio_load's verdict. */
static const char *no_md_hint(int err)
{
	switch (err) {
	case -ENODATA:
		return "create it with 'duetctl create-md'";
	case -EPROTO:
		return "written by a newer duet: use that version, do not overwrite";
	case -EUCLEAN:
		return "check that this is the right device and that it did not shrink";
	default:
		return "damaged; 'duetctl create-md --force' starts over and needs a full sync";
	}
}

static void dump_usage(FILE *out)
{
	fprintf(out,
		"usage: duetctl dump-md RESOURCE [--json] [--extents N]\n"
		"       duetctl dump-md --disk PATH [--meta-disk PATH] [--json] [--extents N]\n"
		"      --json         one JSON object (schema in duetctl-dump-md(8))\n"
		"  -e, --extents N    list at most N dirty bitmap extents (default %d)\n"
		"  -d, --disk PATH    read PATH directly, without a configuration\n"
		"  -m, --meta-disk PATH  external metadata device for --disk\n"
		"See duetctl-dump-md(8).\n",
		DUMP_EXTENTS_DEFAULT);
}

static void print_slots(const struct slot_info si[2])
{
	for (int i = 0; i < 2; i++) {
		char key[16];

		snprintf(key, sizeof(key), "slot %d", i);
		if (si[i].valid)
			kv(key, "valid, seq %" PRIu64 "%s (offset %" PRIu64 ")",
			   si[i].seq, si[i].in_use ? ", in use" : "",
			   si[i].offset);
		else
			kv(key, "%s: %s (offset %" PRIu64 ")",
			   slot_err_name(si[i].err), si[i].why, si[i].offset);
	}
}

static void dump_human(const struct mdio *m, const struct slot_info si[2],
		       const struct md_target *t, uint64_t max_extents)
{
	const struct md_super *sb = &m->sb;
	uint64_t s, start, len, n = 0;
	char buf[128], key[32];
	time_t created = (time_t)sb->created;
	struct tm tm;

	printf("# duet metadata on %s%s%s\n", t->disk,
	       *t->meta ? ", metadata on " : "", t->meta);
	kv("version", "%" PRIu32, sb->version);
	kv("seq", "%" PRIu64, sb->seq);
	kv("placement", "%s", md_placement_name(sb->placement));
	md_flags_str(sb->flags, buf, sizeof(buf));
	kv("flags", "%s (0x%" PRIx32 ")", *buf ? buf : "none", sb->flags);
	kv("node id", "%" PRIu32, sb->node_id);
	kv("device uuid", "%016" PRIx64, sb->device_uuid);
	if (gmtime_r(&created, &tm))
		strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S UTC", &tm);
	else
		snprintf(buf, sizeof(buf), "?");
	kv("created", "%" PRIu64 " (%s)", sb->created, buf);
	kv("data size", "%s", fmt_bytes(sb->data_bytes, buf, sizeof(buf)));
	kv("md device size", "%s",
	   fmt_bytes(sb->md_dev_bytes, buf, sizeof(buf)));
	kv("md offset", "%" PRIu64, sb->md_offset);
	kv("md size", "%s", fmt_bytes(sb->md_bytes, buf, sizeof(buf)));
	kv("sb offsets", "%" PRIu64 " %" PRIu64, sb->sb_offset[0],
	   sb->sb_offset[1]);
	kv("bm granularity", "%" PRIu32, sb->bm_granularity);
	kv("bm slots", "%" PRIu32, sb->bm_nr_slots);
	kv("bm offset", "%" PRIu64, sb->bm_offset);
	kv("bm size", "%s", fmt_bytes(sb->bm_bytes, buf, sizeof(buf)));
	kv("al offset", "%" PRIu64, sb->al_offset);
	kv("al ring blocks", "%" PRIu32, sb->al_ring_blocks);
	kv("al slots", "%" PRIu32, sb->al_nr_slots);
	kv("al extent size", "%s",
	   fmt_bytes(1ull << sb->al_extent_shift, buf, sizeof(buf)));
	kv("current uuid", "%016" PRIx64, sb->current_uuid);
	kv("promoted", "%" PRIu64 "%s", sb->promoted,
	   sb->promoted ? "" : " (never)");
	for (int i = 0; i < MD_HISTORY; i++) {
		snprintf(key, sizeof(key), "history %d", i);
		kv(key, "%016" PRIx64, sb->history[i]);
	}
	for (int i = 0; i < MD_MAX_PEERS; i++) {
		const struct md_peer *p = &sb->peers[i];

		snprintf(key, sizeof(key), "peer %d", i);
		kv(key, "node %" PRIu32 ", flags 0x%" PRIx32 "%s%s, bitmap uuid %016" PRIx64,
		   p->node_id, p->flags,
		   p->flags & MD_PF_USED ? " used" : "",
		   p->flags & MD_PF_PEER_OUTDATED ? " peer-outdated" : "",
		   p->bitmap_uuid);
	}
	print_slots(si);

	kv("bitmap bits", "%" PRIu64, bm_nr_bits(m->bm));
	kv("dirty bits", "%" PRIu64, bm_count(m->bm));
	kv("dirty bytes", "%s",
	   fmt_bytes(bm_dirty_bytes(m->bm), buf, sizeof(buf)));
	for (s = 0; !bm_next_dirty(m->bm, s, &start, &len); s = start + len) {
		if (n++ == max_extents) {
			printf("  ... more dirty extents (raise --extents)\n");
			break;
		}
		printf("  dirty sectors %" PRIu64 "-%" PRIu64 " (%s)\n", start,
		       start + len - 1,
		       util_fmt_size(len << SECTOR_SHIFT, buf, sizeof(buf)));
	}

	kv("al active", "%" PRIu32 " of %" PRIu32, al_nr_active(m->al),
	   al_nr_slots(m->al));
	for (uint32_t i = 0; i < al_nr_slots(m->al); i++) {
		uint32_t e = al_slot_extent(m->al, i);

		if (e == AL_EXTENT_NONE)
			continue;
		al_extent_range(m->al, e, &start, &len);
		printf("  al slot %" PRIu32 ": extent %" PRIu32
		       ", sectors %" PRIu64 "-%" PRIu64 "\n",
		       i, e, start, start + len - 1);
	}
}

static json_t *hex64(uint64_t v)
{
	char buf[17];

	snprintf(buf, sizeof(buf), "%016" PRIx64, v);
	return json_string(buf);
}

/* md_flags_str's "a,b,c" as a JSON array of names. */
static json_t *flags_array(uint32_t flags)
{
	json_t *a = json_array();
	char buf[256], *save = NULL;

	md_flags_str(flags, buf, sizeof(buf));
	for (char *tok = strtok_r(buf, ",", &save); tok;
	     tok = strtok_r(NULL, ",", &save))
		json_array_append_new(a, json_string(tok));
	return a;
}

static json_t *dump_json_sb(const struct md_super *sb)
{
	json_t *o, *hist = json_array(), *peers = json_array();

	for (int i = 0; i < MD_HISTORY; i++)
		json_array_append_new(hist, hex64(sb->history[i]));
	for (int i = 0; i < MD_MAX_PEERS; i++) {
		const struct md_peer *p = &sb->peers[i];

		json_array_append_new(
			peers,
			json_pack("{s:i, s:I, s:I, s:b, s:b, s:o}", "index", i,
				  "node_id", (json_int_t)p->node_id, "flags",
				  (json_int_t)p->flags, "used",
				  !!(p->flags & MD_PF_USED), "peer_outdated",
				  !!(p->flags & MD_PF_PEER_OUTDATED),
				  "bitmap_uuid", hex64(p->bitmap_uuid)));
	}
	o = json_pack("{s:I, s:I, s:s, s:I, s:o, s:I, s:o, s:I}",
		      "version", (json_int_t)sb->version,
		      "seq", (json_int_t)sb->seq,
		      "placement", md_placement_name(sb->placement),
		      "flags", (json_int_t)sb->flags,
		      "flag_names", flags_array(sb->flags),
		      "node_id", (json_int_t)sb->node_id,
		      "device_uuid", hex64(sb->device_uuid),
		      "created", (json_int_t)sb->created);
	json_object_update_new(
		o, json_pack("{s:I, s:I, s:I, s:I, s:[I,I]}",
			     "data_bytes", (json_int_t)sb->data_bytes,
			     "md_dev_bytes", (json_int_t)sb->md_dev_bytes,
			     "md_offset", (json_int_t)sb->md_offset,
			     "md_bytes", (json_int_t)sb->md_bytes,
			     "sb_offset", (json_int_t)sb->sb_offset[0],
			     (json_int_t)sb->sb_offset[1]));
	json_object_update_new(
		o, json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
			     "bm_granularity", (json_int_t)sb->bm_granularity,
			     "bm_nr_slots", (json_int_t)sb->bm_nr_slots,
			     "bm_offset", (json_int_t)sb->bm_offset,
			     "bm_bytes", (json_int_t)sb->bm_bytes,
			     "al_offset", (json_int_t)sb->al_offset,
			     "al_ring_blocks", (json_int_t)sb->al_ring_blocks,
			     "al_nr_slots", (json_int_t)sb->al_nr_slots,
			     "al_extent_shift", (json_int_t)sb->al_extent_shift,
			     "al_extent_bytes",
			     (json_int_t)(1ull << sb->al_extent_shift)));
	json_object_set_new(o, "current_uuid", hex64(sb->current_uuid));
	json_object_set_new(o, "promoted", json_integer((json_int_t)sb->promoted));
	json_object_set_new(o, "history", hist);
	json_object_set_new(o, "peers", peers);
	return o;
}

static json_t *dump_json_slots(const struct slot_info si[2])
{
	json_t *a = json_array();

	for (int i = 0; i < 2; i++) {
		json_t *s = json_pack("{s:i, s:I, s:b, s:b, s:s, s:s}",
				      "slot", i, "offset",
				      (json_int_t)si[i].offset, "valid",
				      si[i].valid, "in_use", si[i].in_use,
				      "state", slot_err_name(si[i].err),
				      "detail", si[i].why);

		if (si[i].valid)
			json_object_set_new(s, "seq", json_integer(si[i].seq));
		json_array_append_new(a, s);
	}
	return a;
}

static json_t *dump_json(const struct mdio *m, const struct slot_info si[2],
			 const struct md_target *t, uint64_t max_extents)
{
	json_t *o, *ext = json_array(), *al_ext = json_array();
	uint64_t s, start, len, n = 0;
	bool more = false;

	for (s = 0; !bm_next_dirty(m->bm, s, &start, &len); s = start + len) {
		if (n++ == max_extents) {
			more = true;
			break;
		}
		json_array_append_new(ext,
				      json_pack("{s:I, s:I}", "sector",
						(json_int_t)start, "sectors",
						(json_int_t)len));
	}
	for (uint32_t i = 0; i < al_nr_slots(m->al); i++) {
		uint32_t e = al_slot_extent(m->al, i);

		if (e == AL_EXTENT_NONE)
			continue;
		al_extent_range(m->al, e, &start, &len);
		json_array_append_new(
			al_ext, json_pack("{s:I, s:I, s:I, s:I}", "slot",
					  (json_int_t)i, "extent",
					  (json_int_t)e, "sector",
					  (json_int_t)start, "sectors",
					  (json_int_t)len));
	}
	o = json_pack("{s:s, s:s?}", "disk", t->disk, "meta_disk",
		      *t->meta ? t->meta : NULL);
	json_object_set_new(o, "superblock", dump_json_sb(&m->sb));
	json_object_set_new(o, "slots", dump_json_slots(si));
	json_object_set_new(
		o, "bitmap",
		json_pack("{s:I, s:I, s:I, s:I, s:o, s:b}",
			  "granularity", (json_int_t)bm_granularity(m->bm),
			  "bits", (json_int_t)bm_nr_bits(m->bm),
			  "dirty_bits", (json_int_t)bm_count(m->bm),
			  "dirty_bytes", (json_int_t)bm_dirty_bytes(m->bm),
			  "extents", ext, "extents_truncated", more));
	json_object_set_new(
		o, "activity_log",
		json_pack("{s:I, s:I, s:I, s:I, s:o}",
			  "nr_slots", (json_int_t)al_nr_slots(m->al),
			  "extent_bytes",
			  (json_int_t)(1ull << al_extent_shift(m->al)),
			  "ring_blocks", (json_int_t)m->sb.al_ring_blocks,
			  "active", (json_int_t)al_nr_active(m->al),
			  "extents", al_ext));
	return o;
}

static int cmd_dump_md(const struct duetctl_global *g, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "extents", required_argument, NULL, 'e' },
		{ "disk", required_argument, NULL, 'd' },
		{ "meta-disk", required_argument, NULL, 'm' },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	static const char *cmd = "dump-md";
	uint64_t max_extents = DUMP_EXTENTS_DEFAULT;
	const char *disk = NULL, *meta = NULL;
	bool json = g->json;
	struct md_target t = { 0 };
	struct slot_info si[2];
	struct mdio m = { 0 };
	struct cfg_resource r;
	char why[512];
	int opt, ret;

	while ((opt = getopt_long(argc, argv, "e:d:m:h", opts, NULL)) != -1) {
		switch (opt) {
		case 'j':
			json = true;
			break;
		case 'e':
			if (util_parse_u64(optarg, 0, UINT32_MAX, &max_extents)) {
				duetctl_err(cmd, "--extents: expected a count, got '%s'",
					    optarg);
				return EXIT_USAGE;
			}
			break;
		case 'd':
			disk = optarg;
			break;
		case 'm':
			meta = optarg;
			break;
		case 'h':
			dump_usage(stdout);
			return EXIT_OK;
		default:
			dump_usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (disk ? argc != optind : argc - optind != 1) {
		duetctl_err(cmd, "give either RESOURCE or --disk PATH");
		dump_usage(stderr);
		return EXIT_USAGE;
	}
	if (meta && !disk) {
		duetctl_err(cmd, "--meta-disk needs --disk (with RESOURCE, the configuration names it)");
		return EXIT_USAGE;
	}
	if (disk) {
		snprintf(t.disk, sizeof(t.disk), "%s", disk);
		snprintf(t.meta, sizeof(t.meta), "%s",
			 meta && !meta_is_internal(meta) ? meta : "");
		snprintf(t.origin, sizeof(t.origin), "check --disk and --meta-disk");
	} else {
		ret = target_from_config(g, argv[optind], &r, &t, NULL);
		if (ret)
			return ret;
	}

	if (mdio_open(&m, t.disk, target_meta(&t), MDIO_RDONLY, why,
		      sizeof(why))) {
		duetctl_err(cmd, "%s (%s)", why, t.origin);
		return EXIT_FAIL;
	}
	ret = mdio_load(&m, why, sizeof(why));
	if (ret == -ENODATA || ret == -EBADMSG || ret == -EUCLEAN ||
	    ret == -EPROTO) {
		duetctl_err(cmd, "no valid metadata on %s: %s (%s)",
			    *t.meta ? t.meta : t.disk, why, no_md_hint(ret));
		ret = EXIT_NO_MD;
		goto out_close;
	}
	if (ret) {
		duetctl_err(cmd, "%s", why);
		ret = EXIT_FAIL;
		goto out_close;
	}
	slots_inspect(&m, si);
	if (m.sb_slot == 0 || m.sb_slot == 1)
		si[m.sb_slot].in_use = true;

	if (json) {
		json_t *o = dump_json(&m, si, &t, max_extents);

		if (!o || json_dumpf(o, stdout, JSON_INDENT(2)) ||
		    putchar('\n') == EOF) {
			duetctl_err(cmd, "cannot write the JSON output");
			json_decref(o);
			ret = EXIT_FAIL;
			goto out_close;
		}
		json_decref(o);
	} else {
		dump_human(&m, si, &t, max_extents);
	}
	ret = fflush(stdout) ? EXIT_FAIL : EXIT_OK;
out_close:
	mdio_close(&m);
	return ret;
}

static struct duetctl_cmd dump_md = {
	.name = "dump-md",
	.args = "RESOURCE|--disk PATH [--json]",
	.summary = "print the metadata (read-only)",
	.run = cmd_dump_md,
};
DUETCTL_COMMAND(dump_md)

/* ------------------------------------------------------------------ wipe */

static void wipe_usage(FILE *out)
{
	fprintf(out,
		"usage: duetctl wipe-md RESOURCE --force\n"
		"  -f, --force  required: zero both superblock slots\n"
		"See duetctl-wipe-md(8).\n");
}

static int cmd_wipe_md(const struct duetctl_global *g, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "force", no_argument, NULL, 'f' },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	static const char *cmd = "wipe-md";
	struct cfg_resource r;
	struct md_target t;
	struct mdio m = { 0 };
	bool force = false;
	char why[512];
	int opt, ret, had;

	while ((opt = getopt_long(argc, argv, "fh", opts, NULL)) != -1) {
		switch (opt) {
		case 'f':
			force = true;
			break;
		case 'h':
			wipe_usage(stdout);
			return EXIT_OK;
		default:
			wipe_usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (argc - optind != 1) {
		duetctl_err(cmd, "expected exactly one RESOURCE");
		wipe_usage(stderr);
		return EXIT_USAGE;
	}
	ret = target_from_config(g, argv[optind], &r, &t, NULL);
	if (ret)
		return ret;
	/* No prompt: scripts drive this tool, so the confirmation is a flag. */
	if (!force) {
		duetctl_err(cmd,
			    "refusing to destroy the metadata of '%s' on %s without --force (the bitmap and generation identifiers are lost; the next connect needs a full sync)",
			    r.name, *t.meta ? t.meta : t.disk);
		return EXIT_USAGE;
	}
	if (resource_is_up(g, r.name)) {
		duetctl_err(cmd, "resource '%s' is up; bring it down first (duetctl down %s)",
			    r.name, r.name);
		return EXIT_REFUSED;
	}
	if (mdio_open(&m, t.disk, target_meta(&t), 0, why, sizeof(why))) {
		duetctl_err(cmd, "%s (%s)", why, t.origin);
		return EXIT_FAIL;
	}
	had = mdio_probe(&m, why, sizeof(why));
	if (had < 0) {
		duetctl_err(cmd, "%s", why);
		ret = EXIT_FAIL;
		goto out_close;
	}
	if (mdio_wipe(&m, why, sizeof(why))) {
		duetctl_err(cmd, "wiping failed: %s", why);
		ret = EXIT_FAIL;
		goto out_close;
	}
	printf("%s: superblock slots zeroed on %s%s\n", r.name,
	       *t.meta ? t.meta : t.disk,
	       had ? "" : " (no valid metadata was present)");
	ret = EXIT_OK;
out_close:
	mdio_close(&m);
	return ret;
}

static struct duetctl_cmd wipe_md = {
	.name = "wipe-md",
	.args = "RESOURCE --force",
	.summary = "destroy this node's metadata",
	.run = cmd_wipe_md,
};
DUETCTL_COMMAND(wipe_md)
