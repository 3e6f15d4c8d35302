#!/bin/sh
# Snapshot of the committed tree plus this issue's files into $1 (default /tmp/snap), so that a
# device run or a local test is not disturbed by other engineers' uncommitted edits.
set -e
DST=${1:-/tmp/snap}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
rm -rf "$DST"; mkdir -p "$DST"
cd "$ROOT"
git archive HEAD | tar -x -C "$DST"
for f in build_backends.py pyllamacy/backends.py tests/test_backends.py pyproject.toml \
         packaging docs/BACKENDS.md .github/workflows; do
    [ -e "$f" ] && mkdir -p "$DST/$(dirname "$f")" && cp -a "$f" "$DST/$(dirname "$f")/"
done
# HEAD's __init__.py plus the one discovery call
python3 - "$DST/pyllamacy/__init__.py" <<'PY'
import sys
p = sys.argv[1]; s = open(p).read()
old = "from . import _llama\nfrom ._llama import ("
if old in s:
    s = s.replace(old, "from . import _llama\n"
        "# installed backend packages (pyllamacy-cuda, -vulkan, ...): loaded before the names below are\n"
        "# bound, so that `pyllamacy.backends` stays the function and not the submodule\n"
        "from .backends import _safe_discover\n_safe_discover()\nfrom ._llama import (  # noqa: E402")
    s = s.replace('\n__version__ = "0.1.0"\n', '\n', 1)
    s = s.replace("from . import _llama\n", '__version__ = "0.1.0"     # before discovery, which '
                  'checks backend packages against it\n\nfrom . import _llama\n', 1)
    open(p, "w").write(s)
PY
