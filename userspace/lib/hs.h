/* SPDX-License-Identifier: MIT */
/*
 * hs — the connection handshake: version and feature negotiation,
 * configuration cross-checks and mutual HMAC-SHA256 challenge-response
 * authentication. One struct hs per connection attempt.
 *
 *	initiator                                  acceptor
 *	HELLO(challenge Ci)  ───────────►  ◄───────────  HELLO(challenge Ca)
 *	AUTH(HMAC(K, ..., Ca, Ci, ...))  ─►  ◄─  AUTH(HMAC(K, ..., Ci, Ca, ...))
 *	AUTH_RESULT(ok)  ────────────────►  ◄──────────────  AUTH_RESULT(ok)
 *	                          both: HS_DONE
 *
 * Each side answers the peer's challenge with
 *	HMAC-SHA256(secret, "duet-auth-v1" | own hs_role (1 byte) |
 *		    peer's challenge | own challenge | resource name)
 * so a response only fits one direction of one connection: sending the
 * peer's own AUTH back, or replaying one from another connection, fails.
 * The side whose check fails sends AUTH_RESULT(failed); a side refusing
 * for any other reason sends DISCONNECT with a reason code and text, so
 * both ends log why. Details: docs/protocol.md.
 *
 * Until both sides are authenticated no other frame is accepted: STATE,
 * DATA and the rest make hs_input refuse the connection.
 *
 * Pure logic: the caller supplies the random challenge, moves the bytes
 * and decodes the peer's frames with proto_parser. No I/O.
 */
#ifndef DUET_HS_H
#define DUET_HS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto.h"

#define HS_AUTH_LABEL "duet-auth-v1"
#define HS_SECRET_MAX 1024
#define HS_NODE_ANY UINT32_MAX	/* peer_node_id: any id but ours */
#define HS_REASON_MAX 256

struct hs_cfg {
	const char *resource;	/* 1..63 printable characters */
	const void *secret;	/* shared secret, 1..HS_SECRET_MAX bytes */
	size_t secret_len;
	uint32_t node_id;	/* ours, 0..MD_NODE_ID_MAX */
	uint32_t peer_node_id;	/* the one we expect, or HS_NODE_ANY */
	uint64_t data_bytes;	/* device data size, bytes */
	uint32_t bm_granularity; /* bytes per bitmap bit */
	uint16_t version_min;	/* 0 and 0: PROTO_VERSION_MIN..MAX */
	uint16_t version_max;
	uint64_t features;	/* offered, within PROTO_F_ALL */
	uint64_t required;	/* refuse a peer lacking these; within features */
	uint8_t role;		/* enum proto_hs_role: who connected to whom */
	uint8_t repl;		/* enum proto_repl: must equal the peer's */
	uint8_t data_digest;	/* enum proto_digest: must equal the peer's */
	/* Random bytes from a CSPRNG, fresh for every connection. */
	uint8_t challenge[PROTO_CHALLENGE_SIZE];
};

enum hs_step {
	HS_SEND = 1,	/* send *out, then wait for the peer's next frame */
	HS_DONE,	/* both authenticated; see hs_result() */
	HS_REFUSED,	/* close the connection (after sending *out if any);
			 * hs_reason() says why */
};

/* What was negotiated, once the handshake is done. */
struct hs_result {
	uint16_t version;	/* highest version both speak */
	uint64_t features;	/* offered by both */
	struct proto_hello peer; /* the peer's HELLO */
};

struct hs;

/*
 * Check @cfg and copy it (the secret too). Returns NULL with errno EINVAL
 * (a field is out of range: see the log) or ENOMEM.
 */
struct hs *hs_init(const struct hs_cfg *cfg);
/* Wipes the secret. */
void hs_free(struct hs *hs);

/*
 * Our HELLO, to send first. *@out stays valid until the next call on @hs.
 * Returns 0, or -EINVAL if the handshake was already started.
 */
int hs_start(struct hs *hs, const void **out, size_t *out_len);

/*
 * Feed the peer's next frame, decoded by proto_parser. Returns HS_SEND with
 * a frame to send in *@out / *@out_len; HS_DONE when both sides are
 * authenticated (nothing to send); HS_REFUSED, with *@out_len 0 or a
 * DISCONNECT / AUTH_RESULT(failed) to send before closing. Refusal is
 * final: every later call returns HS_REFUSED with nothing to send.
 *
 * After HS_DONE, a frame that is not part of the handshake returns HS_DONE
 * again (it is the caller's to handle) and a handshake frame is refused.
 */
enum hs_step hs_input(struct hs *hs, const struct proto_msg *in,
		      const void **out, size_t *out_len);

bool hs_done(const struct hs *hs);
/* NULL until the handshake is done. */
const struct hs_result *hs_result(const struct hs *hs);
/* Why the handshake was refused; "" if it was not. */
const char *hs_reason(const struct hs *hs);
/* The DISCONNECT reason code for the refusal (PROTO_DISC_*); 0 if none. */
unsigned int hs_refusal(const struct hs *hs);

/*
 * The AUTH a node sends: HMAC-SHA256 over the label, @role (the sender's),
 * the peer's challenge, the sender's challenge and the resource name.
 * Exposed for tests and tools. Returns 0 or -EIO.
 */
int hs_auth_mac(const void *secret, size_t secret_len, uint8_t role,
		const uint8_t peer_challenge[PROTO_CHALLENGE_SIZE],
		const uint8_t own_challenge[PROTO_CHALLENGE_SIZE],
		const char *resource, uint8_t mac[PROTO_MAC_SIZE]);

#endif
