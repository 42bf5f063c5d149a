#!/usr/bin/env bash
# Debian packages the test suite drives for real: chromium (the web UI's browser tests, through
# playwright pointed at /usr/bin/chromium: no browser download) and postgresql (the replica tests
# start their own unprivileged cluster; the packaged service is not used). Idempotent; needs root
# (or sudo).
set -euo pipefail
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
[ ${#missing[@]} -eq 0 ] && exit 0
as_root=""
[ "$(id -u)" -eq 0 ] || as_root="sudo"
echo "installing Debian packages: ${missing[*]}" >&2
$as_root apt-get update -q
DEBIAN_FRONTEND=noninteractive $as_root apt-get install -y -q --no-install-recommends "${missing[@]}"
