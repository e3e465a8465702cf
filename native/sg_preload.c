/* libsockguard: the LD_PRELOAD layer. Interposes libc's socket, name and process functions and decides
 * each with the compiled policy (sg_policy.c), exactly as the Python guard decides the same call.
 * docs/native.md describes what is held, what cannot be, and the log format. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <link.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <resolv.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#undef p_type /* <resolv.h> defines it as a function name; here it is the ELF field */

#include "sg_dns.h"
#include "sg_map.h"
#include "sg_policy.h"

#define EXPORT __attribute__((visibility("default")))
/* Code that can run before a sanitizer runtime is ready (its own start-up calls dlsym(RTLD_NEXT, ...)). */
#define EARLY __attribute__((no_sanitize_address, no_sanitize("undefined")))
#define UNLIKELY(x) __builtin_expect(!!(x), 0)
#define LIKELY(x) __builtin_expect(!!(x), 1)

extern char **environ;

/* ---------------------------------------------------------------------------------------------------------
 * Finding the real functions. dlsym and dlvsym are interposed too (ctypes' CDLL("libc.so.6").connect would
 * otherwise reach libc directly), so libc's own dlsym is found by reading libc's dynamic symbol table.
 * ------------------------------------------------------------------------------------------------------- */

typedef void *(*dlsym_fn)(void *, const char *);
typedef void *(*dlvsym_fn)(void *, const char *, const char *);
__attribute__((visibility("hidden"))) dlsym_fn sg_real_dlsym;
__attribute__((visibility("hidden"))) dlvsym_fn sg_real_dlvsym;

/* Walks the loader's list of objects (_r_debug) rather than dl_iterate_phdr, and compares strings by hand:
 * this runs before a sanitizer runtime has its interceptors (for dl_iterate_phdr, strcmp, ...) in place. */
EARLY static int early_streq(const char *a, const char *b) {
    while (*a && *a == *b) a++, b++;
    return *a == *b;
}

EARLY static int is_libc(const char *path) {
    const char *base = path;
    for (const char *p = path; *p; p++)
        if (*p == '/') base = p + 1;
    static const char prefix[] = "libc.so";
    for (int i = 0; prefix[i]; i++)
        if (base[i] != prefix[i]) return 0;
    return 1;
}

EARLY static uint32_t gnu_hash(const char *s) {
    uint32_t h = 5381;
    for (; *s; s++) h = h * 33 + (uint8_t)*s;
    return h;
}

EARLY static void *libc_symbol(const char *name) {
    for (const struct link_map *map = _r_debug.r_map; map; map = map->l_next) {
        if (!map->l_name || !is_libc(map->l_name) || !map->l_ld) continue;
        const ElfW(Sym) *symtab = NULL;
        const char *strtab = NULL;
        const uint32_t *gnu = NULL;
        const ElfW(Half) *versym = NULL;
        for (const ElfW(Dyn) *dyn = map->l_ld; dyn->d_tag != DT_NULL; dyn++) {
            uintptr_t v = dyn->d_un.d_ptr;
            if (v < map->l_addr) v += map->l_addr; /* some loaders relocate .dynamic in place, some not */
            if (dyn->d_tag == DT_SYMTAB) symtab = (const ElfW(Sym) *)v;
            else if (dyn->d_tag == DT_STRTAB) strtab = (const char *)v;
            else if (dyn->d_tag == DT_GNU_HASH) gnu = (const uint32_t *)v;
            else if (dyn->d_tag == DT_VERSYM) versym = (const ElfW(Half) *)v;
        }
        if (!symtab || !strtab || !gnu) return NULL;
        uint32_t nbuckets = gnu[0], symoffset = gnu[1], bloom_size = gnu[2];
        const ElfW(Addr) *bloom = (const ElfW(Addr) *)(gnu + 4);
        const uint32_t *buckets = (const uint32_t *)(bloom + bloom_size);
        const uint32_t *chain = buckets + nbuckets;
        uint32_t h = gnu_hash(name);
        uint32_t idx = buckets[h % nbuckets];
        void *found = NULL;
        if (idx < symoffset) return NULL;
        for (;; idx++) {
            uint32_t ch = chain[idx - symoffset];
            const ElfW(Sym) *sym = &symtab[idx];
            if ((h | 1) == (ch | 1) && early_streq(strtab + sym->st_name, name) && sym->st_shndx != SHN_UNDEF && sym->st_value) {
                found = (void *)(map->l_addr + sym->st_value);
                if (!versym || !(versym[idx] & 0x8000)) break; /* the default version; else keep looking */
            }
            if (ch & 1) break;
        }
        return found;
    }
    return NULL;
}

EARLY static void resolve_dl(void) {
    if (!sg_real_dlsym) {
        sg_real_dlvsym = (dlvsym_fn)libc_symbol("dlvsym");
        __atomic_store_n(&sg_real_dlsym, (dlsym_fn)libc_symbol("dlsym"), __ATOMIC_RELEASE);
    }
}

