"""test_fleet.py: fleet mode (etcd as the credential store of record) against a real 3-member etcd
cluster (etcd_cluster.py) and three keywayd hosts that share one master key and one FakeUpstream.

FleetTest shares one cluster and the hosts across its tests; the tests run in name order and the
destructive ones (a member killed, paused, all killed, compaction, the cluster restored from a
backup) come last. setUp brings every
member and host back, so a failed test does not take the next ones down with it. The last test scans
etcd's whole keyspace and every member file for every secret value, token, team, client and user name
and user secret the class made, with a planted plaintext as the positive control.

No etcd: the class fails (EtcdError says how to install it), it is not skipped.
"""

import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import threading
import time
import unittest
import uuid

from etcd_cluster import EtcdCluster
from harness import FakeUpstream, Keyway, binary, closed_port, request, test_pki

PREFIX = "/keyway/"
TABLES = ("teams", "clients", "client_tokens", "secrets", "bosa_users")
# A hung endpoint costs a keywayctl command one request_timeout before it moves on.
REQUEST_TIMEOUT_S = 2
STATUS_KEYS = {"prefix", "endpoints", "cluster_revision", "replica_revision", "lag_revisions", "replica_problem"}
BEHIND_MSG = "fleet cluster revision is behind the replica (etcd restored from a backup?); taking a new snapshot"
# A restored cluster is noticed either by the revision the replica holds being out of etcd's range
# (checked before each watch) or by the watch's own first answer.
RESTORED_MSGS = (BEHIND_MSG, "fleet revision of the replica is no longer (or not yet) in etcd; taking a new snapshot")
HISTORY_MSG = "fleet history differs from the replica's (etcd restored from a backup?); taking a new snapshot"
ENDPOINT_KEYS = {"endpoint", "ok", "version", "revision", "leader", "error"}


def _uid():
    return uuid.uuid4().hex[:10]


def fleet_section(endpoints, prefix=PREFIX):
    return {"etcd": {"endpoints": list(endpoints), "prefix": prefix, "dial_timeout": "1s",
                     "request_timeout": "%ds" % REQUEST_TIMEOUT_S}}


def metric(kw, name):
    """The value of an unlabelled metric of keywayd `kw` (float), or None when it is not exported."""
    text = request(kw.main_port, "GET", "/_keyway/metrics").text
    m = re.search(r"^%s(?:\{\})? (\S+)$" % re.escape(name), text, re.M)
    return float(m.group(1)) if m else None


def wait_until(pred, timeout, interval=0.02, what="condition"):
    """Polls pred() until truthy; returns (value, seconds waited). Raises AssertionError on timeout."""
    start = time.monotonic()
    while True:
        try:
            value = pred()
        except AssertionError:
            raise
        except Exception:  # noqa: BLE001  (a host restarting, a connection refused: not yet)
            value = None
        if value:
            return value, time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError("%s not reached within %.1fs" % (what, timeout))
        time.sleep(interval)


class Load:
    """A thread sending cacheable GETs (a new key each time) with one client token (or a list: one
    per host) to every host in turn until stop(): the failures (anything but a 200, or no answer)
    are the measure of a fault's effect on serving."""

    def __init__(self, hosts, token):
        self.hosts = hosts
        self.tokens = list(token) if isinstance(token, (list, tuple)) else [token] * len(hosts)
        self.ok = 0
        self.failures = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def _run(self):
        n = 0
        while not self._stop.is_set():
            kw, token = self.hosts[n % len(self.hosts)], self.tokens[n % len(self.hosts)]
            n += 1
            try:
                resp = request(kw.main_port, "GET", "/bundleiq/v1/load/%d" % n,
                               [("X-Keyway-Token", token)], timeout=5)
                if resp.status == 200:
                    self.ok += 1
                else:
                    self.failures.append("host %s: %d %s" % (kw.main_port, resp.status, resp.body[:200]))
            except Exception as e:  # noqa: BLE001  (every failure counts, whatever its kind)
                self.failures.append("host %s: %r" % (kw.main_port, e))
            time.sleep(0.002)

    def stop(self):
        self._stop.set()
        self._thread.join(10)


