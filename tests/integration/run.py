#!/usr/bin/env python3
"""run.py: runs keyway's integration tests (tests/integration/test_*.py), one line per test, and ends
with the plain line "N passed, N failed" that CI reads. Exit 1 on any failure or error.

    run.py [-v] [-k SUBSTRING]... [MODULE_OR_TEST_ID ...]

Examples: run.py ; run.py test_errors ; run.py -k keep_alive ; run.py test_auth.AuthTest.test_revoke
Binaries: $KEYWAYD / $KEYWAYCTL, else $KEYWAY_BUILD_DIR (default <repo>/build)/daemon/.
"""

import argparse
import os
import sys
import time
import traceback
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import harness  # noqa: E402,F401  (raises the fd limit; fails early if the fake is missing)


class LineResult(unittest.TestResult):
    """Prints "PASS|FAIL|ERROR|SKIP  test  (seconds)" as each test finishes, details at the end."""

    def __init__(self, stream, verbose, deadline):
        super().__init__()
        self.deadline = deadline  # time.monotonic() after which no further test is started
        self.stream = stream
        self.verbose = verbose
        self.passed = 0
        self._start = 0.0
        self._printed = False
        self._subtest_failed = False
        self.run_ids = set()

    def _line(self, status, test, extra=""):
        self._printed = True
        took = time.monotonic() - self._start
        self.stream.write("%-5s %s  (%.2fs)%s\n" % (status, test.id(), took, extra))
        self.stream.flush()

    def startTest(self, test):
        if time.monotonic() > self.deadline:
            self.shouldStop = True  # the suite stops after this test; the rest count as not run
        super().startTest(test)
        self._start = time.monotonic()
        self._printed = False
        self._subtest_failed = False
        self.run_ids.add(test.id())
        if self.verbose:
            self.stream.write("....  %s\n" % test.id())
            self.stream.flush()

    def addSuccess(self, test):
        super().addSuccess(test)
        self.passed += 1
        self._line("PASS", test)

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._line("FAIL", test)

    def addError(self, test, err):
        super().addError(test, err)
        # Class/module set-up errors arrive as _ErrorHolder objects, not tests (no startTest: no time).
        if not isinstance(test, unittest.TestCase):
            self._start = time.monotonic()
        self._line("ERROR", test)

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._line("SKIP", test, "  " + reason)

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self.passed += 1
        self._line("XFAIL", test)

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._line("UPASS", test)

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            self._subtest_failed = True
            self.stream.write("  subtest failed: %s\n" % subtest.id())

    def stopTest(self, test):
        # A test whose only failures are in subtests gets no addFailure: report it here.
        if self._subtest_failed and not self._printed:
            self._line("FAIL", test)
        super().stopTest(test)


def _count_tests(suite):
    n = 0
    for t in suite:
        n += _count_tests(t) if isinstance(t, unittest.TestSuite) else 1
    return n


def _classes(suite, out):
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            _classes(t, out)
        else:
            out.setdefault(type(t), []).append(t)
    return out


def _without_modules(suite, excluded):
    kept = unittest.TestSuite()
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            kept.addTest(_without_modules(item, excluded))
        elif item.id().split(".")[0] not in excluded and item.id() not in excluded:
            kept.addTest(item)
    return kept


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("-k", dest="patterns", action="append", default=[],
                    help="only tests whose id contains this substring (repeatable)")
    ap.add_argument("--deadline", type=float, default=float(os.environ.get("KEYWAY_IT_DEADLINE", "780")),
                    help="seconds after which no further test starts; the rest count as failed "
                         "(default 780, below meson's 900 s timeout, so the summary always prints)")
    ap.add_argument("names", nargs="*", help="test modules or ids (default: every test_*.py)")
    args = ap.parse_args(argv)

    os.chdir(HERE)
    loader = unittest.TestLoader()
    if args.patterns:
        loader.testNamePatterns = ["*%s*" % p for p in args.patterns]
    if args.names:
        suite = loader.loadTestsFromNames([n[:-3] if n.endswith(".py") else n for n in args.names])
    else:
        suite = loader.discover(str(HERE), pattern="test_*.py", top_level_dir=str(HERE))
    # KEYWAY_IT_EXCLUDE="test_a test_b.Class.test_c": modules, or single tests, left out (the
    # sanitizer stage skips the test tools' own tests and the long kill -9 loops).
    excluded = set(os.environ.get("KEYWAY_IT_EXCLUDE", "").split())
    if excluded:
        suite = _without_modules(suite, excluded)

    total = _count_tests(suite)
    print("keyway integration tests: %d tests; keywayd=%s keywayctl=%s"
          % (total, harness.binary("keywayd"), harness.binary("keywayctl")), flush=True)
    # Taken before the run: a TestSuite drops each test once it has run.
    by_class = _classes(suite, {})
    started = time.monotonic()
    result = LineResult(sys.stdout, args.verbose, started + args.deadline)
    suite.run(result)
    elapsed = time.monotonic() - started

    # A class whose setUpClass failed (e.g. keywayd did not start) ran none of its tests: count each
    # of them as failed, so the totals cover every test. Other errors count once.
    failed_ids = set()
    for test, err in result.failures + result.errors:
        kind = "FAIL" if any(test is t for t, _ in result.failures) else "ERROR"
        print("\n" + "=" * 100)
        print("%s: %s" % (kind, test.id()))
        print("-" * 100)
        print(err.rstrip())
        desc = str(test)
        if desc.startswith("setUpClass ("):
            cls_name = desc[len("setUpClass ("):].rstrip(")")
            tests = [t for cls, ts in by_class.items()
                     if "%s.%s" % (cls.__module__, cls.__qualname__) == cls_name for t in ts]
            failed_ids.update(t.id() for t in tests)
            failed_ids.add(desc) if not tests else None
        else:
            # subtests count once, as their test
            failed_ids.add(getattr(test, "test_case", test).id())
    failed_ids.update(t.id() for t in result.unexpectedSuccesses)
    if result.shouldStop:
        not_run = [t.id() for ts in by_class.values() for t in ts
                   if t.id() not in result.run_ids and t.id() not in failed_ids]
        for tid in not_run:
            print("NOT RUN %s  (suite deadline of %.0fs reached)" % (tid, args.deadline))
        failed_ids.update(not_run)
    failed = len(failed_ids)
    print("\n(ran in %.1fs, %d skipped)" % (elapsed, len(result.skipped)))
    print("%d passed, %d failed" % (result.passed, failed))
    return 1 if failed or result.passed == 0 else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SystemExit:
        raise
    except BaseException:
        traceback.print_exc()
        print("0 passed, 1 failed")
        sys.exit(1)
