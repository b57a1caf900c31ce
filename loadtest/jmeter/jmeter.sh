#!/bin/sh
# `jmeter` with the same arguments, working on Debian 12's jmeter 2.13 package.
#
# Debian's JMeter 2.13 cannot read any test plan with the XStream 1.4.20 it is packaged
# with (ForbiddenClassException: org.apache.jmeter.save.ScriptWrapper); on that layout
# this starts JMeter through debian-xstream-fix.bsh, which allows JMeter's own classes
# first. Any other JMeter (an Apache binary release, 5.x) is run as it is.
#
#   loadtest/jmeter/jmeter.sh -n -t loadtest/jmeter/smtp.jmx -Jport=25587 -l smtp.jtl
#
# Environment: JMETER=/path/to/bin/jmeter runs that JMeter instead (no fix applied);
# JVM_ARGS are passed to java on the Debian path (e.g. JVM_ARGS=-Xmx1g).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
if [ -n "${JMETER:-}" ]; then
  exec "$JMETER" "$@"
fi
home=/usr/share/jmeter
if [ -f "$home/bin/ApacheJMeter.jar" ] && [ -f /usr/share/java/bsh.jar ]; then
  # shellcheck disable=SC2086
  exec java ${JVM_ARGS:-} -Djmeter.home="$home" \
    -cp "/usr/share/java/bsh.jar:$home/bin/ApacheJMeter.jar" \
    bsh.Interpreter "$here/debian-xstream-fix.bsh" "$@"
fi
if command -v jmeter >/dev/null 2>&1; then
  exec jmeter "$@"
fi
echo "jmeter.sh: no JMeter found (Debian: apt-get install jmeter jmeter-mail; or set JMETER=/path/to/bin/jmeter)" >&2
exit 127
