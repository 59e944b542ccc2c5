#!/usr/bin/env python3
"""Merge pytest junit files into one, each run one <testsuite> named after its file:
scripts/test.sh runs the integration and the unit tests as two pytest runs, CI reads one
test-artifacts/junit.xml.

    python scripts/junit_merge.py OUT.xml IN.xml...
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def merge(out: Path, parts: list[Path]) -> list[Path]:
    """Write the <testsuite> elements of `parts` under one <testsuites> in `out`, each named
    after its file's stem; returns the parts that were missing (left out)."""
    root = ET.Element("testsuites")
    missing = []
    for part in parts:
        if not part.exists():  # that run ended before writing it
            missing.append(part)
            continue
        for suite in ET.parse(part).getroot().iter("testsuite"):
            suite.set("name", part.stem)  # pytest names every suite "pytest"
            root.append(suite)
    ET.ElementTree(root).write(out, encoding="utf-8", xml_declaration=True)
    return missing


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: junit_merge.py OUT.xml IN.xml...", file=sys.stderr)
        return 2
    missing = merge(Path(argv[0]), [Path(a) for a in argv[1:]])
    for part in missing:
        print(f"junit_merge: {part} is missing: left out", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
