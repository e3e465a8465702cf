/* Deterministic mutation fuzzer for the parsers of untrusted bytes: DNS messages (sg_dns.c) and the compiled
 * policy file (sg_policy.c, with the checksum recomputed so the validator itself is reached). Built with
 * ASan + UBSan by the test run; every input sits in a buffer of exactly its size, so one byte read past the
 * end is a sanitizer report. Usage: sg_fuzz POLICY-FILE [ITERATIONS [SEED]] (exit 0: no crash). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../sg_dns.h"
#include "../sg_policy.h"

static uint64_t rng_state;
static uint32_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 11);
}

static size_t put_name(uint8_t *p, const char *name) {
    size_t n = 0;
    while (*name) {
        const char *dot = strchr(name, '.');
        size_t len = dot ? (size_t)(dot - name) : strlen(name);
        p[n++] = (uint8_t)len;
        memcpy(p + n, name, len);
        n += len;
        name += len + (dot ? 1 : 0);
    }
    p[n++] = 0;
    return n;
}

/* seeds: a query, and an answer with a CNAME chain, compression pointers, A and AAAA records */
static size_t seed_query(uint8_t *m) {
    static const uint8_t head[12] = {0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0};
    memcpy(m, head, 12);
    size_t n = 12 + put_name(m + 12, "api.allowed.test");
    m[n++] = 0, m[n++] = 1, m[n++] = 0, m[n++] = 1;
    return n;
}

static size_t seed_answer(uint8_t *m) {
    static const uint8_t head[12] = {0x12, 0x34, 0x81, 0x80, 0, 1, 0, 4, 0, 0, 0, 0};
    memcpy(m, head, 12);
    size_t n = 12 + put_name(m + 12, "www.allowed.test");
    m[n++] = 0, m[n++] = 1, m[n++] = 0, m[n++] = 1;
    /* www -> CNAME edge.cdn.test */
    m[n++] = 0xC0, m[n++] = 12, m[n++] = 0, m[n++] = 5, m[n++] = 0, m[n++] = 1, m[n++] = 0, m[n++] = 0, m[n++] = 0, m[n++] = 60;
    size_t rdlen_at = n;
    n += 2;
    size_t target = n;
    n += put_name(m + n, "edge.cdn.test");
    m[rdlen_at] = 0, m[rdlen_at + 1] = (uint8_t)(n - target);
    /* edge -> A 198.51.100.10, AAAA 2001:db8::10, and an unrelated A */
    m[n++] = 0xC0, m[n++] = (uint8_t)target, m[n++] = 0, m[n++] = 1, m[n++] = 0, m[n++] = 1, m[n++] = 0, m[n++] = 0, m[n++] = 0, m[n++] = 60, m[n++] = 0, m[n++] = 4;
    m[n++] = 198, m[n++] = 51, m[n++] = 100, m[n++] = 10;
    m[n++] = 0xC0, m[n++] = (uint8_t)target, m[n++] = 0, m[n++] = 28, m[n++] = 0, m[n++] = 1, m[n++] = 0, m[n++] = 0, m[n++] = 0, m[n++] = 60, m[n++] = 0, m[n++] = 16;
    static const uint8_t v6[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10};
    memcpy(m + n, v6, 16);
    n += 16;
    n += put_name(m + n, "other.test");
    m[n++] = 0, m[n++] = 1, m[n++] = 0, m[n++] = 1, m[n++] = 0, m[n++] = 0, m[n++] = 0, m[n++] = 60, m[n++] = 0, m[n++] = 4;
    m[n++] = 203, m[n++] = 0, m[n++] = 113, m[n++] = 10;
    return n;
}

static int on_question(void *ctx, const char *name, uint16_t qtype) {
    (void)qtype;
    size_t n = strlen(name);
    if (n > 253) abort();
    for (size_t i = 0; i < n; i++)
        if (name[i] < 0x21 || name[i] > 0x7e) abort();
    ++*(int *)ctx;
    return 0;
}

static void on_address(void *ctx, const char *qname, const sg_addr *a) {
    if (strlen(qname) > 253 || (a->v != 4 && a->v != 6)) abort();
    ++*(int *)ctx;
}

static void mutate(uint8_t *b, size_t *len, size_t cap) {
    int rounds = 1 + (int)(rnd() % 4);
    for (int r = 0; r < rounds; r++) {
        size_t n = *len;
        switch (rnd() % 9) {
        case 0: if (n) b[rnd() % n] ^= (uint8_t)(1u << (rnd() % 8)); break;
        case 1: if (n) b[rnd() % n] = (uint8_t)rnd(); break;
        case 2: if (n) *len = rnd() % n; break; /* truncate */
        case 3: if (n + 1 < cap) { size_t at = rnd() % (n + 1); memmove(b + at + 1, b + at, n - at); b[at] = (uint8_t)rnd(); (*len)++; } break;
        case 4: if (n > 1) { size_t at = rnd() % n; memmove(b + at, b + at + 1, n - at - 1); (*len)--; } break;
        case 5: if (n > 2) { size_t at = rnd() % (n - 1); b[at] = 0xC0 | (uint8_t)(rnd() % 4); b[at + 1] = (uint8_t)(rnd() % n); } break; /* pointers, loops */
        case 6: if (n) b[rnd() % n] = (uint8_t)(60 + rnd() % 8); break; /* labels around the 63 limit */
        case 7: if (n > 8) { b[4 + rnd() % 8] = (uint8_t)rnd(); } break; /* section counts */
        case 8: if (n > 4) { size_t a = rnd() % n, c = rnd() % n, k = rnd() % 8; for (size_t i = 0; i < k && a + i < n && c + i < n; i++) b[a + i] = b[c + i]; } break;
        }
    }
}

