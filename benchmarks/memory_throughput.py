"""Consolidation throughput of one memory layer at config A, against titans-pytorch when it is installed.

The same measurement as `sleeptime bench memory`; each figure runs in a fresh subprocess (its own peak RSS).

    python benchmarks/memory_throughput.py                 # 8K, 64K, 2M tokens; one call and 512-token segments
    python benchmarks/memory_throughput.py --tokens 65536 --modes segments --json
"""

import sys

from sleeptime.cli import app

if __name__ == "__main__":
    sys.exit(app(["bench", "memory", *sys.argv[1:]]))
