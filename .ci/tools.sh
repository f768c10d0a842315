#!/usr/bin/env bash
# System tools the tests use, from Debian's packages: promtool and the prometheus server
# (package prometheus), kcat, and docker-compose 1.29 (parses docker-compose.yml with
# `config -q`, no engine needed). Installed only when missing; tests that need one skip with
# a reason if it cannot be had.
set -uo pipefail
need=()
{ command -v promtool && command -v prometheus; } >/dev/null || need+=(prometheus)
command -v kcat >/dev/null || need+=(kcat)
command -v docker-compose >/dev/null || need+=(docker-compose)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing ${need[*]} from Debian's packages"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}") >/dev/null 2>&1 \
    || echo "warning: could not install ${need[*]}; the tests that need them will skip" >&2
else
  echo "warning: ${need[*]} missing and not root; the tests that need them will skip" >&2
fi
exit 0