/* The next definition after this library (RTLD_NEXT), resolved once per name. */
#define REAL(name)                                                                                   \
    ({                                                                                               \
        static __typeof__(&name) real_##name;                                                        \
        if (UNLIKELY(!real_##name)) {                                                                \
            resolve_dl();                                                                            \
            void *found = sg_real_dlsym ? sg_real_dlsym(RTLD_NEXT, #name) : NULL;                    \
            __atomic_store_n(&real_##name, (__typeof__(&name))(found ? found : libc_symbol(#name)),  \
                             __ATOMIC_RELEASE);                                                      \
        }                                                                                            \
        real_##name;                                                                                 \
    })

/* The real call. No re-entry bookkeeping: a count kept across the call would stay raised when the call never
 * returns (exec after vfork, a longjmp out of a signal handler) and silently turn the layer off for the thread.
 * Loops through another interposer are prevented where they could start instead: dlsym does not hand this
 * library's functions to other preloaded libraries (redirect()). */
#define CALL(name, ...) REAL(name)(__VA_ARGS__)

/* libc's own definition, found in its symbol table (the log writes and messages use it directly). */
#define LIBC(name)                                                                                   \
    ({                                                                                               \
        static __typeof__(&name) libc_##name;                                                        \
        if (UNLIKELY(!libc_##name)) __atomic_store_n(&libc_##name, (__typeof__(&name))libc_symbol(#name), __ATOMIC_RELEASE); \
        libc_##name;                                                                                 \
    })

/* ---------------------------------------------------------------------------------------------------------
 * Loading the policy (lazily, at the first decision: a process that never touches the network pays nothing)
 * ------------------------------------------------------------------------------------------------------- */

enum { ST_OK = 1, ST_ERROR = 2, ST_OFF = 3 };
static int state;
static sg_policy loaded;                /* the file's policy */
static const sg_policy *current = &loaded; /* the one in force: the file's, or one the Python layer installed */
#define policy (*__atomic_load_n(&current, __ATOMIC_ACQUIRE))
static char load_error[320];
static char log_path[1024];
static int log_fd = -1;
static int python_present;
static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static void ns_before_fork(void);
static void ns_after_fork(void);
static const char *program = "?";

static void say(const char *text) {
    size_t n = strlen(text);
    ssize_t w = LIBC(write)(2, text, n);
    (void)w;
}

static void load(void) {
    resolve_dl();
    sg_map_atfork();
    pthread_atfork(ns_before_fork, ns_after_fork, ns_after_fork);
    program = program_invocation_short_name && *program_invocation_short_name ? program_invocation_short_name : "?";
    python_present = sg_real_dlsym && sg_real_dlsym(RTLD_DEFAULT, "Py_IsInitialized") != NULL;
    const char *path = getenv("SOCKGUARD_NATIVE_POLICY");
    const char *mode = getenv("SOCKGUARD_MODE");
    int off = mode && strcasecmp(mode, "off") == 0;
    if (!path || !*path) {
        if (off) {
            state = ST_OFF;
            return;
        }
        snprintf(load_error, sizeof load_error, "SOCKGUARD_NATIVE_POLICY is not set (no compiled policy)");
    } else {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        struct stat st;
        if (fd < 0 || fstat(fd, &st) < 0) {
            snprintf(load_error, sizeof load_error, "cannot read the compiled policy %s: %s", path, strerror(errno));
        } else if (st.st_size <= 0 || st.st_size > (1 << 30)) {
            snprintf(load_error, sizeof load_error, "the compiled policy %s is empty or too large", path);
        } else {
            void *mem = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
            char why[200];
            if (mem == MAP_FAILED) {
                snprintf(load_error, sizeof load_error, "cannot map the compiled policy %s: %s", path, strerror(errno));
            } else if (sg_policy_load(&loaded, mem, (size_t)st.st_size, why, sizeof why) < 0) {
                snprintf(load_error, sizeof load_error, "the compiled policy %s is unusable: %s", path, why);
                munmap(mem, (size_t)st.st_size);
            } else {
                const struct { uint32_t off, len; } *rows = policy.source.rows;
                if (rows[1].len && rows[1].len < sizeof log_path) {
                    memcpy(log_path, policy.strings + rows[1].off, rows[1].len);
                    log_path[rows[1].len] = 0;
                }
                state = policy.mode == SG_MODE_OFF ? ST_OFF : ST_OK;
            }
        }
        if (fd >= 0) close(fd);
        if (state) return;
    }
    if (off) {
        state = ST_OFF;
        return;
    }
    state = ST_ERROR; /* said on stderr at the first block (config_error), not by every process that starts */
}

static inline int active(void) {
    if (UNLIKELY(!state)) pthread_once(&init_once, load);
    return state != ST_OFF;
}

static int enforcing(void) { return state == ST_ERROR || policy.mode == SG_MODE_ENFORCE; }
static const char *mode_name(void) {
    return state == ST_ERROR ? "enforce" : policy.mode == SG_MODE_MONITOR ? "monitor" : "enforce";
}

/* ---------------------------------------------------------------------------------------------------------
 * Reporting: a JSON line per decision (blocks always, allows only when a log file wants them and no Python
 * guard in this process logs the same call), and one stderr line per blocked destination.
 * ------------------------------------------------------------------------------------------------------- */

static const char *const explain[SG_REASON_COUNT] = {
    [SG_DENIED] = "matches a deny rule",
    [SG_NOT_ALLOWED] = "host is not in the allowlist",
    [SG_RAW_IP] = "raw IP address not covered by an IP/CIDR rule",
    [SG_INTERNAL] = "address is internal; a name may reach it only where an IP/CIDR rule covers it",
    [SG_METADATA] = "cloud metadata name; allow it only with an exact rule",
    [SG_INVALID] = "invalid host",
    [SG_FAMILY] = "socket family not supported by the guard",
    [SG_CONFIG_ERROR] = "configuration is broken, all traffic blocked",
    [SG_UNIX] = "AF_UNIX sockets are disabled (allow_unix = false)",
    [SG_IO_URING] = "io_uring submissions bypass every check, so io_uring_setup is refused (ENOSYS)",
};

typedef struct {
    char *p, *end;
} buf;

static void put(buf *b, const char *s, size_t n) {
    if ((size_t)(b->end - b->p) <= n) n = b->end > b->p ? (size_t)(b->end - b->p) - 1 : 0;
    memcpy(b->p, s, n);
    b->p += n;
}
static void puts_(buf *b, const char *s) { put(b, s, strlen(s)); }
static void put_json(buf *b, const char *s, size_t n) {
    if (!s) return puts_(b, "null");
    put(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\', esc[1] = (char)c;
            put(b, esc, 2);
        } else if (c < 0x20 || c >= 0x7f) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            put(b, esc, 6);
        } else {
            put(b, (const char *)&c, 1);
        }
    }
    put(b, "\"", 1);
}
static void put_num(buf *b, long v) {
    char t[24];
    int n = snprintf(t, sizeof t, "%ld", v);
    put(b, t, (size_t)n);
}

static const char *mode_name(void);

/* The fields every native log line ends with: mode, the program in place of a Python caller, the layer. */
static void put_line_end(buf *b) {
    puts_(b, ",\"mode\":");
    put_json(b, mode_name(), strlen(mode_name()));
    puts_(b, ",\"caller\":");
    char who[300];
    snprintf(who, sizeof who, "native:%s", program);
    put_json(b, who, strlen(who));
    puts_(b, ",\"correlation_id\":null,\"layer\":\"native\",\"program\":");
    put_json(b, program, strlen(program));
    puts_(b, "}\n");
}

static int proto_of(int fd, const char **proto) {
    int type = 0;
    socklen_t len = sizeof type;
    if (fd < 0) return *proto = "dns", 0;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0) return *proto = "?", 0;
    *proto = type == SOCK_STREAM ? "tcp" : type == SOCK_DGRAM ? "udp" : type == SOCK_RAW ? "raw" : "?";
    return type;
}

static uint64_t reported[256];

/* SOCKGUARD_LOG_SPECIAL (docs/decision-log.md): the log may be a FIFO or a device. */
static int log_special_allowed(void) {
    const char *v = getenv("SOCKGUARD_LOG_SPECIAL");
    return v && (!strcmp(v, "1") || !strcasecmp(v, "true") || !strcasecmp(v, "yes") || !strcasecmp(v, "on"));
}

static void open_log(void) {
    static int tried;
    if (tried || !log_path[0]) return;
    tried = 1;
    /* O_NONBLOCK: a FIFO without a reader must not hang the program in open() (issue 18); it fails with ENXIO.
       Checked before it is published in log_fd: a special file is written only with SOCKGUARD_LOG_SPECIAL. */
    int fd = open(log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NONBLOCK | O_NOCTTY, 0644);
    char m[1200];
    if (fd < 0) {
        snprintf(m, sizeof m, "sockguard: native layer: cannot open decision log %s: %s; decisions are still enforced\n", log_path, strerror(errno));
        say(m);
        return;
    }
    struct stat st, null_st;
    if (fstat(fd, &st) == 0 && !S_ISREG(st.st_mode) && !log_special_allowed() &&
        !(S_ISCHR(st.st_mode) && stat("/dev/null", &null_st) == 0 && st.st_rdev == null_st.st_rdev)) {
        close(fd);
        snprintf(m, sizeof m, "sockguard: native layer: decision log %s is not a regular file (a FIFO or device can block the program): not writing to it; SOCKGUARD_LOG_SPECIAL=1 allows it; decisions are still enforced\n", log_path);
        say(m);
        return;
    }
    log_fd = fd;
}

static void report(const sg_decision *d, const char *op, int fd, const char *host, long port, const sg_addr *addr) {
    int block = !d->allowed;
    if (!block && (python_present || !log_path[0])) return; /* nothing wants an allowed line */
    open_log();
    char text[64] = {0};
    if (addr) sg_format_address(addr, text, sizeof text);
    const char *proto = "dns";
    if (strcmp(op, "resolve") != 0) proto_of(fd, &proto);
    const char *decision = block ? (enforcing() ? "block" : "would-block") : "allow";
    const char *rule = d->rule_text;
    size_t rule_len = d->rule_len;
    const char *detail = d->detail;
    size_t detail_len = d->detail_len;
    if (d->reason == SG_CONFIG_ERROR) detail = load_error, detail_len = strlen(load_error);
    if (log_fd >= 0) {
        char line[2048];
        buf b = {line, line + sizeof line};
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        char t[64];
        snprintf(t, sizeof t, "{\"event\":\"decision\",\"ts\":%ld.%06ld,\"pid\":%d,\"op\":", (long)ts.tv_sec, ts.tv_nsec / 1000, (int)getpid());
        puts_(&b, t);
        put_json(&b, op, strlen(op));
        puts_(&b, ",\"proto\":");
        put_json(&b, proto, strlen(proto));
        puts_(&b, ",\"host\":");
        put_json(&b, host, host ? strlen(host) : 0);
        puts_(&b, ",\"port\":");
        if (port >= 0) put_num(&b, port);
        else puts_(&b, "null");
        puts_(&b, ",\"address\":");
        put_json(&b, addr ? text : NULL, strlen(text));
        puts_(&b, ",\"decision\":");
        put_json(&b, decision, strlen(decision));
        puts_(&b, ",\"reason\":");
        put_json(&b, sg_reason_names[d->reason], strlen(sg_reason_names[d->reason]));
        puts_(&b, ",\"rule\":");
        put_json(&b, rule, rule_len);
        puts_(&b, ",\"detail\":");
        put_json(&b, detail, detail_len);
        put_line_end(&b);
        if (LIBC(write)(log_fd, line, (size_t)(b.p - line)) < 0) {
            close(log_fd);
            log_fd = -1;
            say("sockguard: native layer: writing the decision log failed; decisions are still enforced\n");
        }
    }
    if (!block || d->reason == SG_IO_URING) return; /* libuv probes io_uring in every loop: the log line is enough */
    /* stderr: once per destination and reason */
    uint64_t key = sg_fnv1a32(op, strlen(op)) ^ ((uint64_t)d->reason << 40) ^ ((uint64_t)(port + 1) << 44);
    if (host) key ^= (uint64_t)sg_fnv1a32(host, strlen(host)) << 8;
    if (addr) key ^= addr->lo * 31 + addr->hi;
    key |= 1;
    unsigned slot = (unsigned)(key % 256);
    if (__atomic_exchange_n(&reported[slot], key, __ATOMIC_RELAXED) == key) return;
    const char *verb = strcmp(op, "connect") == 0 ? "connection" : strcmp(op, "send") == 0 ? "datagram"
                       : strcmp(op, "resolve") == 0 ? "DNS lookup" : op;
    char dest[400];
    const char *shown = host ? host : text;
    if (port >= 0) snprintf(dest, sizeof dest, strchr(shown, ':') ? "[%s]:%ld" : "%s:%ld", shown, port);
    else snprintf(dest, sizeof dest, "%s", shown);
    char via[80] = "";
    if (host && addr) snprintf(via, sizeof via, " (%s)", text);
    char why[400];
    const char *base = explain[d->reason] ? explain[d->reason] : sg_reason_names[d->reason];
    if (d->reason == SG_INVALID || d->reason == SG_CONFIG_ERROR || d->reason == SG_INTERNAL || (d->reason == SG_RAW_IP && detail))
        snprintf(why, sizeof why, "%s (%.*s)", base, (int)detail_len, detail ? detail : "");
    else
        snprintf(why, sizeof why, "%s", base);
    char hint[500] = "";
    if (d->reason == SG_DENIED && rule) snprintf(hint, sizeof hint, " (deny rule '%.*s'). To allow it, remove or narrow that deny rule", (int)rule_len, rule);
    else if (d->reason == SG_NOT_ALLOWED || d->reason == SG_RAW_IP || d->reason == SG_INTERNAL)
        snprintf(hint, sizeof hint, ". To allow it, add the rule '%s' (SOCKGUARD_ALLOW, --allow, or allow in sockguard.toml)", dest);
    char message[2000];
    snprintf(message, sizeof message, "sockguard %s %s to %s%s: %s; in %s[%d] (native layer)%s.\n",
             enforcing() ? "blocked" : "would block", verb, dest, via, why, program, (int)getpid(), hint);
    say(message);
}

static int refuse(const sg_decision *d, const char *op, int fd, const char *host, long port, const sg_addr *addr) {
    report(d, op, fd, host, port, addr);
    if (!d->allowed && enforcing()) {
        errno = EACCES;
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------------------
 * Nameservers: a resolv.conf nameserver (or, with a pinned resolver, only the pinned ones) may be reached
 * on port 53 whatever the rules say, as integrations.check_nameserver trusts them; its questions are then
 * decided from the packets.
 * ------------------------------------------------------------------------------------------------------- */

static pthread_mutex_t ns_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t stream_lock = PTHREAD_MUTEX_INITIALIZER; /* DNS-over-TCP streams (check_query) */
static void ns_before_fork(void) {
    pthread_mutex_lock(&ns_lock);
    pthread_mutex_lock(&stream_lock);
}
static void ns_after_fork(void) {
    pthread_mutex_unlock(&stream_lock);
    pthread_mutex_unlock(&ns_lock);
}
static sg_addr ns_addrs[16];
static int ns_count;
static struct timespec ns_mtime;
static ino_t ns_ino;

static int system_nameserver(const sg_addr *a) {
    struct stat st;
    if (stat("/etc/resolv.conf", &st) < 0) return 0;
    int found = 0;
    pthread_mutex_lock(&ns_lock);
    if (st.st_ino != ns_ino || st.st_mtim.tv_sec != ns_mtime.tv_sec || st.st_mtim.tv_nsec != ns_mtime.tv_nsec) {
        ns_ino = st.st_ino;
        ns_mtime = st.st_mtim;
        ns_count = 0;
        FILE *f = fopen("/etc/resolv.conf", "re");
        char line[512];
        while (f && fgets(line, sizeof line, f) && ns_count < 16) {
            char *p = line;
            while (*p == ' ' || *p == '\t') p++;
            if (strncmp(p, "nameserver", 10) != 0 || (p[10] != ' ' && p[10] != '\t')) continue;
            p += 10;
            while (*p == ' ' || *p == '\t') p++;
            size_t n = strcspn(p, " \t\r\n%");
            sg_addr parsed;
            if (n && sg_parse_address(p, n, &parsed)) ns_addrs[ns_count++] = parsed;
        }
        if (f) fclose(f);
    }
    for (int i = 0; i < ns_count; i++)
        if (sg_addr_equal(&ns_addrs[i], a)) found = 1;
    pthread_mutex_unlock(&ns_lock);
    return found;
}

static int trusted_nameserver(const sg_addr *a, long port) {
    int changed;
    sg_addr plain = sg_unwrap_routable(a, &changed);
    if (policy.nameservers.count) return sg_is_nameserver(&policy, &plain, port);
    return port == 53 && system_nameserver(&plain);
}

/* ---------------------------------------------------------------------------------------------------------
 * DNS sockets: sockets connected (or sending) to port 53. Their queries are decided from the packet and
 * their answers read to learn which address came from which allowed name.
 * ------------------------------------------------------------------------------------------------------- */

typedef struct {
    uint8_t dns, stream, nids;
    uint16_t ids[8];
    ino_t ino;
} fdinfo;
static fdinfo *fdtab;
/* Descriptors the table covers: every one the process may open (its hard RLIMIT_NOFILE, at least 65,536, at most
 * 2^21; pages are committed only where a DNS socket is). Set once, right after the table is published. */
static int fd_max;

/* Follow `fd` as a DNS socket. -1 when it cannot be followed (a descriptor past the table, no memory): the
 * caller then refuses the socket rather than let its queries leave unread. */
static int mark_dns(int fd, int stream) {
    if (!fdtab) {
        struct rlimit lim;
        rlim_t want = getrlimit(RLIMIT_NOFILE, &lim) == 0 ? lim.rlim_max : 65536;
        size_t count = want < 65536 ? 65536 : want > (1u << 21) ? (1u << 21) : (size_t)want;
        void *mem = mmap(NULL, sizeof(fdinfo) * count, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (mem == MAP_FAILED) return -1;
        fdinfo *expected = NULL;
        if (__atomic_compare_exchange_n(&fdtab, &expected, (fdinfo *)mem, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
            __atomic_store_n(&fd_max, (int)count, __ATOMIC_RELEASE); /* (0 until then: nothing followed yet) */
        else
            munmap(mem, sizeof(fdinfo) * count);
    }
    if (fd < 0 || fd >= __atomic_load_n(&fd_max, __ATOMIC_ACQUIRE)) return -1;
    struct stat st;
    if (fstat(fd, &st) < 0) return -1;
    fdinfo *f = &fdtab[fd];
    if (f->dns && f->ino == st.st_ino) return 0;
    memset(f, 0, sizeof *f);
    f->ino = st.st_ino;
    f->stream = (uint8_t)stream;
    __atomic_store_n(&f->dns, 1, __ATOMIC_RELEASE);
    return 0;
}

static inline fdinfo *dns_fd(int fd) {
    fdinfo *t = fdtab;
    if (!t || fd < 0 || fd >= __atomic_load_n(&fd_max, __ATOMIC_ACQUIRE) || !__atomic_load_n(&t[fd].dns, __ATOMIC_ACQUIRE))
        return NULL;
    struct stat st;
    if (fstat(fd, &st) < 0 || st.st_ino != t[fd].ino) { /* closed and reused behind our back */
        t[fd].dns = 0;
        return NULL;
    }
    return &t[fd];
}

static uint16_t get16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }

/* ---------------------------------------------------------------------------------------------------------
 * Decisions
 * ------------------------------------------------------------------------------------------------------- */

static void config_error(sg_decision *d) {
    static int said;
    if (!__atomic_exchange_n(&said, 1, __ATOMIC_RELAXED)) {
        char message[512];
        snprintf(message, sizeof message,
                 "sockguard: native layer in %s[%d]: %s; blocking all network traffic of this process "
                 "(`sockguard native compile` writes a policy; SOCKGUARD_MODE=off runs unguarded)\n",
                 program, (int)getpid(), load_error);
        say(message);
    }
    d->allowed = 0;
    d->reason = SG_CONFIG_ERROR;
    d->rule = NULL;
    d->rule_text = NULL;
    d->rule_len = 0;
    d->detail = load_error;
    d->detail_len = strlen(load_error);
}

/* guard.State._address: the address alone, then as reached through each name it was learned from */
static void decide_address(const sg_addr *a, long port, sg_decision *d) {
    if (state == ST_ERROR) return config_error(d);
    sg_check_address(&policy, a, port, NULL, d);
    if (d->reason != SG_RAW_IP) return;
    char names[SG_MAP_NAMES][SG_NAME_MAX];
    int n = sg_map_names(a, names);
    if (!n) {
        int changed;
        sg_addr routable = sg_unwrap_routable(a, &changed);
        if (changed) n = sg_map_names(&routable, names);
    }
    if (!n) return;
    static __thread sg_decision by_name;
    for (int i = 0; i < n; i++) {
        sg_check_address(&policy, a, port, names[i], &by_name);
        if (by_name.allowed) break;
    }
    *d = by_name;
}

static int sockaddr_to_addr(const struct sockaddr *sa, socklen_t len, int unspec_as_inet, sg_addr *a, long *port) {
    int family = sa->sa_family;
    if (family == AF_UNSPEC && unspec_as_inet) family = AF_INET; /* Linux UDP/raw sendto reads it as AF_INET */
    if (family == AF_INET) {
        if (len < (socklen_t)sizeof(struct sockaddr_in)) return 0;
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        *a = (sg_addr){4, 0, ntohl(in->sin_addr.s_addr)};
        *port = ntohs(in->sin_port);
        return 1;
    }
    if (family == AF_INET6) {
        if (len < 24) return 0;
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        uint64_t hi = 0, lo = 0;
        for (int k = 0; k < 8; k++) hi = (hi << 8) | in6->sin6_addr.s6_addr[k];
        for (int k = 8; k < 16; k++) lo = (lo << 8) | in6->sin6_addr.s6_addr[k];
        *a = (sg_addr){6, hi, lo};
        *port = ntohs(in6->sin6_port);
        return 1;
    }
    return 0;
}

/* A socket to a DNS server whose queries could not be followed (mark_dns): refused. */
static int untracked_dns(int fd, const char *op, long port, const sg_addr *a) {
    static const char why[] = "a socket to a DNS server on a descriptor its queries cannot be followed on";
    sg_decision d = {.allowed = 0, .reason = SG_INVALID, .detail = why, .detail_len = sizeof why - 1};
    return refuse(&d, op, fd, NULL, port, a);
}

/* A connect or a send with an address: 0 to go ahead, -1 (errno EACCES) when blocked. */
static int check_destination(int fd, const struct sockaddr *sa, socklen_t len, const char *op) {
    if (!sa || len < (socklen_t)sizeof(sa_family_t) || !active()) return 0;
    int family = sa->sa_family;
    sg_decision d;
    if (family == AF_UNIX) {
        if (state == ST_ERROR || (policy.flags & SG_FLAG_UNIX)) return 0;
        d = (sg_decision){.allowed = 0, .reason = SG_UNIX, .detail = NULL, .detail_len = 0};
        return refuse(&d, op, fd, NULL, -1, NULL);
    }
    int sending = op[0] == 's'; /* "send" (else "connect"): compared once, cheaply, on the hot path */
    if (family == AF_NETLINK || (family == AF_UNSPEC && !sending)) return 0; /* disconnect */
    sg_addr a;
    long port;
    if (!sockaddr_to_addr(sa, len, sending, &a, &port)) {
        if (family == AF_INET || family == AF_INET6 || family == AF_UNSPEC) return 0; /* too short: the kernel refuses it */
        char fam[16];
        snprintf(fam, sizeof fam, "%d", family);
        d = (sg_decision){.allowed = 0, .reason = SG_FAMILY, .detail = fam, .detail_len = strlen(fam)};
        if (state == ST_ERROR) config_error(&d);
        return refuse(&d, op, fd, NULL, -1, NULL);
    }
    int type = 0;
    if (port == 53 || (policy.nameservers.count && trusted_nameserver(&a, port))) {
        socklen_t tl = sizeof type;
        if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) < 0) type = 0;
    }
    if (state == ST_OK && (type == SOCK_DGRAM || type == SOCK_STREAM) && trusted_nameserver(&a, port)) {
        if (mark_dns(fd, type == SOCK_STREAM) < 0) return untracked_dns(fd, op, port, &a);
        d = (sg_decision){.allowed = 1, .reason = SG_NAMESERVER, .detail = NULL, .detail_len = 0};
        report(&d, op, fd, NULL, port, &a);
        return 0;
    }
    decide_address(&a, port, &d);
    if (refuse(&d, op, fd, NULL, port, &a) < 0) return -1;
    if (port == 53 && (type == SOCK_DGRAM || type == SOCK_STREAM) && mark_dns(fd, type == SOCK_STREAM) < 0)
        return untracked_dns(fd, op, port, &a);
    return 0;
}

/* Reverse lookups (issue 10): allowed for loopback, this host's own addresses, addresses an IP rule covers
 * and addresses learned from an allowed name; otherwise refused before the PTR query. */
static int own_address(const sg_addr *a) {
    struct ifaddrs *list, *i;
    int found = 0;
    if (getifaddrs(&list) < 0) return 0;
    for (i = list; i && !found; i = i->ifa_next) {
        sg_addr b;
        long port;
        if (i->ifa_addr && sockaddr_to_addr(i->ifa_addr, sizeof(struct sockaddr_in6), 0, &b, &port)) found = sg_addr_equal(a, &b);
    }
    freeifaddrs(list);
    return found;
}

static int check_reverse(const sg_addr *a) {
    if (!active()) return 0;
    sg_decision d;
    if (state == ST_ERROR) {
        config_error(&d);
        return refuse(&d, "resolve", -1, NULL, -1, a);
    }
    sg_check_address(&policy, a, -1, NULL, &d);
    if (d.allowed || d.reason == SG_DENIED) return refuse(&d, "resolve", -1, NULL, -1, a);
    if (sg_is_loopback(a) || own_address(a)) return 0;
    decide_address(a, -1, &d);
    if (!d.allowed) {
        static const char why[] = "reverse (PTR) lookup of an address no rule or allowed name covers";
        d = (sg_decision){.allowed = 0, .reason = SG_RAW_IP, .detail = why, .detail_len = sizeof why - 1};
    }
    return refuse(&d, "resolve", -1, NULL, -1, a);
}

/* A name about to be looked up. 0 and *numeric = 1 for an address (no DNS: the connect decides), 0 for an
 * allowed name (normalised into name), -1 when blocked. */
static int check_lookup(const char *host, long port, char name[SG_NAME_MAX], int *numeric) {
    *numeric = 0;
    sg_decision d;
    if (state == ST_ERROR) {
        config_error(&d);
        return refuse(&d, "resolve", -1, host, port, NULL);
    }
    const char *why;
    if (sg_normalize_host(host, strlen(host), name, &why) < 0) {
        d = (sg_decision){.allowed = 0, .reason = SG_INVALID, .detail = why, .detail_len = strlen(why)};
        return refuse(&d, "resolve", -1, host, port, NULL);
    }
    sg_addr a;
    if (sg_parse_address(name, strlen(name), &a)) return *numeric = 1, 0;
    sg_check_name(&policy, name, port, &d);
    return refuse(&d, "resolve", -1, name, port, NULL);
}

/* An answer of an allowed lookup: admitted as guard._resolve_results admits it (checked as reached through
 * the name; refused ones dropped and logged), and learned. Returns 1 to keep it. */
static int admit(const char *name, long port, const sg_addr *a) {
    sg_decision d;
    sg_check_address(&policy, a, port, name, &d);
    if (d.allowed || !enforcing()) {
        sg_map_learn(a, name);
        if (!d.allowed) report(&d, "resolve", -1, name, port, a);
        return 1;
    }
    report(&d, "resolve", -1, name, port, a);
    return 0;
}

static long service_port(const char *service) {
    if (!service || !*service) return -1;
    long v = 0;
    for (const char *p = service; *p; p++) {
        if (*p < '0' || *p > '9') return -1;
        if (v < 1000000) v = v * 10 + (*p - '0');
    }
    return v;
}

/* A DNS question about to leave through a socket: decided as a name (or a reverse lookup). */
static int question_cb(void *ctx, const char *qname, uint16_t qtype) {
    (void)ctx;
    sg_addr reverse;
    if (qtype == SG_DNS_TYPE_PTR && sg_dns_reverse_name(qname, &reverse)) return check_reverse(&reverse) < 0;
    sg_decision d;
    sg_check_dns_name(&policy, qname, -1, &d);
    return refuse(&d, "resolve", -1, qname, -1, NULL) < 0;
}

/* One DNS message about to leave: every question decided (a reverse name as a reverse lookup). */
static int check_message(fdinfo *f, const uint8_t *data, size_t len) {
    sg_decision d;
    uint16_t id = 0;
    int r = sg_dns_questions(data, len, &id, question_cb, NULL);
    if (r < 0) {
        static const char why[] = "a message to a DNS server that is not a complete DNS query";
        d = (sg_decision){.allowed = 0, .reason = SG_INVALID, .detail = why, .detail_len = sizeof why - 1};
        return refuse(&d, "resolve", -1, NULL, 53, NULL);
    }
    if (r > 0 && enforcing()) {
        errno = EACCES;
        return -1;
    }
    f->ids[f->nids++ % 8] = id;
    return 0;
}

static int refuse_stream(const char *why) {
    sg_decision d = {.allowed = 0, .reason = SG_INVALID, .detail = why, .detail_len = strlen(why)};
    return refuse(&d, "resolve", -1, NULL, 53, NULL);
}

/* DNS over a byte stream (TCP): length-prefixed messages, any number to a write, and the server reads them by
 * their prefixes, not by our writes. So the bytes are followed as the server will frame them: each write must
 * hold whole messages (a 2-byte prefix may come on its own at the end: its message must then come whole at the
 * start of the next write), and every message is decided. The state belongs to the socket, not the descriptor
 * (a duplicate writes into the same stream): a prefix written alone, and the checked bytes a short write left
 * unsent (the next write must start with exactly them). One write at a time per socket. */
#define STREAMS 64
typedef struct {
    ino_t ino;
    uint8_t used, inflight;
    int32_t expect;  /* the length of the message whose prefix came alone; -1: none */
    int32_t planned; /* `expect` once the write in flight is sent whole */
    uint8_t *unsent; /* checked bytes a short write did not send, then `expect` applies after them */
    size_t unsent_len;
} stream_state;
static stream_state streams[STREAMS];

static stream_state *stream_of(ino_t ino, int create) {
    stream_state *free_slot = NULL;
    for (int i = 0; i < STREAMS; i++) {
        if (streams[i].used && streams[i].ino == ino) return &streams[i];
        if (!streams[i].used && !free_slot) free_slot = &streams[i];
    }
    if (!create || !free_slot) return NULL;
    *free_slot = (stream_state){.ino = ino, .used = 1, .expect = -1, .planned = -1};
    return free_slot;
}

static void stream_drop(stream_state *e) {
    free(e->unsent);
    *e = (stream_state){0};
}

/* Whole frames in data[pos..len), after a pending message of `expect` bytes (-1: none). Returns the length of
 * a prefix written alone at the end (its message comes next), -1 when none, -2 when refused (errno set). */
static long check_frames(fdinfo *f, const uint8_t *data, size_t pos, size_t len, long expect) {
    if (expect >= 0) {
        if (len - pos < (size_t)expect)
            return refuse_stream("a DNS message over TCP split across writes (its prefix and whole body must come "
                                 "together, or the prefix alone and then the whole body)") < 0 ? -2 : -1;
        if (check_message(f, data + pos, (size_t)expect) < 0) return -2;
        pos += (size_t)expect;
    }
    while (pos < len) {
        if (len - pos < 2) return refuse_stream("one byte of a DNS-over-TCP length prefix") < 0 ? -2 : -1;
        size_t n = get16(data + pos);
        pos += 2;
        if (pos == len) return (long)n; /* the prefix on its own: the message follows in the next write */
        if (len - pos < n)
            return refuse_stream("a DNS-over-TCP length prefix longer than the message written after it") < 0 ? -2
                                                                                                            : -1;
        if (check_message(f, data + pos, n) < 0) return -2;
        pos += n;
    }
    return -1;
}

/* Decide a write of `len` bytes to a DNS socket. For a stream, the socket's state is reserved (inflight) until
 * query_sent() records what the kernel took. Returns 0 to send, -1 (errno set) when refused. */
static int check_query(fdinfo *f, const uint8_t *data, size_t len, stream_state **reserved) {
    *reserved = NULL;
    if (!active()) return 0;
    sg_decision d;
    if (state == ST_ERROR) {
        config_error(&d);
        return refuse(&d, "resolve", -1, NULL, 53, NULL);
    }
    if (!f->stream) return check_message(f, data, len);
    pthread_mutex_lock(&stream_lock);
    stream_state *e = stream_of(f->ino, 1);
    int r = -1;
    if (!e) {
        r = refuse_stream("too many DNS-over-TCP streams in the middle of a message at once");
    } else if (e->inflight) {
        r = refuse_stream("two writes at once to one DNS-over-TCP stream (the server could interleave them)");
    } else if (e->expect == -3) {
        r = refuse_stream("a DNS-over-TCP stream whose unsent bytes could not be remembered (out of memory)");
    } else {
        size_t pos = 0;
        long expect = e->expect, lone;
        if (e->unsent_len) {
            size_t k = len < e->unsent_len ? len : e->unsent_len;
            if (memcmp(data, e->unsent, k) != 0) {
                r = refuse_stream("a write to a DNS-over-TCP stream that does not go on with the unsent rest of "
                                  "the messages decided before");
                goto out;
            }
            pos = k;
            if (k < e->unsent_len) expect = -1; /* still inside what was checked: nothing new to parse */
        }
        if (e->unsent_len > len) {
            lone = e->expect; /* all of this write was checked before: the state after it is the old one */
        } else {
            lone = check_frames(f, data, pos, len, expect);
            if (lone == -2 && enforcing()) goto out;
            if (lone == -2) lone = -1; /* monitor mode: logged, sent as it is */
        }
        e->planned = (int32_t)lone;
        e->inflight = 1;
        *reserved = e;
        r = 0;
    }
out:
    if (r < 0 && e && !e->inflight && e->expect < 0 && !e->unsent_len) stream_drop(e);
    pthread_mutex_unlock(&stream_lock);
    return r;
}

/* A DNS stream's descriptor closed: its state goes when no other descriptor of this process holds the socket. */
static void forget_stream(ino_t ino) {
    fdinfo *t = fdtab;
    pthread_mutex_lock(&stream_lock);
    stream_state *e = stream_of(ino, 0);
    if (e && !e->inflight) {
        int others = 0;
        int limit = __atomic_load_n(&fd_max, __ATOMIC_ACQUIRE);
        for (int fd = 0; fd < limit && !others; fd++) others = t[fd].dns && t[fd].ino == ino;
        if (!others) stream_drop(e);
    }
    pthread_mutex_unlock(&stream_lock);
}

/* After the system call of a checked write: what the kernel took (`sent`; -1 for nothing) moves the stream on,
 * and the checked bytes it left become what the next write must start with. */
static void query_sent(stream_state *e, const uint8_t *query, size_t len, ssize_t sent) {
    if (!e) return;
    pthread_mutex_lock(&stream_lock);
    if (sent >= 0) {
        size_t took = (size_t)sent < len ? (size_t)sent : len;
        size_t old_rest = e->unsent_len > len ? e->unsent_len - len : 0; /* checked before, not in this write */
        size_t rest = (len - took) + old_rest;
        uint8_t *unsent = NULL;
        if (rest) {
            unsent = malloc(rest);
            if (unsent) {
                memcpy(unsent, query + took, len - took);
                if (old_rest) memcpy(unsent + (len - took), e->unsent + len, old_rest);
            } else {
                rest = 0;
                e->planned = -1; /* cannot remember it: the next write is read from a frame boundary... */
                e->expect = -3;  /* ...so refuse it instead (fail closed) */
            }
        }
        free(e->unsent);
        e->unsent = unsent;
        e->unsent_len = rest;
        if (e->expect != -3) e->expect = e->planned;
    }
    e->inflight = 0;
    if (e->expect == -1 && !e->unsent_len) stream_drop(e);
    pthread_mutex_unlock(&stream_lock);
}

static void learn_cb(void *ctx, const char *qname, const sg_addr *a) {
    (void)ctx;
    sg_decision d;
    sg_check_dns_name(&policy, qname, -1, &d);
    if (d.allowed) sg_map_learn(a, qname);
}

static void learn_answer(const fdinfo *f, const uint8_t *data, size_t len) {
    if (state != ST_OK) return;
    if (f->stream && len > 2 && get16(data) <= len - 2) data += 2, len -= 2;
    if (len < 12) return;
    uint16_t id = get16(data);
    int known = 0;
    for (int i = 0; i < 8 && i < f->nids; i++) known |= f->ids[i] == id;
    if (!known) return; /* not an answer to a question this socket asked */
    char qname[SG_NAME_MAX], norm[SG_NAME_MAX];
    uint16_t ignored;
    (void)norm;
    sg_dns_answers(data, len, &ignored, qname, learn_cb, NULL);
}

/* gathers iovecs (up to 64 KiB) into one buffer for the parser; NULL if that fails */
static uint8_t *gather(const struct iovec *iov, size_t n, size_t limit, size_t *out_len) {
    size_t total = 0;
    for (size_t i = 0; i < n; i++) total += iov[i].iov_len;
    if (total > limit) total = limit;
    if (total > 65536) total = 65536;
    uint8_t *b = malloc(total ? total : 1);
    if (!b) return NULL;
    size_t at = 0;
    for (size_t i = 0; i < n && at < total; i++) {
        size_t take = iov[i].iov_len < total - at ? iov[i].iov_len : total - at;
        memcpy(b + at, iov[i].iov_base, take);
        at += take;
    }
    *out_len = at;
    return b;
}

/* The query a DNS socket is about to send, as one checked copy: the copy is what gets sent, so another thread
 * cannot change the question between the decision and the system call. NULL (errno set) when refused. */
static uint8_t *checked_query(fdinfo *f, const struct iovec *iov, size_t n, size_t *len, stream_state **reserved) {
    *reserved = NULL;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) total += iov[i].iov_len;
    if (total > 65537) { /* no DNS message is that long (2-byte TCP length + 65535) */
        static const char why[] = "a message to a DNS server longer than any DNS message";
        sg_decision d = {.allowed = 0, .reason = SG_INVALID, .detail = why, .detail_len = sizeof why - 1};
        if (refuse(&d, "resolve", -1, NULL, 53, NULL) < 0) return NULL;
    }
    uint8_t *b = gather(iov, n, (size_t)-1, len);
    if (!b) {
        errno = ENOMEM;
        return NULL;
    }
    if (*len < total) { /* monitor mode, oversize: send the original bytes, unchecked beyond 64 KiB */
        free(b);
        b = malloc(total);
        if (!b) {
            errno = ENOMEM;
            return NULL;
        }
        *len = 0;
        for (size_t i = 0; i < n; i++) memcpy(b + *len, iov[i].iov_base, iov[i].iov_len), *len += iov[i].iov_len;
        return b;
    }
    if (check_query(f, b, *len, reserved) < 0) {
        int saved = errno;
        free(b);
        errno = saved;
        return NULL;
    }
    return b;
}

/* A sockaddr copied before it is decided; the copy is what the kernel gets. NULL for a length the kernel
 * refuses anyway (it then sees the original and says EINVAL). */
static const struct sockaddr *copy_address(const struct sockaddr *sa, socklen_t len, struct sockaddr_storage *copy) {
    if (!sa || len > (socklen_t)sizeof *copy) return NULL;
    memcpy(copy, sa, len);
    return (const struct sockaddr *)copy;
}

static void learn_iov(const fdinfo *f, const struct iovec *iov, size_t n, size_t got) {
    size_t len;
    uint8_t *b = gather(iov, n, got, &len);
    if (b) {
        learn_answer(f, b, len);
        free(b);
    }
}

/* ---------------------------------------------------------------------------------------------------------
 * Socket calls
 * ------------------------------------------------------------------------------------------------------- */

EXPORT int connect(int fd, __CONST_SOCKADDR_ARG addr, socklen_t len) {
    struct sockaddr_storage copy;
    const struct sockaddr *sa = copy_address(addr.__sockaddr__, len, &copy);
    if (!sa) return CALL(connect, fd, addr, len);
    if (check_destination(fd, sa, len, "connect") < 0) return -1;
    return CALL(connect, fd, sa, len);
}

EXPORT ssize_t sendto(int fd, const void *data, size_t n, int flags, __CONST_SOCKADDR_ARG addr, socklen_t len) {
    struct sockaddr_storage copy;
    const struct sockaddr *sa = copy_address(addr.__sockaddr__, len, &copy);
    if (addr.__sockaddr__ && !sa) return CALL(sendto, fd, data, n, flags, addr, len);
    if (sa && check_destination(fd, sa, len, "send") < 0) return -1;
    fdinfo *f = dns_fd(fd);
    if (!f) return CALL(sendto, fd, data, n, flags, sa, len);
    struct iovec one = {(void *)data, n};
    size_t qlen;
    stream_state *held;
    uint8_t *query = checked_query(f, &one, 1, &qlen, &held);
    if (!query) return -1;
    ssize_t r = CALL(sendto, fd, query, qlen, flags, sa, len);
    query_sent(held, query, qlen, r);
    free(query);
    return r;
}

EXPORT ssize_t send(int fd, const void *data, size_t n, int flags) {
    fdinfo *f = dns_fd(fd);
    if (!f) return CALL(send, fd, data, n, flags);
    struct iovec one = {(void *)data, n};
    size_t qlen;
    stream_state *held;
    uint8_t *query = checked_query(f, &one, 1, &qlen, &held);
    if (!query) return -1;
    ssize_t r = CALL(send, fd, query, qlen, flags);
    query_sent(held, query, qlen, r);
    free(query);
    return r;
}

EXPORT ssize_t write(int fd, const void *data, size_t n) {
    fdinfo *f = dns_fd(fd);
    if (LIKELY(f == NULL)) return CALL(write, fd, data, n);
    struct iovec one = {(void *)data, n};
    size_t qlen;
    stream_state *held;
    uint8_t *query = checked_query(f, &one, 1, &qlen, &held);
    if (!query) return -1;
    ssize_t r = CALL(write, fd, query, qlen);
    query_sent(held, query, qlen, r);
    free(query);
    return r;
}

EXPORT ssize_t writev(int fd, const struct iovec *iov, int n) {
    fdinfo *f = dns_fd(fd);
    if (!f || n <= 0) return CALL(writev, fd, iov, n);
    size_t qlen;
    stream_state *held;
    uint8_t *query = checked_query(f, iov, (size_t)n, &qlen, &held);
    if (!query) return -1;
    ssize_t r = CALL(write, fd, query, qlen);
    query_sent(held, query, qlen, r);
    free(query);
    return r;
}

/* pwritev2 with offset -1 writes at the current position, which on a socket is a plain write. */
EXPORT ssize_t pwritev2(int fd, const struct iovec *iov, int n, off_t offset, int flags) {
    if (offset != -1 || n <= 0 || !dns_fd(fd)) return CALL(pwritev2, fd, iov, n, offset, flags);
    return writev(fd, iov, n);
}
ssize_t pwritev64v2(int fd, const struct iovec *iov, int n, off64_t offset, int flags);
EXPORT ssize_t pwritev64v2(int fd, const struct iovec *iov, int n, off64_t offset, int flags) {
    if (offset != -1 || n <= 0 || !dns_fd(fd)) return CALL(pwritev64v2, fd, iov, n, offset, flags);
    return writev(fd, iov, n);
}

EXPORT ssize_t sendmsg(int fd, const struct msghdr *msg, int flags) {
    if (!msg) return CALL(sendmsg, fd, msg, flags);
    struct msghdr m = *msg;
    struct sockaddr_storage copy;
    if (msg->msg_name) {
        const struct sockaddr *sa = copy_address(msg->msg_name, msg->msg_namelen, &copy);
        if (!sa) return CALL(sendmsg, fd, msg, flags);
        if (check_destination(fd, sa, msg->msg_namelen, "send") < 0) return -1;
        m.msg_name = (void *)sa;
    }
    fdinfo *f = dns_fd(fd);
    if (!f) return CALL(sendmsg, fd, &m, flags);
    size_t qlen;
    stream_state *held;
    uint8_t *query = checked_query(f, msg->msg_iov, msg->msg_iovlen, &qlen, &held);
    if (!query) return -1;
    struct iovec one = {query, qlen};
    m.msg_iov = &one;
    m.msg_iovlen = 1;
    ssize_t r = CALL(sendmsg, fd, &m, flags);
    query_sent(held, query, qlen, r);
    free(query);
    return r;
}

EXPORT int sendmmsg(int fd, struct mmsghdr *vec, unsigned int n, int flags) {
    if (!vec || n == 0) return CALL(sendmmsg, fd, vec, n, flags);
    if (n > 1024) n = 1024; /* UIO_MAXIOV: the kernel sends at most that many */
    /* Messages are decided in order on copies (what the kernel gets); the first refused one ends the batch,
     * as a partial send would. */
    struct batch {
        struct mmsghdr m;
        struct sockaddr_storage name;
        struct iovec one;
        uint8_t *query;
        stream_state *held;
    } *copies;
    fdinfo *dns = dns_fd(fd);
    if (dns && dns->stream) n = 1; /* a DNS stream moves on one checked write at a time (check_query) */
    copies = calloc(n, sizeof *copies);
    if (!copies) {
        errno = ENOMEM;
        return -1;
    }
    unsigned int ok = 0;
    int saved = 0;
    for (; ok < n; ok++) {
        struct batch *b = &copies[ok];
        b->m = vec[ok];
        const struct msghdr *m = &vec[ok].msg_hdr;
        if (m->msg_name) {
            const struct sockaddr *sa = copy_address(m->msg_name, m->msg_namelen, &b->name);
            if (sa && check_destination(fd, sa, m->msg_namelen, "send") < 0) break;
            if (sa) b->m.msg_hdr.msg_name = (void *)sa;
        }
        fdinfo *f = dns_fd(fd);
        if (f) {
            size_t qlen;
            b->query = checked_query(f, m->msg_iov, m->msg_iovlen, &qlen, &b->held);
            if (!b->query) break;
            b->one = (struct iovec){b->query, qlen};
            b->m.msg_hdr.msg_iov = &b->one;
            b->m.msg_hdr.msg_iovlen = 1;
        }
    }
    saved = errno;
    int r = -1;
    if (ok > 0) {
        struct mmsghdr *send_vec = malloc(sizeof *send_vec * ok);
        if (send_vec) {
            for (unsigned int i = 0; i < ok; i++) send_vec[i] = copies[i].m;
            r = CALL(sendmmsg, fd, send_vec, ok, flags);
            saved = errno;
            for (int i = 0; i < r; i++) vec[i].msg_len = send_vec[i].msg_len;
            if (copies[0].held) query_sent(copies[0].held, copies[0].query, copies[0].one.iov_len, r > 0 ? (ssize_t)send_vec[0].msg_len : -1);
            free(send_vec);
        } else {
            saved = ENOMEM;
            if (copies[0].held) query_sent(copies[0].held, copies[0].query, copies[0].one.iov_len, -1);
        }
    }
    for (unsigned int i = 0; i < n; i++) free(copies[i].query);
    free(copies);
    errno = saved;
    return r;
}

EXPORT ssize_t read(int fd, void *data, size_t n) {
    ssize_t got = CALL(read, fd, data, n);
    if (got > 0) {
        fdinfo *f = dns_fd(fd);
        if (UNLIKELY(f != NULL)) learn_answer(f, data, (size_t)got);
    }
    return got;
}

EXPORT ssize_t __read_chk(int fd, void *data, size_t n, size_t size) {
    ssize_t got = CALL(__read_chk, fd, data, n, size);
    fdinfo *f = got > 0 ? dns_fd(fd) : NULL;
    if (f) learn_answer(f, data, (size_t)got);
    return got;
}

EXPORT ssize_t readv(int fd, const struct iovec *iov, int n) {
    ssize_t got = CALL(readv, fd, iov, n);
    fdinfo *f = got > 0 ? dns_fd(fd) : NULL;
    if (f) learn_iov(f, iov, (size_t)n, (size_t)got);
    return got;
}

EXPORT ssize_t recv(int fd, void *data, size_t n, int flags) {
    ssize_t got = CALL(recv, fd, data, n, flags);
    fdinfo *f = got > 0 && !(flags & MSG_PEEK) ? dns_fd(fd) : NULL;
    if (f) learn_answer(f, data, (size_t)got < n ? (size_t)got : n);
    return got;
}

EXPORT ssize_t __recv_chk(int fd, void *data, size_t n, size_t size, int flags) {
    ssize_t got = CALL(__recv_chk, fd, data, n, size, flags);
    fdinfo *f = got > 0 && !(flags & MSG_PEEK) ? dns_fd(fd) : NULL;
    if (f) learn_answer(f, data, (size_t)got < n ? (size_t)got : n);
    return got;
}

EXPORT ssize_t recvfrom(int fd, void *data, size_t n, int flags, __SOCKADDR_ARG addr, socklen_t *len) {
    ssize_t got = CALL(recvfrom, fd, data, n, flags, addr, len);
    fdinfo *f = got > 0 && !(flags & MSG_PEEK) ? dns_fd(fd) : NULL;
    if (f) learn_answer(f, data, (size_t)got < n ? (size_t)got : n);
    return got;
}

EXPORT ssize_t __recvfrom_chk(int fd, void *data, size_t n, size_t size, int flags, __SOCKADDR_ARG addr, socklen_t *len) {
    ssize_t got = CALL(__recvfrom_chk, fd, data, n, size, flags, addr, len);
    fdinfo *f = got > 0 && !(flags & MSG_PEEK) ? dns_fd(fd) : NULL;
    if (f) learn_answer(f, data, (size_t)got < n ? (size_t)got : n);
    return got;
}

/* A descriptor that arrived from outside this library's view (inherited across exec, received over SCM_RIGHTS,
 * duplicated by a raw system call): a socket connected to port 53 is a DNS socket here too. */
static void adopt(int fd) {
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISSOCK(st.st_mode)) return;
    int type = 0;
    socklen_t tl = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) < 0 || (type != SOCK_DGRAM && type != SOCK_STREAM)) return;
    struct sockaddr_storage peer;
    socklen_t pl = sizeof peer;
    if (getpeername(fd, (struct sockaddr *)&peer, &pl) < 0) return;
    sg_addr a;
    long port;
    if (!sockaddr_to_addr((const struct sockaddr *)&peer, pl, 0, &a, &port) || port != 53) return;
    if (mark_dns(fd, type == SOCK_STREAM) < 0) { /* cannot be followed: no DNS through it */
        shutdown(fd, SHUT_WR);
        say("sockguard: native layer: a socket to a DNS server could not be followed; its sending side is shut\n");
    }
}

