/* Test driver: the C decisions for a corpus, linked straight to the policy sources (built with ASan and
 * UBSan by the test run). Usage: sg_decide POLICY-FILE < corpus, one query per line:
 *   N <tab> host <tab> port|- <tab> -            check_name(host, port)
 *   A <tab> address <tab> port|- <tab> name|-    check_address(address, port, name)
 *   P <tab> path                                 load another policy file for the lines that follow
 * Prints one line per query: allowed|reason|rule|detail. Exit 2 if a policy does not load. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../sg_policy.h"

static char *field(char **cursor) {
    char *start = *cursor, *tab = strchr(start, '\t');
    if (tab) *tab = 0, *cursor = tab + 1;
    else *cursor = start + strlen(start);
    return start;
}

static void unescape(char *s) { /* \xHH escapes, so any byte can be in a host */
    char *out = s;
    for (; *s; s++) {
        if (s[0] == '\\' && s[1] == 'x' && s[2] && s[3]) {
            char hex[3] = {s[2], s[3], 0};
            *out++ = (char)strtol(hex, NULL, 16);
            s += 3;
        } else {
            *out++ = *s;
        }
    }
    *out = 0;
}

static int load(const char *path, sg_policy *p, void **data) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    free(*data);
    *data = NULL;
    if (size <= 0 || posix_memalign(data, 8, (size_t)size) != 0 || fread(*data, 1, (size_t)size, f) != (size_t)size) {
        fclose(f);
        return -1;
    }
    fclose(f);
    char err[200];
    if (sg_policy_load(p, *data, (size_t)size, err, sizeof err) < 0) {
        printf("load error: %s\n", err);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv) {
    sg_policy p;
    void *data = NULL;
    if (argc != 2 || load(argv[1], &p, &data) < 0) return 2;
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, stdin)) > 0) {
        if (line[n - 1] == '\n') line[n - 1] = 0;
        char *cursor = line;
        char *kind = field(&cursor), *target = field(&cursor), *port_text = field(&cursor), *name = field(&cursor);
        if (kind[0] == 'P') {
            if (load(target, &p, &data) < 0) return 2;
            continue;
        }
        unescape(target);
        unescape(name);
        long port = strcmp(port_text, "-") == 0 ? -1 : strtol(port_text, NULL, 10);
        sg_decision d;
        if (kind[0] == 'N') {
            sg_check_name(&p, target, port, &d);
        } else {
            sg_addr a;
            if (!sg_parse_address(target, strlen(target), &a)) {
                printf("not-an-address\n");
                continue;
            }
            sg_check_address(&p, &a, port, strcmp(name, "-") == 0 ? NULL : name, &d);
        }
        printf("%d|%s|%.*s|%.*s\n", d.allowed, sg_reason_names[d.reason], d.rule ? (int)d.rule->text_len : 0,
               d.rule ? p.strings + d.rule->text_off : "", (int)d.detail_len, d.detail ? d.detail : "");
    }
    free(line);
    free(data);
    return 0;
}
