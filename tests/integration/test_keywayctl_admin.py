"""test_keywayctl_admin.py: keywayctl as an operator uses it after day one (docs/cli.md): where it
finds the daemon's configuration, team set and rm, client rotate and rm, bosa-user grant, revoke
and set-secret, --json on every list and --team filters, --version; keywayd's exit codes and
--check-config warnings (docs/operations.md). Changes made while keywayd runs are seen by it."""

import json
import os
import socket
import subprocess
import time
import unittest
import uuid

from harness import Keyway, KeywayTestCase, binary, request

import test_bosa  # BosaEnv and BosaTestBase (a module attribute: its tests are not collected here)


def _last_line(cp):
    return cp.stdout.rstrip("\n").split("\n")[-1]


def _answered_4xx(port):
    """keyway_requests_total summed over upstreams for class 4xx."""
    text = request(port, "GET", "/_keyway/metrics").text
    values = [float(line.split()[-1]) for line in text.splitlines()
              if line.startswith("keyway_requests_total{") and 'class="4xx"' in line]
    if not values:
        raise AssertionError("no keyway_requests_total{class=\"4xx\"} in /_keyway/metrics")
    return sum(values)


class ConfigDiscoveryTest(unittest.TestCase):
    """Without --config: $KEYWAY_CONFIG, then the installed file, never a store in the cwd."""

    def setUp(self):
        self.kw = Keyway({"bundleup-api": {"base_url": "http://127.0.0.1:9"}})
        self.addCleanup(self.kw.cleanup)
        self.cwd = self.kw.dir / "elsewhere"
        self.cwd.mkdir()

    def run_ctl(self, *args, env=None):
        e = dict(self.kw.env)
        e.update(env or {})
        return subprocess.run([binary("keywayctl")] + list(args), capture_output=True, text=True,
                              env=e, cwd=str(self.cwd), timeout=30)

    def test_keyway_config_names_the_daemons_store(self):
        cp = self.run_ctl("init", env={"KEYWAY_CONFIG": str(self.kw.config_path)})
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertIn(str(self.kw.config_path), cp.stdout)
        self.assertIn("$KEYWAY_CONFIG", cp.stdout)
        self.assertTrue((self.kw.state_dir / "master.key").is_file())
        cp = self.run_ctl("team", "add", "t1", env={"KEYWAY_CONFIG": str(self.kw.config_path)})
        self.assertEqual(cp.returncode, 0, cp.stderr)
        # --config wins over $KEYWAY_CONFIG: the same store seen through the daemon's file.
        self.assertIn("t1", self.kw.ctl("team", "list").stdout)
        self.assertEqual(os.listdir(self.cwd), [], "keywayctl wrote into its working directory")

    def test_without_a_configuration_it_refuses_and_names_the_ways(self):
        # (Skipped where this build's installed configuration exists: it would be used.)
        installed = [ln for ln in self.run_ctl("--help").stdout.splitlines() if "when it exists" in ln]
        self.assertTrue(installed, "keywayctl --help names the installed configuration")
        if os.path.exists(installed[0].split()[-4]):
            self.skipTest("an installed configuration exists on this machine")
        cp = self.run_ctl("init")
        self.assertEqual(cp.returncode, 1, cp.stderr)
        for word in ("--config FILE", "KEYWAY_CONFIG", "keyway.yaml"):
            self.assertIn(word, cp.stderr)
        self.assertEqual(os.listdir(self.cwd), [], "a store appeared in the working directory")
        self.assertEqual(cp.stdout, "")

    def test_store_not_found_mentions_config(self):
        cp = self.kw.ctl("team", "list", check=False)
        self.assertEqual(cp.returncode, 2, cp.stderr)
        self.assertIn("keywayctl init", cp.stderr)
        self.assertIn("--config", cp.stderr)
        self.assertIn(str(self.kw.config_path), cp.stderr)

    def test_version(self):
        for exe in ("keywayctl", "keywayd"):
            with self.subTest(exe=exe):
                cp = subprocess.run([binary(exe), "--version"], capture_output=True, text=True,
                                    env=self.kw.env, cwd=str(self.cwd), timeout=30)
                self.assertEqual(cp.returncode, 0, cp.stderr)
                self.assertRegex(cp.stdout, r"^%s \d+\.\d+" % exe)
        self.assertEqual(os.listdir(self.cwd), [])


