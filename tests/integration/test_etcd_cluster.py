"""test_etcd_cluster.py: the self-test of etcd_cluster.EtcdCluster, the real 3-member etcd the fleet
tests run against: it comes up, answers through each member, finds what was put (the positive control
of the fleet's keyspace scan), survives a killed and a paused member, restarts one, compacts, restores every member from a backup."""

import base64
import json
import os
import time
import unittest
import urllib.error
import urllib.request
from unittest import mock

from etcd_cluster import EtcdCluster, EtcdError, encoded_forms
from harness import test_pki


class EtcdClusterTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.etcd = EtcdCluster(size=3)
        cls.addClassCleanup(cls.etcd.stop)

    def setUp(self):
        # A test that stopped a member brings it back; make sure of it for the next one.
        for m in self.etcd.members:
            if m.paused:
                self.etcd.resume(m.index)
            if not m.running:
                self.etcd.start(m.index, wait=False)
        self.etcd.wait_healthy(60)

    def _put_retrying(self, key, value, timeout=15.0):
        """A put while the cluster elects a leader may time out once; it is retried until it lands."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.etcd.put(key, value, timeout=1.0)
            except EtcdError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def test_three_members_answer(self):
        eps = self.etcd.endpoints()
        self.assertEqual(len(eps), 3)
        self.assertEqual(len(set(eps)), 3)
        for ep in eps:
            self.assertRegex(ep, r"^http://127\.0\.0\.1:\d+$")
        revs = set()
        for i in range(3):
            st = self.etcd.status(i)
            self.assertRegex(st["version"], r"^3\.\d+\.\d+$")
            self.assertTrue(self.etcd.member_health(i))
        rev = self.etcd.put(b"/selftest/rev", b"1")
        for i in range(3):
            revs.add(self.etcd.revision(endpoint=i))
        # Linearizable reads: every member answers with at least the revision of the write.
        self.assertTrue(all(r >= rev for r in revs), (rev, revs))
        self.assertIsNotNone(self.etcd.leader())

    def test_put_dump_and_scan(self):
        planted = b"plaintext-canary-" + str(time.time_ns()).encode()
        absent = b"never-written-" + str(time.time_ns()).encode()
        before = self.etcd.revision()
        rev = self.etcd.put(b"/selftest/planted", planted)
        self.assertGreater(rev, before)
        self.etcd.put(b"\x00\xffbinary-key", b"\x00\x01\x02")
        dump = dict(self.etcd.dump())
        self.assertEqual(dump[b"/selftest/planted"], planted)
        self.assertEqual(dump[b"\x00\xffbinary-key"], b"\x00\x01\x02")
        self.assertEqual(self.etcd.get(b"/selftest/planted"), planted)
        self.assertEqual(dict(self.etcd.dump(prefix=b"/selftest/")).get(b"/selftest/planted"), planted)
        self.assertNotIn(b"\x00\xffbinary-key", dict(self.etcd.dump(prefix=b"/selftest/")))
        # Positive control: the scan finds the planted value; and not the absent one.
        found = self.etcd.scan_for([planted, absent])
        self.assertIn(planted, found)
        self.assertNotIn(absent, found)
        # Also in the members' files, and after deletion still there (history, WAL): the file scan
        # sees what a range no longer returns.
        self.etcd.delete(b"/selftest/planted")
        self.assertNotIn(planted, self.etcd.scan_for([planted]))
        files = self.etcd.scan_files([planted, absent])
        self.assertIn(planted, files)
        self.assertNotIn(absent, files)

    def test_scan_finds_encoded_forms(self):
        needle = b"encoded-canary-" + str(time.time_ns()).encode()
        import binascii
        self.etcd.put(b"/selftest/hex", b"x" + binascii.hexlify(needle))
        self.etcd.put(b"/selftest/b64", b"y:" + base64.urlsafe_b64encode(b"ab" + needle + b"tail"))
        found = self.etcd.scan_for([needle])
        where = " ".join(found.get(needle, []))
        self.assertIn("/selftest/hex", where)
        self.assertIn("/selftest/b64", where)
        # Short encoded forms would match by chance: a needle too short for them is looked for raw
        # and in hex only.
        self.assertEqual(encoded_forms(b"abc"), {b"abc", b"616263", b"616263".upper()})
        self.etcd.delete(b"/selftest/", prefix=True)
        self.assertEqual(self.etcd.dump(prefix=b"/selftest/"), [])

    def test_kill_one_member_and_restart_it(self):
        victim = self.etcd.leader()
        self.assertIsNotNone(victim)
        self.etcd.kill(victim)
        self.assertFalse(self.etcd.members[victim].running)
        rev = self._put_retrying(b"/selftest/after-kill", b"1")
        self.assertGreaterEqual(self.etcd.revision(), rev)
        self.etcd.wait_healthy(30)  # the two others
        self.etcd.start(victim)
        # The restarted member caught up with the write it missed.
        self.assertEqual(self.etcd.call("kv/range", {"key": "L3NlbGZ0ZXN0L2FmdGVyLWtpbGw="},
                                        endpoint=victim)["kvs"][0]["value"], "MQ==")

    def test_pause_and_resume(self):
        victim = next(i for i in range(3) if i != self.etcd.leader())
        self.etcd.pause(victim)
        try:
            t = time.monotonic()
            self._put_retrying(b"/selftest/paused", b"1")
            self.assertLess(time.monotonic() - t, 10)
            # The paused member accepts the TCP connection (kernel backlog) but answers nothing.
            with self.assertRaises(EtcdError):
                self.etcd.call("kv/range", {"key": "eA=="}, timeout=0.5, endpoint=victim)
            self.assertFalse(self.etcd.member_health(victim, timeout=0.5))
        finally:
            self.etcd.resume(victim)
        self.etcd.wait_healthy(30)
        self.assertTrue(self.etcd.member_health(victim))

    def test_compaction(self):
        r1 = self.etcd.put(b"/selftest/c", b"old")
        r2 = self.etcd.put(b"/selftest/c", b"new")
        old = self.etcd.call("kv/range", {"key": "L3NlbGZ0ZXN0L2M=", "revision": r1})
        self.assertEqual(old["kvs"][0]["value"], "b2xk")
        self.etcd.compact(r2)
        with self.assertRaisesRegex(EtcdError, "compacted"):
            self.etcd.call("kv/range", {"key": "L3NlbGZ0ZXN0L2M=", "revision": r1})
        self.assertEqual(self.etcd.get(b"/selftest/c"), b"new")

    def test_kill_all_and_start_all(self):
        self.etcd.put(b"/selftest/durable", b"kept")
        self.etcd.kill_all()
        with self.assertRaises(EtcdError):
            self.etcd.revision()
        self.etcd.start_all()
        self.assertEqual(self.etcd.get(b"/selftest/durable"), b"kept")

    def test_snapshot_save_and_restore_all(self):
        self.etcd.put(b"/selftest/restore/kept", b"before")
        self.etcd.put(b"/selftest/restore/changed", b"before")
        backup = self.etcd.dir / ("backup-%d.db" % time.time_ns())
        rev = self.etcd.snapshot_save(backup)
        self.assertGreaterEqual(rev, self.etcd.mod_revision(b"/selftest/restore/changed"))
        before = self.etcd.dump()
        old_dirs = [m.data_dir for m in self.etcd.members]
        self.etcd.put(b"/selftest/restore/changed", b"after")
        self.etcd.put(b"/selftest/restore/added", b"after")
        self.assertGreater(self.etcd.revision(), rev)
        self.etcd.restore_all(backup)
        # Every member on a new data dir, the keyspace and the revision of the backup, on each member.
        for m, old in zip(self.etcd.members, old_dirs):
            self.assertTrue(m.running)
            self.assertNotEqual(m.data_dir, old)
            self.assertEqual(old.exists(), bool(os.environ.get("KEYWAY_IT_KEEP")), old)
            self.assertTrue((m.data_dir / "member").is_dir(), m.data_dir)
        for i in range(3):
            self.assertEqual(self.etcd.revision(endpoint=i), rev)
        self.assertEqual(self.etcd.dump(), before)
        self.assertIsNone(self.etcd.get(b"/selftest/restore/added"))
        self.assertEqual(self.etcd.get(b"/selftest/restore/changed"), b"before")
        # A working cluster: writes go on from the backup's revision; a member restarts on its new dir.
        self.assertEqual(self._put_retrying(b"/selftest/restore/next", b"1"), rev + 1)
        self.etcd.kill(1)
        self.etcd.start(1)
        self.assertEqual(self.etcd.call("kv/range", {"key": base64.b64encode(b"/selftest/restore/next").decode()},
                                        endpoint=1)["kvs"][0]["value"], "MQ==")
        self.etcd.delete(b"/selftest/", prefix=True)

    def test_snapshot_save_refuses_a_missing_etcdctl(self):
        with mock.patch.dict(os.environ, {"KEYWAY_ETCDCTL": "/nonexistent/etcdctl"}):
            with self.assertRaisesRegex(EtcdError, "etcd-client"):
                self.etcd.snapshot_save(self.etcd.dir / "never.db")


class EtcdClusterOptionsTest(unittest.TestCase):
    """A missing binary, TLS with client certificates, authentication."""

    def test_missing_etcd_is_an_error_not_a_skip(self):
        with mock.patch.dict(os.environ, {"KEYWAY_ETCD": "/nonexistent/etcd"}):
            with self.assertRaisesRegex(EtcdError, "etcd-server"):
                EtcdCluster(size=1)

    def _raw_put(self, url, context=None, headers=None, key=b"x"):
        body = json.dumps({"key": base64.b64encode(key).decode(), "value": "eQ=="}).encode()
        req = urllib.request.Request(url + "/v3/kv/put", data=body,
                                     headers=dict({"Content-Type": "application/json"}, **(headers or {})))
        with urllib.request.urlopen(req, timeout=5, context=context) as r:
            return json.loads(r.read().decode())

    def test_tls_requires_a_client_certificate(self):
        pki = test_pki()
        with EtcdCluster(size=1, tls=pki) as etcd:
            self.assertTrue(etcd.endpoints()[0].startswith("https://127.0.0.1:"))
            etcd.put(b"/tls/a", b"1")
            self.assertEqual(etcd.dump(), [(b"/tls/a", b"1")])
            self._raw_put(etcd.endpoints()[0], pki.client_context("client"))
            for ctx in (pki.client_context(), pki.client_context("other-client")):
                with self.assertRaises(OSError):
                    self._raw_put(etcd.endpoints()[0], ctx)

    def test_auth_limits_a_user_to_its_prefix(self):
        password = "pw-%d" % time.time_ns()
        with EtcdCluster(size=1) as etcd:
            etcd.enable_auth({"app": (password, b"/app/")})
            etcd.put(b"/elsewhere", b"root may")
            url = etcd.endpoints()[0]
            with self.assertRaises(urllib.error.HTTPError):
                self._raw_put(url, key=b"/app/a")  # no token
            token = etcd.call("auth/authenticate", {"name": "app", "password": password}, endpoint=0)["token"]
            self._raw_put(url, headers={"Authorization": token}, key=b"/app/a")
            with self.assertRaises(urllib.error.HTTPError):
                self._raw_put(url, headers={"Authorization": token}, key=b"/elsewhere")
            with self.assertRaisesRegex(EtcdError, "authentication failed"):
                etcd.call("auth/authenticate", {"name": "app", "password": "wrong"}, endpoint=0)
            self.assertEqual(dict(etcd.dump()), {b"/app/a": b"y", b"/elsewhere": b"root may"})

if __name__ == "__main__":
    unittest.main()
