// SPDX-License-Identifier: MIT
/*
 * The connection handshake as a pure state machine (see hs.h and
 * docs/protocol.md).
 *
 * Both peers send HELLO at once, so neither waits for the other to speak
 * first; everything after that is a reply to exactly one frame of the
 * peer's, which keeps the machine linear:
 *
 *	HELLO_SENT --peer HELLO--> AUTH_SENT --peer AUTH--> RESULT_SENT
 *	    --peer AUTH_RESULT(ok)--> DONE
 *
 * and any other frame, in any state, ends in REFUSED. A refusal is final:
 * a connection that misbehaved once is not given a second try; the
 * daemon reconnects with a fresh challenge.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "hs.h"
#include "log.h"
#include "md.h"

enum hs_state {
	HS_ST_INIT,		/* hs_start not called yet */
	HS_ST_HELLO_SENT,	/* waiting for the peer's HELLO */
	HS_ST_AUTH_SENT,	/* waiting for the peer's AUTH */
	HS_ST_RESULT_SENT,	/* peer verified; waiting for its verdict */
	HS_ST_DONE,
	HS_ST_REFUSED,
};

struct hs {
	enum hs_state state;
	struct hs_cfg cfg;	/* resource and secret point into the below */
	char resource[PROTO_NAME_MAX];
	uint8_t *secret;
	struct proto_msg hello;	/* ours */
	struct hs_result result;
	unsigned int refusal;	/* enum proto_disc_reason */
	char reason[HS_REASON_MAX];
	uint8_t out[PROTO_HDR_SIZE + PROTO_FIXED_MAX];
};

static const char *role_name(unsigned int role)
{
	return role == PROTO_HS_INITIATOR ? "initiator" : "acceptor";
}

int hs_auth_mac(const void *secret, size_t secret_len, uint8_t role,
		const uint8_t peer_challenge[PROTO_CHALLENGE_SIZE],
		const uint8_t own_challenge[PROTO_CHALLENGE_SIZE],
		const char *resource, uint8_t mac[PROTO_MAC_SIZE])
{
	uint8_t msg[sizeof(HS_AUTH_LABEL) - 1 + 1 + 2 * PROTO_CHALLENGE_SIZE +
		    PROTO_NAME_MAX];
	size_t name_len = strnlen(resource, PROTO_NAME_MAX - 1), n = 0;
	unsigned int mac_len = 0;

	memcpy(msg, HS_AUTH_LABEL, sizeof(HS_AUTH_LABEL) - 1);
	n += sizeof(HS_AUTH_LABEL) - 1;
	msg[n++] = role;
	memcpy(msg + n, peer_challenge, PROTO_CHALLENGE_SIZE);
	n += PROTO_CHALLENGE_SIZE;
	memcpy(msg + n, own_challenge, PROTO_CHALLENGE_SIZE);
	n += PROTO_CHALLENGE_SIZE;
	memcpy(msg + n, resource, name_len);
	n += name_len;
	if (!HMAC(EVP_sha256(), secret, (int)secret_len, msg, n, mac,
		  &mac_len) ||
	    mac_len != PROTO_MAC_SIZE)
		return -EIO;
	return 0;
}

struct hs *hs_init(const struct hs_cfg *cfg)
{
	struct proto_hello *h;
	char why[160];
	struct hs *hs;

	if (!cfg->resource || !cfg->resource[0] ||
	    strnlen(cfg->resource, PROTO_NAME_MAX) >= PROTO_NAME_MAX) {
		log_err("handshake: resource name missing or longer than %d",
			PROTO_NAME_MAX - 1);
		goto out_inval;
	}
	if (!cfg->secret || !cfg->secret_len ||
	    cfg->secret_len > HS_SECRET_MAX) {
		log_err("%s: handshake: the shared secret must be 1..%d bytes",
			cfg->resource, HS_SECRET_MAX);
		goto out_inval;
	}
	if (cfg->peer_node_id != HS_NODE_ANY &&
	    (cfg->peer_node_id > MD_NODE_ID_MAX ||
	     cfg->peer_node_id == cfg->node_id)) {
		log_err("%s: handshake: peer node id %u is invalid or ours",
			cfg->resource, cfg->peer_node_id);
		goto out_inval;
	}
	if ((cfg->features & ~(uint64_t)PROTO_F_ALL) ||
	    (cfg->required & ~cfg->features)) {
		log_err("%s: handshake: features 0x%llx / required 0x%llx not supported",
			cfg->resource, (unsigned long long)cfg->features,
			(unsigned long long)cfg->required);
		goto out_inval;
	}

