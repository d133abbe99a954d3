#!/usr/bin/env bash
# Debian packages that `make serve` and the service tests need, installed only when missing:
# a PostgreSQL server (the instance storage `make serve` starts itself), Chromium and its
# WebDriver (the UI test drives the real browser). Idempotent: a second run does nothing.
# No browser build and no database binary is downloaded from anywhere but Debian's archive.
set -euo pipefail

need=()
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 && ! command -v postgres >/dev/null 2>&1; then
    need+=(postgresql)
fi
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
# Text in the UI's screenshots needs at least one font.
if command -v fc-list >/dev/null 2>&1 && [ -z "$(fc-list 2>/dev/null | head -1)" ]; then need+=(fonts-dejavu-core); fi
if ! command -v fc-list >/dev/null 2>&1 && [ ! -d /usr/share/fonts/truetype ]; then need+=(fonts-dejavu-core); fi

if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "missing system packages: ${need[*]}" >&2
    echo "install them once with: sudo apt-get install -y ${need[*]}" >&2
    exit 1
fi
echo "installing system packages: ${need[*]}"
# The service runs its own cluster under <data_dir>/postgres; Debian's default cluster
# (a server on port 5432 started at install) is not wanted.
mkdir -p /etc/postgresql-common/createcluster.d
[ -e /etc/postgresql-common/createcluster.d/crystal-pipeline.conf ] ||
    echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/crystal-pipeline.conf
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${need[@]}"
