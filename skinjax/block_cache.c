/* Keeps the large blocks that XLA:CPU allocates and frees on every step for reuse.

   XLA:CPU allocates a step's temporaries afresh on every call (2.4 GiB for the
   EfficientNet-Lite0 train step at batch 32, 224 px) and frees them when the step ends.
   glibc's malloc maps such blocks with mmap and unmaps them on free, so every step
   faults its temporaries in again and the kernel zeroes every page: the step then pays
   for memory it already had. Keeping the whole heap instead (mallopt) fragments it and
   doubles a training run's peak.

   This library, preloaded (LD_PRELOAD) by `skinjax.host_memory` where
   SKINJAX_BLOCK_CACHE=1 asks, serves only blocks of at least 64 MiB itself: each from a
   mapping of its own, given back to a small cache on free and handed out again to a
   request of the same size (up to 1/8 larger). A request that no cached block fits
   first unmaps the whole cache. XLA asks for the next step's block before it frees the
   last one's, so two blocks take turns and both stay resident: the peak grows by one
   step's temporaries (docs/benchmarks.md). Everything else goes to glibc unchanged. A block is recognised on free by the word before it, where glibc
   keeps a chunk's size, always a multiple of 16: ours has bit 3 set. */

#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

extern void *__libc_malloc(size_t size);
extern void __libc_free(void *ptr);
extern void *__libc_calloc(size_t count, size_t size);
extern void *__libc_realloc(void *ptr, size_t size);
extern void *__libc_memalign(size_t alignment, size_t size);

enum { kSlots = 8 };
static const size_t kMinBytes = (size_t)64 << 20;
static const size_t kHeader = 4096; /* one page before the block: capacity, tag */
static const size_t kHugePage = (size_t)2 << 20;
static const uint64_t kTag = 0x736b696e6a617818ULL; /* bit 3 set: never a glibc size */

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static void *cached[kSlots];
static int num_cached;

static size_t *capacity_of(void *block) { return (size_t *)block - 2; }

static int is_ours(void *ptr) { return ptr != NULL && ((uint64_t *)ptr)[-1] == kTag; }

static void unmap(void *block) { munmap((char *)block - kHeader, *capacity_of(block) + kHeader); }

/* A block of at least `size` bytes; *fresh tells whether it came zeroed from the kernel. */
static void *take(size_t size, int *fresh) {
  pthread_mutex_lock(&lock);
  int best = -1;
  for (int i = 0; i < num_cached; ++i) {
    size_t capacity = *capacity_of(cached[i]);
    if (capacity >= size && capacity - size <= size / 8 &&
        (best < 0 || capacity < *capacity_of(cached[best]))) {
      best = i;
    }
  }
  if (best >= 0) {
    void *block = cached[best];
    cached[best] = cached[--num_cached];
    pthread_mutex_unlock(&lock);
    *fresh = 0;
    return block;
  }
  for (int i = 0; i < num_cached; ++i) unmap(cached[i]);
  num_cached = 0;
  pthread_mutex_unlock(&lock);

  size_t total = (size + kHeader + kHugePage - 1) / kHugePage * kHugePage;
  char *base = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (base == MAP_FAILED) {
    errno = ENOMEM;
    return NULL;
  }
  madvise(base, total, MADV_HUGEPAGE);
  void *block = base + kHeader;
  *capacity_of(block) = total - kHeader;
  ((uint64_t *)block)[-1] = kTag;
  *fresh = 1;
  return block;
}

static void give_back(void *block) {
  pthread_mutex_lock(&lock);
  if (num_cached < kSlots) {
    cached[num_cached++] = block;
    block = NULL;
  }
  pthread_mutex_unlock(&lock);
  if (block != NULL) unmap(block);
}

void *malloc(size_t size) {
  int fresh;
  return size >= kMinBytes ? take(size, &fresh) : __libc_malloc(size);
}

void free(void *ptr) {
  if (is_ours(ptr)) {
    give_back(ptr);
  } else {
    __libc_free(ptr);
  }
}

void *calloc(size_t count, size_t size) {
  size_t total;
  if (__builtin_mul_overflow(count, size, &total)) {
    errno = ENOMEM;
    return NULL;
  }
  if (total < kMinBytes) return __libc_calloc(count, size);
  int fresh;
  void *block = take(total, &fresh);
  if (block != NULL && !fresh) memset(block, 0, total);
  return block;
}

void *realloc(void *ptr, size_t size) {
  if (!is_ours(ptr)) return __libc_realloc(ptr, size);
  if (size == 0) {
    free(ptr);
    return NULL;
  }
  void *moved = malloc(size);
  if (moved != NULL) {
    size_t capacity = *capacity_of(ptr);
    memcpy(moved, ptr, size < capacity ? size : capacity);
    free(ptr);
  }
  return moved;
}

void *reallocarray(void *ptr, size_t count, size_t size) {
  size_t total;
  if (__builtin_mul_overflow(count, size, &total)) {
    errno = ENOMEM;
    return NULL;
  }
  return realloc(ptr, total);
}

static int valid_alignment(size_t alignment) {
  return alignment != 0 && (alignment & (alignment - 1)) == 0;
}

void *memalign(size_t alignment, size_t size) {
  int fresh;
  return size >= kMinBytes && alignment <= kHeader ? take(size, &fresh)
                                                   : __libc_memalign(alignment, size);
}

void *aligned_alloc(size_t alignment, size_t size) {
  if (!valid_alignment(alignment)) {
    errno = EINVAL;
    return NULL;
  }
  return memalign(alignment, size);
}

int posix_memalign(void **out, size_t alignment, size_t size) {
  if (!valid_alignment(alignment) || alignment % sizeof(void *) != 0) return EINVAL;
  int saved = errno;
  void *block = memalign(alignment, size);
  errno = saved;
  if (block == NULL) return ENOMEM;
  *out = block;
  return 0;
}

size_t malloc_usable_size(void *ptr) {
  static size_t (*glibc_usable_size)(void *);
  if (is_ours(ptr)) return *capacity_of(ptr);
  if (glibc_usable_size == NULL) glibc_usable_size = dlsym(RTLD_NEXT, "malloc_usable_size");
  return glibc_usable_size(ptr);
}

/* A child forked while another thread held the lock would wait on it forever. */
static void lock_for_fork(void) { pthread_mutex_lock(&lock); }
static void unlock_after_fork(void) { pthread_mutex_unlock(&lock); }

__attribute__((constructor)) static void install_fork_handlers(void) {
  pthread_atfork(lock_for_fork, unlock_after_fork, unlock_after_fork);
}