class KeywaydExitTest(unittest.TestCase):
    """1 for what an edit fixes (systemd does not restart it), 2 for a failure at run time."""

    def setUp(self):
        self.kw = Keyway({"bundleup-api": {"base_url": "http://127.0.0.1:9"}})
        self.addCleanup(self.kw.cleanup)

    def keywayd(self, *args):
        return subprocess.run([binary("keywayd")] + list(args), capture_output=True, text=True,
                              env=self.kw.env, cwd=str(self.kw.dir), timeout=60)

    def test_bad_usage_and_bad_config_exit_1(self):
        self.assertEqual(self.keywayd("--bogus").returncode, 1)
        self.kw.write_config("listen: 127.0.0.1:0\nstate_dir: %s\nnonsense_key: 1\n" % self.kw.state_dir)
        cp = self.keywayd("--config", str(self.kw.config_path))
        self.assertEqual(cp.returncode, 1, cp.stderr)
        self.assertIn("nonsense_key", cp.stderr)
        self.assertEqual(self.keywayd("--config", str(self.kw.config_path), "--check-config").returncode, 1)
        self.assertEqual(self.keywayd("--config", str(self.kw.dir / "missing.yaml")).returncode, 1)

    def test_port_in_use_exits_2(self):
        self.kw.init()
        holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(holder.close)
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        self.kw.config["listen"] = "127.0.0.1:%d" % holder.getsockname()[1]
        self.kw.write_config()
        cp = self.keywayd("--config", str(self.kw.config_path))
        self.assertEqual(cp.returncode, 2, cp.stderr)
        self.assertIn("cannot start a listener", cp.stderr)

    def test_store_unreadable_exits_2(self):
        # No `keywayctl init`: the configuration is fine, the store is not there.
        cp = self.keywayd("--config", str(self.kw.config_path))
        self.assertEqual(cp.returncode, 2, cp.stderr)
        self.assertIn("credential store", cp.stderr)

    def test_check_config_warns_on_exposure(self):
        self.kw.write_config("listen: 0.0.0.0:8750\nstate_dir: %s\nupstreams:\n  bundleup-api:\n"
                             "    base_url: http://api.example.com\n  bundleiq:\n"
                             "    base_url: http://127.0.0.1:9\n" % self.kw.state_dir)
        cp = self.keywayd("--config", str(self.kw.config_path), "--check-config")
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertIn("configuration OK", cp.stdout)
        warnings = [ln for ln in cp.stderr.splitlines() if ln.startswith("keywayd: warning: ")]
        self.assertEqual(len(warnings), 2, cp.stderr)
        self.assertIn("listen 0.0.0.0:8750 is not a loopback address", warnings[0])
        self.assertIn("upstreams.bundleup-api.base_url http://api.example.com", warnings[1])
        # Loopback and https:// say nothing.
        self.kw.write_config("listen: 127.0.0.1:8750\nstate_dir: %s\nupstreams:\n  bundleup-api:\n"
                             "    base_url: https://api.example.com\n" % self.kw.state_dir)
        cp = self.keywayd("--config", str(self.kw.config_path), "--check-config")
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertNotIn("warning", cp.stderr)


