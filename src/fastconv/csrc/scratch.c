/*
 * Per-thread scratch memory for the temporary buffers of one call (the
 * kernels' per-thread workspaces, Winograd's transformed tiles, padded
 * copies of the input): kept by the calling thread from call to call, so
 * that a layer called again in steady state allocates nothing and takes no
 * page faults. A buffer of several MB from malloc is a fresh mmap on each
 * call (glibc's threshold), and its first touch of every page is a fault:
 * ~750 of them per call measured on a 128 -> 128, 28x28 Winograd layer.
 *
 * Each slot holds one buffer, so a call may hold one buffer of each slot at
 * once (kernels.h lists them); a call never asks for a slot it already holds,
 * which would overwrite or free that buffer. Buffers larger than SCRATCH_KEEP_BYTES are freed when put back
 * rather than kept. A thread's buffers are freed when it exits (a pthread
 * key's destructor).
 */
#include <pthread.h>
#include <stdlib.h>

#include "kernels/kernels.h"

/* The largest buffer a thread keeps between calls (per slot). */
#define SCRATCH_KEEP_BYTES ((size_t)16 << 20)

typedef struct {
    void *p[FC_SCRATCH_SLOTS];
    size_t n[FC_SCRATCH_SLOTS];
} scratch_set;

static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static int scratch_key_made;

static void scratch_destroy(void *arg)
{
    scratch_set *s = arg;
    for (int i = 0; i < FC_SCRATCH_SLOTS; i++)
        free(s->p[i]);
    free(s);
}

static void scratch_make_key(void)
{
    scratch_key_made = pthread_key_create(&scratch_key, scratch_destroy) == 0;
}

/* The calling thread's buffers (made on first use), or NULL. */
static scratch_set *scratch_mine(void)
{
    pthread_once(&scratch_once, scratch_make_key);
    if (!scratch_key_made)
        return NULL;
    scratch_set *s = pthread_getspecific(scratch_key);
    if (!s) {
        s = calloc(1, sizeof *s);
        if (s && pthread_setspecific(scratch_key, s)) {
            free(s);
            s = NULL;
        }
    }
    return s;
}

void *fc_scratch_get(int slot, size_t n)
{
    scratch_set *s = scratch_mine();
    if (!s || slot < 0 || slot >= FC_SCRATCH_SLOTS)
        return NULL;
    if (s->p[slot] && s->n[slot] >= n)
        return s->p[slot];
    free(s->p[slot]); /* (its contents are not needed: no realloc) */
    s->p[slot] = NULL;
    s->n[slot] = 0;
    /* whole 64 KiB, so that slowly growing sizes do not allocate each time */
    const size_t want = n > SIZE_MAX - 65535 ? n : (n + 65535) & ~(size_t)65535;
    void *p = NULL;
    if (posix_memalign(&p, 64, want ? want : 64))
        return NULL;
    s->p[slot] = p;
    s->n[slot] = want;
    return p;
}

void fc_scratch_put(int slot)
{
    scratch_set *s = pthread_getspecific(scratch_key);
    if (s && slot >= 0 && slot < FC_SCRATCH_SLOTS && s->n[slot] > SCRATCH_KEEP_BYTES) {
        free(s->p[slot]);
        s->p[slot] = NULL;
        s->n[slot] = 0;
    }
}