	hs = calloc(1, sizeof(*hs));
	if (!hs) {
		errno = ENOMEM;
		return NULL;
	}
	hs->secret = malloc(cfg->secret_len);
	if (!hs->secret)
		goto out_free;
	memcpy(hs->secret, cfg->secret, cfg->secret_len);
	strcpy(hs->resource, cfg->resource);
	hs->cfg = *cfg;
	hs->cfg.resource = hs->resource;
	hs->cfg.secret = hs->secret;
	if (!cfg->version_min && !cfg->version_max) {
		hs->cfg.version_min = PROTO_VERSION_MIN;
		hs->cfg.version_max = PROTO_VERSION_MAX;
	}

	hs->hello.type = PROTO_HELLO;
	h = &hs->hello.hello;
	h->version_min = hs->cfg.version_min;
	h->version_max = hs->cfg.version_max;
	h->hs_role = cfg->role;
	h->repl = cfg->repl;
	h->data_digest = cfg->data_digest;
	h->node_id = cfg->node_id;
	h->bm_granularity = cfg->bm_granularity;
	h->features = cfg->features;
	h->data_bytes = cfg->data_bytes;
	memcpy(h->challenge, cfg->challenge, PROTO_CHALLENGE_SIZE);
	strcpy(h->resource, hs->resource);
	/* The encoder checks every field the peer's decoder will. */
	if (proto_encode(&hs->hello, hs->out, sizeof(hs->out), why,
			 sizeof(why)) < 0) {
		log_err("%s: handshake: %s", cfg->resource, why);
		hs_free(hs);
		goto out_inval;
	}
	return hs;

out_free:
	free(hs);
	errno = ENOMEM;
	return NULL;
out_inval:
	errno = EINVAL;
	return NULL;
}

void hs_free(struct hs *hs)
{
	if (!hs)
		return;
	if (hs->secret) {
		OPENSSL_cleanse(hs->secret, hs->cfg.secret_len);
		free(hs->secret);
	}
	OPENSSL_cleanse(hs, sizeof(*hs));
	free(hs);
}

bool hs_done(const struct hs *hs)
{
	return hs->state == HS_ST_DONE;
}

const struct hs_result *hs_result(const struct hs *hs)
{
	return hs->state == HS_ST_DONE ? &hs->result : NULL;
}

const char *hs_reason(const struct hs *hs)
{
	return hs->state == HS_ST_REFUSED ? hs->reason : "";
}

unsigned int hs_refusal(const struct hs *hs)
{
	return hs->state == HS_ST_REFUSED ? hs->refusal : 0;
}

/* Encode @m into the output buffer; a failure here is a bug of ours. */
static size_t emit(struct hs *hs, const struct proto_msg *m)
{
	ssize_t n = proto_encode(m, hs->out, sizeof(hs->out), NULL, 0);

	return n < 0 ? 0 : (size_t)n;
}

static enum hs_step refuse(struct hs *hs, unsigned int code, bool tell,
			   const void **out, size_t *out_len, const char *fmt,
			   ...) __attribute__((format(printf, 6, 7)));

/*
 * Refuse the connection: log why and, if @tell, hand out a DISCONNECT so
 * the peer logs it too (its text is the same sentence, from our side).
 */
static enum hs_step refuse(struct hs *hs, unsigned int code, bool tell,
			   const void **out, size_t *out_len, const char *fmt,
			   ...)
{
	struct proto_msg m = { .type = PROTO_DISCONNECT };
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(hs->reason, sizeof(hs->reason), fmt, ap);
	va_end(ap);
	hs->state = HS_ST_REFUSED;
	hs->refusal = code;
	/* the caller logs hs_reason(), rate-limited: a peer with a wrong
	 * secret retries forever and must not flood the log */
	log_dbg(LOG_CAT_PROTO, "%s: connection refused: %s", hs->resource,
		hs->reason);
	*out_len = 0;
	if (tell) {
		m.disconnect.reason = code;
		/* The text field is shorter than a reason may be. */
		memcpy(m.disconnect.text, hs->reason,
		       strnlen(hs->reason, sizeof(m.disconnect.text) - 1));
		*out_len = emit(hs, &m);
		*out = hs->out;
	}
	return HS_REFUSED;
}