static void adopt_rights(const struct msghdr *msg) {
    if (!msg || !msg->msg_control || msg->msg_controllen < sizeof(struct cmsghdr)) return;
    for (struct cmsghdr *c = CMSG_FIRSTHDR((struct msghdr *)msg); c; c = CMSG_NXTHDR((struct msghdr *)msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS || c->cmsg_len < CMSG_LEN(0)) continue;
        size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        const unsigned char *data = CMSG_DATA(c);
        for (size_t i = 0; i < n; i++) {
            int received;
            memcpy(&received, data + i * sizeof(int), sizeof(int));
            adopt(received);
        }
    }
}

/* At start-up: the descriptors this program inherited (the table of the program before exec is gone). */
__attribute__((constructor)) static void adopt_inherited(void) {
    if (!getenv("SOCKGUARD_NATIVE_POLICY")) return; /* nothing preloads a policy: nothing to follow */
    DIR *dir = opendir("/proc/self/fd");
    if (!dir) return;
    int own = dirfd(dir);
    for (struct dirent *e; (e = readdir(dir));) {
        char *end;
        long fd = strtol(e->d_name, &end, 10);
        if (*end || end == e->d_name || fd == own || fd < 0 || fd > 0x7fffffff) continue;
        adopt((int)fd);
    }
    closedir(dir);
}

