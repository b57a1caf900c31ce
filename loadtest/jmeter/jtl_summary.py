#!/usr/bin/env python3
"""Summary of a JMeter CSV result file (.jtl): per sampler label the samples, errors,
throughput and elapsed-time percentiles, plus the most frequent error messages.

    python3 loadtest/jmeter/jtl_summary.py results.jtl [--json] [--fail-on-errors]

Reads files with a header line (-Jjmeter.save.saveservice.print_field_names=true,
which run.sh passes) and, when the first line is data, assumes JMeter 2.13's default
columns. A `messages_found` column (-Jsample_variables=messages_found, set by the
IMAP/POP3 plans' extractor) is summed as "messages read".
Throughput = samples / (end of the last sample - start of the first), per label and
overall. Exit status 1 with --fail-on-errors when any sample failed, 2 when the file
holds no samples.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections import Counter, defaultdict

# JMeter 2.13's CSV columns when print_field_names=false (its default).
DEFAULT_2_13 = ["timeStamp", "elapsed", "label", "responseCode", "responseMessage", "threadName",
                "dataType", "success", "bytes", "grpThreads", "allThreads", "Latency"]


def read(path: str) -> list[dict]:
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        rows = list(csv.reader(f))
    if not rows:
        return []
    if rows[0] and rows[0][0] == "timeStamp":
        names, data = rows[0], rows[1:]
    else:
        names, data = DEFAULT_2_13, rows
        if data and len(data[0]) > len(names):     # sample_variables without a header
            names = names + [f"var{i}" for i in range(len(data[0]) - len(names))]
    return [dict(zip(names, r)) for r in data if r]


def pct(sorted_values: list[int], p: float) -> int:
    if not sorted_values:
        return 0
    k = max(0, min(len(sorted_values) - 1, math.ceil(p / 100.0 * len(sorted_values)) - 1))   # nearest rank
    return sorted_values[k]


def summarize(rows: list[dict]) -> dict:
    by_label: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_label[r.get("label", "?")].append(r)

    def stats(rs: list[dict]) -> dict:
        el = sorted(int(r.get("elapsed") or 0) for r in rs)
        starts = [int(r.get("timeStamp") or 0) for r in rs]
        ends = [int(r.get("timeStamp") or 0) + int(r.get("elapsed") or 0) for r in rs]
        span = (max(ends) - min(starts)) / 1000.0 if rs else 0.0
        errors = [r for r in rs if (r.get("success") or "").strip().lower() != "true"]
        out = {
            "samples": len(rs),
            "errors": len(errors),
            "error_pct": round(100.0 * len(errors) / len(rs), 2) if rs else 0.0,
            "seconds": round(span, 3),
            "throughput_per_s": round(len(rs) / span, 2) if span > 0 else 0.0,
            "bytes": sum(int(r.get("bytes") or 0) for r in rs),
            "elapsed_ms": {"avg": round(sum(el) / len(el), 1) if el else 0, "p50": pct(el, 50),
                           "p90": pct(el, 90), "p99": pct(el, 99), "max": el[-1] if el else 0},
        }
        found = [int(r["messages_found"]) for r in rs
                 if (r.get("messages_found") or "").lstrip("-").isdigit() and int(r["messages_found"]) >= 0]
        if found:
            out["messages_read"] = sum(found)
        msgs = Counter(" ".join((r.get("responseMessage") or r.get("responseCode") or "?").split())[:160]
                       for r in errors)
        out["top_errors"] = msgs.most_common(5)
        return out

    return {"labels": {k: stats(v) for k, v in sorted(by_label.items())}, "total": stats(rows)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("jtl")
    ap.add_argument("--json", action="store_true", help="print the summary as JSON")
    ap.add_argument("--fail-on-errors", action="store_true", help="exit 1 when any sample failed")
    a = ap.parse_args()
    rows = read(a.jtl)
    if not rows:
        print(f"{a.jtl}: no samples", file=sys.stderr)
        return 2
    s = summarize(rows)
    if a.json:
        print(json.dumps(s, indent=2))
    else:
        print(f"{'label':<16} {'samples':>8} {'errors':>7} {'err%':>6} {'per s':>8} "
              f"{'avg ms':>7} {'p50':>6} {'p90':>6} {'p99':>6} {'max':>6}  read")
        for name, st in [*s["labels"].items(), ("TOTAL", s["total"])]:
            e = st["elapsed_ms"]
            print(f"{name[:16]:<16} {st['samples']:>8} {st['errors']:>7} {st['error_pct']:>6} "
                  f"{st['throughput_per_s']:>8} {e['avg']:>7} {e['p50']:>6} {e['p90']:>6} {e['p99']:>6} "
                  f"{e['max']:>6}  {st.get('messages_read', '-')}")
        for msg, n in s["total"]["top_errors"]:
            print(f"  error x{n}: {msg}")
    return 1 if a.fail_on_errors and s["total"]["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
