#!/usr/bin/env bash
# Make sure PostgreSQL's server binaries (initdb, pg_ctl, postgres) are there for the test of
# `edgeslim auto --worker` on a shared study (tests/search/test_auto_postgres.py starts its own
# throw-away server; nothing is configured or started here). Where apt is available and we are root,
# install Debian's postgresql package. Never fatal: without the binaries that test skips, saying why.
set -u
have() {
  [ -n "${EDGESLIM_PG_BIN:-}" ] && [ -x "$EDGESLIM_PG_BIN/initdb" ] && return 0
  command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1 && return 0
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1
}
if have; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "installing Debian's postgresql (server binaries for the PostgreSQL worker test) ..."
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql) \
    >/dev/null 2>&1 && have && exit 0
  echo "note: apt-get could not install postgresql; the PostgreSQL worker test will skip" >&2
else
  echo "note: no PostgreSQL server binaries (apt-get install postgresql, or set EDGESLIM_PG_BIN); the PostgreSQL worker test will skip" >&2
fi
exit 0
