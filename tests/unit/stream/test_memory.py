"""What a long-running process settles at start: numpy's small-buffer cache, glibc's mmap
threshold, and the collector's view of start-up objects."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from detector.stream import memory

# The scripts below run in fresh interpreters and start with this: glibc's statistics.
MALLINFO = """
import ctypes, sys

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
        "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
"""

# Run in a fresh interpreter: this one's cache is already warm from other tests.
# glibc's mallinfo2 counts the bytes malloc has handed out and not had back, which is
# where numpy's cached buffers sit (tracemalloc does not see them).
CHURN = (
    MALLINFO
    + """
import numpy as np
if sys.argv[1] == "fill":
    from detector.stream.memory import fill_numpy_buffer_cache
    fill_numpy_buffer_cache()
before = libc.mallinfo2().uordblks
# A loop whose batches come in many sizes: temporaries of every small size, a few alive
# at once, as the scorer's masks and index arrays are.
for _ in range(3):
    for nbytes in range(1, 1024):
        temporaries = [np.zeros(nbytes, dtype=np.uint8) for _ in range(7)]
        del temporaries
print(libc.mallinfo2().uordblks - before)
"""
)

needs_glibc = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc", reason="mallinfo2 is glibc's (the images are Debian)"
)


def malloc_growth_mb(mode: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", CHURN, mode], capture_output=True, text=True, check=True
    )
    return int(out.stdout.strip()) / 2**20


@needs_glibc
def test_without_the_fill_buffers_of_new_sizes_stay_with_numpy() -> None:
    # Given a fresh process that has not filled the cache
    # When arrays of every small size are allocated and freed
    growth_mb = malloc_growth_mb("none")
    # Then malloc's in-use bytes grow by about the cache's size (what the fill prevents)
    assert growth_mb > 2.5


@needs_glibc
def test_after_the_fill_buffers_of_any_small_size_add_no_memory() -> None:
    # Given a fresh process that filled the cache at start
    # When arrays of every small size are allocated and freed, over and over
    growth_mb = malloc_growth_mb("fill")
    # Then malloc's in-use bytes do not grow: every buffer comes from, and goes back to,
    # the cache
    assert growth_mb < 0.25


# glibc serves a block of >= its mmap threshold from mmap (counted in mallinfo2.hblkhd).
# Freeing a 1 MB mmapped block raises the dynamic threshold to 1 MB, so a 512 kB block
# comes from the heap after it, unless the threshold is pinned.
MMAP = (
    MALLINFO
    + """
if sys.argv[1] == "pin":
    from detector.stream.memory import pin_malloc_mmap_threshold
    assert pin_malloc_mmap_threshold()
big = bytearray(1 << 20)
del big
before = libc.mallinfo2().hblkhd
held = bytearray(512 << 10)
print(libc.mallinfo2().hblkhd - before >= 512 << 10)
"""
)


def block_after_a_big_free_is_mmapped(mode: str) -> bool:
    out = subprocess.run(
        [sys.executable, "-c", MMAP, mode], capture_output=True, text=True, check=True
    )
    return out.stdout.strip() == "True"


@needs_glibc
def test_without_the_pin_a_big_free_moves_later_big_blocks_to_the_heap() -> None:
    # Given a fresh process with glibc's dynamic mmap threshold
    # When a 1 MB block is freed and then a 512 kB block is allocated
    # Then the 512 kB block comes from the heap (the behaviour the pin prevents)
    assert not block_after_a_big_free_is_mmapped("none")


@needs_glibc
def test_with_the_pin_big_blocks_stay_on_mmap() -> None:
    # Given a fresh process that pinned the mmap threshold at 128 kB
    # When a 1 MB block is freed and then a 512 kB block is allocated
    # Then the 512 kB block is mmapped, so freeing it gives the memory back
    assert block_after_a_big_free_is_mmapped("pin")


FREEZE = """
import gc, weakref
from detector.stream.memory import freeze_startup_objects

class Node:
    pass

kept = [Node() for _ in range(1000)]
garbage = Node()
garbage.self = garbage  # a reference cycle only the collector can free
alive = weakref.ref(garbage)
del garbage
freeze_startup_objects()
print(alive() is None, gc.get_freeze_count() >= len(kept), len(gc.get_objects(2)) < 1000)
"""


def test_start_up_objects_are_frozen_and_garbage_is_not() -> None:
    # Given a process with live objects and an unreachable reference cycle
    # When start-up objects are frozen
    out = subprocess.run(
        [sys.executable, "-c", FREEZE], capture_output=True, text=True, check=True
    ).stdout.split()
    # Then the cycle was collected first (never frozen), the live objects are frozen, and the
    # oldest generation, which a full collection walks, is left nearly empty
    assert out == ["True", "True", "True"]


# 80 MB of heap blocks freed below one block still in use: free() can only shrink the heap
# from its top, so the pages stay resident until malloc_trim hands them back.
TRIM = """
import os, sys

def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

blocks = [bytearray(4000) for _ in range(20_000)]
top = bytearray(4000)
del blocks
before = rss_mb()
if sys.argv[1] == "trim":
    from detector.stream.memory import trim_malloc_heap
    assert trim_malloc_heap()
print(before - rss_mb())
"""


def rss_given_back_mb(mode: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", TRIM, mode], capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip())


@needs_glibc
def test_without_a_trim_freed_heap_pages_stay_resident() -> None:
    # Given a process that freed 80 MB of small blocks below a block still in use
    # When nothing trims the heap
    # Then its RSS keeps those pages (what the periodic trim gives back)
    assert rss_given_back_mb("none") < 10


@needs_glibc
def test_a_trim_gives_freed_heap_pages_back() -> None:
    # Given the same process
    # When the heap is trimmed
    # Then most of the 80 MB leaves its RSS
    assert rss_given_back_mb("trim") > 60


def test_the_heap_trimmer_trims_at_most_once_per_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a trimmer with a 1-hour interval and one with none
    calls: list[int] = []
    monkeypatch.setattr(memory, "trim_malloc_heap", lambda: calls.append(1) or True)
    hourly, always = memory.HeapTrimmer(interval_s=3600.0), memory.HeapTrimmer(interval_s=0.0)
    # When each is called from a loop three times
    for _ in range(3):
        hourly()
        always()
    # Then the hourly one has not trimmed yet and the other trimmed every time
    assert len(calls) == 3