/* The peer's HELLO: everything but the secret must match. */
static enum hs_step on_hello(struct hs *hs, const struct proto_hello *p,
			     const void **out, size_t *out_len)
{
	const struct hs_cfg *c = &hs->cfg;
	uint16_t lo = c->version_min > p->version_min ? c->version_min :
							p->version_min;
	uint16_t hi = c->version_max < p->version_max ? c->version_max :
							p->version_max;
	uint64_t missing = c->required & ~p->features;
	struct proto_msg m = { .type = PROTO_AUTH };

	if (lo > hi)
		return refuse(hs, PROTO_DISC_VERSION, true, out, out_len,
			      "incompatible protocol versions: we speak %u..%u, peer %u..%u",
			      c->version_min, c->version_max, p->version_min,
			      p->version_max);
	if (strcmp(p->resource, c->resource))
		return refuse(hs, PROTO_DISC_RESOURCE, true, out, out_len,
			      "wrong resource name: we serve '%s', peer '%s'",
			      c->resource, p->resource);
	if (p->hs_role == c->role)
		return refuse(hs, PROTO_DISC_CONFIG, true, out, out_len,
			      "both ends claim to be the %s: crossed connections",
			      role_name(c->role));
	if (p->node_id == c->node_id)
		return refuse(hs, PROTO_DISC_NODE_ID, true, out, out_len,
			      "peer has the same node id %u as we do",
			      p->node_id);
	if (c->peer_node_id != HS_NODE_ANY && p->node_id != c->peer_node_id)
		return refuse(hs, PROTO_DISC_NODE_ID, true, out, out_len,
			      "unexpected peer node id %u, the configuration says %u",
			      p->node_id, c->peer_node_id);
	if (p->data_bytes != c->data_bytes)
		return refuse(hs, PROTO_DISC_SIZE, true, out, out_len,
			      "device size mismatch: ours %llu bytes, peer's %llu",
			      (unsigned long long)c->data_bytes,
			      (unsigned long long)p->data_bytes);
	if (p->bm_granularity != c->bm_granularity)
		return refuse(hs, PROTO_DISC_SIZE, true, out, out_len,
			      "bitmap granularity mismatch: ours %u, peer's %u",
			      c->bm_granularity, p->bm_granularity);
	if (p->repl != c->repl)
		return refuse(hs, PROTO_DISC_CONFIG, true, out, out_len,
			      "replication protocol mismatch: ours %c, peer's %c",
			      'A' + c->repl - 1, 'A' + p->repl - 1);
	if (p->data_digest != c->data_digest)
		return refuse(hs, PROTO_DISC_CONFIG, true, out, out_len,
			      "data digest mismatch: ours %s, peer's %s",
			      proto_digest_name(c->data_digest),
			      proto_digest_name(p->data_digest));
	if (missing)
		return refuse(hs, PROTO_DISC_FEATURES, true, out, out_len,
			      "peer lacks required feature(s) 0x%llx",
			      (unsigned long long)missing);
	/* Only a reflector would hand our own challenge back. */
	if (!memcmp(p->challenge, c->challenge, PROTO_CHALLENGE_SIZE))
		return refuse(hs, PROTO_DISC_AUTH, true, out, out_len,
			      "peer sent our own challenge back: reflection attempt?");

	hs->result.version = hi;
	hs->result.features = c->features & p->features;
	hs->result.peer = *p;
	if (hs_auth_mac(hs->secret, c->secret_len, c->role, p->challenge,
			c->challenge, c->resource, m.auth.mac))
		return refuse(hs, PROTO_DISC_AUTH, true, out, out_len,
			      "cannot compute HMAC-SHA256 (libcrypto failed)");
	hs->state = HS_ST_AUTH_SENT;
	*out_len = emit(hs, &m);
	*out = hs->out;
	OPENSSL_cleanse(&m, sizeof(m));
	return HS_SEND;
}

