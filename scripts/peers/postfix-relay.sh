#!/usr/bin/env bash
# A private Postfix instance on loopback that relays everything it accepts to one
# smarthost (Varan under test). Used by tests/e2e/test_postfix_relay.py; usable by hand.
# The system /etc/postfix is never read or changed: config, queue and log live in DIR.
#
#   postfix-relay.sh start DIR LISTEN_PORT RELAY_PORT [TLS_LEVEL]
#       writes DIR/etc/{main,master}.cf, starts Postfix listening on 127.0.0.1:LISTEN_PORT,
#       relayhost [127.0.0.1]:RELAY_PORT; TLS_LEVEL is Postfix's smtp_tls_security_level
#       for the hop to Varan (none (default), may, encrypt). Waits until the port accepts.
#   postfix-relay.sh stop DIR      stops that instance (state in DIR is kept)
#   postfix-relay.sh queue DIR     prints the instance's queue (postqueue -p)
# DIR must be reachable by the `postfix` user (not under a 0700 directory), e.g. in /var/tmp.
set -euo pipefail

cmd=${1:-}; dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop|queue DIR [LISTEN_PORT RELAY_PORT [TLS_LEVEL]]" >&2; exit 2; }
etc=$dir/etc

running() { [ -f "$etc/main.cf" ] && postfix -c "$etc" status >/dev/null 2>&1; }

start() {
  local listen=${3:?LISTEN_PORT} relay=${4:?RELAY_PORT} tls=${5:-none}
  command -v postfix >/dev/null || { echo "postfix-relay: postfix is not installed" >&2; exit 3; }
  id postfix >/dev/null 2>&1 || { echo "postfix-relay: no postfix user (package not installed?)" >&2; exit 3; }
  mkdir -p "$etc" "$dir/spool" "$dir/data"
  chmod 755 "$dir" "$etc"
  chown postfix "$dir/data"
  cat >"$etc/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $dir/spool
data_directory = $dir/data
maillog_file = $dir/maillog
myhostname = relay.e2e.test
mydomain = e2e.test
myorigin = \$myhostname
mydestination =
local_recipient_maps =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
relayhost = [127.0.0.1]:$relay
default_transport = smtp
relay_transport = smtp
local_transport = error:no local delivery on the e2e relay
alias_maps =
alias_database =
smtp_dns_support_level = disabled
smtp_host_lookup = native
smtpd_peername_lookup = no
smtp_tls_security_level = $tls
smtp_tls_loglevel = 1
smtp_connect_timeout = 5s
queue_run_delay = 2s
minimal_backoff_time = 2s
maximal_backoff_time = 4s
biff = no
append_dot_mydomain = no
readme_directory = no
EOF
  cat >"$etc/master.cf" <<EOF
127.0.0.1:$listen inet n - n - - smtpd
pickup   unix n - n 60 1 pickup
cleanup  unix n - n -  0 cleanup
qmgr     unix n - n 300 1 qmgr
tlsmgr   unix - - n 1000? 1 tlsmgr
rewrite  unix - - n -  - trivial-rewrite
bounce   unix - - n -  0 bounce
defer    unix - - n -  0 bounce
trace    unix - - n -  0 bounce
verify   unix - - n -  1 verify
flush    unix n - n 1000? 0 flush
proxymap unix - - n -  - proxymap
smtp     unix - - n -  - smtp
relay    unix - - n -  - smtp
showq    unix n - n -  - showq
error    unix - - n -  - error
retry    unix - - n -  - error
discard  unix - - n -  - discard
anvil    unix - - n -  1 anvil
scache   unix - - n -  1 scache
postlog  unix-dgram n - n - 1 postlogd
EOF
  running || postfix -c "$etc" start >"$dir/start.log" 2>&1 || {
    echo "postfix-relay: start failed:" >&2; cat "$dir/start.log" >&2; exit 1; }
  local i
  for i in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$listen") 2>/dev/null && { echo "postfix-relay: up on 127.0.0.1:$listen -> [127.0.0.1]:$relay (tls $tls)"; return 0; }
    sleep 0.1
  done
  echo "postfix-relay: 127.0.0.1:$listen not accepting after 10 s; $dir/maillog:" >&2
  tail -n 30 "$dir/maillog" >&2 2>/dev/null || true
  exit 1
}

stop() {
  running || return 0
  postfix -c "$etc" stop >/dev/null 2>&1 || true
  local i
  for i in $(seq 100); do running || return 0; sleep 0.1; done
  postfix -c "$etc" abort >/dev/null 2>&1 || true
}

case "$cmd" in
  start) start "$@" ;;
  stop) stop ;;
  queue) postqueue -c "$etc" -p ;;
  *) echo "usage: $0 start|stop|queue DIR ..." >&2; exit 2 ;;
esac
