/* See sg_policy.h. Every function here mirrors one in sockguard/addresses.py, rules.py or policy.py; the
 * comments name it. Keep them in step: tests/test_native_policy.py compares both on a generated corpus. */
#include "sg_policy.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

const char *const sg_reason_names[SG_REASON_COUNT] = {
    "allowed-name", "allowed-ip",   "loopback",     "unix-socket", "denied",      "not-allowed",
    "raw-ip",       "internal-address", "metadata-name", "invalid-host", "unsupported-family", "config-error",
    "nameserver",   "numeric-host", "io-uring",
};

/* --- file layout (sockguard/native/blob.py) ------------------------------------------------------------ */

#define HEADER_SIZE 64u
#define VERSION 2u
enum {
    SEC_STRINGS = 1,
    SEC_RULES = 2,
    SEC_LISTS = 3,
    SEC_NAMES = 10,
    SEC_SLOTS = 20,
    SEC_NET4 = 30,
    SEC_NET6 = 32,
    SEC_RANGES4 = 40,
    SEC_RANGES6 = 41,
    SEC_META_ADDRS = 42,
    SEC_META_NAMES = 43,
    SEC_NAMESERVERS = 44,
    SEC_SOURCE = 45,
};

typedef struct { uint32_t name_off, name_len, list_start, list_count; } name_row;
typedef struct { uint32_t start, list_start, list_count; } net4_row;
typedef struct { uint64_t hi, lo; uint32_t list_start, list_count; } net6_row;
typedef struct { uint32_t first, last, cat_off, cat_len; } range4_row;
typedef struct { uint64_t first_hi, first_lo, last_hi, last_lo; uint32_t cat_off, cat_len; } range6_row;
typedef struct { uint32_t version, port; uint64_t hi, lo; } address_row;
typedef struct { uint32_t off, len; } string_row;

static uint32_t rd32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

