"""Process settings for speed that change no number: keep freed heap memory in the process.

A vectorized evaluation allocates and frees tens of MB per block; glibc returns the top of the heap to
the OS after each free above ``M_TRIM_THRESHOLD`` and serves arrays above ``M_MMAP_THRESHOLD`` from fresh
``mmap``s, so every block page-faults its memory in again (~1.3 us per 4 KB page on the 2-core CI VM:
35-40% of a 1e5-point grid; issue 18). ``keep_heap`` raises both thresholds with ``mallopt`` (glibc
malloc.h: M_TRIM_THRESHOLD = -1, M_MMAP_THRESHOLD = -3), so freed blocks are reused. The process keeps
its peak heap until it exits. Elsewhere than glibc it does nothing. The CLI calls it; ``make bench``
calls it so that it measures what the CLI runs; a library user may call it.
"""

from __future__ import annotations

import ctypes

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
#: Bytes of free heap kept before trimming, and the allocation size served by mmap: above one block's
#: arrays (a 65,536-point block holds ~30 MB).
KEEP_BYTES = 1 << 30
MMAP_BYTES = 1 << 28

_done = False


def keep_heap() -> bool:
    """Raise glibc's trim and mmap thresholds once per process; True when glibc took them."""
    global _done
    if _done:
        return True
    try:  # the glibc soname directly: ctypes.util.find_library runs ldconfig (~15 ms)
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _done = bool(mallopt(M_TRIM_THRESHOLD, KEEP_BYTES)) and bool(mallopt(M_MMAP_THRESHOLD, MMAP_BYTES))
    return _done
