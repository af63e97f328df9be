"""The naive Python tailer peer: pygtail reading new lines + 20 stdlib `re` patterns searched per line.

    python bench/naive_tailer.py LOGFILE OFFSET_FILE   ->  {"lines": N, "matches": M, "seconds": S, "cpu": C, "rss": R}
"""

from __future__ import annotations

import json
import re
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from logdata import RULES
from pygtail import Pygtail


def main() -> None:
    path, offset_file = sys.argv[1], sys.argv[2]
    searches = [re.compile(p).search for _, p, _ in RULES]
    t0 = time.perf_counter()
    lines = matches = 0
    for line in Pygtail(path, offset_file=offset_file, every_n=100_000):
        lines += 1
        for search in searches:
            if search(line):
                matches += 1
    seconds = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"lines": lines, "matches": matches, "seconds": seconds,
                      "cpu": usage.ru_utime + usage.ru_stime, "rss": usage.ru_maxrss / 1024}))


if __name__ == "__main__":
    main()
