#!/usr/bin/env bash
# disk.sh GIB WHAT: stop with a clear message when the file system of the working directory
# has less than GIB GiB free (a half-installed torch is the failure this prevents; pip then
# reports "No space left on device" deep in its output).
set -euo pipefail
need_gib="$1" what="$2"
free_kib="$(df -Pk . | awk 'NR == 2 {print $4}')"
if [ "$free_kib" -lt $((need_gib * 1024 * 1024)) ]; then
  echo "error: $(df -Ph . | awk 'NR == 2 {print $4}') free on $(df -P . | awk 'NR == 2 {print $6}');" \
       "$what needs about $need_gib GiB. Free some space (old clones, ~/.cache/pip) and run again." >&2
  exit 1
fi
