"""test_runner.py: run.py's own counts, on small fixture modules in a temp dir: every test of a class
whose setUpClass fails (the fleet tests without etcd) counts as failed, and tests left by the suite
deadline are listed as NOT RUN and counted as failed."""

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent

FIXTURE = textwrap.dedent("""\
    import unittest

    class Broken(unittest.TestCase):
        @classmethod
        def setUpClass(cls):
            raise AssertionError("set-up refused")

        def test_a(self):
            pass

        def test_b(self):
            pass

    class Fine(unittest.TestCase):
        def test_c(self):
            pass

        def test_d(self):
            pass
    """)


class RunnerCountsTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="keyway-it-runner-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.module = "runner_fixture_%d" % os.getpid()
        Path(self.dir, self.module + ".py").write_text(FIXTURE)

    def run_py(self, *args):
        env = dict(os.environ, PYTHONPATH=self.dir)
        cp = subprocess.run([sys.executable, str(HERE / "run.py")] + list(args), capture_output=True, text=True,
                            env=env, timeout=60)
        return cp.returncode, cp.stdout

    def test_a_failed_class_set_up_counts_each_of_its_tests(self):
        code, out = self.run_py(self.module)
        self.assertEqual(code, 1, out)
        self.assertEqual(out.strip().splitlines()[-1], "2 passed, 2 failed", out)
        self.assertIn("set-up refused", out)

    def test_tests_after_the_deadline_are_not_run_and_count_as_failed(self):
        code, out = self.run_py("--deadline", "0", self.module + ".Fine")
        self.assertEqual(code, 1, out)
        self.assertEqual(out.strip().splitlines()[-1], "1 passed, 1 failed", out)
        self.assertRegex(out, r"NOT RUN %s\.Fine\.test_d" % self.module)


if __name__ == "__main__":
    unittest.main()
