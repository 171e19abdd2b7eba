#!/usr/bin/env python3
"""Self-test of check.py and case_count.py; run_server.sh and run_client.sh run it first.

    python3 -m unittest conformance/test_check.py

Cheap: a few tiny reports in a temporary directory, and (with kosoku installed)
two in-process fuzzingservers asked for their case count.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHECK = HERE / "check.py"
CASE_COUNT = HERE / "case_count.py"


def report(case_ids: list[str], **overrides: dict) -> dict:
    """An index.json for one agent with every case OK, except `overrides` by case id."""
    cases = {}
    for case_id in case_ids:
        entry = {"behavior": "OK", "behaviorClose": "OK", "remoteCloseCode": 1000}
        entry.update(overrides.get(case_id, {}))
        cases[case_id] = entry
    return {"wsx": cases}


def case_ids(n: int) -> list[str]:
    return [f"1.{i // 100 + 1}.{i % 100 + 1}" for i in range(n)]


class CheckTest(unittest.TestCase):
    def check(self, index: dict, *args: str) -> subprocess.CompletedProcess:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "index.json"
            path.write_text(json.dumps(index), encoding="utf-8")
            return subprocess.run(
                [sys.executable, str(CHECK), *args, tmp],
                capture_output=True, text=True, check=False)

    def test_a_full_report_passes(self) -> None:
        run = self.check(report(case_ids(517)), "--min-cases", "517")
        self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
        self.assertIn("conformance: 517 passed, 0 failed", run.stdout)

    def test_a_truncated_report_fails_on_its_case_count(self) -> None:
        # All of its cases passed: only the count can catch a run cut short.
        run = self.check(report(case_ids(516)), "--min-cases", "517")
        self.assertEqual(run.returncode, 1, run.stdout + run.stderr)
        self.assertIn("516 cases", run.stdout)
        self.assertIn("expected at least 517", run.stdout)

    def test_an_empty_report_fails_without_a_count(self) -> None:
        run = self.check({})
        self.assertEqual(run.returncode, 1, run.stdout + run.stderr)

    def test_a_failed_case_fails_a_full_report(self) -> None:
        index = report(case_ids(3), **{"1.1.2": {"behavior": "NON-STRICT"}})
        run = self.check(index, "--min-cases", "3")
        self.assertEqual(run.returncode, 1, run.stdout + run.stderr)
        self.assertIn("1.1.2", run.stdout)

    def test_informational_is_accepted_only_where_it_is_the_only_verdict(self) -> None:
        ok = report(["7.1.6", "7.13.1"], **{"7.1.6": {"behavior": "INFORMATIONAL"}})
        self.assertEqual(self.check(ok, "--min-cases", "2").returncode, 0)
        bad = report(["7.1.5"], **{"7.1.5": {"behavior": "INFORMATIONAL"}})
        self.assertEqual(self.check(bad, "--min-cases", "1").returncode, 1)


def kosoku_installed() -> bool:
    try:
        import kosoku  # noqa: F401
    except ImportError:
        return False
    return True


@unittest.skipUnless(kosoku_installed(), "kosoku is not installed in this interpreter")
class CaseCountTest(unittest.TestCase):
    def count(self, *args: str) -> int:
        run = subprocess.run([sys.executable, str(CASE_COUNT), *args],
                             capture_output=True, text=True, check=True, timeout=60)
        return int(run.stdout)

    def test_the_whole_suite_is_517_cases(self) -> None:
        # 1.* to 13.*, as the pinned kosoku serves them.
        self.assertEqual(self.count(), 517)

    def test_globs_select_as_kosoku_does(self) -> None:
        self.assertEqual(self.count("-i", "1.*", "-x", "1.2.*"), 8)


@unittest.skipUnless(kosoku_installed(), "kosoku is not installed in this interpreter")
class ServerModeTest(unittest.TestCase):
    """run_server.sh judges a report as strictly as run_client.sh: by the selection's count."""

    def judge(self, index: dict, **env: str) -> subprocess.CompletedProcess:
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "index.json").write_text(json.dumps(index), encoding="utf-8")
            # The caller's own selection (run_server.sh runs these tests first, under it)
            # must not change the count a test expects.
            inherited = {k: v for k, v in os.environ.items()
                         if k not in ("WSX_AUTOBAHN_INCLUDE", "WSX_AUTOBAHN_EXCLUDE")}
            return subprocess.run(
                ["bash", str(HERE / "run_server.sh")],
                env={**inherited, **env, "WSX_AUTOBAHN_JUDGE_ONLY": tmp},
                capture_output=True, text=True, check=False, timeout=120)

    def test_the_whole_suite_passes(self) -> None:
        run = self.judge(report(case_ids(517)))
        self.assertEqual(run.returncode, 0, run.stdout + run.stderr)

    def test_a_truncated_report_fails(self) -> None:
        run = self.judge(report(case_ids(100)))
        self.assertEqual(run.returncode, 1, run.stdout + run.stderr)
        self.assertIn("expected at least 517", run.stdout)

    def test_the_count_follows_the_selection(self) -> None:
        env = {"WSX_AUTOBAHN_INCLUDE": "1.*", "WSX_AUTOBAHN_EXCLUDE": "1.2.*"}
        self.assertEqual(self.judge(report(case_ids(8)), **env).returncode, 0)
        self.assertEqual(self.judge(report(case_ids(7)), **env).returncode, 1)


if __name__ == "__main__":
    unittest.main()