uint32_t sg_crc32(const uint8_t *data, size_t n) {
    static uint32_t table[256];
    static int ready;
    if (!ready) { /* idempotent: racing threads write the same values */
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            table[i] = c;
        }
        __atomic_store_n(&ready, 1, __ATOMIC_RELEASE);
    }
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) c = table[(c ^ data[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

uint32_t sg_fnv1a32(const char *s, size_t n) {
    uint32_t h = 0x811C9DC5u;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 0x01000193u;
    return h;
}

static int fail(char *err, size_t errlen, const char *what) {
    if (err && errlen) snprintf(err, errlen, "%s", what);
    return -1;
}

static int u128_lt(uint64_t ahi, uint64_t alo, uint64_t bhi, uint64_t blo) {
    return ahi < bhi || (ahi == bhi && alo < blo);
}

static int str_ok(const sg_policy *p, uint32_t off, uint32_t len) {
    return off <= p->strings_len && len <= p->strings_len - off;
}

static int list_ok(const sg_policy *p, uint32_t start, uint32_t count) {
    return start <= p->nlists && count <= p->nlists - start;
}

static int host_chars_ok(const char *s, size_t n) {
    if (n == 0 || n > 253) return 0;
    size_t label = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '.') {
            if (label == 0) return 0;
            label = 0;
            continue;
        }
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_')) return 0;
        if (++label > 63) return 0;
    }
    return label > 0;
}

static const name_row *name_find(const sg_policy *p, const sg_name_table *t, const char *s, size_t n);

int sg_policy_load(sg_policy *p, const void *data, size_t size, char *err, size_t errlen) {
    const uint8_t *b = data;
    memset(p, 0, sizeof *p);
    const uint16_t probe = 1;
    if (*(const uint8_t *)&probe != 1) return fail(err, errlen, "this machine is big-endian; the file is little-endian");
    if (((uintptr_t)b & 7) != 0) return fail(err, errlen, "policy data is not 8-byte aligned");
    if (size < HEADER_SIZE) return fail(err, errlen, "file too short for a sockguard policy header");
    if (memcmp(b, "SGPOLICY", 8) != 0) return fail(err, errlen, "not a sockguard policy file (bad magic)");
    if (rd32(b + 8) != VERSION) return fail(err, errlen, "unsupported policy file version (recompile it with this sockguard)");
    if (rd32(b + 12) != HEADER_SIZE) return fail(err, errlen, "bad header size");
    if (rd32(b + 16) != size) return fail(err, errlen, "file size does not match the header (truncated or extended)");
    if (sg_crc32(b + HEADER_SIZE, size - HEADER_SIZE) != rd32(b + 20)) return fail(err, errlen, "checksum mismatch (corrupted file)");
    p->base = b;
    p->size = size;
    p->mode = b[24];
    p->flags = b[25];
    if (p->mode > 2) return fail(err, errlen, "bad mode");
    if (p->flags & ~7u) return fail(err, errlen, "unknown flags");
    uint16_t nsec;
    memcpy(&nsec, b + 26, 2);
    uint32_t table = rd32(b + 28);
    for (int i = 32; i < 64; i++)
        if (b[i]) return fail(err, errlen, "reserved header bytes are not zero");
    if (table != HEADER_SIZE || nsec > 64 || (size_t)nsec * 16 > size - table) return fail(err, errlen, "bad section table");
    /* every section: in bounds, 8-aligned, size = count x row size, each id once, all required ones present */
    static const struct { uint32_t id; uint32_t row; } known[] = {
        {SEC_STRINGS, 1}, {SEC_RULES, sizeof(sg_rule_row)}, {SEC_LISTS, 4},
        {SEC_NAMES + 0, sizeof(name_row)}, {SEC_NAMES + 1, sizeof(name_row)}, {SEC_NAMES + 2, sizeof(name_row)},
        {SEC_NAMES + 3, sizeof(name_row)}, {SEC_SLOTS + 0, 4}, {SEC_SLOTS + 1, 4}, {SEC_SLOTS + 2, 4}, {SEC_SLOTS + 3, 4},
        {SEC_NET4 + 0, sizeof(net4_row)}, {SEC_NET4 + 1, sizeof(net4_row)}, {SEC_NET6 + 0, sizeof(net6_row)},
        {SEC_NET6 + 1, sizeof(net6_row)}, {SEC_RANGES4, sizeof(range4_row)}, {SEC_RANGES6, sizeof(range6_row)},
        {SEC_META_ADDRS, sizeof(address_row)}, {SEC_META_NAMES, sizeof(string_row)},
        {SEC_NAMESERVERS, sizeof(address_row)}, {SEC_SOURCE, sizeof(string_row)},
    };
    enum { NKNOWN = sizeof known / sizeof known[0] };
    const void *where[NKNOWN] = {0};
    uint32_t counts[NKNOWN] = {0};
    int seen[NKNOWN] = {0};
    size_t previous_end = table + (size_t)nsec * 16;
    for (uint16_t i = 0; i < nsec; i++) {
        const uint8_t *e = b + table + (size_t)i * 16;
        uint32_t id = rd32(e), off = rd32(e + 4), count = rd32(e + 8), bytes = rd32(e + 12);
        int k = -1;
        for (int j = 0; j < NKNOWN; j++)
            if (known[j].id == id) k = j;
        if (k < 0) return fail(err, errlen, "unknown section");
        if (seen[k]) return fail(err, errlen, "duplicate section");
        if (off < previous_end || off > size || bytes > size - off || (off & 7)) return fail(err, errlen, "section out of bounds");
        if ((uint64_t)count * known[k].row != bytes) return fail(err, errlen, "section size does not match its row count");
        previous_end = (size_t)off + bytes;
        seen[k] = 1;
        where[k] = b + off;
        counts[k] = count;
    }
    for (int j = 0; j < NKNOWN; j++)
        if (!seen[j]) return fail(err, errlen, "a required section is missing");
    p->strings = where[0];
    p->strings_len = counts[0];
    p->rules = where[1];
    p->nrules = counts[1];
    p->lists = where[2];
    p->nlists = counts[2];
    for (int t = 0; t < 4; t++) {
        p->names[t].rows = where[3 + t];
        p->names[t].count = counts[3 + t];
        p->names[t].slots = where[7 + t];
        p->names[t].nslots = counts[7 + t];
    }
    p->net4[0] = (sg_table){where[11], counts[11]};
    p->net4[1] = (sg_table){where[12], counts[12]};
    p->net6[0] = (sg_table){where[13], counts[13]};
    p->net6[1] = (sg_table){where[14], counts[14]};
    p->ranges4 = (sg_table){where[15], counts[15]};
    p->ranges6 = (sg_table){where[16], counts[16]};
    p->meta_addrs = (sg_table){where[17], counts[17]};
    p->meta_names = (sg_table){where[18], counts[18]};
    p->nameservers = (sg_table){where[19], counts[19]};
    p->source = (sg_table){where[20], counts[20]};
    /* rows */
    for (uint32_t i = 0; i < p->nrules; i++) {
        const sg_rule_row *r = &p->rules[i];
        if (!str_ok(p, r->text_off, r->text_len) || r->any_port > 1 || r->prefix > 128 || r->pad[0] || r->pad[1])
            return fail(err, errlen, "bad rule row");
        if (!r->any_port && (r->port_lo == 0 || r->port_lo > r->port_hi)) return fail(err, errlen, "bad rule port range");
    }
    for (uint32_t i = 0; i < p->nlists; i++)
        if (p->lists[i] >= p->nrules) return fail(err, errlen, "rule list names a missing rule");
    for (int t = 0; t < 4; t++) {
        const sg_name_table *nt = &p->names[t];
        if (nt->nslots < 8 || (nt->nslots & (nt->nslots - 1)) || nt->count >= nt->nslots)
            return fail(err, errlen, "bad name hash table size");
        uint32_t used = 0;
        for (uint32_t s = 0; s < nt->nslots; s++) {
            if (nt->slots[s] > nt->count) return fail(err, errlen, "bad name hash slot");
            used += nt->slots[s] != 0;
        }
        if (used != nt->count) return fail(err, errlen, "name hash table does not hold every row once");
        const name_row *rows = nt->rows;
        for (uint32_t i = 0; i < nt->count; i++) {
            const name_row *r = &rows[i];
            if (!str_ok(p, r->name_off, r->name_len) || !list_ok(p, r->list_start, r->list_count) || r->list_count == 0)
                return fail(err, errlen, "bad name row");
            if (!host_chars_ok(p->strings + r->name_off, r->name_len)) return fail(err, errlen, "a name rule is not a normalised host");
            if (name_find(p, nt, p->strings + r->name_off, r->name_len) != r) return fail(err, errlen, "a name is not where its hash says");
        }
    }
    for (int t = 0; t < 2; t++) {
        const net4_row *r4 = p->net4[t].rows;
        for (uint32_t i = 0; i < p->net4[t].count; i++) {
            if (!list_ok(p, r4[i].list_start, r4[i].list_count)) return fail(err, errlen, "bad IPv4 interval row");
            if (i && r4[i].start <= r4[i - 1].start) return fail(err, errlen, "IPv4 intervals out of order");
        }
        const net6_row *r6 = p->net6[t].rows;
        for (uint32_t i = 0; i < p->net6[t].count; i++) {
            if (!list_ok(p, r6[i].list_start, r6[i].list_count)) return fail(err, errlen, "bad IPv6 interval row");
            if (i && !u128_lt(r6[i - 1].hi, r6[i - 1].lo, r6[i].hi, r6[i].lo)) return fail(err, errlen, "IPv6 intervals out of order");
        }
    }
    const range4_row *g4 = p->ranges4.rows;
    for (uint32_t i = 0; i < p->ranges4.count; i++)
        if (!str_ok(p, g4[i].cat_off, g4[i].cat_len) || g4[i].last < g4[i].first || (i && g4[i].first <= g4[i - 1].last))
            return fail(err, errlen, "bad IPv4 range row");
    const range6_row *g6 = p->ranges6.rows;
    for (uint32_t i = 0; i < p->ranges6.count; i++)
        if (!str_ok(p, g6[i].cat_off, g6[i].cat_len) || u128_lt(g6[i].last_hi, g6[i].last_lo, g6[i].first_hi, g6[i].first_lo) ||
            (i && !u128_lt(g6[i - 1].last_hi, g6[i - 1].last_lo, g6[i].first_hi, g6[i].first_lo)))
            return fail(err, errlen, "bad IPv6 range row");
    const sg_table *addr_tables[2] = {&p->meta_addrs, &p->nameservers};
    for (int t = 0; t < 2; t++) {
        const address_row *a = addr_tables[t]->rows;
        for (uint32_t i = 0; i < addr_tables[t]->count; i++)
            if ((a[i].version != 4 && a[i].version != 6) || (a[i].version == 4 && (a[i].hi || a[i].lo >> 32)) || a[i].port > 65535)
                return fail(err, errlen, "bad address row");
    }
    const sg_table *string_tables[2] = {&p->meta_names, &p->source};
    for (int t = 0; t < 2; t++) {
        const string_row *s = string_tables[t]->rows;
        for (uint32_t i = 0; i < string_tables[t]->count; i++)
            if (!str_ok(p, s[i].off, s[i].len)) return fail(err, errlen, "bad string row");
    }
    if (p->source.count != 2) return fail(err, errlen, "bad source section");
    return 0;
}

/* --- addresses.py -------------------------------------------------------------------------------------- */

static int is_dec(char c) { return c >= '0' && c <= '9'; }
static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* parse_ipv4_strict */
int sg_parse_ipv4_strict(const char *s, size_t n, uint32_t *out) {
    uint32_t value = 0;
    size_t i = 0;
    for (int part = 0; part < 4; part++) {
        size_t start = i;
        unsigned octet = 0;
        while (i < n && s[i] != '.') {
            if (!is_dec(s[i]) || i - start >= 3) return 0;
            octet = octet * 10 + (unsigned)(s[i] - '0');
            i++;
        }
        size_t len = i - start;
        if (len == 0 || (len > 1 && s[start] == '0') || octet > 255) return 0;
        value = (value << 8) | octet;
        if (part < 3) {
            if (i >= n) return 0;
            i++; /* the dot */
        }
    }
    if (i != n) return 0;
    *out = value;
    return 1;
}

/* parse_ipv4_loose: every spelling inet_aton accepts */
int sg_parse_ipv4_loose(const char *s, size_t n, uint32_t *out) {
    uint64_t numbers[4];
    int count = 0;
    size_t i = 0;
    for (;;) {
        size_t start = i;
        while (i < n && s[i] != '.') i++;
        if (count == 4) return 0;
        const char *part = s + start;
        size_t len = i - start;
        const char *digits;
        size_t dlen;
        int base;
        if (len >= 2 && part[0] == '0' && (part[1] == 'x' || part[1] == 'X')) {
            digits = part + 2, dlen = len - 2, base = 16;
        } else if (len > 1 && part[0] == '0') {
            digits = part + 1, dlen = len - 1, base = 8;
        } else {
            digits = part, dlen = len, base = 10;
        }
        if (dlen == 0 || (base == 10 && dlen > 10)) return 0;
        uint64_t v = 0;
        for (size_t k = 0; k < dlen; k++) {
            int d = base == 16 ? hexval(digits[k]) : (is_dec(digits[k]) ? digits[k] - '0' : -1);
            if (d < 0 || d >= base) return 0;
            v = v * (uint64_t)base + (uint64_t)d;
            if (v > 0xFFFFFFFFFull) v = 0xFFFFFFFFFull; /* saturate: already out of every range */
        }
        numbers[count++] = v;
        if (i >= n) break;
        i++; /* the dot; a trailing one leaves an empty part, refused above */
        if (i == n) {
            /* "1.2.3." : Python splits into a last empty part, which is refused */
            return 0;
        }
    }
    for (int k = 0; k < count - 1; k++)
        if (numbers[k] > 255) return 0;
    uint64_t last = numbers[count - 1];
    if (last >= (1ull << (8 * (4 - (count - 1))))) return 0;
    uint64_t value = 0;
    for (int k = 0; k < count - 1; k++) value = (value << 8) | numbers[k];
    value = (value << (8 * (4 - (count - 1)))) | last;
    *out = (uint32_t)value;
    return 1;
}

/* split on ':' into at most 9 groups; 0 if more */
static int split_groups(const char *s, size_t n, const char **starts, size_t *lens, int *count) {
    *count = 0;
    if (n == 0) return 1;
    size_t start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i == n || s[i] == ':') {
            if (*count >= 9) return 0;
            starts[*count] = s + start;
            lens[*count] = i - start;
            (*count)++;
            start = i + 1;
        }
    }
    return 1;
}