static void fuzz_dns_once(const uint8_t *data, size_t len) {
    uint8_t *m = malloc(len ? len : 1); /* exactly len bytes: ASan sees any over-read */
    memcpy(m, data, len);
    int count = 0;
    uint16_t id;
    char qname[SG_NAME_MAX], name[SG_NAME_MAX];
    sg_dns_questions(m, len, &id, on_question, &count);
    sg_dns_answers(m, len, &id, qname, on_address, &count);
    for (int k = 0; k < 4 && len; k++) {
        size_t pos = rnd() % len;
        if (sg_dns_read_name(m, len, &pos, name) == 0 && (strlen(name) > 253 || pos > len)) abort();
    }
    sg_addr rev;
    char text[300];
    size_t t = len < sizeof text - 1 ? len : sizeof text - 1;
    memcpy(text, m, t);
    text[t] = 0;
    sg_dns_reverse_name(text, &rev);
    free(m);
}

static void fixed_cases(void) {
    uint8_t m[600];
    /* a compression pointer to itself, and a two-pointer cycle */
    size_t n = seed_query(m);
    m[12] = 0xC0, m[13] = 12;
    fuzz_dns_once(m, n);
    m[12] = 0xC0, m[13] = 14, m[14] = 0xC0, m[15] = 12;
    fuzz_dns_once(m, n);
    /* an oversize label (64) and a name over 255 bytes */
    n = seed_query(m);
    m[12] = 64;
    fuzz_dns_once(m, n);
    memset(m, 0, sizeof m);
    m[5] = 1;
    size_t at = 12;
    for (int i = 0; i < 9; i++) {
        m[at++] = 63;
        memset(m + at, 'a', 63);
        at += 63;
    }
    m[at++] = 0;
    fuzz_dns_once(m, at + 4);
    int count = 0;
    uint16_t id;
    if (sg_dns_questions(m, at + 4, &id, on_question, &count) != -1) abort(); /* 9 x 64 bytes: too long */
    /* every truncation of both seeds */
    uint8_t a[600];
    size_t an = seed_answer(a), qn = seed_query(m);
    for (size_t k = 0; k <= an; k++) fuzz_dns_once(a, k);
    for (size_t k = 0; k <= qn; k++) fuzz_dns_once(m, k);
    /* the intact answer gives exactly the two chained addresses */
    char qname[SG_NAME_MAX];
    count = 0;
    if (sg_dns_answers(a, an, &id, qname, on_address, &count) != 2 || count != 2 || strcmp(qname, "www.allowed.test")) abort();
    count = 0;
    if (sg_dns_questions(m, qn, &id, on_question, &count) != 0 || count != 1 || id != 0x1234) abort();
}

static void fuzz_policy(const uint8_t *blob, size_t size, int iterations) {
    uint8_t *copy = malloc(size + 64);
    for (int i = 0; i < iterations; i++) {
        size_t len = size;
        memcpy(copy, blob, size);
        if (i % 3) {
            int flips = 1 + (int)(rnd() % 3);
            for (int k = 0; k < flips; k++) copy[64 + rnd() % (size - 64)] = (uint8_t)rnd();
            uint32_t crc = sg_crc32(copy + 64, len - 64); /* past the checksum: reach the validator */
            memcpy(copy + 20, &crc, 4);
        } else {
            mutate(copy, &len, size + 64);
        }
        void *exact = NULL;
        if (posix_memalign(&exact, 8, len ? len : 8)) abort();
        memcpy(exact, copy, len);
        sg_policy p;
        char err[200];
        if (sg_policy_load(&p, exact, len, err, sizeof err) == 0) {
            /* accepted: every lookup stays in bounds */
            sg_decision d;
            static const char *hosts[] = {"api.allowed.test", "x.y.example.test", "localhost", "metadata.google.internal", "10.0.0.1", "::ffff:10.0.0.1"};
            for (size_t h = 0; h < sizeof hosts / sizeof *hosts; h++) sg_check_name(&p, hosts[h], (long)(rnd() % 70000) - 1, &d);
            sg_addr a = {6, ((uint64_t)rnd() << 32) | rnd(), ((uint64_t)rnd() << 32) | rnd()};
            sg_check_address(&p, &a, 443, "api.allowed.test", &d);
            a = (sg_addr){4, 0, rnd()};
            sg_check_address(&p, &a, -1, NULL, &d);
        }
        free(exact);
    }
    free(copy);
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    long iterations = argc > 2 ? atol(argv[2]) : 200000;
    rng_state = argc > 3 ? strtoull(argv[3], NULL, 10) : 0x5EED5EEDull;
    if (!rng_state) rng_state = 1;
    FILE *f = fopen(argv[1], "rb");
    if (!f) return 2;
    static uint8_t blob[1 << 20];
    size_t size = fread(blob, 1, sizeof blob, f);
    fclose(f);
    fixed_cases();
    uint8_t seeds[2][600];
    size_t seed_len[2] = {seed_query(seeds[0]), seed_answer(seeds[1])};
    uint8_t work[1200];
    for (long i = 0; i < iterations; i++) {
        int s = (int)(rnd() % 2);
        size_t len = seed_len[s];
        memcpy(work, seeds[s], len);
        mutate(work, &len, sizeof work);
        fuzz_dns_once(work, len);
    }
    long files = iterations / 40 + 1;
    fuzz_policy(blob, size, (int)files);
    printf("ok: %ld DNS messages, %ld policy files\n", iterations, files);
    return 0;
}
