"""Memory probes of the current process, for a worker measuring what one parse costs.

Owns: reading this process's RSS and peak RSS from /proc, resetting the peak, and giving freed
heap memory back to the OS (glibc `malloc_trim`). Must not touch: anything but this process.
Everything degrades to "unknown" (0, False) off Linux; the governor then keeps its priors.

Why a peak reset: `ru_maxrss` only ever grows, so after one big file it says nothing about the
next. Writing "5" to /proc/self/clear_refs resets VmHWM to the current RSS (Linux >= 4.0), so
VmHWM after a parse is that parse's own peak, read in C time, with no sampling thread (which
could not run anyway: `ast.parse` holds the GIL from start to end).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_libc = None


def rss() -> int:
    """Resident bytes of this process now (0 when unknown)."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def reset_peak() -> bool:
    """Make the peak RSS (VmHWM) equal to the RSS now; False when the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss() -> int:
    """The peak RSS (VmHWM) since the process started or since `reset_peak()` (0 when unknown)."""
    try:
        with open("/proc/self/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def trim() -> bool:
    """Return free heap pages to the OS (CPython keeps freed arenas mapped); False if unavailable."""
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _libc.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _libc = False
    if not _libc:
        return False
    _libc.malloc_trim(0)
    return True