class FleetCase(unittest.TestCase):
    """What the fleet test classes share: hosts made with the fleet's key, requests through them and
    what the fake received, waiting for the replicas, the record of every plaintext of the test."""

    etcd = None
    fake = None
    hosts = []
    needles = set()          # every plaintext the scan must not find in etcd
    secret_values = set()    # those of them that no log line may hold either

    @classmethod
    def start_cluster(cls, size, **kw):
        cls.needles, cls.secret_values = set(), set()
        cls.etcd = EtcdCluster(size=size, **kw)
        cls.addClassCleanup(cls.etcd.stop)
        cls.fake = FakeUpstream().start()
        cls.addClassCleanup(cls.fake.stop)

    @classmethod
    def upstreams(cls):
        return {"bundleiq": {"base_url": cls.fake.url}, "bosa": {"base_url": cls.fake.url}}

    @classmethod
    def make_host(cls, copy_key_from=None, fleet=None):
        """A Keyway with a fleet section (default: the cluster's endpoints, PREFIX), initialised; its
        master key is a copy of Keyway copy_key_from's (None: its own, made by init)."""
        kw = Keyway(cls.upstreams(), extra={"fleet": fleet or fleet_section(cls.etcd.endpoints())},
                    log_level=os.environ.get("KEYWAY_FLEET_LOG_LEVEL", "info"))
        cls.addClassCleanup(kw.cleanup)
        if copy_key_from is not None:
            cls.copy_key(copy_key_from, kw)
        kw.init()
        cls.remember(cls.key_file(kw).read_bytes(), secret=True)
        return kw

    @staticmethod
    def key_file(kw):
        return kw.state_dir / "master.key"

    @classmethod
    def copy_key(cls, src, dst):
        """What an operator does to add a host: the fleet's master key copied before `init`."""
        dst.state_dir.mkdir(mode=0o700, exist_ok=True)
        shutil.copyfile(cls.key_file(src), cls.key_file(dst))
        os.chmod(cls.key_file(dst), 0o600)

    @classmethod
    def remember(cls, *values, secret=False):
        """Records plaintexts (names, values, tokens) that must appear nowhere in etcd; secret=True:
        nor in any keywayd log line."""
        for v in values:
            b = v.encode() if isinstance(v, str) else v
            cls.needles.add(b)
            if secret:
                cls.secret_values.add(b)

    @classmethod
    def wait_synced(cls, hosts, revision=None, timeout=20.0, prefix=PREFIX):
        """Waits until every host watches etcd with a replica at `revision` or later. The default is
        the revision of the fleet's last write (<prefix>head's mod_revision), not the cluster's: etcd
        counts revisions cluster-wide, and writes outside the prefix (the import test's) send the
        hosts no event."""
        rev = revision if revision is not None else cls.etcd.mod_revision((prefix + "head").encode())
        for kw in hosts:
            def synced():
                return (metric(kw, "keyway_fleet_watch_connected") == 1
                        and (metric(kw, "keyway_fleet_replica_revision") or 0) >= rev)
            wait_until(synced, timeout, what="host %s synced to revision %d" % (kw.main_port, rev))
        return rev

    def setUp(self):
        self.fake.reset()

    # ---------------------------------------------------------------------------------------------
    # helpers
    # ---------------------------------------------------------------------------------------------
    def injected(self, kw, token, timeout=5):
        """One request through host kw with `token`: (status, X-Api-Key value the fake received or None)."""
        tag = _uid()
        resp = request(kw.main_port, "GET", "/bundleiq/v1/probe/" + tag, [("X-Keyway-Token", token)],
                       timeout=timeout)
        if resp.status != 200:
            return resp.status, None
        reqs = self.fake.find(lambda r: tag in r.target)
        self.assertEqual(len(reqs), 1, "the fake got %d requests for one probe" % len(reqs))
        return 200, reqs[0].header("X-Api-Key")

    def wait_injected_everywhere(self, token, value, timeout=5.0, hosts=None):
        """Waits until every host injects `value` for `token`; returns the seconds each took."""
        took = []
        start = time.monotonic()
        for kw in hosts or self.hosts:
            try:
                wait_until(lambda: self.injected(kw, token) == (200, value), timeout - (time.monotonic() - start),
                           what="host %s injecting the new value" % kw.main_port)
            except AssertionError as e:
                raise AssertionError("%s; it injects %r; its fleet status %s; its log:\n%s" % (
                    e, self.injected(kw, token),
                    request(kw.main_port, "GET", "/_keyway/status").json().get("fleet"),
                    "\n".join(line for line in kw.stderr_text().splitlines() if '"msg":"access"' not in line))) from None
            took.append(time.monotonic() - start)
        return took

    def status_of(self, kw, token):
        return request(kw.main_port, "GET", "/bundleiq/v1/s/" + _uid(), [("X-Keyway-Token", token)]).status

    def new_client(self, team=None, via=0):
        name = "app-" + _uid()
        token = self.hosts[via].add_client(name, team or self.team_a)
        self.remember(name)
        self.remember(token, secret=True)
        return name, token

    def rc(self, kw, *args, input=None, timeout=60):
        return kw.ctl(*args, input=input, check=False, timeout=timeout)

    def fleet_status(self, kw):
        cp = self.rc(kw, "fleet", "status", "--json")
        try:
            doc = json.loads(cp.stdout)
        except ValueError:
            self.fail("fleet status --json printed no JSON (exit %d): %r %r" % (cp.returncode, cp.stdout[:500],
                                                                               cp.stderr[:500]))
        return cp.returncode, doc

    def assertStatusShape(self, doc):
        self.assertEqual(set(doc), STATUS_KEYS, doc)
        self.assertEqual(doc["prefix"], PREFIX)
        self.assertEqual([e["endpoint"] for e in doc["endpoints"]], self.etcd.endpoints())
        for e in doc["endpoints"]:
            self.assertEqual(set(e), ENDPOINT_KEYS, e)
            self.assertIsInstance(e["ok"], bool)

    def assertUnchanged(self, before, what):
        after = self.etcd.dump(prefix=PREFIX.encode())
        self.assertEqual(after, before, "%s changed etcd" % what)

    def secret_names(self, kw):
        return {s["name"] for s in json.loads(kw.ctl("secret", "list", "--json").stdout)}

    def other_config(self, kw, fleet):
        """A copy of kw's configuration with another fleet section, for a keywayctl run."""
        return kw.config_variant(fleet=fleet)