class AdminCommandsTest(unittest.TestCase):
    """Exit codes and --json shapes, without a daemon."""

    def setUp(self):
        self.kw = Keyway({"bundleup-api": {"base_url": "http://127.0.0.1:9"},
                          "bundleiq": {"base_url": "http://127.0.0.1:9"},
                          "bosa": {"base_url": "http://127.0.0.1:9"}})
        self.addCleanup(self.kw.cleanup)
        self.kw.init()
        self.kw.add_team("t1")
        self.kw.add_team("t2", upstreams=["bundleiq", "bosa"])
        self.kw.add_team("t3", upstreams=["bundleiq"])

    def rc(self, *args, input=None):
        return self.kw.ctl(*args, input=input, check=False)

    def json(self, *args):
        cp = self.kw.ctl(*args)
        return json.loads(cp.stdout)

    def test_list_json_shapes_and_team_filters(self):
        self.kw.add_client("c1", "t1")
        self.kw.add_client("c2", "t2")
        self.kw.set_secret("bundleiq.api_key", "shared-secret-value-123")
        self.kw.set_secret("bundleiq.api_key", "team-secret-value-456", team="t2")
        self.kw.ctl("bosa-user", "add", "alice", "--team", "t1,t2", input="sk-user-alice-789\n")

        teams = self.json("team", "list", "--json")
        self.assertEqual([t["name"] for t in teams], ["t1", "t2", "t3"])
        self.assertEqual(set(teams[1]), {"name", "all_upstreams", "upstreams", "created"})
        self.assertEqual((teams[0]["all_upstreams"], teams[1]["upstreams"]), (True, ["bundleiq", "bosa"]))

        clients = self.json("client", "list", "--json")
        self.assertEqual(set(clients[0]),
                         {"name", "team", "status", "created", "rotated", "previous_token_valid_until"})
        self.assertEqual([(c["name"], c["team"], c["status"]) for c in clients],
                         [("c1", "t1", "active"), ("c2", "t2", "active")])
        self.assertEqual([c["name"] for c in self.json("client", "list", "--team", "t2", "--json")], ["c2"])
        self.assertEqual(self.json("client", "list", "--team", "t3", "--json"), [])
        self.assertIn("no clients in team(s) t3", self.kw.ctl("client", "list", "--team", "t3").stdout)

        secrets = self.json("secret", "list", "--json")
        self.assertEqual(secrets[0]["scope"], "shared")
        self.assertIsNone(secrets[0]["team"])
        self.assertEqual((secrets[1]["scope"], secrets[1]["team"]), ("team", "t2"))
        self.assertEqual(set(secrets[0]), {"name", "scope", "team", "updated"})
        only = self.json("secret", "list", "--team", "t2", "--json")
        self.assertEqual([(s["name"], s["team"]) for s in only], [("bundleiq.api_key", "t2")])

        users = self.json("bosa-user", "list", "--json")
        self.assertEqual(users[0]["identifier"], "alice")
        self.assertEqual(users[0]["teams"], ["t1", "t2"])
        self.assertEqual(self.json("bosa-user", "list", "--team", "t3", "--json"), [])

        stats = self.json("cache", "stats", "--json")
        self.assertIn("entries", stats)
        self.assertIn("hit_ratio", stats)
        schemas = self.json("schemas", "list", "--json")
        self.assertEqual(schemas[0]["upstream"], "bosa")
        self.assertFalse(schemas[0]["stored"])

        everything = "".join(self.kw.ctl(*a).stdout for a in (
            ("secret", "list", "--json"), ("bosa-user", "list", "--json"), ("client", "list", "--json")))
        for value in ("shared-secret-value-123", "team-secret-value-456", "sk-user-alice-789", "kw_"):
            self.assertNotIn(value, everything)
        for args in (("client", "list", "--team", "nope"), ("secret", "list", "--team", "t1,"),
                     ("team", "list", "--team", "t1")):
            with self.subTest(args=args):
                self.assertEqual(self.rc(*args).returncode, 1)

    def test_bosa_user_grant_and_revoke_are_idempotent_and_take_lists(self):
        self.kw.ctl("bosa-user", "add", "alice", "--team", "t1", input="sk-user-a\n")
        cp = self.rc("bosa-user", "grant", "alice", "--team", "t1,t2")
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertIn("granted BOSA user 'alice': team(s) t2", cp.stdout)
        self.assertIn("already granted to team(s) t1", cp.stdout)
        self.assertEqual(self.rc("bosa-user", "grant", "alice", "--team", "t1,t2").returncode, 0)
        self.assertEqual(self.rc("bosa-user", "revoke", "alice", "--team", "t1,t2").returncode, 0)
        cp = self.rc("bosa-user", "revoke", "alice", "--team", "t1,t2")
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertIn("was not granted to team(s) t1, t2", cp.stdout)
        self.assertEqual(self.json("bosa-user", "list", "--json")[0]["teams"], [])
        # Unknown user or team: 1, nothing changed.
        self.assertEqual(self.rc("bosa-user", "grant", "bob", "--team", "t1").returncode, 1)
        self.assertEqual(self.rc("bosa-user", "grant", "alice", "--team", "t1,nope").returncode, 1)
        self.assertEqual(self.rc("bosa-user", "revoke", "alice", "--team", "nope").returncode, 1)
        self.assertEqual(self.json("bosa-user", "list", "--json")[0]["teams"], [])
        # t3 reaches no BOSA upstream: refused, naming the fix.
        cp = self.rc("bosa-user", "grant", "alice", "--team", "t3")
        self.assertEqual(cp.returncode, 1)
        self.assertIn("keywayctl team set t3 --upstreams bundleiq,bosa", cp.stderr)
        self.assertEqual(self.rc("bosa-user", "add", "bob", "--team", "t3", input="sk-user-b\n").returncode, 1)
        self.kw.ctl("team", "set", "t3", "--upstreams", "bundleiq,bosa")
        self.assertEqual(self.rc("bosa-user", "grant", "alice", "--team", "t3").returncode, 0)

    def test_bosa_user_set_secret_keeps_grants(self):
        self.kw.ctl("bosa-user", "add", "alice", "--team", "t1,t2", input="sk-user-old-1\n")
        cp = self.rc("bosa-user", "set-secret", "alice", input="sk-user-new-2\n")
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertIn("teams kept: t1, t2", cp.stdout)
        self.assertNotIn("sk-user-new-2", cp.stdout + cp.stderr)
        self.assertEqual(self.json("bosa-user", "list", "--json")[0]["teams"], ["t1", "t2"])
        self.assertEqual(self.rc("bosa-user", "set-secret", "bob", input="sk-user-x\n").returncode, 1)
        self.assertEqual(self.rc("bosa-user", "set-secret", "alice", input="").returncode, 1)
        self.assertEqual(self.rc("bosa-user", "set-secret", "alice", "sk-user-in-argv").returncode, 1)

    def test_team_rm_says_what_it_deletes(self):
        self.kw.add_client("c1", "t2")
        self.kw.set_secret("bundleiq.api_key", "team-secret-value", team="t2")
        self.kw.ctl("bosa-user", "add", "alice", "--team", "t2", input="sk-user-a\n")
        cp = self.rc("team", "rm", "t2")
        self.assertEqual(cp.returncode, 1)
        self.assertIn("active client", cp.stderr)
        self.kw.revoke_client("c1")
        cp = self.rc("team", "rm", "t2")
        self.assertEqual(cp.returncode, 1)
        self.assertIn("bundleiq.api_key", cp.stderr)
        self.assertIn("alice", cp.stderr)
        self.assertIn("--force", cp.stderr)
        self.assertIn("t2", self.kw.ctl("team", "list").stdout)
        cp = self.rc("team", "rm", "t2", "--force")
        self.assertEqual(cp.returncode, 0, cp.stderr)
        for word in ("its secrets bundleiq.api_key", "its grants of BOSA users alice", "its revoked clients c1"):
            self.assertIn(word, cp.stdout)
        self.assertEqual(self.json("client", "list", "--json"), [])
        self.assertEqual(self.json("bosa-user", "list", "--json")[0]["teams"], [])
        self.assertEqual(self.rc("team", "rm", "t2").returncode, 1)

    def test_client_rotate_and_rm_exit_codes(self):
        self.kw.add_client("c1", "t1")
        for args in (("client", "rotate", "ghost"), ("client", "rotate", "c1", "--grace", "1 day"),
                     ("client", "rotate", "c1", "--grace", "721h"), ("client", "rm", "ghost"),
                     ("client", "rm", "c1"), ("team", "set", "t1"), ("team", "set", "nope", "--all-upstreams")):
            with self.subTest(args=args):
                cp = self.rc(*args)
                self.assertEqual(cp.returncode, 1, cp.stdout)
                self.assertTrue(cp.stderr.strip())
        self.kw.revoke_client("c1")
        self.assertEqual(self.rc("client", "rotate", "c1").returncode, 1)
        self.assertEqual(self.rc("client", "rm", "c1").returncode, 0)
        self.assertEqual(self.json("client", "list", "--json"), [])