/* parse_ipv6 */
int sg_parse_ipv6(const char *s, size_t n, uint64_t *hi, uint64_t *lo) {
    if (n == 0 || n > 45) return 0;
    const char *sep = NULL;
    int seps = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        if (s[i] == ':' && s[i + 1] == ':') {
            if (!sep) sep = s + i;
            seps++;
            i++; /* non-overlapping, as str.count */
        }
    }
    if (seps > 1) return 0;
    const char *ls[9], *rs[9];
    size_t ll[9], rl[9];
    int nl = 0, nr = 0;
    if (sep) {
        if (!split_groups(s, (size_t)(sep - s), ls, ll, &nl)) return 0;
        const char *tail = sep + 2;
        size_t tn = n - (size_t)(tail - s);
        if (tn && !split_groups(tail, tn, rs, rl, &nr)) return 0;
    } else if (!split_groups(s, n, ls, ll, &nl)) {
        return 0;
    }
    const char **gs = sep ? rs : ls;
    size_t *gl = sep ? rl : ll;
    int *gn = sep ? &nr : &nl;
    int have_v4 = 0;
    uint32_t v4 = 0;
    if (*gn > 0 && memchr(gs[*gn - 1], '.', gl[*gn - 1])) {
        if (!sg_parse_ipv4_strict(gs[*gn - 1], gl[*gn - 1], &v4)) return 0;
        have_v4 = 1;
        (*gn)--;
    }
    int total = nl + nr + (have_v4 ? 2 : 0);
    uint16_t words[8] = {0};
    int nwords = 0;
    for (int side = 0; side < 2; side++) {
        const char **g = side ? rs : ls;
        size_t *l = side ? rl : ll;
        int cnt = side ? nr : nl;
        for (int k = 0; k < cnt; k++) {
            if (l[k] < 1 || l[k] > 4) return 0;
            for (size_t c = 0; c < l[k]; c++)
                if (hexval(g[k][c]) < 0) return 0;
        }
    }
    if (sep) {
        if (total > 7) return 0;
    } else if (total != 8) {
        return 0;
    }
    int fill = sep ? 8 - total : 0;
    for (int k = 0; k < nl; k++) {
        unsigned w = 0;
        for (size_t c = 0; c < ll[k]; c++) w = w * 16 + (unsigned)hexval(ls[k][c]);
        words[nwords++] = (uint16_t)w;
    }
    nwords += fill;
    for (int k = 0; k < nr; k++) {
        unsigned w = 0;
        for (size_t c = 0; c < rl[k]; c++) w = w * 16 + (unsigned)hexval(rs[k][c]);
        words[nwords++] = (uint16_t)w;
    }
    if (have_v4) {
        words[nwords++] = (uint16_t)(v4 >> 16);
        words[nwords++] = (uint16_t)v4;
    }
    if (nwords != 8) return 0;
    uint64_t h = 0, l = 0;
    for (int k = 0; k < 4; k++) h = (h << 16) | words[k];
    for (int k = 4; k < 8; k++) l = (l << 16) | words[k];
    *hi = h;
    *lo = l;
    return 1;
}

