"""numpy's small-buffer cache, filled at start so a scoring loop's RSS does not creep."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

# Run in a fresh interpreter: this one's cache is already warm from other tests.
# glibc's mallinfo2 counts the bytes malloc has handed out and not had back, which is
# where numpy's cached buffers sit (tracemalloc does not see them).
CHURN = """
import ctypes, sys
import numpy as np

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
        "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
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