EXPORT ssize_t recvmsg(int fd, struct msghdr *msg, int flags) {
    ssize_t got = CALL(recvmsg, fd, msg, flags);
    if (got >= 0 && msg && msg->msg_controllen) adopt_rights(msg);
    fdinfo *f = got > 0 && !(flags & MSG_PEEK) ? dns_fd(fd) : NULL;
    if (f) learn_iov(f, msg->msg_iov, msg->msg_iovlen, (size_t)got);
    return got;
}

/* A duplicate of a DNS socket is a DNS socket: its queries are decided too. */
static int copy_mark(int from, int to) {
    fdinfo *t = fdtab;
    int limit = __atomic_load_n(&fd_max, __ATOMIC_ACQUIRE);
    if (to < 0 || !t || from < 0 || from >= limit) return to;
    if (to >= limit) { /* a duplicate past the table could not be followed: refused if it is a DNS socket */
        if (t[from].dns) {
            CALL(close, to);
            errno = EMFILE;
            return -1;
        }
        return to;
    }
    if (t[from].dns) {
        t[to] = t[from];
        t[to].nids = 0;
    } else {
        t[to].dns = 0;
    }
    return to;
}

EXPORT int dup(int fd) { return copy_mark(fd, CALL(dup, fd)); }
EXPORT int dup2(int fd, int to) { return copy_mark(fd, CALL(dup2, fd, to)); }
EXPORT int dup3(int fd, int to, int flags) { return copy_mark(fd, CALL(dup3, fd, to, flags)); }

