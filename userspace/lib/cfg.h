/* SPDX-License-Identifier: MIT */
/*
 * cfg — resource configuration: one file per replicated device, parsed with
 * libconfig. Keys are described by one table in cfg.c (name, type, bounds,
 * default, whether `duetctl adjust` may change it on a running resource);
 * the syntax and every key are documented in docs/configuration.md.
 *
 *	resource = "r0";
 *	protocol = "C";
 *	secret = "a long shared secret";
 *	nodes = (
 *	  { name = "alpha"; id = 0; address = "10.0.0.1:7789";
 *	    disk = "/dev/vdb"; meta-disk = "internal"; },
 *	  { name = "beta";  id = 1; address = "10.0.0.2:7789";
 *	    disk = "/dev/vdb"; meta-disk = "internal"; }
 *	);
 *
 * Per-node keys (disk, meta-disk, ublk-id, nbd-listen) may also be given at
 * the top level as defaults for both nodes.
 *
 * Every error names the file, the line and the key:
 *	"/etc/duet/r0.conf:3: protocol: expected A, B or C, got \"D\""
 */
#ifndef DUET_CFG_H
#define DUET_CFG_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define CFG_NAME_MAX 64		/* resource and node names */
#define CFG_ADDR_MAX 128	/* "host:port", "[v6]:port" */
#define CFG_SECRET_MIN 8
#define CFG_SECRET_MAX 256
#define CFG_MAX_NODES 2
#define CFG_DEFAULT_DIR "/etc/duet"
#define CFG_DEFAULT_PORT 7789

enum cfg_transport { CFG_XPORT_TCP = 0, CFG_XPORT_RDMA };
enum cfg_engine { CFG_ENGINE_URING = 0, CFG_ENGINE_LIBAIO };
enum cfg_digest { CFG_DIGEST_NONE = 0, CFG_DIGEST_CRC32C, CFG_DIGEST_SHA256 };
/* After split brain is detected (DRBD's after-sb-0pri family). */
enum cfg_sb_policy {
	CFG_SB_DISCONNECT = 0,
	CFG_SB_DISCARD_ZERO_CHANGES,
	CFG_SB_DISCARD_YOUNGER_PRIMARY,
	CFG_SB_DISCARD_LEAST_CHANGES,
};
enum cfg_fencing { CFG_FENCE_DONT_CARE = 0, CFG_FENCE_SUSPEND_IO };
enum cfg_on_io_error { CFG_IOERR_DETACH = 0, CFG_IOERR_PASS_ON };

struct cfg_node {
	char name[CFG_NAME_MAX];
	uint32_t id;			/* 0..31, unique in the resource */
	char address[CFG_ADDR_MAX];	/* replication endpoint */
	char disk[PATH_MAX];		/* backing device or file */
	char meta_disk[PATH_MAX];	/* "internal" or a path */
	int32_t ublk_id;		/* -1: let the kernel choose */
	char nbd_listen[PATH_MAX];	/* "" off, "unix:/path", "host:port" */
};

struct cfg_resource {
	char file[PATH_MAX];		/* where it was read from */
	char name[CFG_NAME_MAX];

	/* replication */
	char protocol;			/* 'A', 'B' or 'C' */
	enum cfg_transport transport;
	char secret[CFG_SECRET_MAX + 1];
	enum cfg_digest data_digest;	/* per-write digest on the wire */
	uint32_t connect_timeout_ms;
	uint32_t ping_interval_ms;
	uint32_t reconnect_min_ms;	/* back-off start */
	uint32_t reconnect_max_ms;	/* back-off cap */
	uint32_t sndbuf_bytes;		/* TCP socket buffers; 0: the */
	uint32_t rcvbuf_bytes;		/* kernel's autotuning */

	/* resync */
	uint64_t resync_rate;		/* bytes/s, fixed maximum */
	uint64_t resync_min_rate;	/* bytes/s kept even under app I/O */
	enum cfg_digest csums_alg;	/* checksum-based resync; NONE = off */
	enum cfg_digest verify_alg;	/* online verify digest */

	/* metadata */
	uint32_t bm_granularity;	/* bytes per bitmap bit */
	uint32_t al_extents;		/* hot-set size */

	/* device */
	enum cfg_engine io_engine;
	uint32_t queues;
	uint32_t queue_depth;
	uint32_t max_io_bytes;
	uint32_t logical_block_size;
	uint32_t physical_block_size;
	bool discard;

	/* roles and failure policies */
	enum cfg_sb_policy after_sb_0pri;
	enum cfg_sb_policy after_sb_1pri;
	enum cfg_fencing fencing;
	enum cfg_on_io_error on_io_error;
	char handler_split_brain[PATH_MAX];
	char handler_fence_peer[PATH_MAX];
	char handler_before_resync_target[PATH_MAX];
	char handler_after_resync_target[PATH_MAX];
	char handler_local_io_error[PATH_MAX];

	uint32_t nr_nodes;
	struct cfg_node nodes[CFG_MAX_NODES];
};

/* Parse @path into @r (defaults filled first). 0 or -errno, @err filled. */
int cfg_load_file(const char *path, struct cfg_resource *r, char *err,
		  size_t err_len);
/* Same from memory; @fname is used in messages. For tests and fuzzing. */
int cfg_load_string(const char *text, const char *fname,
		    struct cfg_resource *r, char *err, size_t err_len);

/* Path of resource @name in @dir ("<dir>/<name>.conf"); -ENOENT if absent,
 * -EINVAL for a name that is not a valid resource name. */
int cfg_resource_path(const char *dir, const char *name, char *path,
		      size_t len);

/*
 * The node this machine is: the one named @self_name, or when NULL the one
 * whose name equals the host name. NULL with @err filled when none matches.
 */
const struct cfg_node *cfg_local_node(const struct cfg_resource *r,
				      const char *self_name, char *err,
				      size_t err_len);
/* The other node, or NULL for a single-node (standalone) resource. */
const struct cfg_node *cfg_peer_node(const struct cfg_resource *r,
				     const struct cfg_node *self);

/* Effective configuration (defaults included), in the file's own syntax,
 * so that the output parses back to the same resource. */
void cfg_print(const struct cfg_resource *r, FILE *out);

/* Whether `duetctl adjust` may change @key ("resync-rate",
 * "handlers.split-brain") on a running resource; false for unknown keys. */
bool cfg_key_adjustable(const char *key);

/*
 * `duetctl adjust`: take from @next (the file read again) the adjustable
 * keys that changed, into @cur. If any other key changed (or the nodes),
 * nothing is taken: -EINVAL with @why naming those keys. @changed gets the
 * names of the keys taken, space-separated ("" if none). Pure: the caller
 * decides how readers of @cur see the new values.
 */
int cfg_adjust(struct cfg_resource *cur, const struct cfg_resource *next,
	       char *changed, size_t changed_len, char *why, size_t why_len);

const char *cfg_digest_name(enum cfg_digest d);
/* The wire's enum proto_digest for a configured digest. */
uint8_t cfg_wire_digest(enum cfg_digest d);
const char *cfg_sb_policy_name(enum cfg_sb_policy p);

#endif