class LiveAdminTest(KeywayTestCase):
    """keywayctl while keywayd runs: the daemon applies each change to the next request."""

    def get(self, token, target="/bundleiq/v1/notes"):
        # A target of its own each time: a cached answer would not reach the fake.
        return request(self.port, "GET", "%s/%s" % (target, uuid.uuid4().hex[:12]),
                       [("X-Keyway-Token", token)])

    def test_team_set_changes_access_in_place(self):
        self.kw.add_team("live-set", upstreams=["bundleiq"])
        token = self.kw.add_client("app-live-set", "live-set")
        self.assertEqual(self.get(token, "/bundleup-api/v1/x").status, 403)
        self.assertEqual(self.fake.requests, [])
        self.kw.ctl("team", "set", "live-set", "--upstreams", "bundleiq,bundleup-api")
        self.assertEqual(self.get(token, "/bundleup-api/v1/x").status, 200)  # the same token
        self.kw.ctl("team", "set", "live-set", "--upstreams", "bundleup-api")
        self.assertEqual(self.get(token).status, 403)
        self.assertEqual(len(self.fake.requests), 1)

    def test_client_rotate_with_grace_then_without(self):
        old = self.kw.add_client("app-rotate", "alpha")
        self.assertEqual(self.get(old).status, 200)
        cp = self.kw.ctl("client", "rotate", "app-rotate", "--grace", "1h")
        new = _last_line(cp)
        self.assertRegex(new, r"^kw_")
        self.assertNotEqual(new, old)
        self.assertNotIn(new, cp.stderr)
        self.assertEqual(self.get(new).status, 200)
        self.assertEqual(self.get(old).status, 200, "the old token works during the grace period")
        listed = [c for c in json.loads(self.kw.ctl("client", "list", "--json").stdout)
                  if c["name"] == "app-rotate"][0]
        self.assertIsNotNone(listed["previous_token_valid_until"])
        # The secret the fake received is the team's: same identity.
        self.assertEqual([r.header("X-Api-Key") for r in self.fake.requests], [self.secrets["bundleiq"]] * 3)

        rejected = _answered_4xx(self.port)
        newer = _last_line(self.kw.ctl("client", "rotate", "app-rotate"))
        self.assertEqual(self.get(old).status, 401)
        self.assertEqual(self.get(new).status, 401)
        self.assertEqual(self.get(newer).status, 200)
        self.assertEqual(_answered_4xx(self.port), rejected + 2)
        self.assertEqual(len(self.fake.requests), 4)

    def test_client_grace_ends(self):
        old = self.kw.add_client("app-grace", "alpha")
        new = _last_line(self.kw.ctl("client", "rotate", "app-grace", "--grace", "2s"))
        self.assertEqual(self.get(old).status, 200)
        time.sleep(2.2)
        self.assertEqual(self.get(old).status, 401, "the old token outlived its grace period")
        self.assertEqual(self.get(new).status, 200)

    def test_client_rm_while_running(self):
        token = self.kw.add_client("app-rm", "alpha")
        self.assertEqual(self.get(token).status, 200)
        self.assertEqual(self.kw.ctl("client", "rm", "app-rm", check=False).returncode, 1)  # active
        self.assertEqual(self.get(token).status, 200)
        self.kw.ctl("client", "rm", "app-rm", "--force")
        self.assertEqual(self.get(token).status, 401)
        self.assertNotIn("app-rm", self.kw.ctl("client", "list").stdout)



