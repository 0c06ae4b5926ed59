#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks to build and test tollgate:
# cmake (pingora's zlib-ng build), python3-venv (acceptance tests), ca-certificates (TLS
# upstreams), curl, openssl (test certificates), postgresql (the shared-store tests start
# their own server on loopback), prometheus (promtool checks conf/prometheus/; tests/prometheus.rs
# runs the server on loopback), chromium (the web console's browser tests, driven by Playwright).
# Does nothing when they are present.
set -euo pipefail
need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
[ -f /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
command -v npm >/dev/null 2>&1 || need+=(npm)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
{ command -v prometheus && command -v promtool; } >/dev/null 2>&1 || need+=(prometheus)
[ -x /usr/bin/chromium ] || need+=(chromium)
if ((${#need[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  echo "installing: ${need[*]}"
  if [[ " ${need[*]} " == *" postgresql "* ]]; then
    # No default cluster on port 5432: the tests start their own server (tests/postgres.sh).
    $sudo mkdir -p /etc/postgresql-common
    echo "create_main_cluster = false" | $sudo tee /etc/postgresql-common/createcluster.conf >/dev/null
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq -o Dpkg::Options::=--force-confold "${need[@]}" >/dev/null
fi