/* parse_address */
int sg_parse_address(const char *s, size_t n, sg_addr *out) {
    if (memchr(s, ':', n)) {
        const char *pct = memchr(s, '%', n);
        size_t len = pct ? (size_t)(pct - s) : n;
        out->v = 6;
        return sg_parse_ipv6(s, len, &out->hi, &out->lo);
    }
    uint32_t v;
    if (!sg_parse_ipv4_loose(s, n, &v)) return 0;
    out->v = 4;
    out->hi = 0;
    out->lo = v;
    return 1;
}

int sg_addr_equal(const sg_addr *a, const sg_addr *b) { return a->v == b->v && a->hi == b->hi && a->lo == b->lo; }

/* embedded_ipv4: 1 mapped, 2 compatible, 3 nat64, 4 6to4, 5 teredo; 0 none */
int sg_embedded_ipv4(const sg_addr *a, uint32_t *v4) {
    uint32_t low32 = (uint32_t)a->lo;
    uint32_t mid = (uint32_t)(a->lo >> 32);
    if (a->hi == 0 && mid == 0xFFFF) return *v4 = low32, 1;
    if (a->hi == 0 && mid == 0 && low32 > 1) return *v4 = low32, 2;
    if (a->hi == 0x0064FF9B00000000ull && mid == 0) return *v4 = low32, 3;
    if ((a->hi >> 48) == 0x2002) return *v4 = (uint32_t)(a->hi >> 16), 4;
    if ((a->hi >> 32) == 0x20010000u) return *v4 = low32 ^ 0xFFFFFFFFu, 5;
    return 0;
}

