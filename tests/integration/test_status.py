"""test_status.py: `keywayctl status`, `keywayctl doctor` and keywayd's GET /_keyway/status (docs/cli.md,
docs/http.md, docs/operations.md "Troubleshooting"), as operators and scripts use them: exit codes, the --json
shape, the answer when keywayd is down or reads another store, what doctor says of a missing secret, a bad key
file mode, an unreachable upstream, a refused key and a TLS upstream with the wrong CA, and that no secret or
client token ever appears in what they print, while the secrets demonstrably reach the fake upstream."""

import json
import os
import socket
import stat
import subprocess
import tempfile
import threading
import time
import unittest
from pathlib import Path

from harness import (FakeUpstream, Keyway, KeywayTestCase, Response, binary, closed_port, request, test_pki,
                     to_yaml)

STATUS_NOT_RUNNING = 2
STATUS_OTHER_STORE = 1


def ctl_json(kw, *args, config=None, expect=0):
    """Runs keywayctl ARGS --json (with --config CONFIG when given) and returns (parsed stdout, completed process)."""
    argv = ([] if config is None else ["--config", str(config)]) + list(args) + ["--json"]
    cp = kw.ctl(*argv, check=False, config=config is None)
    if expect is not None:
        assert cp.returncode == expect, "keywayctl %s: exit %d\nstdout: %s\nstderr: %s" % (
            " ".join(argv), cp.returncode, cp.stdout[-3000:], cp.stderr[-3000:])
    return json.loads(cp.stdout), cp


def checks_of(report, check, upstream=None):
    return [c for c in report["checks"] if c["check"] == check and (upstream is None or c["upstream"] == upstream)]


class _FixedPortMixin:
    """keywayctl finds keywayd at the configuration's `listen`: the main listener needs a known port (port 0
    would make keywayctl say it cannot know where keywayd listens)."""

    @classmethod
    def extra_config(cls):
        cls.listen_port = closed_port()
        return {"listen": "127.0.0.1:%d" % cls.listen_port}


# ================================================================================================
# keywayctl status and GET /_keyway/status against a running keywayd
# ================================================================================================