static enum hs_step on_auth(struct hs *hs, const struct proto_auth *a,
			    const void **out, size_t *out_len)
{
	const struct hs_cfg *c = &hs->cfg;
	uint8_t peer_role = c->role == PROTO_HS_INITIATOR ? PROTO_HS_ACCEPTOR :
							    PROTO_HS_INITIATOR;
	struct proto_msg m = { .type = PROTO_AUTH_RESULT };
	uint8_t want[PROTO_MAC_SIZE];
	bool ok;

	if (hs_auth_mac(hs->secret, c->secret_len, peer_role,
			c->challenge, hs->result.peer.challenge, c->resource,
			want))
		return refuse(hs, PROTO_DISC_AUTH, true, out, out_len,
			      "cannot compute HMAC-SHA256 (libcrypto failed)");
	ok = !CRYPTO_memcmp(want, a->mac, PROTO_MAC_SIZE);
	OPENSSL_cleanse(want, sizeof(want));
	if (!ok) {
		m.auth_result.status = PROTO_AUTH_FAILED;
		refuse(hs, PROTO_DISC_AUTH, false, out, out_len,
		       "peer failed authentication: wrong shared secret?");
		*out_len = emit(hs, &m);
		*out = hs->out;
		return HS_REFUSED;
	}
	m.auth_result.status = PROTO_AUTH_OK;
	m.auth_result.version = hs->result.version;
	m.auth_result.features = hs->result.features;
	hs->state = HS_ST_RESULT_SENT;
	*out_len = emit(hs, &m);
	*out = hs->out;
	return HS_SEND;
}

static enum hs_step on_auth_result(struct hs *hs,
				   const struct proto_auth_result *r,
				   const void **out, size_t *out_len)
{
	if (r->status != PROTO_AUTH_OK)
		return refuse(hs, PROTO_DISC_AUTH, false, out, out_len,
			      "peer rejected our authentication: wrong shared secret?");
	if (hs->state != HS_ST_RESULT_SENT)
		return refuse(hs, PROTO_DISC_PROTOCOL, true, out, out_len,
			      "AUTH_RESULT before the peer authenticated itself");
	/* Both computed the same thing from the same HELLOs, or one lies. */
	if (r->version != hs->result.version ||
	    r->features != hs->result.features)
		return refuse(hs, PROTO_DISC_PROTOCOL, true, out, out_len,
			      "peer negotiated version %u features 0x%llx, we %u 0x%llx",
			      r->version, (unsigned long long)r->features,
			      hs->result.version,
			      (unsigned long long)hs->result.features);
	hs->state = HS_ST_DONE;
	*out_len = 0;
	log_info("%s: handshake done with node %u: protocol version %u, features 0x%llx",
		 hs->resource, hs->result.peer.node_id, hs->result.version,
		 (unsigned long long)hs->result.features);
	return HS_DONE;
}

int hs_start(struct hs *hs, const void **out, size_t *out_len)
{
	if (hs->state != HS_ST_INIT)
		return -EINVAL;
	*out_len = emit(hs, &hs->hello);
	*out = hs->out;
	hs->state = HS_ST_HELLO_SENT;
	return 0;
}

static bool is_handshake(unsigned int type)
{
	return type == PROTO_HELLO || type == PROTO_AUTH ||
	       type == PROTO_AUTH_RESULT;
}

enum hs_step hs_input(struct hs *hs, const struct proto_msg *in,
		      const void **out, size_t *out_len)
{
	const char *t = proto_type_name(in->type);

	*out_len = 0;
	switch (hs->state) {
	case HS_ST_REFUSED:
		return HS_REFUSED;
	case HS_ST_INIT:
		return refuse(hs, PROTO_DISC_PROTOCOL, false, out, out_len,
			      "%s received before the handshake started", t);
	case HS_ST_DONE:
		if (!is_handshake(in->type))
			return HS_DONE;
		return refuse(hs, PROTO_DISC_PROTOCOL, true, out, out_len,
			      "%s after the handshake completed: replay?", t);
	default:
		break;
	}

	switch (in->type) {
	case PROTO_DISCONNECT:
		return refuse(hs, in->disconnect.reason, false, out, out_len,
			      "peer refused the connection (%s): %s",
			      proto_disc_name(in->disconnect.reason),
			      in->disconnect.text);
	case PROTO_HELLO:
		if (hs->state != HS_ST_HELLO_SENT)
			return refuse(hs, PROTO_DISC_PROTOCOL, true, out,
				      out_len, "duplicate HELLO: replay?");
		return on_hello(hs, &in->hello, out, out_len);
	case PROTO_AUTH:
		if (hs->state != HS_ST_AUTH_SENT)
			return refuse(hs, PROTO_DISC_PROTOCOL, true, out,
				      out_len, "%s AUTH: replay?",
				      hs->state == HS_ST_HELLO_SENT ?
					      "unexpected" : "duplicate");
		return on_auth(hs, &in->auth, out, out_len);
	case PROTO_AUTH_RESULT:
		return on_auth_result(hs, &in->auth_result, out, out_len);
	default:
		return refuse(hs, PROTO_DISC_PROTOCOL, true, out, out_len,
			      "%s before the handshake completed", t);
	}
}