static sg_addr v4addr(uint32_t v) { return (sg_addr){4, 0, v}; }

/* unwrap_routable: mapped and NAT64 reach the IPv4 host */
sg_addr sg_unwrap_routable(const sg_addr *a, int *changed) {
    uint32_t v4;
    if (a->v == 6) {
        int kind = sg_embedded_ipv4(a, &v4);
        if (kind == 1 || kind == 3) {
            *changed = 1;
            return v4addr(v4);
        }
    }
    *changed = 0;
    return *a;
}

int sg_is_loopback(const sg_addr *a) {
    if (a->v == 4) return (a->lo >> 24) == 127;
    if (a->hi == 0 && a->lo == 1) return 1;
    return a->hi == 0 && (a->lo >> 32) == 0xFFFF && ((uint32_t)a->lo >> 24) == 127;
}

static const char *range_lookup4(const sg_policy *p, uint32_t v, size_t *len) {
    const range4_row *r = p->ranges4.rows;
    uint32_t lo = 0, hi = p->ranges4.count; /* bisect_right on first */
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (v < r[mid].first) hi = mid;
        else lo = mid + 1;
    }
    if (lo == 0 || v > r[lo - 1].last) return NULL;
    *len = r[lo - 1].cat_len;
    return p->strings + r[lo - 1].cat_off;
}

