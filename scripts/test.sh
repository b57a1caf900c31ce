#!/usr/bin/env bash
# The one command that runs every Varan test (README: `scripts/test.sh`).
#
#   1. installs what the tests need when it is missing (Debian packages: swaks, msmtp,
#      postfix for the relay test and its smtp-sink for shards/tests/outbound.rs;
#      dnsmasq-base for that test's DNS; the IMAP/POP3 clients isync, offlineimap3, fetchmail,
#      getmail6, neomutt and dovecot-imapd for test_imap_clients.py, dovecot-lmtpd for test_lmtp.py; jmeter and
#      jmeter-mail for test_jmeter.py; opendkim-tools (opendkim-testmsg) for test_outbound.py; pytest for the python3 on PATH). Idempotent; apt and pip output goes to a log file. Nothing is
#      installed when all is present.
#   2. cargo build --release --workspace
#   3. unit and integration tests: cargo nextest (when installed) or cargo test,
#      --workspace --release, plus doc tests; benches in test mode and the
#      comparison runner's --quick --varan-only smoke
#   4. the end-to-end suite tests/e2e (pytest) against target/release/varan on loopback
#
# Usage: scripts/test.sh [--no-install] [--no-cargo-test] [--no-e2e] [-- PYTEST_ARGS...]
#   e.g. scripts/test.sh --no-cargo-test -- -k smuggling -x
# Environment: VARAN_TEST_LOGS=DIR (default target/test-logs) for the install and build logs.
# Exit status: 0 only when every step that ran passed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

do_install=1 do_cargo_test=1 do_e2e=1
pytest_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --no-install) do_install=0 ;;
    --no-cargo-test) do_cargo_test=0 ;;
    --no-e2e) do_e2e=0 ;;
    --) shift; pytest_args=("$@"); break ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "test.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

LOGS=${VARAN_TEST_LOGS:-$ROOT/target/test-logs}
mkdir -p "$LOGS"
export DEBIAN_FRONTEND=noninteractive
export PYTHONDONTWRITEBYTECODE=1
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
PY=${PYTHON:-python3}

say() { printf '==> %s\n' "$*"; }
# Runs a command with its output in a log; on failure shows the log's end and fails.
logged() {
  local log=$1; shift
  if ! "$@" >>"$log" 2>&1; then
    echo "test.sh: failed: $* (last lines of $log follow)" >&2
    tail -n 60 "$log" >&2
    return 1
  fi
}

# ---------------------------------------------------------------- 1. dependencies
APT_PKGS=(swaks libnet-ssleay-perl libauthen-sasl-perl msmtp postfix dnsmasq-base
          isync offlineimap3 fetchmail getmail6 neomutt dovecot-core dovecot-imapd dovecot-lmtpd
          jmeter jmeter-mail opendkim-tools)
# command each package provides (checked first: cheaper than dpkg and catches hand installs)
pkg_present() {
  case "$1" in
    swaks) command -v swaks >/dev/null ;;
    msmtp) command -v msmtp >/dev/null ;;
    postfix) command -v postfix >/dev/null && [ -x /usr/lib/postfix/sbin/master ] ;;
    dnsmasq-base) command -v dnsmasq >/dev/null ;;
    isync) command -v mbsync >/dev/null ;;
    offlineimap3) command -v offlineimap >/dev/null ;;
    fetchmail) command -v fetchmail >/dev/null ;;
    getmail6) command -v getmail >/dev/null ;;
    neomutt) command -v neomutt >/dev/null ;;
    dovecot-imapd) [ -x /usr/lib/dovecot/imap ] ;;
    dovecot-lmtpd) [ -x /usr/lib/dovecot/lmtp ] ;;
    jmeter) command -v jmeter >/dev/null ;;
    opendkim-tools) [ -x /usr/sbin/opendkim-testmsg ] ;;
    jmeter-mail) [ -f /usr/share/jmeter/lib/ext/ApacheJMeter_mail.jar ] ;;
    *) dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed' ;;
  esac
}

