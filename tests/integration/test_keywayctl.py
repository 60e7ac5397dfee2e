"""test_keywayctl.py: the admin CLI and config checking as scripts see them (docs/cli.md, docs/config.md):
exit codes, the token on the last stdout line, secrets from stdin, init idempotence, --check-config."""

import os
import stat
import subprocess
import unittest

from harness import Keyway, binary


class KeywayctlTest(unittest.TestCase):

    def setUp(self):
        self.kw = Keyway({"bundleup-api": {"base_url": "http://127.0.0.1:9"},
                          "bundleiq": {"base_url": "http://127.0.0.1:9"}})
        self.addCleanup(self.kw.cleanup)

    def test_init_creates_state_and_0600_key_and_is_idempotent(self):
        self.kw.init()
        key = self.kw.state_dir / "master.key"
        self.assertTrue(key.is_file(), "no master key at <state_dir>/master.key")
        self.assertEqual(stat.S_IMODE(key.stat().st_mode), 0o600)
        self.assertIn(len(key.read_bytes()), (32, 44, 45, 64, 65),
                      "a 32-byte key (raw, base64 or hex, optional newline) expected")
        before = key.read_bytes()
        self.kw.init()
        self.assertEqual(key.read_bytes(), before, "a second init replaced the master key")

    def test_client_add_prints_token_alone_on_last_line(self):
        self.kw.init()
        self.kw.add_team("t1")
        cp = self.kw.ctl("client", "add", "c1", "--team", "t1")
        last = cp.stdout.rstrip("\n").split("\n")[-1]
        self.assertRegex(last, r"^kw_[A-Za-z0-9_\-]{16,}$")
        cp2 = self.kw.ctl("client", "add", "c2", "--team", "t1")
        self.assertNotEqual(cp2.stdout.rstrip().split("\n")[-1], last, "two clients got the same token")
        listing = self.kw.ctl("client", "list").stdout
        self.assertIn("c1", listing)
        self.assertIn("t1", listing)
        self.assertNotIn(last, listing)

    def test_usage_and_input_errors_exit_1(self):
        self.kw.init()
        self.kw.add_team("t1")
        cases = [
            ("client", "add", "c1", "--team", "no-such-team"),
            ("client", "revoke", "no-such-client"),
            ("team", "add", "t2", "--upstreams", "no-such-upstream"),
            ("no-such-command",),
            ("secret", "set"),
            ("client", "add", "c1"),
        ]
        for args in cases:
            with self.subTest(args=args):
                cp = self.kw.ctl(*args, check=False)
                self.assertEqual(cp.returncode, 1, "keywayctl %s: exit %d, stderr %r" % (args, cp.returncode, cp.stderr))
                self.assertTrue(cp.stderr.strip(), "errors go to stderr")

    def test_secret_from_stdin_and_list_without_values(self):
        self.kw.init()
        self.kw.add_team("t1")
        value = "stdin-only-value-0123456789"
        self.kw.set_secret("bundleiq.api_key", value)
        self.kw.set_secret("bundleiq.api_key", value + "-team", team="t1")
        cp = self.kw.ctl("secret", "list")
        self.assertIn("bundleiq.api_key", cp.stdout)
        self.assertIn("t1", cp.stdout)
        self.assertNotIn(value, cp.stdout + cp.stderr)
        # removing the team one leaves the shared one
        self.kw.ctl("secret", "rm", "bundleiq.api_key", "--team", "t1")
        cp = self.kw.ctl("secret", "list")
        self.assertIn("bundleiq.api_key", cp.stdout)
        self.assertNotIn("t1", cp.stdout)

    def test_empty_secret_refused(self):
        self.kw.init()
        cp = self.kw.ctl("secret", "set", "bundleiq.api_key", input="", check=False)
        self.assertEqual(cp.returncode, 1)

    def test_config_after_subcommand(self):
        self.kw.init()
        self.kw.add_team("t1")
        cp = subprocess.run([binary("keywayctl"), "team", "list", "--config", str(self.kw.config_path)],
                            capture_output=True, text=True, env=self.kw.env, timeout=30)
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertIn("t1", cp.stdout)

    def test_team_rm(self):
        self.kw.init()
        self.kw.add_team("gone")
        self.kw.add_team("kept")
        self.assertIn("gone", self.kw.ctl("team", "list").stdout)
        self.kw.ctl("team", "rm", "gone")
        self.assertIn("kept", self.kw.ctl("team", "list").stdout)
        self.assertNotIn("gone", self.kw.ctl("team", "list").stdout)


class CheckConfigTest(unittest.TestCase):

    def setUp(self):
        self.kw = Keyway({"bundleup-api": {"base_url": "http://127.0.0.1:9"}})
        self.addCleanup(self.kw.cleanup)

    def _check(self, text):
        self.kw.write_config(text)
        return subprocess.run([binary("keywayd"), "--config", str(self.kw.config_path), "--check-config"],
                              capture_output=True, text=True, env=self.kw.env, timeout=30)

    def test_good_config_passes(self):
        cp = self._check("listen: 127.0.0.1:0\nstate_dir: %s\nupstreams:\n  bundleup-api:\n"
                         "    base_url: http://127.0.0.1:9\n" % self.kw.state_dir)
        self.assertEqual(cp.returncode, 0, cp.stderr)

    def test_unknown_key_named_with_line(self):
        cp = self._check("listen: 127.0.0.1:0\nstate_dir: %s\nupstreams:\n  bundleup-api:\n"
                         "    base_url: http://127.0.0.1:9\n    bogus_option: 3\n" % self.kw.state_dir)
        self.assertEqual(cp.returncode, 1)
        self.assertIn("bogus_option", cp.stderr)
        self.assertIn("6", cp.stderr, "the error must name the line (6)")

    def test_bad_values_refused(self):
        for text, key in (("listen: not-an-address\n", "listen"),
                          ("limits:\n  max_body_bytes: lots\n", "max_body_bytes"),
                          ("upstreams:\n  x:\n    base_url: ftp://nope\n", "base_url"),
                          ("upstreams: [1, 2]\n", "upstreams")):
            with self.subTest(key=key):
                cp = self._check(text)
                self.assertEqual(cp.returncode, 1, cp.stderr)
                self.assertIn(key, cp.stderr)

    def test_daemon_refuses_bad_config_at_start(self):
        self.kw.write_config("listen: 127.0.0.1:0\nstate_dir: %s\nnonsense_key: 1\n" % self.kw.state_dir)
        cp = subprocess.run([binary("keywayd"), "--config", str(self.kw.config_path)],
                            capture_output=True, text=True, env=self.kw.env, timeout=30)
        self.assertNotEqual(cp.returncode, 0)
        self.assertIn("nonsense_key", cp.stderr)
        self.assertNotIn('"msg":"ready"', cp.stderr.replace(" ", ""))


if __name__ == "__main__":
    unittest.main()