static const char *range_lookup6(const sg_policy *p, uint64_t vh, uint64_t vl, size_t *len) {
    const range6_row *r = p->ranges6.rows;
    uint32_t lo = 0, hi = p->ranges6.count;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (u128_lt(vh, vl, r[mid].first_hi, r[mid].first_lo)) hi = mid;
        else lo = mid + 1;
    }
    if (lo == 0 || u128_lt(r[lo - 1].last_hi, r[lo - 1].last_lo, vh, vl)) return NULL;
    *len = r[lo - 1].cat_len;
    return p->strings + r[lo - 1].cat_off;
}

/* classify */
const char *sg_classify(const sg_policy *p, const sg_addr *a, size_t *len) {
    const address_row *m = p->meta_addrs.rows;
    for (uint32_t i = 0; i < p->meta_addrs.count; i++)
        if (m[i].version == a->v && m[i].hi == a->hi && m[i].lo == a->lo) {
            *len = 8;
            return "metadata";
        }
    if (a->v == 4) return range_lookup4(p, (uint32_t)a->lo, len);
    uint32_t v4;
    if (sg_embedded_ipv4(a, &v4)) {
        sg_addr inner = v4addr(v4);
        const char *c = sg_classify(p, &inner, len);
        if (c) return c;
    }
    return range_lookup6(p, a->hi, a->lo, len);
}

int sg_is_nameserver(const sg_policy *p, const sg_addr *a, long port) {
    const address_row *m = p->nameservers.rows;
    for (uint32_t i = 0; i < p->nameservers.count; i++)
        if (m[i].version == a->v && m[i].hi == a->hi && m[i].lo == a->lo && (long)m[i].port == port) return 1;
    return 0;
}

size_t sg_format_address(const sg_addr *a, char *out, size_t outlen) {
    uint8_t bytes[16];
    if (a->v == 4) {
        uint32_t be = htonl((uint32_t)a->lo);
        memcpy(bytes, &be, 4);
        if (!inet_ntop(AF_INET, bytes, out, (socklen_t)outlen)) return 0;
    } else {
        for (int i = 0; i < 8; i++) bytes[i] = (uint8_t)(a->hi >> (56 - 8 * i));
        for (int i = 0; i < 8; i++) bytes[8 + i] = (uint8_t)(a->lo >> (56 - 8 * i));
        if (!inet_ntop(AF_INET6, bytes, out, (socklen_t)outlen)) return 0;
    }
    return strlen(out);
}

/* --- rules.py: normalize_host (the bytes form: C names are bytes) ------------------------------------- */

