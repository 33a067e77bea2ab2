"""Process-wide settings for the processes that run the model (daemon, front end, CLI jobs, benchmarks)."""

from __future__ import annotations

import ctypes
import logging

import torch

log = logging.getLogger(__name__)

# glibc mallopt parameters
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def tune_process(threads: int | None = None) -> None:
    """Make torch's CPU work fast and predictable in this process.

    - subnormal floats are flushed to zero: decayed memory momentum drifts into them, and x86 computes on them ~100x
      slower;
    - glibc serves large blocks from its heap instead of fresh mmaps: every activation of a 512-token segment is a
      megabyte or more, and a fresh mapping costs a page fault per 4 KiB on each use;
    - `threads` sets torch's intra-op threads (None keeps torch's default).
    """
    torch.set_flush_denormal(True)
    if threads:
        torch.set_num_threads(threads)
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, 256 * 1024 * 1024)
        libc.mallopt(_M_TRIM_THRESHOLD, 512 * 1024 * 1024)
    except (OSError, AttributeError):
        log.debug("not glibc: allocator left as it is")
