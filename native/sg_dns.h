/* DNS messages as the preload library sees them on a socket to port 53: the question names of a query
 * (decided before it leaves), and the addresses an answer gives for its question (learned for connects).
 * Pure and bounded: every read is checked against the buffer; compression pointers may only point
 * backwards and at most 64 are followed per name; a name longer than 255 bytes is malformed. */
#ifndef SG_DNS_H
#define SG_DNS_H

#include <stddef.h>
#include <stdint.h>

#include "sg_policy.h"

#define SG_DNS_TYPE_A 1
#define SG_DNS_TYPE_CNAME 5
#define SG_DNS_TYPE_PTR 12
#define SG_DNS_TYPE_AAAA 28

/* Read a (possibly compressed) name at *pos into out as dotted text (no trailing dot; "" for the root).
 * Returns 0 and advances *pos past the name in the message, or -1 if malformed. A label holding a byte
 * that cannot be written in dotted text ('.', NUL, non-printable) is malformed too. */
int sg_dns_read_name(const uint8_t *msg, size_t len, size_t *pos, char out[SG_NAME_MAX]);

typedef int (*sg_dns_question_fn)(void *ctx, const char *name, uint16_t qtype);
/* Every question of a query (QR = 0). Calls fn for each; stops at the first non-zero return and
 * returns it. -1 if the message is malformed, has no question or is a response. */
int sg_dns_questions(const uint8_t *msg, size_t len, uint16_t *id, sg_dns_question_fn fn, void *ctx);

typedef void (*sg_dns_address_fn)(void *ctx, const char *qname, const sg_addr *addr);
/* The A/AAAA records of a response that belong to its first question's name, directly or through a
 * CNAME chain (at most 16 links). Returns the number of addresses reported, -1 if malformed. */
int sg_dns_answers(const uint8_t *msg, size_t len, uint16_t *id, char qname[SG_NAME_MAX], sg_dns_address_fn fn, void *ctx);

/* The address a reverse-lookup name names (x.x.x.x.in-addr.arpa, 32 nibbles .ip6.arpa): 1 if it is one. */
int sg_dns_reverse_name(const char *name, sg_addr *out);

#endif
