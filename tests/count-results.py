#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Counts real test results (one per GTest case, from each test's TAP output) in meson's
testlog.json files, and prints `N passed, N failed`. A test program that crashed or timed out
before printing its plan counts as one failure on top of the cases it reported."""
import json
import re
import sys

passed = failed = 0
for path in sys.argv[1:]:
    try:
        lines = open(path, encoding="utf-8", errors="replace").read().splitlines()
    except OSError as e:
        print(f"count-results: {path}: {e}", file=sys.stderr)
        failed += 1
        continue
    for line in lines:
        if not line.strip():
            continue
        t = json.loads(line)
        out = t.get("stdout") or ""
        ok = len(re.findall(r"^ok \d+", out, re.M))
        # "ok N # SKIP" is not a pass.
        skipped = len(re.findall(r"^ok \d+.*# SKIP", out, re.M | re.I))
        bad = len(re.findall(r"^not ok \d+", out, re.M))
        if ok == 0 and bad == 0 and t.get("protocol", "tap") != "tap" or (ok == 0 and bad == 0 and "1.." not in out):
            # A plain (exit-status) test, e.g. a lint: one result.
            if t.get("result") == "OK":
                passed += 1
            else:
                failed += 1
                print(f"count-results: {t.get('name')}: {t.get('result')}", file=sys.stderr)
            continue
        passed += ok - skipped
        failed += bad + skipped
        if t.get("result") not in ("OK", "EXPECTEDFAIL") and bad == 0:
            failed += 1  # crashed, timed out, or failed outside any case
            print(f"count-results: {t.get('name')}: {t.get('result')}", file=sys.stderr)
        elif t.get("result") not in ("OK", "EXPECTEDFAIL"):
            print(f"count-results: {t.get('name')}: {t.get('result')}", file=sys.stderr)
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