class FleetTest(FleetCase):

    # ---------------------------------------------------------------------------------------------
    # set-up
    # ---------------------------------------------------------------------------------------------
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.start_cluster(3)
        cls.hosts = []
        for _ in range(3):
            cls.hosts.append(cls.make_host(copy_key_from=cls.hosts[0] if cls.hosts else None))
        # A fourth host with the fleet's key, initialised but not started: the never-synced start.
        cls.spare = cls.make_host(copy_key_from=cls.hosts[0])
        cls.provision()
        for kw in cls.hosts:
            kw.start()
        cls.wait_synced(cls.hosts)

    @classmethod
    def provision(cls):
        h1 = cls.hosts[0]
        u = _uid()
        cls.team_a, cls.team_b = "alpha-" + u, "beta-" + u
        cls.values = {"shared": "iq-shared-" + _uid() + _uid(), "beta": "iq-beta-" + _uid() + _uid()}
        cls.client_a, cls.client_b = "app-a-" + u, "app-b-" + u
        cls.user_id, cls.user_secret = "user-%s@example.com" % u, "sk-user-" + _uid() + _uid()
        h1.add_team(cls.team_a)
        h1.add_team(cls.team_b, upstreams=["bundleiq"])
        h1.set_secret("bundleiq.api_key", cls.values["shared"])
        h1.set_secret("bundleiq.api_key", cls.values["beta"], team=cls.team_b)
        cls.tokens = {cls.client_a: h1.add_client(cls.client_a, cls.team_a),
                      cls.client_b: h1.add_client(cls.client_b, cls.team_b)}
        h1.ctl("bosa-user", "add", cls.user_id, "--team", cls.team_a, input=cls.user_secret + "\n")
        cls.remember("bundleiq.api_key", cls.team_a, cls.team_b, cls.client_a, cls.client_b, cls.user_id)
        cls.remember(cls.user_secret, *cls.values.values(), *cls.tokens.values(), secret=True)

    def setUp(self):
        super().setUp()
        # Whatever an earlier test left stopped comes back.
        down = False
        for m in self.etcd.members:
            if m.paused:
                self.etcd.resume(m.index)
            if not m.running:
                self.etcd.start(m.index, wait=False)
                down = True
        self.etcd.wait_healthy(60)
        for kw in self.hosts:
            if not kw.running:
                kw.start()
                down = True
        if down:
            self.wait_synced(self.hosts)

    # ---------------------------------------------------------------------------------------------
    # 10-59: a healthy cluster
    # ---------------------------------------------------------------------------------------------
    def test_10_provisioned_on_host1_serves_on_all_hosts(self):
        for kw in self.hosts:
            self.assertEqual(self.injected(kw, self.tokens[self.client_a]), (200, self.values["shared"]))
            self.assertEqual(self.injected(kw, self.tokens[self.client_b]), (200, self.values["beta"]))
            self.assertEqual(self.status_of(kw, "kw_" + "0" * 43), 401)

    def test_11_secret_set_on_one_host_is_injected_by_all(self):
        for via in (0, 2):
            value = "iq-rot-%d-%s%s" % (via, _uid(), _uid())
            self.remember(value, secret=True)
            self.hosts[via].set_secret("bundleiq.api_key", value)
            self.values["shared"] = value
            took = self.wait_injected_everywhere(self.tokens[self.client_a], value)
            print("test_fleet: secret set on host %d injected by all after %s s" % (
                via + 1, ", ".join("%.3f" % t for t in took)))
        # A team secret set on host 2 overrides the shared one for that team only, everywhere.
        value = "iq-beta-rot-" + _uid() + _uid()
        self.remember(value, secret=True)
        self.hosts[1].set_secret("bundleiq.api_key", value, team=self.team_b)
        self.values["beta"] = value
        self.wait_injected_everywhere(self.tokens[self.client_b], value)
        for kw in self.hosts:
            self.assertEqual(self.injected(kw, self.tokens[self.client_a]), (200, self.values["shared"]))

    def test_12_metrics_status_and_log_after_sync(self):
        before = [metric(kw, "keyway_fleet_replica_revision") for kw in self.hosts]
        for kw in self.hosts:
            self.assertEqual(metric(kw, "keyway_fleet_watch_connected"), 1)
            for name in ("keyway_fleet_lag_seconds", "keyway_fleet_reconnects_total", "keyway_fleet_snapshots_total",
                         "keyway_fleet_events_applied_total", "keyway_fleet_errors_total"):
                self.assertIsNotNone(metric(kw, name), "%s not exported" % name)
            self.assertGreaterEqual(metric(kw, "keyway_fleet_snapshots_total"), 1)
            st = request(kw.main_port, "GET", "/_keyway/status").json()["fleet"]
            self.assertEqual(set(st), {"state", "endpoint", "replica_revision", "lag_seconds"}, st)
            self.assertEqual(st["state"], "watching")
            self.assertIn(st["endpoint"], self.etcd.endpoints())
            self.assertIsInstance(st["replica_revision"], int)
            self.assertIsInstance(st["lag_seconds"], (int, float))
            ready = request(kw.main_port, "GET", "/_keyway/ready")
            self.assertEqual(ready.status, 200)
            self.assertEqual(ready.json()["status"], "ready")
            self.assertEqual(ready.json()["fleet"]["state"], "watching", ready.body)
            self.assertIsInstance(ready.json()["fleet"]["replica_revision"], int)
            snap = kw.wait_for_record(lambda r: r.get("msg") == "fleet snapshot loaded", 1)
            self.assertIsNotNone(snap, "no \"fleet snapshot loaded\" line")
            self.assertEqual(snap.get("component"), "fleet")
            self.assertIsInstance(snap.get("revision"), int)
            self.assertIsInstance(snap.get("records"), int)
            self.assertGreaterEqual(snap.get("records"), 5)
            conn = kw.wait_for_record(lambda r: r.get("msg") == "fleet watch connected", 1)
            self.assertIsNotNone(conn, "no \"fleet watch connected\" line")
            self.assertIn(conn.get("endpoint"), self.etcd.endpoints())
            self.assertEqual(conn.get("from_revision"), snap.get("revision") + 1)
        events = [metric(kw, "keyway_fleet_events_applied_total") for kw in self.hosts]
        team = "metrics-" + _uid()
        self.remember(team)
        self.hosts[0].ctl("team", "add", team)
        rev = self.wait_synced(self.hosts)
        for kw, b, e in zip(self.hosts, before, events):
            self.assertGreater(metric(kw, "keyway_fleet_replica_revision"), b)
            self.assertGreaterEqual(metric(kw, "keyway_fleet_replica_revision"), rev)
            self.assertGreater(metric(kw, "keyway_fleet_events_applied_total"), e)

    def test_13_revocation_on_host2_refused_everywhere_within_1s(self):
        # KEYWAY_FLEET_REVOCATIONS=50 gives the measure (p99 over 50 changes) for a test report.
        latencies = []
        for _ in range(int(os.environ.get("KEYWAY_FLEET_REVOCATIONS", "3"))):
            name, token = self.new_client()
            for kw in self.hosts:
                wait_until(lambda: self.status_of(kw, token) == 200, 5, what="new client accepted")
            refused_at = {}

            def poll(i, kw):
                while time.monotonic() - exited < 5:
                    if self.status_of(kw, token) == 401:
                        refused_at[i] = time.monotonic()
                        return
                    time.sleep(0.01)
            started = time.monotonic()
            self.hosts[1].revoke_client(name)
            exited = time.monotonic()
            threads = [threading.Thread(target=poll, args=(i, kw)) for i, kw in enumerate(self.hosts)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(10)
            self.assertEqual(sorted(refused_at), [0, 1, 2], "a host still accepted the revoked token after 5 s")
            took = [refused_at[i] - exited for i in range(3)]
            latencies += took
            print("test_fleet: revocation refused by the hosts %s s after keywayctl exited (all %.3f s after it "
                  "started)" % (", ".join("%.3f" % t for t in took), max(refused_at.values()) - started))
        ordered = sorted(latencies)
        print("test_fleet: revocation latency over %d host-revocations: median %.3f s, p99 %.3f s, max %.3f s"
              % (len(latencies), statistics.median(latencies), ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
                 ordered[-1]))
        self.assertLess(max(latencies), 1.0, latencies)

    def test_14_fleet_status(self):
        for kw in self.hosts:
            code, doc = self.fleet_status(kw)
            self.assertEqual(code, 0, doc)
            self.assertStatusShape(doc)
            for e in doc["endpoints"]:
                self.assertTrue(e["ok"], e)
                self.assertEqual(e["version"], self.etcd.status(0)["version"])
                self.assertIsInstance(e["revision"], int)
                self.assertIn(e["error"], (None, ""))
            self.assertEqual(sum(e["leader"] for e in doc["endpoints"]), 1, doc)
            self.assertEqual(doc["endpoints"][self.etcd.leader()]["leader"], True)
            self.assertIsInstance(doc["cluster_revision"], int)
            self.assertLessEqual(doc["cluster_revision"], self.etcd.revision())
            self.assertIsInstance(doc["replica_revision"], int)
            self.assertEqual(doc["lag_revisions"], doc["cluster_revision"] - doc["replica_revision"])
            self.assertGreaterEqual(doc["lag_revisions"], 0)
            text = kw.ctl("fleet", "status")
            for ep in self.etcd.endpoints():
                self.assertIn(ep, text.stdout)
        # No endpoint answers: exit 2, the JSON still printed, the replica's revision still known.
        path = self.other_config(self.hosts[0], fleet_section(["http://127.0.0.1:%d" % closed_port()]))
        cp = self.hosts[0].ctl("--config", path, "fleet", "status", "--json", config=False, check=False)
        self.assertEqual(cp.returncode, 2, cp.stderr)
        doc = json.loads(cp.stdout)
        self.assertEqual(set(doc), STATUS_KEYS)
        self.assertEqual([e["ok"] for e in doc["endpoints"]], [False])
        self.assertTrue(doc["endpoints"][0]["error"])
        self.assertIsNone(doc["cluster_revision"])
        self.assertIsNone(doc["lag_revisions"])
        self.assertIsInstance(doc["replica_revision"], int)
        cp = self.hosts[0].ctl("--config", path, "fleet", "status", config=False, check=False)
        self.assertEqual(cp.returncode, 2)
        # Bad usage.
        self.assertEqual(self.rc(self.hosts[0], "fleet", "status", "--bogus").returncode, 1)
        self.assertEqual(self.rc(self.hosts[0], "fleet", "frobnicate").returncode, 1)

    def test_15_fleet_import(self):
        # A single-host store with its own master key, pushed into an empty prefix of the cluster.
        single = Keyway(self.upstreams())
        self.addCleanup(single.cleanup)
        single.init()
        u = _uid()
        team, client, user = "imp-team-" + u, "imp-app-" + u, "imp-user-%s@example.com" % u
        value, user_secret = "imp-secret-" + _uid() + _uid(), "imp-sk-" + _uid() + _uid()
        single.add_team(team)
        single.set_secret("bundleiq.api_key", value)
        token = single.add_client(client, team)
        single.ctl("bosa-user", "add", user, "--team", team, input=user_secret + "\n")
        self.remember(team, client, user)
        self.remember(value, user_secret, token, self.key_file(single).read_bytes(), secret=True)
        prefix = "/import-%s/" % u
        path = self.other_config(single, fleet_section(self.etcd.endpoints(), prefix))
        ctl = ["--config", path, "fleet", "import"]

        # etcd unreachable: exit 2, nothing written.
        down = self.other_config(single, fleet_section(["http://127.0.0.1:%d" % closed_port()], prefix))
        cp = single.ctl("--config", down, "fleet", "import", config=False, check=False)
        self.assertEqual(cp.returncode, 2, cp.stderr)
        self.assertIn("etcd is unreachable", cp.stderr)
        self.assertEqual(self.etcd.dump(prefix=prefix.encode()), [])

        cp = single.ctl(*ctl, config=False, check=False)
        self.assertEqual(cp.returncode, 0, cp.stderr)
        m = re.search(r"imported (\d+) records into (/\S*/)", cp.stdout)
        self.assertTrue(m, cp.stdout)
        self.assertEqual(m.group(2), prefix)
        stored = self.etcd.dump(prefix=prefix.encode())
        records = [k for k, _ in stored if k.startswith((prefix + "r/").encode())]
        self.assertEqual(int(m.group(1)), len(records), [k for k, _ in stored])
        self.assertGreaterEqual(len(records), 4)  # a team, a client (and its token), a secret, a user
        tables = {k[len(prefix) + 2:].split(b"/")[0].decode() for k in records}
        self.assertLessEqual(tables, set(TABLES))
        for k in records:
            self.assertRegex(k[len(prefix) + 2:].decode(), r"^[a-z_]+/[A-Za-z0-9_-]{22}$")
        self.assertIn((prefix + "meta/key_id").encode(), dict(stored))

        # Once only: a non-empty prefix is refused, and nothing changes.
        cp = single.ctl(*ctl, config=False, check=False)
        self.assertEqual(cp.returncode, 1, cp.stderr)
        self.assertIn("not empty", cp.stdout + cp.stderr)
        self.assertEqual(self.etcd.dump(prefix=prefix.encode()), stored)
        before = self.etcd.dump(prefix=PREFIX.encode())
        cp = single.ctl("--config", self.other_config(single, fleet_section(self.etcd.endpoints())),
                        "fleet", "import", config=False, check=False)
        self.assertEqual(cp.returncode, 1, cp.stderr)
        self.assertIn("not empty", cp.stdout + cp.stderr)
        self.assertUnchanged(before, "an import into the fleet's non-empty prefix")

        # What was imported is the fleet's now: listed through etcd, and served by a new host of that
        # prefix with the single host's key, with the token issued before the import.
        self.assertIn("bundleiq.api_key", {s["name"] for s in json.loads(
            single.ctl("--config", path, "secret", "list", "--json", config=False).stdout)})
        host = Keyway(self.upstreams(), extra={"fleet": fleet_section(self.etcd.endpoints(), prefix)})
        self.addCleanup(host.cleanup)
        self.copy_key(single, host)
        host.init()
        host.start()
        self.wait_synced([host], prefix=prefix)
        self.assertEqual(self.injected(host, token), (200, value))
        self.assertEqual(self.status_of(host, self.tokens[self.client_a]), 401)  # another fleet's client

    def test_16_rekey_restore_and_another_key_refused(self):
        before = self.etcd.dump(prefix=PREFIX.encode())
        cp = self.rc(self.hosts[0], "rekey")
        self.assertEqual(cp.returncode, 1, cp.stderr)
        self.assertIn("fleet", cp.stderr)
        backup = self.hosts[0].dir / "none.backup"
        cp = self.rc(self.hosts[0], "restore", backup)
        self.assertEqual(cp.returncode, 1, cp.stderr)
        self.assertIn("fleet", cp.stderr)
        # A host with another master key cannot write (or read) the fleet's records.
        # Whether `init` already checks the key against the fleet's meta/key_id or the first write
        # does, the write fails.
        stranger = Keyway(self.upstreams(), extra={"fleet": fleet_section(self.etcd.endpoints())})
        self.addCleanup(stranger.cleanup)
        stranger.ctl("init", check=False)
        if self.key_file(stranger).exists():
            self.remember(self.key_file(stranger).read_bytes(), secret=True)
        value = "stranger-" + _uid() + _uid()
        self.remember(value, secret=True)
        cp = stranger.ctl("secret", "set", "bundleiq.api_key", input=value + "\n", check=False)
        self.assertNotEqual(cp.returncode, 0, cp.stdout)
        self.assertNotIn(value, cp.stdout + cp.stderr)
        self.assertUnchanged(before, "rekey, restore or a write under another key")
        self.assertEqual(self.injected(self.hosts[0], self.tokens[self.client_a]), (200, self.values["shared"]))

    def test_18_a_fleet_change_on_reload_needs_a_restart(self):
        # The replicator and its etcd client are made at start: a reload says so for any fleet key
        # (here a timeout and the TLS section) and keeps serving with what it has.
        kw = self.hosts[1]
        before = json.loads(json.dumps(kw.config["fleet"]))
        try:
            for change in ({"request_timeout": "4s"}, {"tls": {"ca_file": ""}, "dial_timeout": "1500ms"}):
                kw.config["fleet"] = json.loads(json.dumps(before))
                kw.config["fleet"]["etcd"].update(change)
                kw.write_config()
                mark = len(kw.records())
                kw.signal(signal.SIGHUP)
                rec = wait_until(lambda: next((r for r in kw.records()[mark:] if r.get("msg", "").startswith(
                    "configuration changes that apply only after a restart")), None), 10,
                    what="the restart warning")[0]
                self.assertIn("fleet", rec.get("needs_restart", ""), rec)
                self.assertEqual(self.injected(kw, self.tokens[self.client_a]), (200, self.values["shared"]))
        finally:
            kw.config["fleet"] = before
            kw.write_config()
            kw.signal(signal.SIGHUP)

    def test_17_bad_fleet_config_names_key_and_line(self):
        kw = self.hosts[0]
        cases = [
            ({"etcd": {"endpoints": self.etcd.endpoints(), "prefix": "keyway"}}, "fleet.etcd.prefix"),
            ({"etcd": {"endpoints": []}}, "fleet.etcd.endpoints"),
            ({"etcd": {"endpoints": ["ftp://127.0.0.1:1"]}}, "fleet.etcd.endpoints"),
            ({"etcd": {"endpoints": self.etcd.endpoints(), "password": "inline"}}, "fleet.etcd.password"),
            ({"etcd": {"endpoints": self.etcd.endpoints(), "username": "keyway"}}, "fleet.etcd."),
            ({"etcd": {"endpoints": self.etcd.endpoints(), "dial_timeout": "0s"}}, "fleet.etcd.dial_timeout"),
        ]
        for fleet, key in cases:
            with self.subTest(key=key, fleet=fleet):
                path = self.other_config(kw, fleet)
                cp = kw.ctl("--config", path, "secret", "list", config=False, check=False)
                self.assertEqual(cp.returncode, 1, cp.stderr)
                self.assertRegex(cp.stderr, r"%s:\d+: %s" % (re.escape(path.name), re.escape(key)))
                chk = subprocess.run([binary("keywayd"), "--config", str(path), "--check-config"],
                                                   capture_output=True, text=True, timeout=30)
                self.assertNotEqual(chk.returncode, 0)
                self.assertIn(key, chk.stderr)
                self.assertNotIn("inline", chk.stderr + cp.stderr)

    def test_20_concurrent_writers_on_two_hosts_lose_nothing(self):
        u = _uid()
        results = {0: [], 1: []}

        def writer(side):
            kw = self.hosts[side]
            for i in range(20):
                name, value = "w%d.%s.%d" % (side, u, i), "wval-%d-%d-%s%s" % (side, i, _uid(), _uid())
                self.remember(name)
                self.remember(value, secret=True)
                cp = kw.ctl("secret", "set", name, input=value + "\n", check=False)
                results[side].append((name, cp.returncode, cp.stderr.strip()[-300:]))
        threads = [threading.Thread(target=writer, args=(s,)) for s in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        failed = [r for side in results.values() for r in side if r[1] != 0]
        self.assertEqual(failed, [], "keywayctl writers failed")
        wanted = {name for side in results.values() for name, _, _ in side}
        self.assertEqual(len(wanted), 40)
        for kw in self.hosts:
            self.assertLessEqual(wanted, self.secret_names(kw))
        self.wait_synced(self.hosts)

    # ---------------------------------------------------------------------------------------------
    # 60-89: faults (each brings the cluster back; setUp also does)
    # ---------------------------------------------------------------------------------------------
    def test_60_one_member_killed_under_load(self):
        victim = self.etcd.leader()
        self.assertIsNotNone(victim, "no etcd leader")
        with Load(self.hosts, self.tokens[self.client_a]) as load:
            time.sleep(0.3)
            self.etcd.kill(victim)
            value = "iq-kill-" + _uid() + _uid()
            self.remember(value, secret=True)
            t = time.monotonic()
            cp = self.rc(self.hosts[0], "secret", "set", "bundleiq.api_key", input=value + "\n")
            self.assertEqual(cp.returncode, 0, cp.stderr)
            print("test_fleet: secret set with the leader killed took %.2f s" % (time.monotonic() - t))
            self.values["shared"] = value
            took = self.wait_injected_everywhere(self.tokens[self.client_a], value, timeout=10)
            print("test_fleet: ... injected by all after %s s" % ", ".join("%.3f" % x for x in took))
            code, doc = self.fleet_status(self.hosts[1])
            self.assertEqual(code, 0, doc)
            self.assertFalse(doc["endpoints"][victim]["ok"])
            self.assertTrue(doc["endpoints"][victim]["error"])
            self.assertEqual(sum(e["ok"] for e in doc["endpoints"]), 2)
            time.sleep(0.3)
        print("test_fleet: %d requests served while a member was killed, %d failed" % (load.ok, len(load.failures)))
        self.assertEqual(load.failures, [])
        self.assertGreater(load.ok, 20)
        self.etcd.start(victim)
        self.wait_synced(self.hosts)

    def test_61_member_paused(self):
        # The member host 1 watches through (else the first endpoint) hangs: a hung endpoint, not a
        # refused one.
        ep = request(self.hosts[0].main_port, "GET", "/_keyway/status").json()["fleet"]["endpoint"]
        victim = self.etcd.endpoints().index(ep) if ep in self.etcd.endpoints() else 0
        reconnects = metric(self.hosts[0], "keyway_fleet_reconnects_total")
        self.etcd.pause(victim)
        try:
            value = "iq-pause-" + _uid() + _uid()
            self.remember(value, secret=True)
            t = time.monotonic()
            cp = self.rc(self.hosts[0], "secret", "set", "bundleiq.api_key", input=value + "\n")
            took = time.monotonic() - t
            self.assertEqual(cp.returncode, 0, cp.stderr)
            print("test_fleet: secret set with a paused member took %.2f s" % took)
            self.assertLess(took, 3 * REQUEST_TIMEOUT_S + 2)
            self.values["shared"] = value
            took = self.wait_injected_everywhere(self.tokens[self.client_a], value, timeout=10)
            print("test_fleet: ... injected by all after %s s" % ", ".join("%.3f" % x for x in took))
            self.assertGreater(metric(self.hosts[0], "keyway_fleet_reconnects_total"), reconnects)
            st = request(self.hosts[0].main_port, "GET", "/_keyway/status").json()["fleet"]
            self.assertNotEqual(st["endpoint"], self.etcd.endpoints()[victim])
            t = time.monotonic()
            code, doc = self.fleet_status(self.hosts[2])
            self.assertLess(time.monotonic() - t, 3 * REQUEST_TIMEOUT_S + 2)
            self.assertEqual(code, 0, doc)
            self.assertFalse(doc["endpoints"][victim]["ok"])
        finally:
            self.etcd.resume(victim)
        self.etcd.wait_healthy(30)

    def test_70_all_members_killed(self):
        token = self.tokens[self.client_a]
        revoked_name, revoked_token = self.new_client()
        self.hosts[0].revoke_client(revoked_name)
        self.wait_synced(self.hosts)
        before = self.etcd.dump(prefix=PREFIX.encode())
        names_before = self.secret_names(self.hosts[0])
        # Host 3 is restarted during the outage: the load measures the two that keep running.
        with Load(self.hosts[:2], token) as load:
            self.etcd.kill_all()
            for kw in self.hosts:
                wait_until(lambda: metric(kw, "keyway_fleet_watch_connected") == 0, 10,
                           what="host %s noticing etcd is down" % kw.main_port)
                st = request(kw.main_port, "GET", "/_keyway/status").json()["fleet"]
                self.assertIn(st["state"], ("connecting", "unreachable"))
            # keywayctl: exit 2, one clear line, nothing changed anywhere.
            lost_value, lost_name = "iq-lost-" + _uid() + _uid(), "lost." + _uid()
            self.remember(lost_name)
            self.remember(lost_value, secret=True)
            for args, stdin in ((("secret", "set", "bundleiq.api_key"), lost_value + "\n"),
                                (("secret", "set", lost_name), lost_value + "\n"),
                                (("client", "add", "lost-" + _uid(), "--team", self.team_a), None),
                                (("client", "revoke", self.client_b), None)):
                t = time.monotonic()
                cp = self.rc(self.hosts[1], *args, input=stdin)
                self.assertEqual(cp.returncode, 2, (args, cp.stdout, cp.stderr))
                self.assertIn("keywayctl: etcd is unreachable", cp.stderr)
                self.assertNotIn(lost_value, cp.stdout + cp.stderr)
                self.assertLess(time.monotonic() - t, 3 * REQUEST_TIMEOUT_S + 5)
            code, doc = self.fleet_status(self.hosts[2])
            self.assertEqual(code, 2, doc)
            self.assertStatusShape(doc)
            self.assertEqual([e["ok"] for e in doc["endpoints"]], [False] * 3)
            self.assertIsNone(doc["cluster_revision"])
            self.assertIsInstance(doc["replica_revision"], int)

            # A host restarted now serves from its replica at once and says so.
            h3 = self.hosts[2]
            t = time.monotonic()
            h3.stop()
            # Its replicator was waiting on etcd: the stop does not wait for etcd's timeouts.
            self.assertLess(time.monotonic() - t, 2.5, h3.stderr_tail())
            t = time.monotonic()
            h3.start()
            wait_until(lambda: request(h3.main_port, "GET", "/_keyway/ready").status == 200, 10, 0.005,
                       what="host 3 ready from its replica")
            print("test_fleet: keywayd ready %.3f s after its start with etcd down and a replica present"
                  % (time.monotonic() - t))
            self.assertIsNotNone(h3.wait_for_record(
                lambda r: r.get("msg") == "fleet etcd unreachable; serving from the replica"
                and isinstance(r.get("replica_revision"), int), 10), h3.stderr_tail())
            self.assertEqual(self.injected(h3, token), (200, self.values["shared"]))
            self.assertEqual(self.status_of(h3, revoked_token), 401)

            # A host that never synced is not ready until it has.
            spare = self.spare
            spare.start(wait_ready=False)
            self.addCleanup(spare.stop)
            for _ in range(5):
                self.assertEqual(request(spare.main_port, "GET", "/_keyway/ready").status, 503)
                time.sleep(0.1)
            not_ready = request(spare.main_port, "GET", "/_keyway/ready").json()
            self.assertEqual(not_ready["error"]["code"], "unavailable", not_ready)
            self.assertIn(not_ready["fleet"]["state"], ("connecting", "unreachable"), not_ready)
            self.assertEqual(not_ready["fleet"]["replica_revision"], 0, not_ready)
            time.sleep(1.0)  # the hosts serve through a longer outage too
        print("test_fleet: %d requests served with every member down, %d failed" % (load.ok, len(load.failures)))
        self.assertEqual(load.failures, [])
        self.assertGreater(load.ok, 20)

        # Members back: the hosts catch up; nothing from before is lost, nothing refused was applied.
        self.etcd.start_all()
        self.assertEqual(self.etcd.dump(prefix=PREFIX.encode()), before)
        self.wait_synced(self.hosts)
        wait_until(lambda: request(spare.main_port, "GET", "/_keyway/ready").status == 200, 20,
                   what="the never-synced host ready after its first snapshot")
        self.assertEqual(self.injected(spare, token), (200, self.values["shared"]))
        self.assertEqual(self.secret_names(self.hosts[0]), names_before)
        value = "iq-after-" + _uid() + _uid()
        self.remember(value, secret=True)
        self.hosts[1].set_secret("bundleiq.api_key", value)
        self.values["shared"] = value
        self.wait_injected_everywhere(token, value, timeout=10, hosts=self.hosts + [spare])
        for kw in self.hosts + [spare]:
            self.assertEqual(self.injected(kw, self.tokens[self.client_b]), (200, self.values["beta"]))
            self.assertEqual(self.status_of(kw, revoked_token), 401)
            self.assertEqual(metric(kw, "keyway_fleet_watch_connected"), 1)
        self.assertGreaterEqual(metric(self.hosts[0], "keyway_fleet_reconnects_total"), 1)
        spare.stop()

    def test_80_compaction_while_a_host_is_stopped(self):
        h3 = self.hosts[2]
        token = self.tokens[self.client_a]
        gone_name, gone_token = self.new_client()
        self.wait_synced(self.hosts)
        h3.stop()
        value = "iq-compact-" + _uid() + _uid()
        self.remember(value, secret=True)
        self.hosts[0].set_secret("bundleiq.api_key", value)
        self.values["shared"] = value
        self.hosts[1].revoke_client(gone_name)
        new_name, new_token = self.new_client()
        self.etcd.compact(self.etcd.revision())
        h3.start()
        self.wait_synced([h3])
        self.assertEqual(self.injected(h3, token), (200, value))
        self.assertEqual(self.status_of(h3, gone_token), 401)
        self.assertEqual(self.status_of(h3, new_token), 200)

    def test_81_compaction_past_a_running_hosts_watch(self):
        # Host 3 on one member only: that member killed, the watch is lost; the others move on and
        # compact; the member back, the watch cannot resume at host 3's revision and a new snapshot
        # must follow.
        h3 = self.hosts[2]
        token = self.tokens[self.client_a]
        h3.stop()
        h3.config["fleet"] = fleet_section([self.etcd.endpoints()[2]])
        h3.write_config()
        try:
            h3.start()
            self.wait_synced([h3])
            snapshots = metric(h3, "keyway_fleet_snapshots_total")
            gone_name, gone_token = self.new_client()
            self.wait_synced([h3])
            self.etcd.kill(2)
            wait_until(lambda: metric(h3, "keyway_fleet_watch_connected") == 0, 10, what="host 3's watch lost")
            value = "iq-compact2-" + _uid() + _uid()
            self.remember(value, secret=True)
            self.hosts[0].set_secret("bundleiq.api_key", value)
            self.values["shared"] = value
            self.hosts[1].revoke_client(gone_name)
            rev = self.etcd.revision()
            self.etcd.compact(rev)
            self.assertEqual(self.injected(h3, gone_token)[0], 200)  # still the replica's view
            self.etcd.start(2)
            self.wait_synced([h3], rev, timeout=30)
            self.assertGreater(metric(h3, "keyway_fleet_snapshots_total"), snapshots)
            self.assertEqual(self.injected(h3, token), (200, value))
            self.assertEqual(self.status_of(h3, gone_token), 401)
        finally:
            h3.stop()
            h3.config["fleet"] = fleet_section(self.etcd.endpoints())
            h3.write_config()

    def test_85_etcd_restored_from_a_backup(self):
        # etcd restored from a backup taken before some changes: its revision is below the hosts'
        # replicas, and its revisions up to theirs will be other changes than the ones they applied.
        # Each host must see it, load the restored keyspace and follow what is written after.
        token = self.tokens[self.client_a]
        old_value = self.values["shared"]
        backup, backup_rev, backed_up, lost_token, lost_value = self._backup_then_change(via=2)
        self.wait_injected_everywhere(token, lost_value)
        for kw in self.hosts:
            self.assertEqual(self.status_of(kw, lost_token), 200)
        head_rev = self.wait_synced(self.hosts)
        self.assertGreater(head_rev, backup_rev)
        snapshots = [metric(kw, "keyway_fleet_snapshots_total") for kw in self.hosts]
        marks = [len(kw.records()) for kw in self.hosts]

        with Load(self.hosts, token) as load:
            time.sleep(0.3)
            self.etcd.restore_all(backup)
            self.values["shared"] = old_value
            self.assertEqual(self.etcd.dump(prefix=PREFIX.encode()), backed_up)
            for kw, mark in zip(self.hosts, marks):
                behind = self.record_after(kw, mark, lambda r: r.get("msg") in RESTORED_MSGS, 30)
                self.assertEqual(behind.get("level"), "warn", behind)
                if behind.get("msg") == BEHIND_MSG:
                    self.assertEqual(behind.get("cluster_revision"), backup_rev, behind)
                self.assertGreaterEqual(behind.get("replica_revision"), head_rev, behind)
                loaded = self.record_after(kw, kw.records().index(behind),
                                           lambda r: r.get("msg") == "fleet snapshot loaded", 10)
                self.assertEqual(loaded.get("revision"), backup_rev, loaded)
            took = self.wait_injected_everywhere(token, old_value, timeout=10)
            print("test_fleet: restored state injected by all %s s after the cluster was back" % (
                ", ".join("%.3f" % t for t in took)))
            time.sleep(0.3)
        print("test_fleet: %d requests served while etcd was restored, %d failed" % (load.ok, len(load.failures)))
        self.assertEqual(load.failures, [])
        self.assertGreater(load.ok, 20)
        for kw, before in zip(self.hosts, snapshots):
            self.assertEqual(self.status_of(kw, lost_token), 401)
            self.assertEqual(self.injected(kw, self.tokens[self.client_b]), (200, self.values["beta"]))
            self.assertGreater(metric(kw, "keyway_fleet_snapshots_total"), before)
            self.assertEqual(metric(kw, "keyway_fleet_replica_revision"), backup_rev)
            self.assertEqual(metric(kw, "keyway_fleet_watch_connected"), 1)
            self.assertEqual(request(kw.main_port, "GET", "/_keyway/ready").status, 200)
            self.assertNotIn(lost_value, kw.stderr_text())

        # Writes after the restore reuse the revisions the hosts had seen: they reach every host.
        value = "iq-restored-" + _uid() + _uid()
        self.remember(value, secret=True)
        self.hosts[0].set_secret("bundleiq.api_key", value)
        self.values["shared"] = value
        new_name, new_token = self.new_client(via=2)
        self.assertLessEqual(self.etcd.revision(), head_rev, "the writes after the restore went past the "
                             "revisions the hosts had seen: the test no longer covers their reuse")
        self.wait_injected_everywhere(token, value, timeout=10)
        self.wait_synced(self.hosts)
        for kw in self.hosts:
            self.assertEqual(self.status_of(kw, new_token), 200)
            self.assertEqual(self.status_of(kw, lost_token), 401)

    def test_86_restored_cluster_written_past_a_stopped_hosts_revision(self):
        # A host down during the restore comes back when the restored cluster has been written up
        # to (and past) its replica's revision again: same revision numbers, other changes. It must
        # notice by the head it saw at its revision, not serve the lost state.
        token = self.tokens[self.client_a]
        old_value = self.values["shared"]
        backup, backup_rev, _, lost_token, lost_value = self._backup_then_change(via=0)
        self.wait_injected_everywhere(token, lost_value)
        head_rev = self.wait_synced(self.hosts)
        h3 = self.hosts[2]
        h3.stop()
        self.etcd.restore_all(backup)
        self.values["shared"] = old_value
        # Written again up to past host 3's revision, through the two hosts that ran on.
        written = []
        while self.etcd.revision() <= head_rev:
            value = "iq-rewritten-" + _uid() + _uid()
            self.remember(value, secret=True)
            self.hosts[0].set_secret("bundleiq.api_key", value)
            written.append(value)
        self.values["shared"] = written[-1]
        h3.start()
        rec = h3.wait_for_record(lambda r: r.get("msg") == HISTORY_MSG, 20)
        self.assertIsNotNone(rec, "\n".join(json.dumps(r) for r in h3.records() if r.get("component") == "fleet"))
        self.assertEqual(rec.get("level"), "warn", rec)
        self.wait_injected_everywhere(token, written[-1], timeout=10)
        for kw in self.hosts:
            self.assertEqual(self.status_of(kw, lost_token), 401)
        self.assertNotIn(lost_value, h3.stderr_text())
        self.assertGreaterEqual(backup_rev, 1)

    def _backup_then_change(self, via):
        """An etcd backup, then changes it does not hold (a new client, a new shared secret set on
        host `via`): returns the backup file, its revision, its keyspace under the prefix, the new
        client's token and the new secret value. The cluster is followed again after the test."""
        self.addCleanup(self._follow_the_cluster_again)
        self.wait_synced(self.hosts)
        backup = self.etcd.dir / ("backup-%s.db" % _uid())
        backup_rev = self.etcd.snapshot_save(backup)
        backed_up = self.etcd.dump(prefix=PREFIX.encode())
        _, lost_token = self.new_client(via=1)
        lost_value = "iq-lost-" + _uid() + _uid()
        self.remember(lost_value, secret=True)
        self.hosts[via].set_secret("bundleiq.api_key", lost_value)
        self.values["shared"] = lost_value
        return backup, backup_rev, backed_up, lost_token, lost_value

    def record_after(self, kw, mark, pred, timeout):
        """The first log record of kw after its first `mark` ones that matches pred, waiting up to
        timeout; fails with the host's fleet log lines when none comes."""
        def find():
            return next((r for r in kw.records()[mark:] if pred(r)), None)
        try:
            return wait_until(find, timeout, interval=0.05, what="a log record of host %s" % kw.main_port)[0]
        except AssertionError as e:
            raise AssertionError("%s; its fleet log since:\n%s" % (e, "\n".join(
                json.dumps(r) for r in kw.records()[mark:] if r.get("component") == "fleet"))) from None

    def _follow_the_cluster_again(self):
        """After a failed restore test, a host may keep a replica ahead of the cluster and miss the
        writes at revisions it has already seen: for the next tests, the cluster's revision is moved
        past every replica's (writes outside the prefix) and the shared secret set once more."""
        try:
            self.wait_injected_everywhere(self.tokens[self.client_a], self.values["shared"], timeout=3)
            return
        except AssertionError:
            pass
        top = max(metric(kw, "keyway_fleet_replica_revision") or 0 for kw in self.hosts)
        while self.etcd.revision() <= top:
            self.etcd.put(b"/keyway-it/revision-bump", b"x")
        value = "iq-after-restore-" + _uid() + _uid()
        self.remember(value, secret=True)
        self.hosts[0].set_secret("bundleiq.api_key", value)
        self.values["shared"] = value

    # ---------------------------------------------------------------------------------------------
    # 99: nothing readable in etcd
    # ---------------------------------------------------------------------------------------------
    def test_99_nothing_readable_in_etcd(self):
        kvs = self.etcd.dump()
        keys = [k for k, _ in kvs]
        self.assertTrue(any(k.startswith((PREFIX + "r/").encode()) for k in keys), keys[:20])
        for k in keys:
            if k.startswith(PREFIX.encode()):
                rest = k[len(PREFIX):].decode()
                self.assertRegex(rest, r"^(meta/key_id|meta/hash_keys|head|r/(%s)/[A-Za-z0-9_-]{22})$"
                                 % "|".join(TABLES))
        key_id = dict(kvs)[(PREFIX + "meta/key_id").encode()]
        self.assertRegex(key_id.decode(), r"^[0-9a-f]+$")
        # Positive control: a plaintext planted under the prefix is found, in the keyspace and in the
        # members' files; then it is deleted (and stays in the files: the WAL keeps it).
        planted = ("planted-plaintext-" + _uid()).encode()
        self.etcd.put((PREFIX + "zz-control").encode(), planted)
        self.assertIn(planted, self.etcd.scan_for([planted]))
        self.etcd.delete((PREFIX + "zz-control").encode())
        needles = sorted(self.needles)
        self.assertGreater(len(needles), 10)
        found = self.etcd.scan_for(needles)
        self.assertEqual(found, {}, "plaintext found in etcd's keyspace")
        found = self.etcd.scan_files(needles + [planted])
        self.assertIn(planted, found, "the file scan misses a planted plaintext")
        del found[planted]
        self.assertEqual(found, {}, "plaintext found in etcd's files (database or WAL)")
        # Nor in what the hosts logged, with the same positive control: the client names are there.
        for kw in self.hosts:
            self.assertEqual(self.injected(kw, self.tokens[self.client_a]), (200, self.values["shared"]))
            wait_until(lambda: self.client_a.encode() in kw.stderr_text().encode(), 5,
                       what="the access line naming the client")
            log = kw.stderr_text().encode()
            leaked = sum(1 for v in self.secret_values if v in log)
            self.assertEqual(leaked, 0, "%d secret values or tokens in keywayd's log" % leaked)


class _OneHostFleet(FleetCase):
    """A one-member cluster, one host on it, one team, client and secret: for what changes how keyway
    reaches etcd (a password, TLS) rather than what it does there."""

    @classmethod
    def provision_and_start(cls, kw):
        u = _uid()
        cls.team, cls.client = "team-" + u, "app-" + u
        cls.value = "iq-" + _uid() + _uid()
        kw.add_team(cls.team)
        kw.set_secret("bundleiq.api_key", cls.value)
        cls.token = kw.add_client(cls.client, cls.team)
        cls.remember(cls.team, cls.client)
        cls.remember(cls.value, cls.token, secret=True)
        kw.start()
        cls.wait_synced([kw])

    def assertServes(self, kw):
        self.assertEqual(self.injected(kw, self.token), (200, self.value))
        self.assertEqual(self.etcd.scan_for(sorted(self.needles)), {})


class FleetAuthTest(_OneHostFleet):
    """etcd with authentication: keyway's user may use its prefix only; the password comes from
    password_file and is never in argv, the environment, a log line or keywayctl's output."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.start_cluster(1)
        cls.password = "etcd-pw-" + _uid() + _uid()
        cls.etcd.enable_auth({"keyway": (cls.password, PREFIX.encode())})
        cls.kw = cls.make_host(fleet=cls.auth_fleet("password", cls.password))
        cls.remember(cls.password, secret=True)
        cls.provision_and_start(cls.kw)

    @classmethod
    def auth_fleet(cls, name, password, prefix=PREFIX):
        """A fleet section with user keyway and a password file `name` holding `password`."""
        f = cls.etcd.dir / ("%s-%s" % (name, _uid()))
        f.write_text(password + "\n")
        os.chmod(f, 0o600)
        section = fleet_section(cls.etcd.endpoints(), prefix)
        section["etcd"].update(username="keyway", password_file=str(f))
        return section

    def test_writes_and_serves_with_the_password(self):
        self.assertServes(self.kw)
        value = "iq-rot-" + _uid() + _uid()
        self.remember(value, secret=True)
        self.kw.set_secret("bundleiq.api_key", value)
        type(self).value = value
        self.wait_injected_everywhere(self.token, value, hosts=[self.kw])
        pid = self.kw.proc.pid
        for what in ("cmdline", "environ"):
            with open("/proc/%d/%s" % (pid, what), "rb") as f:
                self.assertNotIn(self.password.encode(), f.read(), "the etcd password in keywayd's %s" % what)
        self.assertNotIn(self.password, self.kw.stderr_text())
        code, doc = self.fleet_status(self.kw)
        self.assertEqual(code, 0, doc)
        self.assertTrue(doc["endpoints"][0]["ok"], doc)

    def test_wrong_password_or_prefix_is_exit_2_and_changes_nothing(self):
        before = self.etcd.dump()
        wrong = "wrong-pw-" + _uid()
        for fleet in (self.auth_fleet("wrong", wrong), self.auth_fleet("other", self.password, "/other/")):
            with self.subTest(fleet=fleet["etcd"]["prefix"]):
                path = self.other_config(self.kw, fleet)
                cp = self.kw.ctl("--config", path, "secret", "set", "bundleiq.api_key", input="v-" + _uid() + "\n",
                                 config=False, check=False)
                self.assertEqual(cp.returncode, 2, cp.stderr)
                self.assertTrue(cp.stderr.startswith("keywayctl: "), cp.stderr)
                for pw in (wrong, self.password):
                    self.assertNotIn(pw, cp.stdout + cp.stderr)
                cp = self.kw.ctl("--config", path, "fleet", "status", "--json", config=False, check=False)
                for pw in (wrong, self.password):
                    self.assertNotIn(pw, cp.stdout + cp.stderr)
        self.assertEqual(self.etcd.dump(), before)

    def test_missing_password_file_is_a_config_error(self):
        fleet = fleet_section(self.etcd.endpoints())
        fleet["etcd"].update(username="keyway", password_file=str(self.etcd.dir / "no-such-file"))
        path = self.other_config(self.kw, fleet)
        cp = self.kw.ctl("--config", path, "secret", "list", config=False, check=False)
        self.assertEqual(cp.returncode, 1, cp.stderr)
        self.assertRegex(cp.stderr, r"%s:\d+: fleet\.etcd\.password_file" % re.escape(path.name))


class FleetTlsTest(_OneHostFleet):
    """etcd over https with client certificates required (fleet.etcd.tls)."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.pki = test_pki()
        cls.start_cluster(1, tls=cls.pki)
        cls.kw = cls.make_host(fleet=cls.tls_fleet())
        cls.provision_and_start(cls.kw)

    @classmethod
    def tls_fleet(cls, **tls):
        section = fleet_section(cls.etcd.endpoints())
        section["etcd"]["tls"] = dict({"ca_file": cls.pki.ca_file, "client_cert": cls.pki.path("client.pem"),
                                       "client_key": cls.pki.path("client.key")}, **tls)
        return section

    def test_writes_and_serves_over_tls(self):
        self.assertTrue(all(ep.startswith("https://") for ep in self.etcd.endpoints()))
        self.assertServes(self.kw)
        code, doc = self.fleet_status(self.kw)
        self.assertEqual(code, 0, doc)
        self.assertTrue(doc["endpoints"][0]["ok"], doc)

    def test_untrusted_server_or_no_client_certificate_is_exit_2(self):
        before = self.etcd.dump()
        no_cert = self.tls_fleet()
        del no_cert["etcd"]["tls"]["client_cert"], no_cert["etcd"]["tls"]["client_key"]
        for name, fleet in (("other CA", self.tls_fleet(ca_file=self.pki.other_ca_file)),
                            ("another CA's client", self.tls_fleet(client_cert=self.pki.path("other-client.pem"),
                                                                   client_key=self.pki.path("other-client.key"))),
                            ("no client certificate", no_cert)):
            with self.subTest(name):
                path = self.other_config(self.kw, fleet)
                cp = self.kw.ctl("--config", path, "team", "add", "t-" + _uid(), config=False, check=False)
                self.assertEqual(cp.returncode, 2, cp.stderr)
                self.assertIn("keywayctl: etcd is unreachable", cp.stderr)
                self.assertNotIn(self.pki.tag, cp.stdout + cp.stderr)  # no certificate contents
        self.assertEqual(self.etcd.dump(), before)


if __name__ == "__main__":
    unittest.main()