EXPORT int fcntl(int fd, int cmd, ...) {
    va_list ap;
    va_start(ap, cmd);
    void *arg = va_arg(ap, void *); /* an int or a pointer: passed on as the same register-sized value */
    va_end(ap);
    int r = CALL(fcntl, fd, cmd, arg);
    if (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC) copy_mark(fd, r);
    return r;
}

int fcntl64(int fd, int cmd, ...);
EXPORT int fcntl64(int fd, int cmd, ...) { /* what fcntl is with _FILE_OFFSET_BITS=64 */
    va_list ap;
    va_start(ap, cmd);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    int r = CALL(fcntl64, fd, cmd, arg);
    if (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC) copy_mark(fd, r);
    return r;
}

EXPORT int close(int fd) {
    fdinfo *t = fdtab;
    if (t && fd >= 0 && fd < __atomic_load_n(&fd_max, __ATOMIC_ACQUIRE) && t[fd].dns) {
        t[fd].dns = 0;
        if (t[fd].stream) forget_stream(t[fd].ino);
    }
    return CALL(close, fd);
}

EXPORT int socket(int domain, int type, int protocol) {
    /* raw IP, packet (AF_PACKET, and Linux's obsolete AF_INET SOCK_PACKET) and ICMP datagram ("ping") sockets: the
     * port of an ICMP echo's address means nothing, so no port-scoped rule can hold one (sockguard/rawsockets.py) */
    int inet = domain == AF_INET || domain == AF_INET6;
    int raw = (inet && ((type & 0xF) == SOCK_RAW || (type & 0xF) == SOCK_PACKET ||
                        ((type & 0xF) == SOCK_DGRAM && (protocol == IPPROTO_ICMP || protocol == IPPROTO_ICMPV6)) ||
                        protocol == IPPROTO_SCTP /* multi-homed: a peer's other addresses are reached unchecked */)) ||
              domain == AF_PACKET;
    if (UNLIKELY(raw) && active() && state == ST_OK && !(policy.flags & SG_FLAG_RAW)) {
        static const char why[] = "raw, packet, ICMP and SCTP sockets are disabled (allow_raw = false)";
        sg_decision d = {.allowed = 0, .reason = SG_FAMILY, .detail = why, .detail_len = sizeof why - 1};
        if (refuse(&d, "socket", -1, NULL, -1, NULL) < 0) return -1;
    }
    return CALL(socket, domain, type, protocol);
}

/* syscall(): connect/sendto/sendmsg/sendmmsg/write/writev/socket go through the checks above; io_uring_setup is refused
 * (a ring's submissions reach the kernel with no call to interpose; libuv then falls back to threads). */
EXPORT long syscall(long number, ...) {
    va_list ap;
    va_start(ap, number);
    long a[6];
    for (int i = 0; i < 6; i++) a[i] = va_arg(ap, long);
    va_end(ap);
    switch (number) {
#ifdef SYS_connect
    case SYS_connect:
        return connect((int)a[0], (const struct sockaddr *)a[1], (socklen_t)a[2]);
#endif
#ifdef SYS_sendto
    case SYS_sendto:
        return sendto((int)a[0], (const void *)a[1], (size_t)a[2], (int)a[3], (const struct sockaddr *)a[4], (socklen_t)a[5]);
#endif
#ifdef SYS_sendmsg
    case SYS_sendmsg:
        return sendmsg((int)a[0], (const struct msghdr *)a[1], (int)a[2]);
#endif
#ifdef SYS_sendmmsg
    case SYS_sendmmsg:
        return sendmmsg((int)a[0], (struct mmsghdr *)a[1], (unsigned)a[2], (int)a[3]);
#endif
#ifdef SYS_write
    case SYS_write: /* a DNS socket's query */
        return write((int)a[0], (const void *)a[1], (size_t)a[2]);
#endif
#ifdef SYS_writev
    case SYS_writev:
        return writev((int)a[0], (const struct iovec *)a[1], (int)a[2]);
#endif
#ifdef SYS_pwritev2
    case SYS_pwritev2: /* (fd, iov, n, pos_l, pos_h, flags): pos -1 is a plain write */
        if (a[3] == -1 && dns_fd((int)a[0])) return writev((int)a[0], (const struct iovec *)a[1], (int)a[2]);
        break;
#endif
#ifdef SYS_socket
    case SYS_socket: /* raw and packet sockets */
        return socket((int)a[0], (int)a[1], (int)a[2]);
#endif
    /* duplicates of a DNS socket stay DNS sockets */
#ifdef SYS_dup
    case SYS_dup:
        return dup((int)a[0]);
#endif
#ifdef SYS_dup2
    case SYS_dup2:
        return dup2((int)a[0], (int)a[1]);
#endif
#ifdef SYS_dup3
    case SYS_dup3:
        return dup3((int)a[0], (int)a[1], (int)a[2]);
#endif
#ifdef SYS_fcntl
    case SYS_fcntl:
        return fcntl((int)a[0], (int)a[1], a[2]);
#endif
#ifdef SYS_recvmsg
    case SYS_recvmsg:
        return recvmsg((int)a[0], (struct msghdr *)a[1], (int)a[2]);
#endif
#ifdef SYS_pidfd_getfd
    case SYS_pidfd_getfd: { /* another process's descriptor (or this one's), copied in */
        long got = CALL(syscall, number, a[0], a[1], a[2], a[3], a[4], a[5]);
        if (got >= 0) adopt((int)got);
        return got;
    }
#endif
#ifdef SYS_io_uring_setup
    case SYS_io_uring_setup:
        if (active()) {
            sg_decision d = {.allowed = 0, .reason = SG_IO_URING, .detail = NULL, .detail_len = 0};
            report(&d, "io_uring_setup", -1, NULL, -1, NULL);
            if (enforcing()) {
                errno = ENOSYS;
                return -1;
            }
        }
        break;
#endif
    default:
        break;
    }
    return CALL(syscall, number, a[0], a[1], a[2], a[3], a[4], a[5]);
}

/* ---------------------------------------------------------------------------------------------------------
 * Name functions: the name is decided before any query leaves (glibc's resolver sends its packets through
 * internal calls no preload can see), the answers are admitted and learned.
 * ------------------------------------------------------------------------------------------------------- */

static int blocked_gai(void) {
    errno = EACCES;
    return EAI_SYSTEM;
}

/* ---------------------------------------------------------------------------------------------------------
 * The resolver's environment (sockguard/resolvconf.py for the Python layer). glibc does not always ask DNS for
 * the name it is given: with a search list (resolv.conf `search`/`domain`, LOCALDOMAIN, or the domain of a
 * dotted host name), a name with fewer dots than `ndots` (resolv.conf, RES_OPTIONS) is first tried with each
 * search domain appended, and a name not found as it is is tried with them afterwards; HOSTALIASES rewrites a
 * single-label name. Each of those queries carries a name the policy never decided
 * (api.allowed.test.attacker.example, in a zone the environment chose). So a relative name is handed over as it
 * is only when every name glibc would ask for is allowed (or /etc/hosts answers it first); otherwise the
 * candidates are tried here, in glibc's order, as absolute names (to which glibc applies none of this), and only
 * the allowed ones are asked for.
 * ------------------------------------------------------------------------------------------------------- */

#define SEARCH_MAX 8 /* MAXDNSRCH (6) + the name itself, and one spare */

typedef int (*res_ninit_fn)(res_state);
typedef void (*res_nclose_fn)(res_state);

/* The names glibc's res_search would ask for, in order, for the relative name `name` (normalised), with the
 * search list and ndots of `st`. Returns their count. */
static int candidates_of(const char *name, const struct __res_state *st, char out[SEARCH_MAX][SG_NAME_MAX]) {
    int dots = 0, n = 0;
    for (const char *c = name; *c; c++) dots += *c == '.';
    size_t len = strlen(name);
    if (dots >= (int)st->ndots) snprintf(out[n++], SG_NAME_MAX, "%s", name);
    for (int i = 0; i < MAXDNSRCH && st->dnsrch[i] && n < SEARCH_MAX - 1; i++) {
        const char *domain = st->dnsrch[i];
        size_t dlen = strlen(domain);
        while (dlen && domain[dlen - 1] == '.') dlen--;
        if (!dlen) continue;
        if (len + 1 + dlen > 253) {
            out[n++][0] = '\0'; /* too long to be a name: never asked for (and never allowed) */
            continue;
        }
        snprintf(out[n++], SG_NAME_MAX, "%s.%.*s", name, (int)dlen, domain);
    }
    if (dots < (int)st->ndots) snprintf(out[n++], SG_NAME_MAX, "%s", name);
    return n;
}

/* The candidates with the configuration as it is now (resolv.conf, LOCALDOMAIN, RES_OPTIONS, the host name's
 * domain: read by glibc's own res_ninit). 0 when it cannot be read (then the name alone, absolute, is used). */
static int search_candidates(const char *name, char out[SEARCH_MAX][SG_NAME_MAX]) {
    static res_ninit_fn ninit;
    static res_nclose_fn nclose;
    if (!ninit) { /* in libc since glibc 2.34; in libresolv before, found if the program loaded it */
        resolve_dl();
        ninit = (res_ninit_fn)libc_symbol("__res_ninit");
        nclose = (res_nclose_fn)libc_symbol("__res_nclose");
        if ((!ninit || !nclose) && sg_real_dlsym) {
            ninit = (res_ninit_fn)sg_real_dlsym(RTLD_DEFAULT, "__res_ninit");
            nclose = (res_nclose_fn)sg_real_dlsym(RTLD_DEFAULT, "__res_nclose");
        }
        if (!ninit || !nclose) return 0;
    }
    struct __res_state *st = calloc(1, sizeof *st);
    if (!st) return 0;
    if (ninit(st) < 0) {
        free(st);
        return 0;
    }
    int n = candidates_of(name, st, out);
    nclose(st);
    free(st);
    return n;
}

/* The thread's own resolver state (`_res`) once initialised: glibc keeps using it (with whatever the program
 * set in it, or the variables as they were then) until resolv.conf changes. NULL before. */
static const struct __res_state *thread_resolver(void) {
    typedef struct __res_state *(*res_state_fn)(void);
    static res_state_fn get;
    if (!get) get = (res_state_fn)libc_symbol("__res_state");
    const struct __res_state *st = get ? get() : NULL;
    return st && (st->options & RES_INIT) ? st : NULL;
}

/* Whether glibc's files backend answers `name` for `family` before any DNS query: nsswitch.conf's hosts line
 * starts with `files`, and /etc/hosts lists the name with an address of that family. */
static int hosts_answers(const char *name, int family) {
    int files_first = 0;
    char line[1024];
    FILE *f = fopen("/etc/nsswitch.conf", "re");
    while (f && fgets(line, sizeof line, f)) {
        char *save, *word = strtok_r(line, " \t\r\n", &save);
        if (word && strcmp(word, "hosts:") == 0) {
            word = strtok_r(NULL, " \t\r\n", &save);
            files_first = word && strcmp(word, "files") == 0;
            break;
        }
    }
    if (f) fclose(f);
    if (!files_first) return 0;
    int found = 0;
    f = fopen("/etc/hosts", "re");
    while (f && !found && fgets(line, sizeof line, f)) {
        char *hash = strchr(line, '#');
        if (hash) *hash = 0;
        char *save, *addr = strtok_r(line, " \t\r\n", &save);
        if (!addr) continue;
        char *zone = strchr(addr, '%');
        if (zone) *zone = 0;
        unsigned char buf[16];
        int v = inet_pton(AF_INET, addr, buf) == 1 ? AF_INET : inet_pton(AF_INET6, addr, buf) == 1 ? AF_INET6 : 0;
        if (!v || (family != AF_UNSPEC && family != v)) continue;
        for (char *w = strtok_r(NULL, " \t\r\n", &save); w && !found; w = strtok_r(NULL, " \t\r\n", &save)) {
            size_t wl = strlen(w);
            while (wl && w[wl - 1] == '.') wl--;
            found = wl == strlen(name) && strncasecmp(w, name, wl) == 0;
        }
    }
    if (f) fclose(f);
    return found;
}

enum { AS_GIVEN = 0, SEARCHED = 1 };

/* `name` := the absolute candidate `query` without its dot (the name the answers are admitted through). */
static void answered_by(char name[SG_NAME_MAX], const char *query) {
    size_t q = strlen(query);
    if (q && q - 1 < SG_NAME_MAX) {
        memcpy(name, query, q - 1);
        name[q - 1] = 0;
    }
}

/* How an allowed lookup of `node` (normalised: `name`) reaches glibc: AS_GIVEN when glibc will ask DNS for
 * nothing the policy did not allow; else SEARCHED, with the candidates (absolute, allowed ones only, in glibc's
 * order) in `queries` and their count in *count. `files`: /etc/hosts may answer first (not for res_search).
 * `given_state`: the res_state a res_n* call names (glibc uses that one), else NULL. */
static int lookup_plan(const char *node, const char *name, long port, int family, int files,
                       const struct __res_state *given_state, char queries[SEARCH_MAX][SG_NAME_MAX + 2], int *count) {
    *count = 0;
    size_t given = strlen(node);
    if (given && node[given - 1] == '.') return AS_GIVEN; /* absolute: no search list, no ndots, no alias */
    if (files && hosts_answers(name, family)) return AS_GIVEN;
    char candidates[SEARCH_MAX][SG_NAME_MAX];
    int n = given_state ? candidates_of(name, given_state, candidates) : search_candidates(name, candidates);
    int aliases = !strchr(name, '.') && getenv("HOSTALIASES");
    int all_allowed = n > 0 && !aliases;
    for (int i = 0; i < n; i++) {
        sg_decision d;
        d.allowed = 0;
        if (candidates[i][0]) sg_check_name(&policy, candidates[i], port, &d);
        if (d.allowed) snprintf(queries[(*count)++], SG_NAME_MAX + 2, "%s.", candidates[i]);
        else all_allowed = 0;
    }
    /* handed over as given only if glibc's own state (which it may use instead) adds nothing either */
    const struct __res_state *own = given_state ? NULL : thread_resolver();
    if (all_allowed && own) {
        char more[SEARCH_MAX][SG_NAME_MAX];
        int m = candidates_of(name, own, more);
        for (int i = 0; i < m && all_allowed; i++) {
            sg_decision d;
            d.allowed = 0;
            if (more[i][0]) sg_check_name(&policy, more[i], port, &d);
            all_allowed = d.allowed;
        }
    }
    if (all_allowed) return AS_GIVEN;
    if (n == 0) snprintf(queries[(*count)++], SG_NAME_MAX + 2, "%s.", name); /* no configuration: the name alone */
    return SEARCHED;
}

