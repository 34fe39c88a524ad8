"""A long-running process's memory and pauses: what to settle once, before the first batch.

numpy keeps freed data buffers of fewer than 1,024 bytes in a cache of its own, up to
seven per byte size, and hands them out again instead of calling malloc: at most about
3.5 MB. A scoring loop whose batch sizes vary keeps meeting sizes it has not freed
before, so the cache fills over minutes to hours and the process's RSS creeps up by a
few MB before it levels off. To an operator that looks like a leak, and a memory limit
sized from the first minutes of a run is too tight. tracemalloc does not show it:
numpy stops tracing a buffer when it caches it (measured in the benchmark soak: glibc's
in-use bytes grew while tracemalloc's total and the object count stayed flat). Filling
the cache once costs those same few MB at once, in milliseconds, and leaves nothing to
creep.

Python's full (generation 2) garbage collection walks every tracked object: after the
imports of the model stack that is ~135,000 objects and took 70-80 ms here (33 ms in the
fetch process), a stall that showed as the p99 of alert latency. What start-up built
lives as long as the process, so it is frozen out of the collector's way.

glibc's malloc serves blocks of 128 kB and more from mmap, and gives them back to the
system when freed, but it raises that threshold to the size of each such block freed
(up to 32 MB). After the first backlog (the broker stalls, then a poll returns a full
fetch of about 1 MB per partition) the big fetch buffers and batches come from the heap,
which keeps its high-water mark and fragments: in a soak with a 3 s stall every 30 s the
RSS of the service and fetch processes went 208 -> 217 MB and wandered 211-217 MB after.
Pinning the threshold where glibc starts keeps them on mmap: 208 -> 210 MB at the first
stall, then flat.
"""

from __future__ import annotations

import ctypes
import gc
import platform

# numpy's NBUCKETS and NCACHE (numpy/_core/src/multiarray/alloc.c), unchanged since 1.x:
# a freed buffer of n < 1024 bytes is kept if fewer than 7 of that size are kept already.
NUMPY_CACHED_BELOW_BYTES = 1024
NUMPY_CACHED_PER_SIZE = 7


# malloc.h: mallopt's parameter number for M_MMAP_THRESHOLD, and glibc's default for it.
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 128 * 1024


def pin_malloc_mmap_threshold(nbytes: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold at ``nbytes`` (no dynamic raise); False if not glibc."""
    if platform.libc_ver()[0] != "glibc":
        return False  # musl and others: no dynamic threshold to pin
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, nbytes))
    except (OSError, AttributeError):
        return False


def fill_numpy_buffer_cache() -> None:
    """Allocate and free seven buffers of every cached size, so the cache is full."""
    import numpy as np  # here, not at the top: the fetch process imports this module too

    for nbytes in range(1, NUMPY_CACHED_BELOW_BYTES):
        held = [np.empty(nbytes, dtype=np.uint8) for _ in range(NUMPY_CACHED_PER_SIZE)]
        del held  # freed together: all seven go into the cache's slots for this size


def freeze_startup_objects() -> None:
    """Collect once, then move every surviving object out of future collections.

    Full collections then walk only what was created since. Collecting first keeps
    garbage from being frozen (frozen objects are never collected).
    """
    gc.collect()
    gc.freeze()
