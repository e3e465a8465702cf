/* Unit tests of the C pieces the differential test does not reach: the address map (bounds, newest names,
 * threads, fork), reverse-lookup names, DNS name edge cases. Built with ASan + UBSan. Exit 0: all passed. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../sg_dns.h"
#include "../sg_map.h"
#include "../sg_policy.h"

static int failures;
#define CHECK(cond)                                                                 \
    do {                                                                            \
        if (!(cond)) {                                                              \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            failures++;                                                             \
        }                                                                           \
    } while (0)

static void test_map_basics(void) {
    sg_map_clear();
    sg_addr a = {4, 0, 0xC6336410};
    char names[SG_MAP_NAMES][SG_NAME_MAX];
    CHECK(sg_map_names(&a, names) == 0);
    sg_map_learn(&a, "api.allowed.test");
    sg_map_learn(&a, "api.allowed.test");
    CHECK(sg_map_names(&a, names) == 1 && strcmp(names[0], "api.allowed.test") == 0);
    const char *more[] = {"b.test", "c.test", "d.test", "e.test"};
    for (int i = 0; i < 4; i++) sg_map_learn(&a, more[i]);
    int n = sg_map_names(&a, names);
    CHECK(n == 4 && strcmp(names[0], "b.test") == 0 && strcmp(names[3], "e.test") == 0); /* newest four */
    sg_addr v6 = {6, 0x20010db800000000ull, 0x10};
    CHECK(sg_map_names(&v6, names) == 0);
}

static void test_map_bounded(void) {
    sg_map_clear();
    char name[64], names[SG_MAP_NAMES][SG_NAME_MAX];
    for (uint32_t i = 0; i < 300000; i++) {
        sg_addr a = {4, 0, 0x0A000000u + i};
        snprintf(name, sizeof name, "n%u.test", i % 20000);
        sg_map_learn(&a, name);
    }
    sg_addr last = {4, 0, 0x0A000000u + 299999};
    CHECK(sg_map_names(&last, names) == 1 && strcmp(names[0], "n19999.test") == 0);
    int found = 0;
    for (uint32_t i = 0; i < 300000; i += 97) {
        sg_addr a = {4, 0, 0x0A000000u + i};
        found += sg_map_names(&a, names) > 0;
    }
    CHECK(found <= 65536 / 97 + 700); /* bounded: most old entries are gone */
}

static void *worker(void *arg) {
    long id = (long)arg;
    char name[64], names[SG_MAP_NAMES][SG_NAME_MAX];
    for (int i = 0; i < 20000; i++) {
        sg_addr a = {4, 0, (uint32_t)(id << 20) + (uint32_t)(i % 5000)};
        snprintf(name, sizeof name, "t%ld-%d.test", id, i % 5000);
        sg_map_learn(&a, name);
        int n = sg_map_names(&a, names);
        for (int k = 0; k < n; k++)
            if (strncmp(names[k], "t", 1) != 0) abort();
    }
    return NULL;
}

static void test_map_threads_and_fork(void) {
    sg_map_atfork();
    pthread_t t[6];
    for (long i = 0; i < 6; i++) pthread_create(&t[i], NULL, worker, (void *)i);
    for (int f = 0; f < 20; f++) { /* fork while the others hold and release the lock */
        pid_t pid = fork();
        if (pid == 0) {
            sg_addr a = {4, 0, 0xFFFFFFF0u}; /* no worker's address */
            char names[SG_MAP_NAMES][SG_NAME_MAX];
            sg_map_learn(&a, "child.test"); /* would hang if the lock were inherited held */
            _exit(sg_map_names(&a, names) == 1 ? 0 : 1);
        }
        int status = 0;
        waitpid(pid, &status, 0);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    for (int i = 0; i < 6; i++) pthread_join(t[i], NULL);
}

static void test_reverse_names(void) {
    sg_addr a;
    CHECK(sg_dns_reverse_name("10.113.0.203.in-addr.arpa", &a) && a.v == 4 && a.lo == 0xCB00710A);
    CHECK(sg_dns_reverse_name("10.113.0.203.IN-ADDR.ARPA.", &a) && a.lo == 0xCB00710A);
    CHECK(!sg_dns_reverse_name("113.0.203.in-addr.arpa", &a));
    CHECK(!sg_dns_reverse_name("256.113.0.203.in-addr.arpa", &a));
    CHECK(sg_dns_reverse_name("0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa", &a) && a.v == 6 &&
          a.hi == 0x20010db800000000ull && a.lo == 0x10);
    CHECK(!sg_dns_reverse_name("x.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa", &a));
}

static void test_names(void) {
    char out[SG_NAME_MAX];
    const char *why;
    CHECK(sg_normalize_host("API.Example.TEST.", 17, out, &why) == 0 && strcmp(out, "api.example.test") == 0);
    CHECK(sg_normalize_host("127.0.0.1.", 10, out, &why) < 0);
    CHECK(sg_normalize_host("a..b", 4, out, &why) < 0);
    CHECK(sg_normalize_host("FE80::1%eth0", 12, out, &why) == 0 && strcmp(out, "fe80::1%eth0") == 0);
    CHECK(sg_normalize_host("fe80::1%", 8, out, &why) < 0);
    char label[80];
    memset(label, 'a', 64);
    label[64] = 0;
    CHECK(sg_normalize_host(label, 64, out, &why) < 0);
    uint32_t v;
    CHECK(sg_parse_ipv4_loose("0x7f.1", 6, &v) && v == 0x7F000001);
    CHECK(sg_parse_ipv4_loose("2130706433", 10, &v) && v == 0x7F000001);
    CHECK(sg_parse_ipv4_loose("0000000000000000177.0.0.1", 25, &v) && v == 0x7F000001);
    CHECK(!sg_parse_ipv4_loose("1.2.3.", 6, &v) && !sg_parse_ipv4_loose("08.1.1.1", 8, &v) && !sg_parse_ipv4_loose("4294967296", 10, &v));
}

int main(void) {
    test_map_basics();
    test_map_bounded();
    test_map_threads_and_fork();
    test_reverse_names();
    test_names();
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("ok\n");
    return 0;
}
