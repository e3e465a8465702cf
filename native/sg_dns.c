#include "sg_dns.h"

#include <stdlib.h>
#include <string.h>

static uint16_t get16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }

int sg_dns_read_name(const uint8_t *msg, size_t len, size_t *pos, char out[SG_NAME_MAX]) {
    size_t p = *pos, end = 0, n = 0;
    int jumps = 0, jumped = 0;
    for (;;) {
        if (p >= len) return -1;
        uint8_t c = msg[p];
        if ((c & 0xC0) == 0xC0) {
            if (p + 1 >= len) return -1;
            size_t target = ((size_t)(c & 0x3F) << 8) | msg[p + 1];
            if (!jumped) end = p + 2;
            if (target >= p || ++jumps > 64) return -1; /* only backwards: no loops */
            jumped = 1;
            p = target;
            continue;
        }
        if (c & 0xC0) return -1; /* 0x40 / 0x80: extended label types */
        if (c == 0) {
            if (!jumped) end = p + 1;
            break;
        }
        if (p + 1 + c > len) return -1;
        if (n + (n ? 1 : 0) + c > 253) return -1;
        if (n) out[n++] = '.';
        for (size_t i = 0; i < c; i++) {
            uint8_t b = msg[p + 1 + i];
            if (b == '.' || b < 0x21 || b > 0x7e) return -1;
            out[n++] = (char)b;
        }
        p += 1 + (size_t)c;
    }
    out[n] = 0;
    *pos = end;
    return 0;
}

int sg_dns_questions(const uint8_t *msg, size_t len, uint16_t *id, sg_dns_question_fn fn, void *ctx) {
    if (len < 12) return -1;
    if (msg[2] & 0x80) return -1; /* a response */
    uint16_t qd = get16(msg + 4);
    if (qd == 0) return -1;
    *id = get16(msg);
    size_t pos = 12;
    char name[SG_NAME_MAX];
    for (uint16_t i = 0; i < qd; i++) {
        if (sg_dns_read_name(msg, len, &pos, name) < 0 || pos + 4 > len) return -1;
        uint16_t qtype = get16(msg + pos);
        pos += 4;
        int r = fn(ctx, name, qtype);
        if (r) return r;
    }
    return 0;
}

static int name_eq(const char *a, const char *b) {
    for (; *a && *b; a++, b++) {
        char x = *a, y = *b;
        if (x >= 'A' && x <= 'Z') x = (char)(x + 32);
        if (y >= 'A' && y <= 'Z') y = (char)(y + 32);
        if (x != y) return 0;
    }
    return *a == *b;
}

#define MAX_RECORDS 128

