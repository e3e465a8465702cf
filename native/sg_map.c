#include "sg_map.h"

#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <sys/mman.h>

#define SETS 16384u /* x 4 ways = 65,536 addresses, as guard._RESOLVED_MAX */
#define WAYS 4u
#define NAMES 8192u /* interned names (a ring: the oldest is overwritten) */
#define NAME_INDEX (NAMES * 2u)

typedef struct {
    uint32_t seq; /* 0 = empty */
    uint16_t len;
    char text[SG_NAME_MAX];
} name_slot;

typedef struct {
    uint32_t stamp; /* 0 = empty; larger = newer */
    uint8_t v, n;
    uint64_t hi, lo;
    uint16_t slot[SG_MAP_NAMES];
    uint32_t seq[SG_MAP_NAMES];
} entry;

typedef struct {
    entry sets[SETS][WAYS];
    name_slot names[NAMES];
    uint32_t index[NAME_INDEX]; /* name hash -> ring slot + 1 */
    uint32_t next_name, next_seq, clock;
} map;

static map *the_map;
static int lock_word;

static int lock(void) {
    for (unsigned spins = 0; spins < (1u << 16); spins++) {
        if (!__atomic_exchange_n(&lock_word, 1, __ATOMIC_ACQUIRE)) return 1;
        if ((spins & 63) == 63) sched_yield();
    }
    return 0; /* held for too long (a signal handler interrupted the holder on this thread?): give up */
}
static void unlock(void) { __atomic_store_n(&lock_word, 0, __ATOMIC_RELEASE); }

/* Around fork: the map is copied consistent (no thread mid-update) and the child starts unlocked. */
static void before_fork(void) {
    while (__atomic_exchange_n(&lock_word, 1, __ATOMIC_ACQUIRE)) sched_yield();
}
static void after_fork(void) { unlock(); }

static void register_atfork(void) { pthread_atfork(before_fork, after_fork, after_fork); }

void sg_map_atfork(void) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, register_atfork);
}

static uint64_t mix(const sg_addr *a) {
    uint64_t h = a->hi * 0x9E3779B97F4A7C15ull ^ a->lo * 0xC2B2AE3D27D4EB4Full ^ a->v;
    return h ^ (h >> 29);
}

static map *get_map(int create) {
    map *m = __atomic_load_n(&the_map, __ATOMIC_ACQUIRE);
    if (m || !create) return m;
    void *mem = mmap(NULL, sizeof(map), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) return NULL;
    map *expected = NULL;
    if (!__atomic_compare_exchange_n(&the_map, &expected, (map *)mem, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        munmap(mem, sizeof(map));
        return expected;
    }
    return mem;
}

/* the ring slot holding name (interning it); caller holds the lock */
static uint16_t intern(map *m, const char *name, size_t n, uint32_t *seq) {
    uint32_t h = sg_fnv1a32(name, n) & (NAME_INDEX - 1);
    for (uint32_t probe = 0; probe < 8; probe++) {
        uint32_t v = m->index[(h + probe) & (NAME_INDEX - 1)];
        if (!v) break;
        name_slot *s = &m->names[v - 1];
        if (s->seq && s->len == n && memcmp(s->text, name, n) == 0) {
            *seq = s->seq;
            return (uint16_t)(v - 1);
        }
    }
    uint32_t slot = m->next_name++ % NAMES;
    name_slot *s = &m->names[slot];
    s->seq = ++m->next_seq ? m->next_seq : ++m->next_seq;
    s->len = (uint16_t)n;
    memcpy(s->text, name, n);
    s->text[n] = 0;
    uint32_t at = h;
    for (uint32_t probe = 0; probe < 8; probe++) { /* an empty or stale index slot, else the home one */
        uint32_t v = m->index[(h + probe) & (NAME_INDEX - 1)];
        if (!v || v - 1 == slot) {
            at = (h + probe) & (NAME_INDEX - 1);
            break;
        }
    }
    m->index[at] = slot + 1;
    *seq = s->seq;
    return (uint16_t)slot;
}

void sg_map_learn(const sg_addr *a, const char *name) {
    size_t n = strlen(name);
    if (n == 0 || n >= SG_NAME_MAX) return;
    map *m = get_map(1);
    if (!m || !lock()) return;
    entry *set = m->sets[mix(a) % SETS];
    entry *e = NULL, *oldest = &set[0];
    for (unsigned w = 0; w < WAYS; w++) {
        if (set[w].stamp && set[w].v == a->v && set[w].hi == a->hi && set[w].lo == a->lo) e = &set[w];
        if (set[w].stamp < oldest->stamp) oldest = &set[w];
    }
    if (!e) {
        e = oldest;
        memset(e, 0, sizeof *e);
        e->v = a->v;
        e->hi = a->hi;
        e->lo = a->lo;
    }
    e->stamp = ++m->clock ? m->clock : ++m->clock;
    for (unsigned i = 0; i < e->n; i++) {
        name_slot *s = &m->names[e->slot[i]];
        if (s->seq == e->seq[i] && s->len == n && memcmp(s->text, name, n) == 0) {
            unlock();
            return;
        }
    }
    uint32_t seq;
    uint16_t slot = intern(m, name, n, &seq);
    if (e->n == SG_MAP_NAMES) { /* keep the newest four */
        memmove(e->slot, e->slot + 1, sizeof e->slot[0] * (SG_MAP_NAMES - 1));
        memmove(e->seq, e->seq + 1, sizeof e->seq[0] * (SG_MAP_NAMES - 1));
        e->n--;
    }
    e->slot[e->n] = slot;
    e->seq[e->n] = seq;
    e->n++;
    unlock();
}

int sg_map_names(const sg_addr *a, char out[SG_MAP_NAMES][SG_NAME_MAX]) {
    map *m = get_map(0);
    if (!m || !lock()) return 0;
    entry *set = m->sets[mix(a) % SETS];
    int found = 0;
    for (unsigned w = 0; w < WAYS; w++) {
        entry *e = &set[w];
        if (!e->stamp || e->v != a->v || e->hi != a->hi || e->lo != a->lo) continue;
        for (unsigned i = 0; i < e->n; i++) {
            name_slot *s = &m->names[e->slot[i]];
            if (s->seq != e->seq[i]) continue; /* the ring reused that slot: forgotten */
            memcpy(out[found], s->text, (size_t)s->len + 1);
            found++;
        }
        break;
    }
    unlock();
    return found;
}

void sg_map_clear(void) {
    map *m = get_map(0);
    if (!m || !lock()) return;
    memset(m, 0, sizeof *m);
    unlock();
}