static int getaddrinfo_checked(const char *node, const char *service, const struct addrinfo *hints, struct addrinfo **res) {
    if (!node || (hints && (hints->ai_flags & AI_NUMERICHOST)) || !active()) return CALL(getaddrinfo, node, service, hints, res);
    char name[SG_NAME_MAX];
    int numeric;
    long port = service_port(service);
    if (check_lookup(node, port, name, &numeric) < 0) return blocked_gai();
    int r;
    char queries[SEARCH_MAX][SG_NAME_MAX + 2];
    int count;
    if (numeric || state != ST_OK ||
        lookup_plan(node, name, port, hints ? hints->ai_family : AF_UNSPEC, 1, NULL, queries, &count) == AS_GIVEN) {
        r = CALL(getaddrinfo, node, service, hints, res);
    } else {
        /* the allowed candidates, absolute, in glibc's order: one that does not exist moves on to the next */
        r = EAI_NONAME;
        for (int i = 0; i < count; i++) {
            r = CALL(getaddrinfo, queries[i], service, hints, res);
            if (r != EAI_NONAME && r != EAI_NODATA && r != EAI_ADDRFAMILY) {
                if (r == 0) answered_by(name, queries[i]); /* admitted as reached through that name */
                break;
            }
        }
    }
    if (r != 0 || numeric || state != ST_OK) return r;
    /* drop refused answers (each logged); none left: the caller learns why, never an empty answer */
    struct addrinfo **link = res, *kept = NULL;
    int refused = 0;
    while (*link) {
        struct addrinfo *ai = *link;
        sg_addr a;
        long ignored;
        if (ai->ai_addr && sockaddr_to_addr(ai->ai_addr, ai->ai_addrlen, 0, &a, &ignored) && !admit(name, port, &a)) {
            *link = ai->ai_next;
            if (ai->ai_canonname && *link && !(*link)->ai_canonname) { /* keep the canonical name on the head */
                (*link)->ai_canonname = ai->ai_canonname;
                ai->ai_canonname = NULL;
            }
            ai->ai_next = NULL;
            REAL(freeaddrinfo)(ai);
            refused++;
            continue;
        }
        kept = ai;
        link = &ai->ai_next;
    }
    if (!*res && refused) return blocked_gai();
    (void)kept;
    return 0;
}

EXPORT int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints, struct addrinfo **res) {
    return getaddrinfo_checked(node, service, hints, res);
}

/* getaddrinfo_a: glibc resolves the list on its own threads through internal calls, so the requests are
 * answered here through the checked getaddrinfo, one after the other, and then notified as asked. */
static void *notify_thread(void *arg) {
    struct sigevent *sev = arg;
    sev->sigev_notify_function(sev->sigev_value);
    free(sev);
    return NULL;
}

EXPORT int getaddrinfo_a(int mode, struct gaicb *list[], int n, struct sigevent *sev) {
    if (!active()) return CALL(getaddrinfo_a, mode, list, n, sev);
    for (int i = 0; i < n; i++) {
        if (!list[i]) continue;
        list[i]->ar_result = NULL;
        list[i]->__return = getaddrinfo_checked(list[i]->ar_name, list[i]->ar_service, list[i]->ar_request, &list[i]->ar_result);
    }
    if (mode == GAI_NOWAIT && sev) {
        if (sev->sigev_notify == SIGEV_SIGNAL) {
            sigqueue(getpid(), sev->sigev_signo, sev->sigev_value);
        } else if (sev->sigev_notify == SIGEV_THREAD && sev->sigev_notify_function) {
            struct sigevent *copy = malloc(sizeof *copy);
            pthread_t t;
            if (copy) {
                *copy = *sev;
                pthread_attr_t attr;
                pthread_attr_init(&attr);
                pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
                if (pthread_create(&t, &attr, notify_thread, copy) != 0) free(copy);
                pthread_attr_destroy(&attr);
            }
        }
    }
    return 0;
}

/* hostent results: refused addresses removed from h_addr_list in place */
static struct hostent *filter_hostent(struct hostent *h, const char *name, int *herr) {
    if (!h || state != ST_OK) return h;
    char **out = h->h_addr_list;
    int refused = 0;
    for (char **in = h->h_addr_list; *in; in++) {
        sg_addr a;
        if (h->h_addrtype == AF_INET && h->h_length == 4) {
            const uint8_t *b = (const uint8_t *)*in;
            a = (sg_addr){4, 0, ((uint32_t)b[0] << 24) | ((uint32_t)b[1] << 16) | ((uint32_t)b[2] << 8) | b[3]};
        } else if (h->h_addrtype == AF_INET6 && h->h_length == 16) {
            const uint8_t *b = (const uint8_t *)*in;
            a.v = 6, a.hi = 0, a.lo = 0;
            for (int k = 0; k < 8; k++) a.hi = (a.hi << 8) | b[k];
            for (int k = 8; k < 16; k++) a.lo = (a.lo << 8) | b[k];
        } else {
            *out++ = *in;
            continue;
        }
        if (admit(name, -1, &a)) *out++ = *in;
        else refused++;
    }
    *out = NULL;
    if (refused && !h->h_addr_list[0]) {
        *herr = NO_RECOVERY;
        errno = EACCES;
        return NULL;
    }
    return h;
}

#define BYNAME_PRELUDE(host)                                                                         \
    char name[SG_NAME_MAX];                                                                          \
    int numeric = 0, checked = (host) && active();                               \
    if (checked && check_lookup((host), -1, name, &numeric) < 0)

/* The hostent functions through the lookup plan: as given, or the allowed candidates in glibc's order (a
 * candidate that does not exist moves on to the next). `call` is the real function for one query. */
#define BYNAME_SEARCH(host, family, found, call)                                                     \
    do {                                                                                             \
        char queries_[SEARCH_MAX][SG_NAME_MAX + 2];                                                  \
        int count_;                                                                                  \
        if (!checked || numeric || state != ST_OK ||                                                 \
            lookup_plan((host), name, -1, (family), 1, NULL, queries_, &count_) == AS_GIVEN) {             \
            const char *query_ = (host);                                                             \
            call;                                                                                    \
        } else {                                                                                     \
            for (int i_ = 0; i_ < count_; i_++) {                                                    \
                const char *query_ = queries_[i_];                                                   \
                call;                                                                                \
                if (found) {                                                                         \
                    answered_by(name, query_);                                                       \
                    break;                                                                           \
                }                                                                                    \
                if (herr_ != HOST_NOT_FOUND && herr_ != NO_DATA) break;                              \
            }                                                                                        \
        }                                                                                            \
    } while (0)

EXPORT struct hostent *gethostbyname(const char *host) {
    BYNAME_PRELUDE(host) {
        h_errno = NO_RECOVERY;
        return NULL;
    }
    struct hostent *h = NULL;
    int herr_ = HOST_NOT_FOUND;
    h_errno = HOST_NOT_FOUND;
    BYNAME_SEARCH(host, AF_INET, h, (h = CALL(gethostbyname, query_), herr_ = h_errno));
    return checked && !numeric ? filter_hostent(h, name, &h_errno) : h;
}

EXPORT struct hostent *gethostbyname2(const char *host, int af) {
    BYNAME_PRELUDE(host) {
        h_errno = NO_RECOVERY;
        return NULL;
    }
    struct hostent *h = NULL;
    int herr_ = HOST_NOT_FOUND;
    h_errno = HOST_NOT_FOUND;
    BYNAME_SEARCH(host, af, h, (h = CALL(gethostbyname2, query_, af), herr_ = h_errno));
    return checked && !numeric ? filter_hostent(h, name, &h_errno) : h;
}

EXPORT int gethostbyname_r(const char *host, struct hostent *ret, char *b, size_t bl, struct hostent **result, int *herr) {
    BYNAME_PRELUDE(host) {
        *result = NULL;
        *herr = NO_RECOVERY;
        return EACCES;
    }
    int r = 0, herr_ = HOST_NOT_FOUND;
    *result = NULL;
    *herr = HOST_NOT_FOUND;
    BYNAME_SEARCH(host, AF_INET, r == 0 && *result,
                  (r = CALL(gethostbyname_r, query_, ret, b, bl, result, herr), herr_ = r == 0 ? *herr : -1));
    if (r == 0 && checked && !numeric && *result && !filter_hostent(*result, name, herr)) {
        *result = NULL;
        return EACCES;
    }
    return r;
}

EXPORT int gethostbyname2_r(const char *host, int af, struct hostent *ret, char *b, size_t bl, struct hostent **result, int *herr) {
    BYNAME_PRELUDE(host) {
        *result = NULL;
        *herr = NO_RECOVERY;
        return EACCES;
    }
    int r = 0, herr_ = HOST_NOT_FOUND;
    *result = NULL;
    *herr = HOST_NOT_FOUND;
    BYNAME_SEARCH(host, af, r == 0 && *result,
                  (r = CALL(gethostbyname2_r, query_, af, ret, b, bl, result, herr), herr_ = r == 0 ? *herr : -1));
    if (r == 0 && checked && !numeric && *result && !filter_hostent(*result, name, herr)) {
        *result = NULL;
        return EACCES;
    }
    return r;
}

static int reverse_blocked(const void *addr, socklen_t len, int type) {
    if (!addr || !active()) return 0;
    sg_addr a;
    const uint8_t *b = addr;
    if (type == AF_INET && len >= 4) {
        a = (sg_addr){4, 0, ((uint32_t)b[0] << 24) | ((uint32_t)b[1] << 16) | ((uint32_t)b[2] << 8) | b[3]};
    } else if (type == AF_INET6 && len >= 16) {
        a.v = 6, a.hi = 0, a.lo = 0;
        for (int k = 0; k < 8; k++) a.hi = (a.hi << 8) | b[k];
        for (int k = 8; k < 16; k++) a.lo = (a.lo << 8) | b[k];
    } else {
        return 0;
    }
    return check_reverse(&a) < 0;
}

EXPORT struct hostent *gethostbyaddr(const void *addr, socklen_t len, int type) {
    if (reverse_blocked(addr, len, type)) {
        h_errno = NO_RECOVERY;
        return NULL;
    }
    return CALL(gethostbyaddr, addr, len, type);
}

EXPORT int gethostbyaddr_r(const void *addr, socklen_t len, int type, struct hostent *ret, char *b, size_t bl,
                           struct hostent **result, int *herr) {
    if (reverse_blocked(addr, len, type)) {
        *result = NULL;
        *herr = NO_RECOVERY;
        return EACCES;
    }
    return CALL(gethostbyaddr_r, addr, len, type, ret, b, bl, result, herr);
}

EXPORT int getnameinfo(const struct sockaddr *sa, socklen_t salen, char *host, socklen_t hostlen, char *serv,
                       socklen_t servlen, int flags) {
    if (sa && host && hostlen && !(flags & NI_NUMERICHOST) && active()) {
        sg_addr a;
        long port;
        if (sockaddr_to_addr(sa, salen, 0, &a, &port) && check_reverse(&a) < 0) {
            if (flags & NI_NAMEREQD) return EAI_NONAME;
            flags |= NI_NUMERICHOST; /* what glibc answers when the PTR query finds nothing */
        }
    }
    return CALL(getnameinfo, sa, salen, host, hostlen, serv, servlen, flags);
}

/* res_*: the question is decided before it is sent; the answer's addresses are learned. */
static int check_res_name(const char *dname, int type) {
    if (!dname || !active()) return 0;
    sg_decision d;
    if (state == ST_ERROR) {
        config_error(&d);
        return refuse(&d, "resolve", -1, dname, -1, NULL);
    }
    sg_addr reverse;
    if (type == ns_t_ptr && sg_dns_reverse_name(dname, &reverse)) return check_reverse(&reverse);
    sg_check_dns_name(&policy, dname, -1, &d);
    return refuse(&d, "resolve", -1, dname, -1, NULL);
}

static void learn_res_answer(const unsigned char *answer, int len) {
    if (len <= 0 || state != ST_OK || !answer) return;
    char qname[SG_NAME_MAX];
    uint16_t id;
    sg_dns_answers(answer, (size_t)len, &id, qname, learn_cb, NULL);
}

static int check_res_message(const unsigned char *msg, int len) {
    if (!active()) return 0;
    sg_decision d;
    if (state == ST_ERROR) {
        config_error(&d);
        return refuse(&d, "resolve", -1, NULL, -1, NULL);
    }
    uint16_t id;
    int r = len > 0 && msg ? sg_dns_questions(msg, (size_t)len, &id, question_cb, NULL) : -1;
    if (r < 0) {
        static const char why[] = "res_send of a message that is not a complete DNS query";
        d = (sg_decision){.allowed = 0, .reason = SG_INVALID, .detail = why, .detail_len = sizeof why - 1};
        return refuse(&d, "resolve", -1, NULL, -1, NULL);
    }
    return r > 0 && enforcing() ? -1 : 0;
}

static int res_blocked(res_state statp) {
    if (statp) statp->res_h_errno = NO_RECOVERY;
    h_errno = NO_RECOVERY;
    errno = EACCES;
    return -1;
}

#define RES_QUERY_LIKE(fn, real)                                                                     \
    EXPORT int fn(const char *dname, int klass, int type, unsigned char *answer, int anslen) {       \
        if (check_res_name(dname, type) < 0) return res_blocked(NULL);                               \
        int r = CALL(real, dname, klass, type, answer, anslen);                                      \
        learn_res_answer(answer, r < anslen ? r : anslen);                                           \
        return r;                                                                                    \
    }
#define RES_NQUERY_LIKE(fn, real)                                                                    \
    EXPORT int fn(res_state statp, const char *dname, int klass, int type, unsigned char *answer, int anslen) { \
        if (check_res_name(dname, type) < 0) return res_blocked(statp);                              \
        int r = CALL(real, statp, dname, klass, type, answer, anslen);                               \
        learn_res_answer(answer, r < anslen ? r : anslen);                                           \
        return r;                                                                                    \
    }

/* res_search applies the search list (from `statp`, or the thread's state): a relative name is asked for as
 * given only when every candidate is allowed, else the allowed candidates are asked for as absolute names in
 * glibc's order (the first that answers; one that does not exist moves on). Returns -2 to ask as given. */
static int searched(res_state statp, const char *dname, int klass, int type, unsigned char *answer, int anslen,
                    int (*query)(res_state, const char *, int, int, unsigned char *, int)) {
    if (!dname || !active() || state != ST_OK) return -2;
    sg_addr reverse;
    if (type == ns_t_ptr && sg_dns_reverse_name(dname, &reverse)) return -2;
    char name[SG_NAME_MAX], queries[SEARCH_MAX][SG_NAME_MAX + 2];
    const char *why;
    int count;
    if (sg_normalize_host(dname, strlen(dname), name, &why) < 0) return -2;
    if (lookup_plan(dname, name, -1, AF_UNSPEC, 0, statp, queries, &count) == AS_GIVEN) return -2;
    int r = -1;
    if (statp) statp->res_h_errno = HOST_NOT_FOUND;
    h_errno = HOST_NOT_FOUND;
    for (int i = 0; i < count; i++) {
        r = query(statp, queries[i], klass, type, answer, anslen);
        int herr = statp ? statp->res_h_errno : h_errno;
        if (r >= 0 || (herr != HOST_NOT_FOUND && herr != NO_DATA)) break;
    }
    return r;
}