class StatusTest(_FixedPortMixin, KeywayTestCase):

    @classmethod
    def upstreams(cls):
        ups = super().upstreams()
        ups["down"] = {"base_url": "http://127.0.0.1:%d" % closed_port(), "protocol": "bundleiq"}
        return ups

    def status(self, *args, expect=0):
        return ctl_json(self.kw, "status", *args, expect=expect)

    def secret_values(self):
        return list(self.secrets.values()) + list(self.tokens.values())

    def test_json_shape_and_same_store(self):
        doc, cp = self.status()
        self.assertEqual(cp.stderr, "")
        self.assertEqual(doc["address"], "127.0.0.1:%d" % self.listen_port)
        self.assertIs(doc["running"], True)
        self.assertIs(doc["same_store"], True)
        self.assertIsNone(doc["problem"])
        state_dir = os.path.realpath(self.kw.state_dir)
        local = doc["keywayctl"]
        self.assertEqual(local["config_file"], os.path.realpath(self.kw.config_path))
        self.assertEqual(local["state_dir"], state_dir)
        self.assertEqual(local["credential_store"]["path"], state_dir + "/credentials")
        self.assertIs(local["credential_store"]["exists"], True)
        d = doc["daemon"]
        self.assertEqual(d["pid"], self.kw.proc.pid)
        self.assertRegex(d["version"], r"^\d+\.\d+")
        self.assertIs(d["ready"], True)
        self.assertIs(d["draining"], False)
        self.assertIsInstance(d["uptime_seconds"], int)
        self.assertRegex(d["started_at"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        self.assertEqual(d["config_file"], os.path.realpath(self.kw.config_path))
        self.assertEqual(d["state_dir"], state_dir)
        self.assertEqual(d["master_key_file"], state_dir + "/master.key")
        store = d["credential_store"]
        self.assertEqual(store["path"], state_dir + "/credentials")
        st = os.stat(store["path"])
        self.assertEqual((store["device"], store["inode"]), (st.st_dev, st.st_ino))
        self.assertEqual(store["generation"], local["credential_store"]["generation"])
        self.assertIsInstance(store["generation"], int)
        cache = d["cache"]
        self.assertIs(cache["enabled"], True)
        self.assertEqual(cache["path"], state_dir + "/cache")
        self.assertIs(cache["healthy"], True)
        for k in ("generation", "entries", "bytes", "max_bytes"):
            self.assertIsInstance(cache[k], int, k)
        listeners = {(l["name"], l.get("upstream")): l["address"] for l in d["listeners"]}
        self.assertEqual(listeners[("main", None)], "127.0.0.1:%d" % self.listen_port)
        for name, port in self.kw.compat_ports.items():
            self.assertEqual(listeners[("compat", name)], "127.0.0.1:%d" % port)
        names = [u["name"] for u in d["upstreams"]]
        self.assertEqual(names, ["bundleup-api", "bundleup-proxy", "bundleup-unify", "bundleiq", "down"])
        for u in d["upstreams"]:
            self.assertEqual(set(u), {"name", "protocol", "origin", "credential_secret", "tls_ca_file",
                                      "connections_open", "last_answer_at", "last_status", "last_failure_at",
                                      "last_failure_class", "last_failure", "errors"})
            self.assertEqual(set(u["errors"]), {"connect", "timeout", "reset", "tls", "protocol", "too_large"})
        api = d["upstreams"][0]
        self.assertEqual(api["protocol"], "bundleup")
        self.assertEqual(api["origin"], self.fake.url)
        self.assertEqual(api["credential_secret"], "bundleup.api_key")

    def test_human_output(self):
        cp = self.kw.ctl("status")
        state_dir = os.path.realpath(self.kw.state_dir)
        self.assertIn("answers at 127.0.0.1:%d" % self.listen_port, cp.stdout)
        self.assertIn("pid %d" % self.kw.proc.pid, cp.stdout)
        self.assertIn(state_dir + "/credentials", cp.stdout)
        self.assertIn("same store", cp.stdout)
        self.assertIn("bundleup-api", cp.stdout)
        self.assertEqual(cp.stderr, "")

    def test_upstream_health_last_answer_and_last_failure(self):
        resp = self.call("GET", "/bundleiq/v1/workspaces?nocache=%s" % os.urandom(6).hex())
        self.assertEqual(resp.status, 200)
        self.assertEqual(resp.header("X-Keyway-Cache"), "MISS")
        resp = self.call("GET", "/down/v1/workspaces")
        self.assertKeywayError(resp, 502, "upstream_unreachable")
        d, _ = self.status()
        ups = {u["name"]: u for u in d["daemon"]["upstreams"]}
        self.assertRegex(ups["bundleiq"]["last_answer_at"] or "", r"^\d{4}-")
        self.assertEqual(ups["bundleiq"]["last_status"], 200)
        self.assertRegex(ups["down"]["last_failure_at"] or "", r"^\d{4}-")
        self.assertIn("could not be reached", ups["down"]["last_failure"])
        self.assertEqual(ups["down"]["last_failure_class"], "connect")
        self.assertGreaterEqual(ups["down"]["errors"]["connect"], 1)
        self.assertEqual(ups["bundleiq"]["errors"]["connect"], 0)
        self.assertIsNone(ups["down"]["last_answer_at"])
        cp = self.kw.ctl("status")
        self.assertIn("last failures:", cp.stdout)
        self.assertIn("down at ", cp.stdout)

    def test_no_secret_in_status(self):
        # Positive control: the secrets are real and reach the fake upstream (fresh queries: no cache hit).
        q = "?nocache=%s" % os.urandom(6).hex()
        self.assertEqual(self.call("GET", "/bundleup-api/v1/connections" + q).status, 200)
        self.assertEqual(self.call("GET", "/bundleup-api/v1/connections" + q, client="app-beta").status, 200)
        self.assertEqual(self.call("GET", "/bundleiq/v1/notes" + q, client="app-iq").status, 200)
        seen = " ".join(v for r in self.fake.requests for _, v in r.headers)
        for name in ("bundleup", "bundleup@beta", "bundleiq"):
            self.assertIn(self.secrets[name], seen, "positive control: the fake must have received it")
        outputs = [request(self.port, "GET", "/_keyway/status").text]
        for args in (("status",), ("status", "--json"), ("doctor",), ("doctor", "--json")):
            cp = self.kw.ctl(*args, check=False)
            outputs += [cp.stdout, cp.stderr]
        everything = "\n".join(outputs)
        for value in self.secret_values():
            self.assertNotIn(value, everything)

    def test_endpoint_on_the_main_listener_only(self):
        resp = request(self.port, "GET", "/_keyway/status")
        self.assertEqual(resp.status, 200)
        self.assertIn("json", resp.header("Content-Type"))
        self.assertEqual(resp.header("Cache-Control"), "no-store")
        self.assertEqual(resp.json()["pid"], self.kw.proc.pid)
        self.assertKeywayError(request(self.port, "POST", "/_keyway/status", body=b"{}"), 400, "bad_request")
        self.assertEqual(request(self.port, "HEAD", "/_keyway/status").status, 200)
        # A compat listener forwards /_keyway/ like any path (with a token) and never answers it itself.
        resp = request(self.kw.compat_ports["bundleup-api"], "GET", "/_keyway/status")
        self.assertEqual(resp.status, 401)
        self.assertEqual(self.fake.requests, [])

    def test_keywayctl_writes_move_the_generation_the_daemon_reports(self):
        before, _ = self.status()
        # Concurrent use: status runs while keywayctl writes and clients send requests.
        errors = []

        def writer():
            for i in range(5):
                cp = self.kw.ctl("secret", "set", "status.concurrent.%d" % i, input="v-%d\n" % i, check=False)
                if cp.returncode != 0:
                    errors.append(cp.stderr)

        def caller():
            for _ in range(20):
                if self.call("GET", "/bundleiq/v1/notes").status != 200:
                    errors.append("request failed")

        threads = [threading.Thread(target=writer), threading.Thread(target=caller)]
        for t in threads:
            t.start()
        runs = []
        while any(t.is_alive() for t in threads):
            runs.append(self.kw.ctl("status", "--json", check=False))
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        self.assertTrue(runs)
        for cp in runs:
            self.assertEqual(cp.returncode, 0, cp.stderr)
            self.assertIs(json.loads(cp.stdout)["same_store"], True)
        after, _ = self.status()
        gen = after["daemon"]["credential_store"]["generation"]
        self.assertGreaterEqual(gen, before["daemon"]["credential_store"]["generation"] + 5)
        self.assertEqual(gen, after["keywayctl"]["credential_store"]["generation"])
        for i in range(5):
            self.kw.ctl("secret", "rm", "status.concurrent.%d" % i)

    def _other_config(self, state_dir, listen=None):
        cfg = dict(self.kw.config)
        cfg["state_dir"] = str(state_dir)
        if listen is not None:
            cfg["listen"] = listen
        path = Path(tempfile.mkdtemp(prefix="keyway-it-other-", dir=self.kw.dir)) / "other.yaml"
        path.write_text(to_yaml(cfg) + "\n")
        return path

    def test_another_store_is_detected(self):
        other_state = self.kw.dir / "other-state"
        other = self._other_config(other_state)
        self.kw.ctl("--config", str(other), "init", config=False)
        doc, cp = ctl_json(self.kw, "status", config=other, expect=STATUS_OTHER_STORE)
        self.assertIs(doc["running"], True)
        self.assertIs(doc["same_store"], False)
        self.assertEqual(doc["keywayctl"]["state_dir"], os.path.realpath(other_state))
        self.assertEqual(doc["daemon"]["state_dir"], os.path.realpath(self.kw.state_dir))
        self.assertIn("ANOTHER credential store", cp.stderr)
        # The next step names the daemon's own configuration.
        self.assertIn("keywayctl --config %s" % os.path.realpath(self.kw.config_path), cp.stderr)
        human = self.kw.ctl("--config", str(other), "status", config=False, check=False)
        self.assertEqual(human.returncode, STATUS_OTHER_STORE)
        self.assertIn(os.path.realpath(other_state) + "/credentials", human.stdout)
        # A store that does not exist yet is another store too (and status creates nothing).
        absent_state = self.kw.dir / "never-initialised"
        absent = self._other_config(absent_state)
        doc, _ = ctl_json(self.kw, "status", config=absent, expect=STATUS_OTHER_STORE)
        self.assertIs(doc["keywayctl"]["credential_store"]["exists"], False)
        self.assertFalse(absent_state.exists(), "status must not create a state directory")
        # doctor says so too, with the same next step.
        report, _ = ctl_json(self.kw, "doctor", config=other, expect=1)
        same = checks_of(report, "same_store")[0]
        self.assertEqual(same["result"], "fail")
        self.assertIn("--config %s" % os.path.realpath(self.kw.config_path), same["next"])

    def test_same_store_through_a_symlink(self):
        # Another path to the same directory (as systemd's /var/lib/keyway -> /var/lib/private/keyway) is the
        # same store; the unit tests show that device and inode decide where paths differ.
        link = self.kw.dir / "state-link"
        link.symlink_to(self.kw.state_dir)
        other = self._other_config(link)
        doc, _ = ctl_json(self.kw, "status", config=other)
        self.assertIs(doc["same_store"], True)

    def test_address_option(self):
        zero = self._other_config(self.kw.state_dir, listen="127.0.0.1:0")
        cp = self.kw.ctl("--config", str(zero), "status", config=False, check=False)
        self.assertEqual(cp.returncode, 1, cp.stderr)
        self.assertIn("--address", cp.stderr)
        doc, _ = ctl_json(self.kw, "status", "--address", "127.0.0.1:%d" % self.listen_port, config=zero)
        self.assertIs(doc["same_store"], True)
        for bad in ("127.0.0.1", "127.0.0.1:0", "http://127.0.0.1:1"):
            cp = self.kw.ctl("status", "--address", bad, check=False)
            self.assertEqual(cp.returncode, 1, (bad, cp.stderr))
            self.assertIn("--address", cp.stderr)


class StatusDaemonDownTest(unittest.TestCase):
    """No keywayd at the configured address: exit 2 with what this keywayctl edits; something else there: 2 too."""

    def setUp(self):
        self.port = closed_port()
        self.kw = Keyway({"bundleiq": {"base_url": "http://127.0.0.1:9"}},
                         extra={"listen": "127.0.0.1:%d" % self.port})
        self.addCleanup(self.kw.cleanup)
        self.kw.init()

    def test_not_running(self):
        cp = self.kw.ctl("status", check=False)
        self.assertEqual(cp.returncode, STATUS_NOT_RUNNING, cp.stderr)
        self.assertIn("no keywayd answers at 127.0.0.1:%d" % self.port, cp.stderr)
        self.assertIn(os.path.realpath(self.kw.state_dir), cp.stdout)
        doc, cp = ctl_json(self.kw, "status", expect=STATUS_NOT_RUNNING)
        self.assertIs(doc["running"], False)
        self.assertIsNone(doc["same_store"])
        self.assertIsNone(doc["daemon"])
        self.assertIn("no keywayd answers", doc["problem"])
        self.assertEqual(doc["keywayctl"]["state_dir"], os.path.realpath(self.kw.state_dir))
        # doctor: a warning (the store can still be checked), which alone does not fail doctor.
        self.kw.add_team("t1")
        self.kw.set_secret("bundleiq.api_key", "down-test-secret")
        report, _ = ctl_json(self.kw, "doctor", expect=None)
        self.assertEqual(checks_of(report, "daemon")[0]["result"], "warn")
        self.assertEqual(checks_of(report, "same_store")[0]["result"], "skip")

    def test_stopped_daemon(self):
        self.kw.start()
        self.assertEqual(self.kw.ctl("status", check=False).returncode, 0)
        self.kw.stop()
        self.assertEqual(self.kw.ctl("status", check=False).returncode, STATUS_NOT_RUNNING)

    def test_something_else_answers(self):
        other = FakeUpstream(port=self.port, default=Response(status=404, body=b"not here")).start()
        self.addCleanup(other.stop)
        cp = self.kw.ctl("status", check=False)
        self.assertEqual(cp.returncode, 2, cp.stderr)
        self.assertIn("no /_keyway/status", cp.stderr)


def non_loopback_ipv4():
    """An IPv4 address of this host that is not loopback, or None."""
    try:
        out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for addr in out.split():
        if "." in addr and not addr.startswith("127."):
            return addr
    return None


class StatusLoopbackOnlyTest(unittest.TestCase):
    """A listener bound beyond loopback: /_keyway/status answers 403 to a peer on another address, while health
    (the control) answers it, and keywayctl on the host still gets the document over loopback."""

    def test_non_loopback_peer_is_refused(self):
        addr = non_loopback_ipv4()
        if addr is None:
            self.skipTest("this host has no non-loopback IPv4 address")
        port = closed_port()
        kw = Keyway({"bundleiq": {"base_url": "http://127.0.0.1:9"}}, extra={"listen": "0.0.0.0:%d" % port})
        self.addCleanup(kw.cleanup)
        kw.init()
        kw.start()
        with socket.create_connection((addr, port), timeout=10) as s:
            s.sendall(b"GET /_keyway/health HTTP/1.1\r\nHost: x\r\n\r\nGET /_keyway/status HTTP/1.1\r\nHost: x\r\n"
                      b"Connection: close\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        text = data.decode("utf-8", "replace")
        self.assertTrue(text.startswith("HTTP/1.1 200"), text[:200])
        second = text[text.index("HTTP/1.1", 1):]
        self.assertTrue(second.startswith("HTTP/1.1 403"), second[:200])
        self.assertIn('"forbidden"', second)
        self.assertNotIn(os.path.realpath(kw.state_dir), text)
        doc, _ = ctl_json(kw, "status")
        self.assertIs(doc["same_store"], True)
        self.assertEqual(doc["address"], "127.0.0.1:%d" % port)


class StatusSameFileOtherDirectoryTest(unittest.TestCase):
    """One configuration file with an empty state_dir: keywayd under systemd gets $STATE_DIRECTORY, a keywayctl
    run without it gets ./keyway-state. status sees two stores and says which variable to set."""

    def test_state_dir_from_the_environment(self):
        port = closed_port()
        kw = Keyway({"bundleiq": {"base_url": "http://127.0.0.1:9"}}, extra={"listen": "127.0.0.1:%d" % port})
        self.addCleanup(kw.cleanup)
        del kw.config["state_dir"]
        kw.write_config()
        daemon_state = kw.dir / "daemon-state"
        kw.env["STATE_DIRECTORY"] = str(daemon_state)
        kw.init()
        kw.start()
        self.assertEqual(kw.ctl("status", check=False).returncode, 0)
        bare_env = {k: v for k, v in kw.env.items() if k != "STATE_DIRECTORY"}
        cp = subprocess.run([binary("keywayctl"), "--config", str(kw.config_path), "status"], env=bare_env,
                            cwd=str(kw.dir), capture_output=True, text=True, timeout=30)
        self.assertEqual(cp.returncode, STATUS_OTHER_STORE, cp.stderr)
        self.assertIn(os.path.realpath(kw.dir) + "/keyway-state/credentials", cp.stderr)
        self.assertIn("STATE_DIRECTORY=%s" % os.path.realpath(daemon_state), cp.stderr)
        self.assertFalse((kw.dir / "keyway-state").exists(), "status must not create a state directory")


# ================================================================================================
# keywayctl doctor
# ================================================================================================

class DoctorTest(_FixedPortMixin, KeywayTestCase):

    def setUp(self):
        super().setUp()
        # The harmless requests doctor sends answer 200 unless a test routes otherwise.
        self.fake.route("GET", "/v1/integrations", Response.json({"data": []}))
        self.fake.route("GET", "/v1/workspaces", Response.json({"data": {"workspaces": []}}))

    def doctor(self, expect):
        return ctl_json(self.kw, "doctor", expect=expect)

    def assertNoSecret(self, *texts):
        everything = "\n".join(texts)
        for value in list(self.secrets.values()) + list(self.tokens.values()):
            self.assertNotIn(value, everything)

    def test_all_ok(self):
        report, cp = self.doctor(expect=0)
        self.assertEqual(report["exit"], 0)
        self.assertEqual(report["fail"], 0)
        self.assertEqual(report["warn"], 0)
        for c in report["checks"]:
            self.assertEqual(set(c), {"check", "upstream", "scope", "result", "message", "next"})
            self.assertEqual(c["result"], "ok", c)
        kinds = {c["check"] for c in report["checks"]}
        self.assertEqual(kinds, {"daemon", "same_store", "state_dir", "master_key", "store", "secret", "reach"})
        reach = {(c["upstream"], c["scope"]) for c in checks_of(report, "reach")}
        # One probe per distinct key: bundleup-api's shared key and team beta's own.
        self.assertIn(("bundleup-api", "shared"), reach)
        self.assertIn(("bundleup-api", "team:beta"), reach)
        self.assertIn(("bundleiq", None), reach)
        # What the fake received: GETs only, each with the key injected as keyway injects it.
        probes = self.fake.requests
        self.assertTrue(probes)
        self.assertEqual({r.method for r in probes}, {"GET"})
        auth = {r.header("Authorization") for r in probes if r.path == "/v1/integrations"}
        self.assertIn("Bearer " + self.secrets["bundleup"], auth)
        self.assertIn("Bearer " + self.secrets["bundleup@beta"], auth)
        self.assertIn(self.secrets["bundleiq"], {r.header("X-Api-Key") for r in probes if r.path == "/v1/workspaces"})
        human = self.kw.ctl("doctor")
        self.assertIn("0 failed, 0 warnings", human.stdout)
        self.assertNoSecret(cp.stdout, cp.stderr, human.stdout, human.stderr)

    def test_missing_secret(self):
        self.kw.ctl("secret", "rm", "bundleiq.api_key")
        self.addCleanup(self.kw.set_secret, "bundleiq.api_key", self.secrets["bundleiq"])
        report, _ = self.doctor(expect=1)
        secret = checks_of(report, "secret", "bundleiq")[0]
        self.assertEqual(secret["result"], "fail")
        self.assertIn("bundleiq.api_key", secret["message"])
        for team in ("alpha", "beta", "iqonly"):
            self.assertIn(team, secret["message"])
        self.assertEqual(secret["next"], "keywayctl secret set bundleiq.api_key (the value on stdin)")
        # Without a key to try, the upstream is still connected to.
        reach = checks_of(report, "reach", "bundleiq")[0]
        self.assertEqual(reach["result"], "ok")
        self.assertIn("none is set", reach["message"])
        # A team's own key missing where the others have theirs: the hint names the team.
        self.kw.ctl("secret", "rm", "bundleup.api_key", "--team", "beta")
        self.addCleanup(self.kw.set_secret, "bundleup.api_key", self.secrets["bundleup@beta"], team="beta")
        self.kw.ctl("secret", "rm", "bundleup.api_key")
        self.addCleanup(self.kw.set_secret, "bundleup.api_key", self.secrets["bundleup"])
        self.kw.set_secret("bundleup.api_key", "alpha-own-key", team="alpha")
        self.addCleanup(self.kw.ctl, "secret", "rm", "bundleup.api_key", "--team", "alpha")
        report, _ = self.doctor(expect=1)
        secret = checks_of(report, "secret", "bundleup-api")[0]
        self.assertEqual(secret["next"], "keywayctl secret set bundleup.api_key --team beta (the value on stdin)")

    def test_bad_key_file_mode(self):
        key = self.kw.state_dir / "master.key"
        os.chmod(key, 0o640)
        self.addCleanup(os.chmod, key, 0o600)
        report, cp = self.doctor(expect=1)
        mk = checks_of(report, "master_key")[0]
        self.assertEqual(mk["result"], "fail")
        self.assertIn("0640", mk["message"])
        self.assertEqual(mk["next"], "chmod 600 %s" % os.path.realpath(key))
        self.assertEqual(checks_of(report, "store")[0]["result"], "fail")
        self.assertEqual(checks_of(report, "secret")[0]["result"], "skip")
        os.chmod(key, 0o700)
        report, _ = self.doctor(expect=0)
        self.assertEqual(checks_of(report, "master_key")[0]["result"], "warn")
        os.chmod(key, 0o600)
        # The state directory open to others.
        os.chmod(self.kw.state_dir, 0o755)
        self.addCleanup(os.chmod, self.kw.state_dir, 0o700)
        report, _ = self.doctor(expect=0)
        sd = checks_of(report, "state_dir")[0]
        self.assertEqual(sd["result"], "warn")
        self.assertEqual(sd["next"], "chmod 700 %s" % os.path.realpath(self.kw.state_dir))

    def test_refused_key(self):
        self.fake.route("GET", "/v1/integrations", Response.json({"error": "bad key"}, status=401))
        report, cp = self.doctor(expect=1)
        failed = [c for c in checks_of(report, "reach") if c["result"] == "fail"]
        self.assertEqual({c["upstream"] for c in failed}, {"bundleup-api", "bundleup-proxy", "bundleup-unify"})
        by_scope = {c["scope"]: c for c in checks_of(report, "reach", "bundleup-api")}
        self.assertIn("refuses the key (HTTP 401)", by_scope["shared"]["message"])
        self.assertEqual(by_scope["shared"]["next"], "keywayctl secret set bundleup.api_key (the right value on stdin)")
        self.assertEqual(by_scope["team:beta"]["next"],
                         "keywayctl secret set bundleup.api_key --team beta (the right value on stdin)")
        self.assertEqual(checks_of(report, "reach", "bundleiq")[0]["result"], "ok")
        self.assertNoSecret(cp.stdout, cp.stderr)

    def test_usage(self):
        cp = self.kw.ctl("doctor", "extra", check=False)
        self.assertEqual(cp.returncode, 1)
        cp = self.kw.ctl("doctor", "--all", check=False)
        self.assertEqual(cp.returncode, 1)
        self.assertIn("does not apply", cp.stderr)
        cp = self.kw.ctl("doctor", "--help")
        self.assertIn("exit status: 0 no check failed (warnings allowed), 1 a check failed", cp.stdout)


class DoctorUpstreamFaultsTest(unittest.TestCase):
    """An unreachable upstream and a TLS upstream whose certificate does not verify against the configured CA."""

    @classmethod
    def setUpClass(cls):
        cls.pki = test_pki()
        cls.tls_fake = FakeUpstream(ssl_context=cls.pki.server_context()).start()
        cls.addClassCleanup(cls.tls_fake.stop)
        cls.dead_port = closed_port()
        cls.path_tag = os.urandom(6).hex()
        cls.kw = Keyway({
            "bundleup-api": {"base_url": "https://127.0.0.1:%d" % cls.tls_fake.port,
                             "tls": {"ca_file": cls.pki.other_ca_file}},
            # A path with a token in it, as some users mount: reported by origin only.
            "bundleiq": {"base_url": "http://127.0.0.1:%d/tok-in-path-%s" % (cls.dead_port, cls.path_tag)},
        }, extra={"listen": "127.0.0.1:%d" % closed_port()})
        cls.addClassCleanup(cls.kw.cleanup)
        cls.kw.init()
        cls.kw.add_team("t1")
        cls.secret = "fault-secret-%s" % os.urandom(6).hex()
        cls.kw.set_secret("bundleup.api_key", cls.secret)
        cls.kw.set_secret("bundleiq.api_key", cls.secret + "-iq")
        cls.kw.start()

    def test_unreachable_and_wrong_ca(self):
        report, cp = ctl_json(self.kw, "doctor", expect=1)
        iq = checks_of(report, "reach", "bundleiq")[0]
        self.assertEqual(iq["result"], "fail")
        self.assertIn("127.0.0.1:%d" % self.dead_port, iq["message"])
        self.assertIn("upstreams.bundleiq.base_url", iq["next"])
        api = checks_of(report, "reach", "bundleup-api")[0]
        self.assertEqual(api["result"], "fail")
        self.assertIn("does not verify against tls.ca_file %s" % self.pki.other_ca_file, api["message"])
        self.assertIn("upstreams.bundleup-api.tls.ca_file", api["next"])
        self.assertEqual(self.tls_fake.requests, [], "nothing may be sent over an unverified connection")
        # The secrets were set (ok) and never printed; no certificate content either.
        self.assertEqual([c["result"] for c in checks_of(report, "secret")], ["ok", "ok"])
        human = self.kw.ctl("doctor", check=False)
        self.assertEqual(human.returncode, 1)
        for text in (cp.stdout, cp.stderr, human.stdout, human.stderr):
            self.assertNotIn(self.secret, text)
            self.assertNotIn(self.pki.tag, text)
            self.assertNotIn(self.path_tag, text)

    def test_daemon_view_in_status(self):
        # keywayd met the same faults: its status says when and why, in the words its clients got.
        token = self.kw.add_client("c-%s" % os.urandom(3).hex(), "t1")
        resp = request(self.kw.main_port, "GET", "/bundleup-api/v1/x", [("X-Keyway-Token", token)])
        self.assertEqual(resp.status, 502)
        doc, _ = ctl_json(self.kw, "status")
        api = {u["name"]: u for u in doc["daemon"]["upstreams"]}["bundleup-api"]
        self.assertIn("TLS certificate verification failed", api["last_failure"])
        self.assertEqual(api["last_failure_class"], "tls")
        self.assertEqual(api["tls_ca_file"], self.pki.other_ca_file)
        self.assertNotIn(self.pki.tag, json.dumps(doc))
        self.assertNotIn(token, json.dumps(doc))


if __name__ == "__main__":
    unittest.main()