int sg_normalize_host(const char *s, size_t n, char out[SG_NAME_MAX], const char **why) {
    for (size_t i = 0; i < n; i++)
        if ((uint8_t)s[i] >= 0x80) return *why = "non-ASCII bytes in host", -1;
    if (memchr(s, ':', n)) {
        const char *pct = memchr(s, '%', n);
        size_t alen = pct ? (size_t)(pct - s) : n;
        uint64_t hi, lo;
        if (!sg_parse_ipv6(s, alen, &hi, &lo)) return *why = "host contains ':' but is not an IPv6 address", -1;
        if (pct) {
            size_t zlen = n - alen - 1;
            const char *zone = pct + 1;
            if (zlen == 0) return *why = "empty IPv6 zone", -1;
            for (size_t i = 0; i < zlen; i++)
                if (zone[i] < 0x20 || zone[i] > 0x7e || zone[i] == ' ' || zone[i] == '%' || zone[i] == '/')
                    return *why = "bad IPv6 zone", -1;
        }
        if (n >= SG_NAME_MAX) return *why = "host too long", -1;
        for (size_t i = 0; i < n; i++) out[i] = (i < alen && s[i] >= 'A' && s[i] <= 'Z') ? (char)(s[i] + 32) : s[i];
        out[n] = 0;
        return 0;
    }
    if (n > 254) return *why = "host is not a valid DNS name (length)", -1;
    size_t m = n;
    for (size_t i = 0; i < n; i++) out[i] = (s[i] >= 'A' && s[i] <= 'Z') ? (char)(s[i] + 32) : s[i];
    if (m && out[m - 1] == '.') {
        m--;
        sg_addr ignored;
        if (sg_parse_address(out, m, &ignored)) return *why = "host is a numeric address with a trailing dot, which is looked up in DNS", -1;
    }
    out[m] = 0;
    if (m == 0 || m > 253) return *why = "host is not a valid DNS name (length)", -1;
    for (size_t i = 0; i < m; i++) {
        char c = out[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.'))
            return *why = "host is not a valid DNS name (characters)", -1;
    }
    size_t label = 0;
    for (size_t i = 0; i <= m; i++) {
        if (i == m || out[i] == '.') {
            if (label == 0 || label > 63) return *why = "host has an empty or over-long label", -1;
            label = 0;
        } else {
            label++;
        }
    }
    return 0;
}

/* --- policy.py ----------------------------------------------------------------------------------------- */

static const name_row *name_find(const sg_policy *p, const sg_name_table *t, const char *s, size_t n) {
    if (t->count == 0) return NULL;
    uint32_t mask = t->nslots - 1;
    uint32_t slot = sg_fnv1a32(s, n) & mask;
    const name_row *rows = t->rows;
    for (uint32_t probes = 0; probes < t->nslots; probes++) {
        uint32_t v = t->slots[slot];
        if (v == 0) return NULL;
        const name_row *r = &rows[v - 1];
        if (r->name_len == n && memcmp(p->strings + r->name_off, s, n) == 0) return r;
        slot = (slot + 1) & mask;
    }
    return NULL;
}

static int allows_port(const sg_rule_row *r, long port) {
    return r->any_port || port < 0 || (r->port_lo <= port && port <= r->port_hi);
}

/* _first */
static const sg_rule_row *first(const sg_policy *p, uint32_t start, uint32_t count, long port, int strict) {
    for (uint32_t i = 0; i < count; i++) {
        const sg_rule_row *r = &p->rules[p->lists[start + i]];
        if (strict && port < 0) {
            if (r->any_port) return r;
        } else if (allows_port(r, port)) {
            return r;
        }
    }
    return NULL;
}

static const sg_rule_row *first_row(const sg_policy *p, const name_row *r, long port, int strict) {
    return r ? first(p, r->list_start, r->list_count, port, strict) : NULL;
}

/* _NameIndex.match; which = 0 allow, 2 deny */
static const sg_rule_row *names_match(const sg_policy *p, int which, const char *host, long port, int strict) {
    size_t n = strlen(host);
    const sg_rule_row *found = first_row(p, name_find(p, &p->names[which], host, n), port, strict);
    if (found || p->names[which + 1].count == 0) return found;
    for (const char *dot = memchr(host, '.', n); dot; dot = memchr(dot + 1, '.', n - (size_t)(dot + 1 - host))) {
        found = first_row(p, name_find(p, &p->names[which + 1], dot + 1, n - (size_t)(dot + 1 - host)), port, strict);
        if (found) return found;
    }
    return NULL;
}

/* _NetIndex.match; which = 0 allow, 1 deny */
static const sg_rule_row *nets_match(const sg_policy *p, int which, const sg_addr *a, long port, int strict) {
    uint32_t lo = 0, hi;
    if (a->v == 4) {
        const net4_row *r = p->net4[which].rows;
        hi = p->net4[which].count;
        uint32_t v = (uint32_t)a->lo;
        while (lo < hi) {
            uint32_t mid = lo + (hi - lo) / 2;
            if (v < r[mid].start) hi = mid;
            else lo = mid + 1;
        }
        return lo ? first(p, r[lo - 1].list_start, r[lo - 1].list_count, port, strict) : NULL;
    }
    const net6_row *r = p->net6[which].rows;
    hi = p->net6[which].count;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (u128_lt(a->hi, a->lo, r[mid].hi, r[mid].lo)) hi = mid;
        else lo = mid + 1;
    }
    return lo ? first(p, r[lo - 1].list_start, r[lo - 1].list_count, port, strict) : NULL;
}

static void decide(const sg_policy *p, sg_decision *d, int allowed, int reason, const sg_rule_row *rule, const char *detail,
                   size_t len) {
    d->allowed = allowed;
    d->reason = reason;
    d->rule = rule;
    d->rule_text = rule ? p->strings + rule->text_off : NULL;
    d->rule_len = rule ? rule->text_len : 0;
    d->detail = detail;
    d->detail_len = detail ? len : 0;
}

static int is_metadata_name(const sg_policy *p, const char *name) {
    size_t n = strlen(name);
    const string_row *rows = p->meta_names.rows;
    for (uint32_t i = 0; i < p->meta_names.count; i++)
        if (rows[i].len == n && memcmp(p->strings + rows[i].off, name, n) == 0) return 1;
    return 0;
}