static int search_plain(res_state statp, const char *d, int c, int t, unsigned char *a, int l) {
    (void)statp;
    return REAL(res_search)(d, c, t, a, l);
}
static int search_n(res_state statp, const char *d, int c, int t, unsigned char *a, int l) {
    return REAL(res_nsearch)(statp, d, c, t, a, l);
}

#define RES_SEARCH_LIKE(fn)                                                                          \
    EXPORT int fn(const char *dname, int klass, int type, unsigned char *answer, int anslen) {       \
        if (check_res_name(dname, type) < 0) return res_blocked(NULL);                               \
        int r = searched(NULL, dname, klass, type, answer, anslen, search_plain);                    \
        if (r == -2) r = CALL(res_search, dname, klass, type, answer, anslen);                       \
        learn_res_answer(answer, r < anslen ? r : anslen);                                           \
        return r;                                                                                    \
    }
#define RES_NSEARCH_LIKE(fn)                                                                         \
    EXPORT int fn(res_state statp, const char *dname, int klass, int type, unsigned char *answer, int anslen) { \
        if (check_res_name(dname, type) < 0) return res_blocked(statp);                              \
        int r = searched(statp, dname, klass, type, answer, anslen, search_n);                       \
        if (r == -2) r = CALL(res_nsearch, statp, dname, klass, type, answer, anslen);               \
        learn_res_answer(answer, r < anslen ? r : anslen);                                           \
        return r;                                                                                    \
    }

static int joined(const char *name, const char *domain, char out[SG_NAME_MAX * 2]) {
    if (!name) return 0;
    if (domain) snprintf(out, SG_NAME_MAX * 2, "%s.%s", name, domain);
    else snprintf(out, SG_NAME_MAX * 2, "%s", name);
    return 1;
}

#define RES_QUERYDOMAIN_LIKE(fn, real)                                                               \
    EXPORT int fn(const char *name, const char *domain, int klass, int type, unsigned char *answer, int anslen) { \
        char full[SG_NAME_MAX * 2];                                                                  \
        if (joined(name, domain, full) && check_res_name(full, type) < 0) return res_blocked(NULL);  \
        int r = CALL(real, name, domain, klass, type, answer, anslen);                               \
        learn_res_answer(answer, r < anslen ? r : anslen);                                           \
        return r;                                                                                    \
    }
#define RES_NQUERYDOMAIN_LIKE(fn, real)                                                              \
    EXPORT int fn(res_state statp, const char *name, const char *domain, int klass, int type, unsigned char *answer, \
                  int anslen) {                                                                      \
        char full[SG_NAME_MAX * 2];                                                                  \
        if (joined(name, domain, full) && check_res_name(full, type) < 0) return res_blocked(statp); \
        int r = CALL(real, statp, name, domain, klass, type, answer, anslen);                        \
        learn_res_answer(answer, r < anslen ? r : anslen);                                           \
        return r;                                                                                    \
    }
#define RES_SEND_LIKE(fn, real)                                                                      \
    EXPORT int fn(const unsigned char *msg, int msglen, unsigned char *answer, int anslen) {         \
        if (check_res_message(msg, msglen) < 0) return res_blocked(NULL);                            \
        int r = CALL(real, msg, msglen, answer, anslen);                                             \
        learn_res_answer(answer, r < anslen ? r : anslen);                                           \
        return r;                                                                                    \
    }
#define RES_NSEND_LIKE(fn, real)                                                                     \
    EXPORT int fn(res_state statp, const unsigned char *msg, int msglen, unsigned char *answer, int anslen) { \
        if (check_res_message(msg, msglen) < 0) return res_blocked(statp);                           \
        int r = CALL(real, statp, msg, msglen, answer, anslen);                                      \
        learn_res_answer(answer, r < anslen ? r : anslen);                                           \
        return r;                                                                                    \
    }

/* <resolv.h> maps res_query to __res_query and so on; both spellings are exported symbols. */
#undef res_query
#undef res_search
#undef res_querydomain
#undef res_send
#undef res_nquery
#undef res_nsearch
#undef res_nquerydomain
#undef res_nsend
int res_query(const char *, int, int, unsigned char *, int);
int res_search(const char *, int, int, unsigned char *, int);
int res_querydomain(const char *, const char *, int, int, unsigned char *, int);
int res_send(const unsigned char *, int, unsigned char *, int);
int res_nquery(res_state, const char *, int, int, unsigned char *, int);
int res_nsearch(res_state, const char *, int, int, unsigned char *, int);
int res_nquerydomain(res_state, const char *, const char *, int, int, unsigned char *, int);
int res_nsend(res_state, const unsigned char *, int, unsigned char *, int);
int __res_query(const char *, int, int, unsigned char *, int);
int __res_search(const char *, int, int, unsigned char *, int);
int __res_querydomain(const char *, const char *, int, int, unsigned char *, int);
int __res_send(const unsigned char *, int, unsigned char *, int);
int __res_nquery(res_state, const char *, int, int, unsigned char *, int);
int __res_nsearch(res_state, const char *, int, int, unsigned char *, int);
int __res_nquerydomain(res_state, const char *, const char *, int, int, unsigned char *, int);
int __res_nsend(res_state, const unsigned char *, int, unsigned char *, int);

RES_QUERY_LIKE(res_query, res_query)
RES_SEARCH_LIKE(res_search)
RES_QUERYDOMAIN_LIKE(res_querydomain, res_querydomain)
RES_SEND_LIKE(res_send, res_send)
RES_NQUERY_LIKE(res_nquery, res_nquery)
RES_NSEARCH_LIKE(res_nsearch)
RES_NQUERYDOMAIN_LIKE(res_nquerydomain, res_nquerydomain)
RES_NSEND_LIKE(res_nsend, res_nsend)
RES_QUERY_LIKE(__res_query, __res_query)
RES_SEARCH_LIKE(__res_search)
RES_QUERYDOMAIN_LIKE(__res_querydomain, __res_querydomain)
RES_SEND_LIKE(__res_send, __res_send)
RES_NQUERY_LIKE(__res_nquery, __res_nquery)
RES_NSEARCH_LIKE(__res_nsearch)
RES_NQUERYDOMAIN_LIKE(__res_nquerydomain, __res_nquerydomain)
RES_NSEND_LIKE(__res_nsend, __res_nsend)

/* ---------------------------------------------------------------------------------------------------------
 * libc's exported second names for the same calls (__connect@GLIBC_2.2.5, __send, __write, ...): reachable by
 * name through dlsym or ctypes (CDLL("libc.so.6").__connect), so they are the same guarded functions here.
 * ------------------------------------------------------------------------------------------------------- */

#define ALIAS(name, target) extern __typeof__(target) name __attribute__((alias(#target), copy(target), visibility("default")))
ALIAS(__connect, connect);
ALIAS(__send, send);
ALIAS(__sendmmsg, sendmmsg);
ALIAS(__write, write);
ALIAS(__write_nocancel, write);
ALIAS(__socket, socket);
ALIAS(__dup2, dup2);
ALIAS(__fcntl, fcntl);
ALIAS(__libc_fcntl64, fcntl64);

/* glibc's private resolver entry points (GLIBC_PRIVATE, still exported): the name (or message) is decided
 * as for res_query/res_send; the other arguments are passed on untouched (up to twelve, as the largest takes). */
typedef long (*context_fn)(void *, const void *, long, long, long, long, long, long, long, long, long, long);
int __res_context_query(void *, const char *, long, long, long, long, long, long, long, long, long, long);
int __res_context_search(void *, const char *, long, long, long, long, long, long, long, long, long, long);
int __res_context_send(void *, const unsigned char *, long, long, long, long, long, long, long, long, long, long);

EXPORT int __res_context_query(void *ctx, const char *dname, long klass, long type, long a5, long a6, long a7, long a8,
                               long a9, long a10, long a11, long a12) {
    if (check_res_name(dname, (int)type) < 0) return res_blocked(NULL);
    return CALL(__res_context_query, ctx, dname, klass, type, a5, a6, a7, a8, a9, a10, a11, a12);
}

EXPORT int __res_context_search(void *ctx, const char *dname, long klass, long type, long a5, long a6, long a7, long a8,
                                long a9, long a10, long a11, long a12) {
    if (check_res_name(dname, (int)type) < 0) return res_blocked(NULL);
    /* glibc-private (reachable only by name): a search that would ask for an undecided name is refused whole */
    char name[SG_NAME_MAX], queries[SEARCH_MAX][SG_NAME_MAX + 2];
    const char *why;
    int count;
    sg_addr reverse;
    if (dname && state == ST_OK && !(type == ns_t_ptr && sg_dns_reverse_name(dname, &reverse)) &&
        sg_normalize_host(dname, strlen(dname), name, &why) == 0 &&
        lookup_plan(dname, name, -1, AF_UNSPEC, 0, NULL, queries, &count) != AS_GIVEN) {
        static const char text[] = "glibc's search list would add names the policy does not allow";
        sg_decision d = {.allowed = 0, .reason = SG_NOT_ALLOWED, .detail = text, .detail_len = sizeof text - 1};
        if (refuse(&d, "resolve", -1, name, -1, NULL) < 0) return res_blocked(NULL);
    }
    return CALL(__res_context_search, ctx, dname, klass, type, a5, a6, a7, a8, a9, a10, a11, a12);
}

EXPORT int __res_context_send(void *ctx, const unsigned char *msg, long len, long a4, long a5, long a6, long a7, long a8,
                              long a9, long a10, long a11, long a12) {
    if (check_res_message(msg, (int)len) < 0) return res_blocked(NULL);
    return CALL(__res_context_send, ctx, msg, len, a4, a5, a6, a7, a8, a9, a10, a11, a12);
}

/* ---------------------------------------------------------------------------------------------------------
 * dlsym / dlvsym: a lookup of a guarded name that would return libc's (or libresolv's) own function returns
 * this library's instead (ctypes' CDLL("libc.so.6").connect, .syscall). RTLD_NEXT lookups go straight to
 * libc's dlsym with the caller's return address intact (assembly below), so "next" keeps its meaning.
 * ------------------------------------------------------------------------------------------------------- */

static const struct {
    const char *name;
    void *ours;
} guarded[] = {
#define G(n) {#n, (void *)n}
    G(connect), G(sendto), G(send), G(write), G(writev), G(sendmsg), G(sendmmsg), G(read), G(__read_chk), G(readv),
    G(recv), G(__recv_chk), G(recvfrom), G(__recvfrom_chk), G(recvmsg), G(close), G(dup), G(dup2), G(dup3), G(fcntl), G(fcntl64),
    G(socket), G(syscall), G(pwritev2), G(pwritev64v2),
    G(getaddrinfo), G(getaddrinfo_a), G(gethostbyname), G(gethostbyname2), G(gethostbyname_r), G(gethostbyname2_r),
    G(gethostbyaddr), G(gethostbyaddr_r), G(getnameinfo), G(res_query), G(res_search), G(res_querydomain),
    G(res_send), G(res_nquery), G(res_nsearch), G(res_nquerydomain), G(res_nsend), G(__res_query), G(__res_search),
    G(__res_querydomain), G(__res_send), G(__res_nquery), G(__res_nsearch), G(__res_nquerydomain), G(__res_nsend),
    G(__connect), G(__send), G(__sendmmsg), G(__write), G(__write_nocancel), G(__socket), G(__dup2), G(__fcntl),
    G(__libc_fcntl64), G(__res_context_query), G(__res_context_search), G(__res_context_send),
#undef G
};

EARLY static int early_prefix(const char *path, const char *prefix) {
    const char *base = path;
    for (const char *p = path; *p; p++)
        if (*p == '/') base = p + 1;
    for (int i = 0; prefix[i]; i++)
        if (base[i] != prefix[i]) return 0;
    return 1;
}

/* Basenames of the other LD_PRELOAD entries (read once): an interposer that looks up libc's function on
 * libc's handle wants libc's, and handing it ours would make a loop (ours -> its -> ours ...). */
static char preloaded[16][256];
static int npreloaded;

static void read_preload_list(void) {
    const char *list = getenv("LD_PRELOAD");
    while (list && *list && npreloaded < 16) {
        size_t n = strcspn(list, ": ");
        if (n) {
            const char *entry = list, *slash = NULL;
            for (size_t i = 0; i < n; i++)
                if (entry[i] == '/') slash = entry + i;
            const char *base = slash ? slash + 1 : entry;
            size_t blen = n - (size_t)(base - entry);
            if (blen < sizeof preloaded[0]) {
                memcpy(preloaded[npreloaded], base, blen);
                preloaded[npreloaded][blen] = 0;
                npreloaded++;
            }
        }
        list += n + (list[n] != 0);
    }
}

EARLY static int from_other_interposer(const void *caller) {
    Dl_info info;
    if (!caller || !dladdr(caller, &info) || !info.dli_fname) return 0;
    const char *base = info.dli_fname;
    for (const char *p = info.dli_fname; *p; p++)
        if (*p == '/') base = p + 1;
    for (int i = 0; i < npreloaded; i++)
        if (early_streq(preloaded[i], base)) return !early_streq(base, "libsockguard.so");
    return 0;
}

EARLY static void *redirect(const char *name, void *found, const void *caller) {
    if (!found || !name || from_other_interposer(caller)) return found;
    for (size_t i = 0; i < sizeof guarded / sizeof guarded[0]; i++) {
        if (!early_streq(guarded[i].name, name)) continue;
        if (found == guarded[i].ours) return found;
        Dl_info info;
        if (!dladdr(found, &info) || !info.dli_fname) return found;
        if (early_prefix(info.dli_fname, "libc.so") || early_prefix(info.dli_fname, "libresolv.so")) return guarded[i].ours;
        return found;
    }
    return found;
}

void *sg_dlsym_impl(void *handle, const char *name) __attribute__((visibility("hidden")));
void *sg_dlvsym_impl(void *handle, const char *name, const char *version) __attribute__((visibility("hidden")));
void sg_dl_init(void) __attribute__((visibility("hidden")));

EARLY void sg_dl_init(void) { resolve_dl(); }

EARLY void *sg_dlsym_impl(void *handle, const char *name) {
    resolve_dl();
    void *found = sg_real_dlsym ? sg_real_dlsym(handle, name) : NULL;
    return redirect(name, found, __builtin_return_address(0));
}

EARLY void *sg_dlvsym_impl(void *handle, const char *name, const char *version) {
    resolve_dl();
    void *found = sg_real_dlvsym ? sg_real_dlvsym(handle, name, version) : NULL;
    return redirect(name, found, __builtin_return_address(0));
}