int sg_dns_answers(const uint8_t *msg, size_t len, uint16_t *id, char qname[SG_NAME_MAX], sg_dns_address_fn fn, void *ctx) {
    if (len < 12) return -1;
    if (!(msg[2] & 0x80)) return -1; /* not a response */
    *id = get16(msg);
    uint16_t qd = get16(msg + 4), an = get16(msg + 6);
    if (qd == 0) return -1;
    size_t pos = 12;
    for (uint16_t i = 0; i < qd; i++) {
        char name[SG_NAME_MAX];
        if (sg_dns_read_name(msg, len, &pos, i == 0 ? qname : name) < 0 || pos + 4 > len) return -1;
        pos += 4;
    }
    if (an > MAX_RECORDS) an = MAX_RECORDS; /* the rest is ignored: never learned */
    struct records {
        char owners[MAX_RECORDS][SG_NAME_MAX], targets[MAX_RECORDS][SG_NAME_MAX];
        uint16_t types[MAX_RECORDS];
        sg_addr addrs[MAX_RECORDS];
    } *rec = malloc(sizeof *rec); /* 64 KiB: off the (possibly small) thread stack */
    if (!rec) return -1;
    char (*owners)[SG_NAME_MAX] = rec->owners, (*targets)[SG_NAME_MAX] = rec->targets;
    uint16_t *types = rec->types;
    sg_addr *addrs = rec->addrs;
    int n = 0;
    for (uint16_t i = 0; i < an; i++) {
        if (sg_dns_read_name(msg, len, &pos, owners[n]) < 0 || pos + 10 > len) goto malformed;
        uint16_t type = get16(msg + pos), klass = get16(msg + pos + 2), rdlen = get16(msg + pos + 8);
        pos += 10;
        if (pos + rdlen > len) goto malformed;
        size_t rd = pos;
        pos += rdlen;
        if (klass != 1) continue;
        if (type == SG_DNS_TYPE_A && rdlen == 4) {
            addrs[n] = (sg_addr){4, 0, ((uint32_t)msg[rd] << 24) | ((uint32_t)msg[rd + 1] << 16) | ((uint32_t)msg[rd + 2] << 8) | msg[rd + 3]};
        } else if (type == SG_DNS_TYPE_AAAA && rdlen == 16) {
            uint64_t hi = 0, lo = 0;
            for (int k = 0; k < 8; k++) hi = (hi << 8) | msg[rd + k];
            for (int k = 8; k < 16; k++) lo = (lo << 8) | msg[rd + k];
            addrs[n] = (sg_addr){6, hi, lo};
        } else if (type == SG_DNS_TYPE_CNAME) {
            size_t tpos = rd;
            if (sg_dns_read_name(msg, len, &tpos, targets[n]) < 0 || tpos != rd + rdlen) goto malformed;
        } else {
            continue;
        }
        types[n++] = type;
    }
    /* names reached from the question through CNAMEs */
    int reached[MAX_RECORDS] = {0}; /* records whose owner is on the chain */
    const char *chain[17];
    int links = 0;
    chain[links++] = qname;
    for (int round = 0; round < links && links < 17; round++) {
        for (int i = 0; i < n && links < 17; i++) {
            if (types[i] != SG_DNS_TYPE_CNAME || reached[i] || !name_eq(owners[i], chain[round])) continue;
            reached[i] = 1;
            chain[links++] = targets[i];
        }
    }
    int found = 0;
    for (int i = 0; i < n; i++) {
        if (types[i] == SG_DNS_TYPE_CNAME) continue;
        for (int k = 0; k < links; k++) {
            if (name_eq(owners[i], chain[k])) {
                fn(ctx, qname, &addrs[i]);
                found++;
                break;
            }
        }
    }
    free(rec);
    return found;
malformed:
    free(rec);
    return -1;
}

static int nibble(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int suffix_eq(const char *name, size_t n, const char *suffix) {
    size_t s = strlen(suffix);
    if (n < s) return 0;
    for (size_t i = 0; i < s; i++) {
        char c = name[n - s + i];
        if (c >= 'A' && c <= 'Z') c = (char)(c + 32);
        if (c != suffix[i]) return 0;
    }
    return 1;
}

int sg_dns_reverse_name(const char *name, sg_addr *out) {
    size_t n = strlen(name);
    if (n && name[n - 1] == '.') n--;
    if (suffix_eq(name, n, ".in-addr.arpa")) {
        size_t body = n - 13;
        uint32_t parts[4];
        int count = 0;
        size_t i = 0;
        while (i < body) {
            if (count == 4) return 0;
            uint32_t v = 0;
            size_t start = i;
            while (i < body && name[i] != '.') {
                if (name[i] < '0' || name[i] > '9' || i - start >= 3) return 0;
                v = v * 10 + (uint32_t)(name[i] - '0');
                i++;
            }
            if (i == start || v > 255) return 0;
            parts[count++] = v;
            if (i < body) i++;
        }
        if (count != 4) return 0;
        *out = (sg_addr){4, 0, (parts[3] << 24) | (parts[2] << 16) | (parts[1] << 8) | parts[0]};
        return 1;
    }
    if (suffix_eq(name, n, ".ip6.arpa")) {
        if (n - 9 != 63) return 0;
        uint64_t hi = 0, lo = 0;
        for (int k = 0; k < 32; k++) {
            int v = nibble(name[2 * k]);
            if (v < 0 || (k < 31 && name[2 * k + 1] != '.')) return 0;
            /* the first nibble in the name is the lowest of the address */
            if (k < 16) lo |= (uint64_t)v << (4 * k);
            else hi |= (uint64_t)v << (4 * (k - 16));
        }
        *out = (sg_addr){6, hi, lo};
        return 1;
    }
    return 0;
}
