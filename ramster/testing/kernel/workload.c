/* ramster's guest workload: make a Linux guest swap, and check every page that comes back.
 *
 *   workload MIB PASSES SEED REWRITE_PERCENT
 *
 * Maps MIB of anonymous memory (meant to be 2-4 times the guest's RAM), writes every 4 KiB page
 * once (pass 0, in order), then makes PASSES passes in a random order that verify every page
 * and rewrite REWRITE_PERCENT of them with a new version. A page's bytes are a function of
 * (seed, page, version) only, so a page that comes back stale or corrupt is a mismatch:
 *   1 in 4 pages is all zeros (the swap of a real process has many: bss, freed heap);
 *   the others start with a 32-byte header (page, version, seed, a check word), then a
 *   repetitive first half (an 8-byte word of the page's own repeated: compresses well) and a
 *   random second half (xorshift: does not compress), like real anonymous memory.
 * Prints one line per pass ("PASS n kind seconds MiB/s"), "PROGRESS pass percent" at every
 * 5% of a pass (the host acts at known points, and times stalls between them), and at the end
 * one line
 * "RESULT pages=.. verified=.. mismatches=.. rewritten=.. seconds=..". Exit 0 when nothing
 * mismatched, 1 otherwise, 2 on bad usage. Static, libc only (it runs from an initramfs).
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define PAGE 4096
#define WORDS (PAGE / 8)
#define MAX_REPORTED 10

static uint64_t mix(uint64_t x) {
    /* splitmix64's finaliser: every input bit reaches every output bit. */
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static uint64_t page_key(uint64_t seed, uint64_t page, uint64_t version) {
    return mix(seed ^ mix(page ^ mix(version + 0x51ed27ULL)));
}

/* The bytes page `page` has at `version`, into out (one page). */
static void pattern(uint64_t *out, uint64_t seed, uint64_t page, uint64_t version) {
    uint64_t h = page_key(seed, page, version);
    if (h % 4 == 0) {
        memset(out, 0, PAGE);
        return;
    }
    out[0] = page;
    out[1] = version;
    out[2] = seed;
    out[3] = h;
    uint64_t word = mix(h) | 1;
    for (int i = 4; i < WORDS / 2; i++) out[i] = word;
    uint64_t x = h | 1;
    for (int i = WORDS / 2; i < WORDS; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out[i] = x;
    }
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* "PROGRESS pass percent" each time `done` pages cross a multiple of 5% (not at 0 or 100):
 * lets the host act at a known point of the run (kill a node) and time a stall. */
static void progress(int pass, uint64_t done, uint64_t pages) {
    uint64_t pct = done * 100 / pages;
    if (pct % 5 != 0 || pct == 0 || pct >= 100 || (done - 1) * 100 / pages == pct) return;
    printf("PROGRESS %d %llu\n", pass, (unsigned long long)pct);
    fflush(stdout);
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s MIB PASSES SEED REWRITE_PERCENT\n", argv[0]);
        return 2;
    }
    uint64_t mib = strtoull(argv[1], NULL, 10);
    int passes = atoi(argv[2]);
    uint64_t seed = strtoull(argv[3], NULL, 10);
    int rewrite = atoi(argv[4]);
    if (mib == 0 || passes < 0 || rewrite < 0 || rewrite > 100) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    uint64_t pages = mib * (1 << 20) / PAGE;
    uint8_t *mem = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    uint8_t *versions = calloc(pages, 1);
    uint32_t *order = malloc(pages * sizeof(uint32_t));
    uint64_t *expect = aligned_alloc(PAGE, PAGE);
    if (mem == MAP_FAILED || !versions || !order || !expect) {
        perror("allocating");
        return 2;
    }
    double start = now();
    double t = now();
    for (uint64_t p = 0; p < pages; p++) {
        pattern((uint64_t *)(mem + p * PAGE), seed, p, 0);
        progress(0, p + 1, pages);
    }
    double dt = now() - t;
    printf("PASS 0 fill %.2f s %.1f MiB/s\n", dt, (double)mib / dt);
    fflush(stdout);

    uint64_t verified = 0, mismatches = 0, rewritten = 0, rng = mix(seed ^ 0xfeedULL);
    for (uint64_t p = 0; p < pages; p++) order[p] = (uint32_t)p;
    for (int pass = 1; pass <= passes; pass++) {
        for (uint64_t i = pages - 1; i > 0; i--) { /* Fisher-Yates, from the seed */
            rng = mix(rng);
            uint64_t j = rng % (i + 1);
            uint32_t tmp = order[i];
            order[i] = order[j];
            order[j] = tmp;
        }
        t = now();
        for (uint64_t i = 0; i < pages; i++) {
            uint64_t p = order[i];
            uint8_t *page = mem + p * PAGE;
            pattern(expect, seed, p, versions[p]);
            verified++;
            if (memcmp(page, expect, PAGE) != 0) {
                if (++mismatches <= MAX_REPORTED) {
                    const uint64_t *got = (const uint64_t *)page;
                    printf("MISMATCH page %llu version %u: got header %016llx %016llx\n",
                           (unsigned long long)p, versions[p], (unsigned long long)got[0],
                           (unsigned long long)got[1]);
                }
            }
            progress(pass, i + 1, pages);
            rng = mix(rng);
            if ((int)(rng % 100) < rewrite) {
                versions[p]++;
                pattern((uint64_t *)page, seed, p, versions[p]);
                rewritten++;
            }
        }
        dt = now() - t;
        printf("PASS %d verify %.2f s %.1f MiB/s\n", pass, dt, (double)mib / dt);
        fflush(stdout);
    }
    printf("RESULT pages=%llu verified=%llu mismatches=%llu rewritten=%llu seconds=%.2f\n",
           (unsigned long long)pages, (unsigned long long)verified,
           (unsigned long long)mismatches, (unsigned long long)rewritten, now() - start);
    fflush(stdout);
    return mismatches ? 1 : 0;
}