/* check_name after normalisation and the numeric test */
static void check_normalised_name(const sg_policy *p, const char *name, long port, sg_decision *out) {
    const sg_rule_row *rule = names_match(p, 2, name, port, 1);
    if (rule) return decide(p, out, 0, SG_DENIED, rule, NULL, 0);
    if (is_metadata_name(p, name)) {
        const sg_rule_row *exact = first_row(p, name_find(p, &p->names[0], name, strlen(name)), port, 0);
        if (exact) return decide(p, out, 1, SG_ALLOWED_NAME, exact, NULL, 0);
        return decide(p, out, 0, SG_METADATA, NULL, name, strlen(name));
    }
    rule = names_match(p, 0, name, port, 0);
    if (rule) return decide(p, out, 1, SG_ALLOWED_NAME, rule, NULL, 0);
    if ((p->flags & SG_FLAG_LOOPBACK) && strcmp(name, "localhost") == 0) return decide(p, out, 1, SG_LOOPBACK, NULL, NULL, 0);
    decide(p, out, 0, SG_NOT_ALLOWED, NULL, NULL, 0);
}

/* Policy.check_name. The detail of a metadata-name decision points into a thread-local copy of the name. */
static __thread char tls_name[2][SG_NAME_MAX];

void sg_check_name(const sg_policy *p, const char *host, long port, sg_decision *out) {
    char *name = tls_name[0];
    const char *why;
    if (sg_normalize_host(host, strlen(host), name, &why) < 0) return decide(p, out, 0, SG_INVALID, NULL, why, strlen(why));
    sg_addr a;
    if (sg_parse_address(name, strlen(name), &a)) return sg_check_address(p, &a, port, NULL, out);
    check_normalised_name(p, name, port, out);
}

void sg_check_dns_name(const sg_policy *p, const char *host, long port, sg_decision *out) {
    char *name = tls_name[0];
    const char *why;
    if (sg_normalize_host(host, strlen(host), name, &why) < 0) return decide(p, out, 0, SG_INVALID, NULL, why, strlen(why));
    if (strchr(name, ':')) return decide(p, out, 0, SG_INVALID, NULL, "an address is not a DNS name", 29);
    check_normalised_name(p, name, port, out);
}

/* Policy.check_address */
void sg_check_address(const sg_policy *p, const sg_addr *a, long port, const char *name, sg_decision *out) {
    int changed;
    sg_addr routable = sg_unwrap_routable(a, &changed);
    const sg_rule_row *rule = nets_match(p, 1, a, port, 1);
    uint32_t v4;
    if (!rule && a->v == 6 && sg_embedded_ipv4(a, &v4)) {
        sg_addr inner = v4addr(v4);
        rule = nets_match(p, 1, &inner, port, 1);
    }
    char *normal = tls_name[1];
    if (!rule && name) {
        const char *why;
        if (sg_normalize_host(name, strlen(name), normal, &why) < 0) return decide(p, out, 0, SG_INVALID, NULL, why, strlen(why));
        rule = names_match(p, 2, normal, port, 1);
    }
    if (rule) return decide(p, out, 0, SG_DENIED, rule, NULL, 0);
    if ((p->flags & SG_FLAG_LOOPBACK) && sg_is_loopback(a)) return decide(p, out, 1, SG_LOOPBACK, NULL, NULL, 0);
    if (!changed) {
        rule = nets_match(p, 0, a, port, 0);
    } else {
        /* IPv4 in IPv6 clothing (mapped, NAT64) is the IPv4 host: IPv4 rules decide, an IPv6 rule only if written
           for the embedding itself (prefix >= 96), as in policy.py: ::/0 must not admit [::ffff:169.254.169.254]. */
        rule = nets_match(p, 0, &routable, port, 0);
        if (!rule) {
            rule = nets_match(p, 0, a, port, 0);
            if (rule && rule->prefix < 96) rule = NULL;
        }
    }
    if (rule) return decide(p, out, 1, SG_ALLOWED_IP, rule, NULL, 0);
    size_t clen = 0;
    const char *category = sg_classify(p, a, &clen);
    if (!name) return decide(p, out, 0, SG_RAW_IP, NULL, category, clen);
    sg_decision by_name;
    sg_check_name(p, name, port, &by_name);
    if (!by_name.allowed) return (void)(*out = by_name);
    if (category) return decide(p, out, 0, SG_INTERNAL, by_name.rule, category, clen);
    if (by_name.reason == SG_LOOPBACK) return decide(p, out, 0, SG_NOT_ALLOWED, NULL, "localhost resolved to a non-loopback address", 44);
    *out = by_name;
}
