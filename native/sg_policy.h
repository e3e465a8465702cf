/* The policy core in C: the compiled policy file, address and host parsing, and the decisions of
 * sockguard/policy.py, reproduced rule for rule (the differential test holds them together).
 * Pure: no sockets, no interposition; linked into the preload library and into the test programs. */
#ifndef SG_POLICY_H
#define SG_POLICY_H

#include <stddef.h>
#include <stdint.h>

#define SG_NAME_MAX 256 /* a normalised host fits in 255 bytes and a NUL */

typedef struct {
    uint8_t v;       /* 4 or 6 */
    uint64_t hi, lo; /* IPv4: hi = 0, lo = the address; IPv6: the 128 bits, high and low */
} sg_addr;

enum sg_reason {
    SG_ALLOWED_NAME,
    SG_ALLOWED_IP,
    SG_LOOPBACK,
    SG_UNIX,
    SG_DENIED,
    SG_NOT_ALLOWED,
    SG_RAW_IP,
    SG_INTERNAL,
    SG_METADATA,
    SG_INVALID,
    SG_FAMILY,
    SG_CONFIG_ERROR,
    SG_NAMESERVER,
    SG_NUMERIC_OK,
    SG_IO_URING,
    SG_REASON_COUNT
};

extern const char *const sg_reason_names[SG_REASON_COUNT];

typedef struct {
    uint32_t text_off, text_len;
    uint16_t port_lo, port_hi;
    uint8_t any_port, prefix, pad[2]; /* prefix: a CIDR rule's length (IPv4 twins of mapped rules: minus 96) */
} sg_rule_row;

typedef struct {
    int allowed;
    int reason;
    const sg_rule_row *rule; /* the rule that decided, or NULL */
    const char *rule_text;   /* its text (not NUL-terminated), in the policy that decided */
    size_t rule_len;
    const char *detail;      /* not NUL-terminated: detail_len bytes (NULL: none) */
    size_t detail_len;
} sg_decision;

typedef struct {
    const void *rows;
    uint32_t count;
    const uint32_t *slots;
    uint32_t nslots;
} sg_name_table;

typedef struct {
    const void *rows;
    uint32_t count;
} sg_table;

typedef struct {
    const uint8_t *base;
    size_t size;
    uint8_t mode;  /* 0 off, 1 monitor, 2 enforce */
    uint8_t flags; /* SG_FLAG_* */
    const char *strings;
    uint32_t strings_len;
    const sg_rule_row *rules;
    uint32_t nrules;
    const uint32_t *lists;
    uint32_t nlists;
    sg_name_table names[4]; /* allow exact, allow suffix, deny exact, deny suffix */
    sg_table net4[2], net6[2]; /* allow, deny */
    sg_table ranges4, ranges6, meta_addrs, meta_names, nameservers, source;
} sg_policy;

#define SG_FLAG_LOOPBACK 1
#define SG_FLAG_UNIX 2
#define SG_FLAG_RAW 4
#define SG_MODE_OFF 0
#define SG_MODE_MONITOR 1
#define SG_MODE_ENFORCE 2

/* Load a compiled policy from memory (not copied: keep it mapped). 0 on success; on failure -1 and a
 * message in err. Every offset, count, order and hash slot is checked: the file is input. */
int sg_policy_load(sg_policy *p, const void *data, size_t size, char *err, size_t errlen);

/* Decisions, as policy.py's Policy.check_name / check_address. port < 0: unknown (None). */
void sg_check_name(const sg_policy *p, const char *host, long port, sg_decision *out);
void sg_check_address(const sg_policy *p, const sg_addr *a, long port, const char *name, sg_decision *out);
/* A name about to be sent to DNS as it is (res_query, a packet): numeric-looking names are names here. */
void sg_check_dns_name(const sg_policy *p, const char *host, long port, sg_decision *out);

/* Parsing, as addresses.py / rules.py. */
int sg_parse_ipv4_strict(const char *s, size_t n, uint32_t *out);
int sg_parse_ipv4_loose(const char *s, size_t n, uint32_t *out);
int sg_parse_ipv6(const char *s, size_t n, uint64_t *hi, uint64_t *lo);
int sg_parse_address(const char *s, size_t n, sg_addr *out); /* 1 if numeric */
/* normalize_host for bytes: 0 and the name in out (NUL-terminated), or -1 and why in *why. */
int sg_normalize_host(const char *s, size_t n, char out[SG_NAME_MAX], const char **why);
const char *sg_classify(const sg_policy *p, const sg_addr *a, size_t *len);
int sg_is_loopback(const sg_addr *a);
sg_addr sg_unwrap_routable(const sg_addr *a, int *changed);
int sg_embedded_ipv4(const sg_addr *a, uint32_t *v4);
int sg_addr_equal(const sg_addr *a, const sg_addr *b);
int sg_is_nameserver(const sg_policy *p, const sg_addr *a, long port);
/* Text of an address (inet_ntop form); returns length. */
size_t sg_format_address(const sg_addr *a, char *out, size_t outlen);
uint32_t sg_fnv1a32(const char *s, size_t n);
uint32_t sg_crc32(const uint8_t *data, size_t n);

#endif
