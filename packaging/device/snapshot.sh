#!/bin/sh
# Snapshot of the committed tree (HEAD) into $1 (default /tmp/snap): a device run builds exactly
# what is committed, whatever is being edited in the working tree meanwhile.
set -e
DST=${1:-/tmp/snap}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
rm -rf "$DST"; mkdir -p "$DST"
cd "$ROOT"
git archive HEAD | tar -x -C "$DST"
