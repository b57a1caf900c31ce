#!/usr/bin/env bash
# Varan vs Postfix+Dovecot: the same varan-loadtest SMTP workloads against
# both servers on loopback, end-to-end delivered msgs/s, latency, CPU, RSS,
# and the machine's physical limits. Writes docs/performance/results-<date>.json,
# docs/performance/latest.md and SVG plots. See docs/performance.md.
#
#   benches/compare.sh                 full set (~10 min SMTP + ~5.5 min IMAP/POP3)
#   benches/compare.sh --imap          only IMAP/POP3 (mixed IMAP at 10/100/1000 clients, POP3, 10,000 IDLE)
#   benches/compare.sh --no-imap       only SMTP
#   benches/compare.sh --quick         CI smoke (~1-2 min; writes to target/compare-quick/)
#   benches/compare.sh --varan-only    skip the Postfix+Dovecot peer
#   benches/compare.sh --help          all options
#
# Needs python3 (standard library only), cargo (only when binaries are
# missing or --rebuild), and root for the peer (it installs packages and
# runs Postfix/Dovecot as their system users).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec python3 "$here/compare.py" "$@"
