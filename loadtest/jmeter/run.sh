#!/usr/bin/env bash
# Runs one JMeter plan of this directory headless and prints a throughput/error summary.
#
# Usage: loadtest/jmeter/run.sh smtp|imap|pop3|PLAN.jmx [options] [JMETER_ARGS...]
#   -u PATTERN   user address pattern, {i} = 1..N       (default u{i}@bench.test)
#   -p PATTERN   password pattern, {i} allowed           (default pw{i})
#   -n N         number of users written to the CSV      (default 10)
#   -f FILE      use this users CSV (email,password lines) instead of writing one
#   -o DIR       results directory                       (default ./jmeter-results)
#   JMETER_ARGS  passed to JMeter as they are, e.g. -Jhost=... -Jport=... -Jthreads=...
#
# Example against `varan quickstart DIR --domain bench.test --port-base 25000`:
#   loadtest/jmeter/run.sh smtp -n 4 -Jport=25587 -Jthreads=8 -Jloops=50
#   loadtest/jmeter/run.sh imap -n 4 -Jport=25143 -Jthreads=8 -Jloops=50
#
# Writes DIR/<plan>-<time>.jtl (CSV with a header line), .log (JMeter's log) and
# users.csv, then prints loadtest/jmeter/jtl_summary.py's table. Exit status: JMeter's
# when it failed, 1 when any sample failed, 0 otherwise.
# JMeter: loadtest/jmeter/jmeter.sh (Debian's 2.13 with its XStream fix, or $JMETER).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
usage() { sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

[ $# -ge 1 ] || { usage >&2; exit 2; }
case "$1" in
  -h|--help) usage; exit 0 ;;
  smtp|imap|pop3) plan="$here/$1.jmx" ;;
  *) plan=$1 ;;
esac
shift
[ -f "$plan" ] || { echo "run.sh: no plan $plan" >&2; exit 2; }

pattern='u{i}@bench.test' pwpattern='pw{i}' count=10 users_file='' outdir=./jmeter-results
jargs=()
while [ $# -gt 0 ]; do
  case "$1" in
    -u) pattern=$2; shift ;;
    -p) pwpattern=$2; shift ;;
    -n) count=$2; shift ;;
    -f) users_file=$2; shift ;;
    -o) outdir=$2; shift ;;
    *) jargs+=("$1") ;;
  esac
  shift
done

mkdir -p "$outdir"
outdir=$(cd "$outdir" && pwd)
if [ -z "$users_file" ]; then
  users_file=$outdir/users.csv
  : >"$users_file"
  for ((i = 1; i <= count; i++)); do
    printf '%s,%s\n' "${pattern//\{i\}/$i}" "${pwpattern//\{i\}/$i}" >>"$users_file"
  done
fi
[ -s "$users_file" ] || { echo "run.sh: users file $users_file is empty" >&2; exit 2; }
users_file=$(cd "$(dirname "$users_file")" && pwd)/$(basename "$users_file")

name=$(basename "$plan" .jmx)-$(date +%Y%m%d-%H%M%S)
jtl=$outdir/$name.jtl
echo "run.sh: $(basename "$plan"), users $users_file ($(wc -l <"$users_file") lines), results $jtl"
status=0
"$here/jmeter.sh" -n -t "$plan" -l "$jtl" -j "$outdir/$name.log" \
  -Jusers="$users_file" \
  -Jjmeter.save.saveservice.print_field_names=true \
  -Jsample_variables=messages_found \
  "${jargs[@]}" || status=$?
if [ $status -ne 0 ]; then
  echo "run.sh: JMeter exited with $status (log: $outdir/$name.log)" >&2
  exit $status
fi
python3 "$here/jtl_summary.py" --fail-on-errors "$jtl"