install_apt() {
  local missing=() p
  for p in "${APT_PKGS[@]}"; do pkg_present "$p" || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "test.sh: missing packages ${missing[*]} and not root: install them, or the e2e tests that need them fail" >&2
    return 0
  fi
  say "installing ${missing[*]} (log: $LOGS/apt.log)"
  # Postfix must not configure or start a system instance on port 25: the relay test
  # runs its own private instance on loopback.
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  logged "$LOGS/apt.log" apt-get update -q
  logged "$LOGS/apt.log" apt-get install -y -q -o Dpkg::Use-Pty=0 "${missing[@]}"
  if [ -f /etc/postfix/main.cf ] && postfix status >/dev/null 2>&1; then
    say "stopping the system Postfix instance the package started"
    postfix stop >>"$LOGS/apt.log" 2>&1 || true
  fi
  # Likewise Dovecot: test_imap_clients.py starts a private instance on its own ports.
  if [ -s /run/dovecot/master.pid ] && kill -0 "$(cat /run/dovecot/master.pid)" 2>/dev/null; then
    say "stopping the system Dovecot instance the package started"
    doveadm stop >>"$LOGS/apt.log" 2>&1 || true
  fi
}

install_pytest() {
  # pytest runs the e2e suite; dkimpy verifies Varan's DKIM signatures independently.
  "$PY" -c 'import pytest, dkim' 2>/dev/null && return 0
  say "installing pytest and dkimpy for $PY (log: $LOGS/pip.log)"
  if logged "$LOGS/pip.log" "$PY" -m pip install -q --disable-pip-version-check 'pytest>=7' 'dkimpy>=1.1'; then
    return 0
  fi
  # A Debian-managed python refuses pip (PEP 668): use Debian's packages and python.
  [ "$(id -u)" -eq 0 ] || { echo "test.sh: cannot install pytest/dkimpy" >&2; return 1; }
  logged "$LOGS/apt.log" apt-get update -q
  logged "$LOGS/apt.log" apt-get install -y -q -o Dpkg::Use-Pty=0 python3-pytest python3-dkim
  PY=/usr/bin/python3
}

if [ $do_install = 1 ]; then
  install_apt
  [ $do_e2e = 1 ] && install_pytest
fi

# ---------------------------------------------------------------- 2. build
say "cargo build --release --workspace (log: $LOGS/build.log)"
: >"$LOGS/build.log"
logged "$LOGS/build.log" cargo build --release --workspace

status=0

# ---------------------------------------------------------------- 3. unit + integration
if [ $do_cargo_test = 1 ]; then
  if cargo nextest --version >/dev/null 2>&1; then
    say "cargo nextest run --workspace --release"
    timeout -k 30 1800 cargo nextest run --workspace --release --cargo-quiet --no-tests=warn \
      --status-level fail --final-status-level slow || status=1
    say "cargo test --doc --workspace --release"
    timeout -k 30 900 cargo test --doc --workspace --release -q || status=1
  else
    say "cargo test --workspace --release"
    timeout -k 30 1800 cargo test --workspace --release || status=1
  fi
fi

# ---------------------------------------------------------------- 3b. benchmarks stay runnable
# Criterion benches once each (test mode) and the comparison runner's quick
# smoke against Varan alone, so neither rots; full runs are by hand
# (docs/performance.md).
if [ $do_cargo_test = 1 ]; then
  say "cargo bench -p varan-benches -- --test"
  timeout -k 30 900 cargo bench -p varan-benches -q -- --test >"$LOGS/bench-test.log" 2>&1 || { tail -n 40 "$LOGS/bench-test.log" >&2; status=1; }
  say "benches/compare.sh --quick --varan-only"
  timeout -k 30 600 bash benches/compare.sh --quick --varan-only >"$LOGS/compare-quick.log" 2>&1 || { tail -n 40 "$LOGS/compare-quick.log" >&2; status=1; }
fi

# ---------------------------------------------------------------- 4. end to end
if [ $do_e2e = 1 ]; then
  say "pytest tests/e2e (real varan on 127.0.0.1)"
  export VARAN_BIN=${VARAN_BIN:-$ROOT/target/release/varan}
  export VARAN_LOADTEST_BIN=${VARAN_LOADTEST_BIN:-$ROOT/target/release/varan-loadtest}
  # Every test has its own time limit (conftest.py); this bounds the whole suite.
  timeout -k 30 1800 "$PY" -m pytest tests/e2e -q -rfEsx "${pytest_args[@]}" || status=1
fi

# On success the last line is the test runner's own summary (CI reads it).
[ $status -eq 0 ] || echo "test.sh: FAILED (see the output above; install/build logs in $LOGS)" >&2
exit $status
