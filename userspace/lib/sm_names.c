// SPDX-License-Identifier: MIT
/*
 * The state machine's names (sm.h): of roles, disk and connection states,
 * requests and policies, and the one-line and changed-fields forms of a
 * state that status and the events stream show.
 */
#include <stdio.h>
#include <string.h>

#include "sm.h"
#include "util.h"

#define DISK(d) sm_disk_name(d)
#define ROLE(r) sm_role_name(r)

/* ---- names ----------------------------------------------------------- */

#define NAME(tab, v) \
	((unsigned int)(v) < ARRAY_SIZE(tab) && (tab)[v] ? (tab)[v] : "?")

const char *sm_role_name(enum sm_role r)
{
	static const char *const t[] = { "Unknown", "Secondary", "Primary" };

	return NAME(t, r);
}

const char *sm_disk_name(enum sm_disk d)
{
	static const char *const t[] = {
		"Diskless", "Attaching", "Failed",     "Inconsistent",
		"Outdated", "DUnknown",	 "Consistent", "UpToDate",
	};

	return NAME(t, d);
}

const char *sm_conn_name(enum sm_conn c)
{
	static const char *const t[] = {
		"StandAlone",
		"Connecting",
		"Connected",
		"Disconnecting",
	};

	return NAME(t, c);
}

const char *sm_repl_name(enum sm_repl r)
{
	static const char *const t[] = {
		"Off",	      "Established",  "SyncSource",   "SyncTarget",
		"PausedSync", "VerifySource", "VerifyTarget",
	};

	return NAME(t, r);
}

const char *sm_req_name(enum sm_req_type t)
{
	static const char *const n[SM_REQ_COUNT] = {
		[SM_REQ_PRIMARY] = "primary",
		[SM_REQ_SECONDARY] = "secondary",
		[SM_REQ_CONNECT] = "connect",
		[SM_REQ_DISCONNECT] = "disconnect",
		[SM_REQ_INVALIDATE] = "invalidate",
		[SM_REQ_INVALIDATE_REMOTE] = "invalidate-remote",
		[SM_REQ_VERIFY] = "verify",
		[SM_REQ_PAUSE_SYNC] = "pause-sync",
		[SM_REQ_RESUME_SYNC] = "resume-sync",
		[SM_REQ_OUTDATE] = "outdate",
		[SM_REQ_ATTACH] = "attach",
		[SM_REQ_DETACH] = "detach",
		[SM_REQ_DOWN] = "down",
		[SM_REQ_RESUME_IO] = "resume-io",
		[SM_EV_ATTACHED] = "attached",
		[SM_EV_DETACHED] = "detached",
		[SM_EV_CONNECTED] = "connected",
		[SM_EV_PEER_STATE] = "peer-state",
		[SM_EV_PEER_LOST] = "peer-lost",
		[SM_EV_SYNC_DONE] = "sync-done",
		[SM_EV_IO_ERROR] = "io-error",
		[SM_EV_FENCE_OK] = "fence-ok",
		[SM_EV_FENCE_FAILED] = "fence-failed",
		[SM_EV_VERIFY_DONE] = "verify-done",
	};

	return NAME(n, t);
}

const char *sm_fencing_name(enum cfg_fencing f)
{
	static const char *const t[] = { "dont-care", "suspend-io" };

	return NAME(t, f);
}

const char *sm_on_io_error_name(enum cfg_on_io_error e)
{
	static const char *const t[] = { "detach", "pass-on" };

	return NAME(t, e);
}

/* ---- differences, for the events stream ------------------------------ */

static const char *yes_no(bool b)
{
	return b ? "yes" : "no";
}

size_t sm_changes(const struct sm_state *a, const struct sm_state *b,
		  struct sm_change *out, size_t max)
{
	const struct sm_change all[] = {
		{ "role", ROLE(a->role), ROLE(b->role) },
		{ "disk", DISK(a->disk), DISK(b->disk) },
		{ "peer-role", ROLE(a->peer_role), ROLE(b->peer_role) },
		{ "peer-disk", DISK(a->peer_disk), DISK(b->peer_disk) },
		{ "connection", sm_conn_name(a->conn), sm_conn_name(b->conn) },
		{ "replication", sm_repl_name(a->repl), sm_repl_name(b->repl) },
		{ "suspended", yes_no(a->susp), yes_no(b->susp) },
		{ "peer-outdated", yes_no(a->peer_outdated),
		  yes_no(b->peer_outdated) },
		{ "discard-my-data", yes_no(a->discard_my_data),
		  yes_no(b->discard_my_data) },
		{ "in-use", yes_no(a->in_use), yes_no(b->in_use) },
		{ "fencing", sm_fencing_name(a->fencing),
		  sm_fencing_name(b->fencing) },
		{ "on-io-error", sm_on_io_error_name(a->on_io_error),
		  sm_on_io_error_name(b->on_io_error) },
	};
	size_t i, n = 0;

	/* Names are unique per value, so comparing them compares values. */
	for (i = 0; i < ARRAY_SIZE(all); i++) {
		if (!strcmp(all[i].from, all[i].to))
			continue;
		if (n < max)
			out[n] = all[i];
		n++;
	}
	return n;
}

const char *sm_diff_str(const struct sm_state *a, const struct sm_state *b,
			char *buf, size_t len)
{
	struct sm_change ch[16];
	size_t i, n, off = 0;
	int w;

	if (!len)
		return buf;
	buf[0] = '\0';
	n = sm_changes(a, b, ch, ARRAY_SIZE(ch));
	for (i = 0; i < n && i < ARRAY_SIZE(ch) && off < len; i++) {
		w = snprintf(buf + off, len - off, "%s%s: %s -> %s",
			     i ? ", " : "", ch[i].field, ch[i].from, ch[i].to);
		if (w < 0)
			break;
		off += (size_t)w;
	}
	return buf;
}

const char *sm_state_str(const struct sm_state *s, char *buf, size_t len)
{
	snprintf(buf, len, "%s/%s %s/%s %s %s%s", ROLE(s->role),
		 ROLE(s->peer_role), DISK(s->disk), DISK(s->peer_disk),
		 sm_conn_name(s->conn), sm_repl_name(s->repl),
		 s->susp ? " suspended" : "");
	return buf;
}