class LiveBosaUserTest(test_bosa.BosaTestBase):
    """bosa-user grant, revoke and set-secret while keywayd runs against a fake BOSA."""

    def setUp(self):
        env = test_bosa.BosaEnv(users=("alice",))
        self.addCleanup(env.close)
        self.use_env(env)

    def act(self, client, user="alice"):
        return self.post("github", "create_issue", {"owner": "acme", "repo": "r", "title": "t"},
                         client=client, user=user)

    def test_grant_and_revoke_apply_to_the_next_request(self):
        self.assertEqual(self.act("app-beta").status, 403)
        cp = self.kw.ctl("bosa-user", "grant", "alice", "--team", "alpha,beta")
        self.assertIn("granted BOSA user 'alice': team(s) beta", cp.stdout)
        self.assertIn("already granted to team(s) alpha", cp.stdout)
        self.assertEqual(self.act("app-beta").status, 200)
        self.kw.ctl("bosa-user", "revoke", "alice", "--team", "beta")
        self.assertEqual(self.act("app-beta").status, 403)
        self.assertEqual(self.kw.ctl("bosa-user", "revoke", "alice", "--team", "beta").returncode, 0)
        cp = self.kw.ctl("bosa-user", "grant", "alice", "--team", "iqonly", check=False)
        self.assertEqual(cp.returncode, 1)
        self.assertIn("no access to a BOSA upstream", cp.stderr)
        self.assertEqual(self.act("app-alpha").status, 200)

    def test_set_secret_makes_the_running_daemon_mint_with_the_new_secret(self):
        self.assertEqual(self.act("app-alpha").status, 200)
        self.assertEqual(self.fake.mints("alice"), 1)
        new_secret = "sk-user-" + uuid.uuid4().hex
        self.fake.add_user("alice", new_secret)  # BOSA now knows the user by the new secret
        cp = self.kw.ctl("bosa-user", "set-secret", "alice", input=new_secret + "\n")
        self.assertNotIn(new_secret, cp.stdout + cp.stderr)
        resp = self.act("app-alpha")
        self.assertEqual(resp.status, 200, resp)
        mints = self.fake.mint_requests("alice")
        self.assertEqual(len(mints), 2, "no new token was minted after set-secret")
        self.assertEqual(json.loads(mints[-1].body.decode("utf-8"))["secret"], new_secret)
        self.assertEqual(self.fake.mints("alice"), 2)
        self.assertEqual(json.loads(self.kw.ctl("bosa-user", "list", "--json").stdout)[0]["teams"], ["alpha"])
        for line in self.kw.lines("stderr") + self.kw.lines("stdout"):
            self.assertNotIn(new_secret, line)


if __name__ == "__main__":
    unittest.main()