#if defined(__x86_64__)
__asm__(".text\n"
        ".globl dlsym\n.type dlsym,@function\n"
        "dlsym:\n"
        "  cmpq $-1, %rdi\n"
        "  jne sg_dlsym_impl\n"
        "  movq sg_real_dlsym(%rip), %rax\n"
        "  testq %rax, %rax\n"
        "  jz 1f\n"
        "  jmp *%rax\n"
        "1:\n"
        "  pushq %rdi\n  pushq %rsi\n  subq $8, %rsp\n"
        "  call sg_dl_init\n"
        "  addq $8, %rsp\n  popq %rsi\n  popq %rdi\n"
        "  jmp *sg_real_dlsym(%rip)\n"
        ".size dlsym, .-dlsym\n"
        ".globl dlvsym\n.type dlvsym,@function\n"
        "dlvsym:\n"
        "  cmpq $-1, %rdi\n"
        "  jne sg_dlvsym_impl\n"
        "  movq sg_real_dlvsym(%rip), %rax\n"
        "  testq %rax, %rax\n"
        "  jz 2f\n"
        "  jmp *%rax\n"
        "2:\n"
        "  pushq %rdi\n  pushq %rsi\n  pushq %rdx\n"
        "  call sg_dl_init\n"
        "  popq %rdx\n  popq %rsi\n  popq %rdi\n"
        "  jmp *sg_real_dlvsym(%rip)\n"
        ".size dlvsym, .-dlvsym\n");
#elif defined(__aarch64__)
__asm__(".text\n"
        ".globl dlsym\n.type dlsym,%function\n"
        "dlsym:\n"
        "  cmn x0, #1\n"
        "  b.ne sg_dlsym_impl\n"
        "  adrp x16, sg_real_dlsym\n  ldr x16, [x16, :lo12:sg_real_dlsym]\n"
        "  cbz x16, 1f\n  br x16\n"
        "1:\n"
        "  stp x29, x30, [sp, #-32]!\n  stp x0, x1, [sp, #16]\n"
        "  bl sg_dl_init\n"
        "  ldp x0, x1, [sp, #16]\n  ldp x29, x30, [sp], #32\n"
        "  adrp x16, sg_real_dlsym\n  ldr x16, [x16, :lo12:sg_real_dlsym]\n  br x16\n"
        ".size dlsym, .-dlsym\n"
        ".globl dlvsym\n.type dlvsym,%function\n"
        "dlvsym:\n"
        "  cmn x0, #1\n"
        "  b.ne sg_dlvsym_impl\n"
        "  adrp x16, sg_real_dlvsym\n  ldr x16, [x16, :lo12:sg_real_dlvsym]\n"
        "  cbz x16, 2f\n  br x16\n"
        "2:\n"
        "  stp x29, x30, [sp, #-48]!\n  stp x0, x1, [sp, #16]\n  str x2, [sp, #32]\n"
        "  bl sg_dl_init\n"
        "  ldp x0, x1, [sp, #16]\n  ldr x2, [sp, #32]\n  ldp x29, x30, [sp], #48\n"
        "  adrp x16, sg_real_dlvsym\n  ldr x16, [x16, :lo12:sg_real_dlvsym]\n  br x16\n"
        ".size dlvsym, .-dlvsym\n");
#else
EXPORT void *dlsym(void *handle, const char *name) { return sg_dlsym_impl(handle, name); }
EXPORT void *dlvsym(void *handle, const char *name, const char *version) { return sg_dlvsym_impl(handle, name, version); }
#endif

/* ---------------------------------------------------------------------------------------------------------
 * Programs preloading cannot hold: a guarded process that starts a static, set-id or file-capability
 * binary, or starts a child with an environment that drops the library or its policy, is warned about once.
 * ------------------------------------------------------------------------------------------------------- */

/* Why the program at path cannot be guarded by a preload library, or NULL. */
static const char *unguardable(const char *path, int depth_left) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return NULL;
    const char *why = NULL;
    struct stat st;
    unsigned char head[256];
    ssize_t n = fstat(fd, &st) == 0 ? pread(fd, head, sizeof head, 0) : -1;
    if (n >= 2 && head[0] == '#' && head[1] == '!' && depth_left > 0) {
        char interp[256];
        size_t i = 2, k = 0;
        while (i < (size_t)n && (head[i] == ' ' || head[i] == '\t')) i++;
        while (i < (size_t)n && k + 1 < sizeof interp && head[i] != ' ' && head[i] != '\t' && head[i] != '\n') interp[k++] = (char)head[i++];
        interp[k] = 0;
        close(fd);
        return k ? unguardable(interp, depth_left - 1) : NULL;
    }
    if (n >= 0 && ((st.st_mode & S_ISUID) || (st.st_mode & S_ISGID))) {
        why = "set-user-ID or set-group-ID: the loader drops LD_PRELOAD for it";
    } else if (n >= 0 && fgetxattr(fd, "security.capability", NULL, 0) > 0) {
        why = "has file capabilities: the loader drops LD_PRELOAD for it";
    } else if (n >= 64 && memcmp(head, ELFMAG, SELFMAG) == 0) {
        int is64 = head[EI_CLASS] == ELFCLASS64;
        uint64_t phoff;
        uint16_t phentsize, phnum;
        if (is64) {
            const Elf64_Ehdr *e = (const Elf64_Ehdr *)head;
            phoff = e->e_phoff, phentsize = e->e_phentsize, phnum = e->e_phnum;
        } else {
            const Elf32_Ehdr *e = (const Elf32_Ehdr *)head;
            phoff = e->e_phoff, phentsize = e->e_phentsize, phnum = e->e_phnum;
        }
        int interp = 0;
        for (uint16_t i = 0; i < phnum && i < 256; i++) {
            uint32_t type;
            if (phentsize < 4 || pread(fd, &type, 4, (off_t)(phoff + (uint64_t)i * phentsize)) != 4) break;
            if (type == PT_INTERP) interp = 1;
        }
        if (!interp) why = "statically linked: no preload library can reach its connections or DNS";
    }
    close(fd);
    return why;
}

static const char *env_get(char *const envp[], const char *key) {
    size_t k = strlen(key);
    for (; envp && *envp; envp++)
        if (strncmp(*envp, key, k) == 0 && (*envp)[k] == '=') return *envp + k + 1;
    return NULL;
}

static char library_path[4096];

static void warn_child(const char *path, char *const envp[]) {
    if (!active() || state == ST_ERROR || !path) return;
    const char *why = unguardable(path, 2);
    char because[200];
    if (!why && library_path[0]) {
        const char *pre = env_get(envp, "LD_PRELOAD");
        if (!pre || !strstr(pre, library_path)) why = "its environment drops LD_PRELOAD (or this library from it)";
        else if (!env_get(envp, "SOCKGUARD_NATIVE_POLICY")) why = "its environment drops SOCKGUARD_NATIVE_POLICY";
    }
    if (!why) return;
    uint64_t key = (uint64_t)sg_fnv1a32(path, strlen(path)) << 16 | sg_fnv1a32(why, strlen(why)) | 1;
    unsigned slot = (unsigned)(key % 256);
    static uint64_t warned[256];
    if (__atomic_exchange_n(&warned[slot], key, __ATOMIC_RELAXED) == key) return;
    snprintf(because, sizeof because, "%s", why);
    char message[1500];
    snprintf(message, sizeof message, "sockguard: warning: %s[%d] starts %s, which is %s; that program will NOT be guarded\n",
             program, (int)getpid(), path, because);
    say(message);
    open_log();
    if (log_fd >= 0) {
        char line[2000];
        buf b = {line, line + sizeof line};
        char head[320];
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        snprintf(head, sizeof head, "{\"event\":\"unguarded-child\",\"ts\":%ld.%06ld,\"pid\":%d,\"op\":\"spawn\",\"proto\":\"process\",\"host\":null,\"port\":null,\"address\":null,\"decision\":\"warn\",\"reason\":\"unguarded-child\",\"rule\":null,\"detail\":",
                 (long)ts.tv_sec, ts.tv_nsec / 1000, (int)getpid());
        puts_(&b, head);
        size_t mlen = strlen(message) - 1;
        put_json(&b, message, mlen);
        put_line_end(&b);
        ssize_t w = LIBC(write)(log_fd, line, (size_t)(b.p - line));
        (void)w;
    }
}

#define EXEC(name, ...) REAL(name)(__VA_ARGS__)

/* the file execvp / posix_spawnp would run */
static const char *search_path(const char *file, char out[4096]) {
    if (!file || !*file || strchr(file, '/')) return file;
    const char *path = getenv("PATH");
    if (!path) path = "/bin:/usr/bin";
    while (*path) {
        size_t n = strcspn(path, ":");
        snprintf(out, 4096, "%.*s%s%s", (int)n, path, n ? "/" : "", file);
        if (access(out, X_OK) == 0) return out;
        path += n + (path[n] == ':');
    }
    return file;
}

EXPORT int execve(const char *path, char *const argv[], char *const envp[]) {
    warn_child(path, envp);
    return EXEC(execve, path, argv, envp);
}

EXPORT int execv(const char *path, char *const argv[]) {
    warn_child(path, environ);
    return EXEC(execv, path, argv);
}

EXPORT int execvpe(const char *file, char *const argv[], char *const envp[]) {
    char found[4096];
    warn_child(search_path(file, found), envp);
    return EXEC(execvpe, file, argv, envp);
}

EXPORT int execvp(const char *file, char *const argv[]) {
    char found[4096];
    warn_child(search_path(file, found), environ);
    return EXEC(execvp, file, argv);
}

EXPORT int fexecve(int fd, char *const argv[], char *const envp[]) {
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    warn_child(path, envp);
    return EXEC(fexecve, fd, argv, envp);
}

/* execl, execle, execlp: glibc builds the vector and calls execve internally, out of our reach */
#define COLLECT_ARGS(first, last_arg)                                                                \
    va_list ap;                                                                                      \
    size_t count = 1;                                                                                \
    va_start(ap, first);                                                                             \
    while (va_arg(ap, char *)) count++;                                                              \
    va_end(ap);                                                                                      \
    char **argv = alloca((count + 1) * sizeof(char *));                                              \
    argv[0] = (char *)(first);                                                                       \
    va_start(ap, first);                                                                             \
    for (size_t i = 1; i <= count; i++) argv[i] = va_arg(ap, char *);                                \
    last_arg;                                                                                        \
    va_end(ap);

EXPORT int execl(const char *path, const char *arg, ...) {
    COLLECT_ARGS(arg, (void)0)
    return execv(path, argv);
}

EXPORT int execlp(const char *file, const char *arg, ...) {
    COLLECT_ARGS(arg, (void)0)
    return execvp(file, argv);
}

EXPORT int execle(const char *path, const char *arg, ...) {
    COLLECT_ARGS(arg, char *const *envp = va_arg(ap, char *const *))
    return execve(path, argv, envp);
}

EXPORT int posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa, const posix_spawnattr_t *attr,
                       char *const argv[], char *const envp[]) {
    warn_child(path, envp);
    return CALL(posix_spawn, pid, path, fa, attr, argv, envp);
}

EXPORT int posix_spawnp(pid_t *pid, const char *file, const posix_spawn_file_actions_t *fa, const posix_spawnattr_t *attr,
                        char *const argv[], char *const envp[]) {
    char found[4096];
    warn_child(search_path(file, found), envp);
    return CALL(posix_spawnp, pid, file, fa, attr, argv, envp);
}

__attribute__((constructor)) static void find_ourselves(void) {
    Dl_info info;
    if (dladdr((void *)find_ourselves, &info) && info.dli_fname) snprintf(library_path, sizeof library_path, "%s", info.dli_fname);
    read_preload_list();
    resolve_dl();
}

/* ---------------------------------------------------------------------------------------------------------
 * The Python layer's policy (sockguard/native/bridge.py): when a Python process installs another policy
 * (sockguard.install, guarded, the pytest plugin), the same policy is put in force here, so both layers keep
 * deciding alike. The previous policy stays mapped (a thread may be deciding with it): a few KiB per install.
 * ------------------------------------------------------------------------------------------------------- */

/* 1 when this library's functions are the ones the process calls (preloaded), 0 when it was merely opened. */
EXPORT int sockguard_native_interposing(void) {
    resolve_dl();
    return sg_real_dlsym && sg_real_dlsym(RTLD_DEFAULT, "connect") == (void *)connect;
}

/* Put a compiled policy in force for this process. 0, or -1 and why in err. */
EXPORT int sockguard_native_replace(const void *data, size_t size, char *err, size_t errlen) {
    void *mem = NULL;
    if (!data || !size || posix_memalign(&mem, 8, size) != 0) {
        snprintf(err, errlen, "no memory");
        return -1;
    }
    memcpy(mem, data, size);
    sg_policy *next = malloc(sizeof *next);
    if (!next || sg_policy_load(next, mem, size, err, errlen) < 0) {
        free(next);
        free(mem);
        return -1;
    }
    (void)active(); /* the file's policy (or its error) first, so a later first call cannot undo this */
    __atomic_store_n(&current, next, __ATOMIC_RELEASE);
    __atomic_store_n(&state, next->mode == SG_MODE_OFF ? ST_OFF : ST_OK, __ATOMIC_RELEASE);
    return 0;
}

/* ---------------------------------------------------------------------------------------------------------
 * Test entry points (tests/test_native_policy.py through ctypes): the C decisions on a policy in memory.
 * ------------------------------------------------------------------------------------------------------- */

EXPORT void *sockguard_test_load(const void *data, size_t size, char *err, size_t errlen) {
    void *mem = NULL;
    if (posix_memalign(&mem, 8, size ? size : 8) != 0) return NULL;
    memcpy(mem, data, size);
    sg_policy *p = malloc(sizeof *p);
    if (!p || sg_policy_load(p, mem, size, err, errlen) < 0) {
        free(p);
        free(mem);
        return NULL;
    }
    return p;
}

EXPORT void sockguard_test_free(void *handle) {
    if (!handle) return;
    free((void *)((sg_policy *)handle)->base);
    free(handle);
}

/* kind 0: check_name(target, port); kind 1: check_address(target, port, name). Writes
 * "allowed|reason|rule|detail" (rule and detail empty when None); returns 0, or -1 if target is not an
 * address for kind 1. */
EXPORT int sockguard_test_decide(void *handle, int kind, const char *target, long port, const char *name, char *out, size_t outlen) {
    const sg_policy *p = handle;
    sg_decision d;
    if (kind == 0) {
        sg_check_name(p, target, port, &d);
    } else {
        sg_addr a;
        if (!sg_parse_address(target, strlen(target), &a)) return -1;
        sg_check_address(p, &a, port, name, &d);
    }
    snprintf(out, outlen, "%d|%s|%.*s|%.*s", d.allowed, sg_reason_names[d.reason], (int)d.rule_len,
             d.rule_text ? d.rule_text : "", (int)d.detail_len, d.detail ? d.detail : "");
    return 0;
}
