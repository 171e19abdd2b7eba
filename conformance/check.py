#!/usr/bin/env python3
"""Judge a kosoku (Autobahn) report: exit 0 only if every case is OK.

Usage: check.py REPORT [--min-cases N]

REPORT is kosoku's output directory or its index.json. The layout kosoku
writes (the same as Autobahn's wstest) is

    { AGENT: { CASE_ID: { "behavior": "OK" | "NON-STRICT" | "FAILED"
                                      | "INFORMATIONAL" | "UNIMPLEMENTED" | "ERROR",
                          "behaviorClose": "OK" | "INFORMATIONAL" | "FAILED"
                                      | "FAILED BY CLIENT" | "WRONG CODE" | "UNCLEAN",
                          "remoteCloseCode": int | null,
                          "duration": int (ms),
                          "reportfile": "AGENT_case_1_1_1.json" } } }

with one per-case JSON file (fields such as "result", "resultClose",
"remoteCloseReason") beside index.json.

The rule is stricter than kosoku's own exit status, which also passes
NON-STRICT:
  - behavior must be OK, except INFORMATIONAL for the cases that can only be
    informational (7.1.6, 7.13.1, 7.13.2); UNIMPLEMENTED never passes;
  - behaviorClose, when present, must be OK or INFORMATIONAL;
  - a report with no cases (or fewer than --min-cases) fails. run_server.sh
    and run_client.sh both pass the number of cases kosoku selects for the
    run's globs (case_count.py, /getCaseCount), so a run cut short fails.

test_check.py is this script's self-test.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

# Autobahn cases whose verdict is INFORMATIONAL for every conforming peer:
# 7.1.6 (a large message racing a close), 7.13.1/7.13.2 (close codes 5000 and
# 65535, which RFC 6455 leaves to the implementation).
INFORMATIONAL_ALLOWED = frozenset({"7.1.6", "7.13.1", "7.13.2"})
CLOSE_OK = frozenset({"OK", "INFORMATIONAL"})


def case_sort_key(case_id: str) -> list[int]:
    try:
        return [int(p) for p in case_id.split(".")]
    except ValueError:
        return [1 << 30]


def verdict(case_id: str, entry: dict) -> str | None:
    """Return why the case fails, or None if it passes."""
    behavior = entry.get("behavior")
    problems = []
    if behavior == "INFORMATIONAL":
        if case_id not in INFORMATIONAL_ALLOWED:
            problems.append("behavior INFORMATIONAL is accepted only for "
                            + ", ".join(sorted(INFORMATIONAL_ALLOWED)))
    elif behavior != "OK":
        problems.append(f"behavior {behavior}")
    if "behaviorClose" in entry and entry["behaviorClose"] not in CLOSE_OK:
        problems.append(f"behaviorClose {entry['behaviorClose']}")
    return "; ".join(problems) or None


def detail(report_dir: Path, entry: dict) -> str:
    """One line of explanation from the per-case report, if it is there."""
    name = entry.get("reportfile")
    if not name:
        return ""
    try:
        case = json.loads((report_dir / name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    parts = []
    for key in ("result", "resultClose"):
        if case.get(key):
            parts.append(str(case[key]))
    if case.get("remoteCloseReason"):
        parts.append(f"remote reason {case['remoteCloseReason']!r}")
    # Deduplicate while keeping order (result and resultClose often agree).
    return " | ".join(dict.fromkeys(parts))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", help="report directory or its index.json")
    parser.add_argument("--min-cases", type=int, default=1,
                        help="fail if the report has fewer cases (default: 1)")
    args = parser.parse_args()

    path = Path(args.report)
    index_path = path / "index.json" if path.is_dir() else path
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        print(f"check.py: cannot read {index_path}: {e}", file=sys.stderr)
        return 2
    if not isinstance(index, dict):
        print(f"check.py: {index_path}: expected an object of agents", file=sys.stderr)
        return 2

    failures = 0
    total = 0
    for agent, cases in sorted(index.items()):
        behaviors = Counter(e.get("behavior", "?") for e in cases.values())
        closes = Counter(e.get("behaviorClose", "-") for e in cases.values())
        total += len(cases)
        print(f"agent {agent!r}: {len(cases)} cases")
        print("  behavior:      " + ", ".join(f"{k} {v}" for k, v in sorted(behaviors.items())))
        print("  behaviorClose: " + ", ".join(f"{k} {v}" for k, v in sorted(closes.items())))

        not_ok = []
        for case_id in sorted(cases, key=case_sort_key):
            entry = cases[case_id]
            if entry.get("behavior") == "OK" and entry.get("behaviorClose", "OK") == "OK":
                continue
            why = verdict(case_id, entry)
            not_ok.append((case_id, entry, why))
        if not_ok:
            print("  cases not OK:")
        for case_id, entry, why in not_ok:
            status = "FAIL" if why else "accepted"
            failures += bool(why)
            line = (f"    {status:8} {case_id:8} behavior={entry.get('behavior')} "
                    f"behaviorClose={entry.get('behaviorClose', '-')} "
                    f"remoteCloseCode={entry.get('remoteCloseCode')}")
            print(line)
            extra = detail(index_path.parent, entry)
            if extra:
                print(f"             {extra}")

    if total < max(args.min_cases, 1):
        print(f"conformance: FAILED: {total} cases in {index_path}, "
              f"expected at least {max(args.min_cases, 1)}")
        return 1
    if failures:
        print(f"conformance: {total - failures} passed, {failures} failed ({index_path})")
        return 1
    print(f"conformance: {total} passed, 0 failed ({index_path})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
