"""test_redis_server.py: the self-test of redis_server.RedisServer, the real redis-server the shared-cache
tests run against: it comes up on loopback, answers over RESP, finds what was planted (the positive
control of the keyspace scan), is empty when killed and started again, hangs when paused, enforces its
password and maxmemory, serves a unix socket, collects pub/sub messages and MONITOR's commands, and
leaves no process behind."""

import base64
import binascii
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import threading
import time
import unittest
from pathlib import Path
from unittest import mock

import redis_server
from redis_server import RedisClient, RedisError, RedisReplyError, RedisServer, RedisTimeout

HERE = Path(__file__).resolve().parent


def _gone(pid):
    """True when pid has exited (a zombie waiting for its reaper counts as gone)."""
    try:
        status = Path("/proc/%d/status" % pid).read_text()
    except OSError:
        return True
    return "\nState:\tZ" in status or "\nState:\tX" in status


def _wait_gone(pid, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not _gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


class RedisServerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.redis = RedisServer()
        cls.addClassCleanup(cls.redis.stop)

    def setUp(self):
        # A test that stopped or filled the server brings it back; make sure of it for the next one.
        if self.redis.paused:
            self.redis.resume()
        if not self.redis.running:
            self.redis.start()
        self.redis.set_maxmemory(0)
        self.redis.flushall()

    def test_starts_on_loopback_without_persistence(self):
        r = self.redis
        self.assertRegex(r.address, r"^127\.0\.0\.1:\d+$")
        self.assertEqual(r.address, "127.0.0.1:%d" % r.port)
        self.assertIsNone(r.socket_path)
        self.assertTrue(r.ping())
        self.assertRegex(r.info("server")["redis_version"], r"^7\.")
        self.assertEqual(r.command("CONFIG", "GET", "save"), [b"save", b""])
        self.assertEqual(r.command("CONFIG", "GET", "appendonly"), [b"appendonly", b"no"])
        self.assertEqual(r.command("CONFIG", "GET", "bind"), [b"bind", b"127.0.0.1"])
        self.assertEqual(stat.S_IMODE(r.conf_path.stat().st_mode), 0o600)
        self.assertIn("Ready to accept connections", r.tail())
        # Nothing listens on another interface: the port is refused on a non-loopback local address.
        with self.assertRaises(OSError):
            socket.create_connection(("127.0.0.3", r.port), timeout=1).close()

    def test_command_replies(self):
        r = self.redis
        self.assertEqual(r.command("SET", "k", b"\x00\xffbin"), "OK")
        self.assertEqual(r.command("GET", "k"), b"\x00\xffbin")
        self.assertIsNone(r.command("GET", "missing"))
        self.assertEqual(r.command("INCRBY", "n", 41), 41)
        self.assertEqual(r.command("RPUSH", "l", "a", "b"), 2)
        self.assertEqual(r.command("LRANGE", "l", 0, -1), [b"a", b"b"])
        self.assertEqual(r.command("MGET", "k", "missing"), [b"\x00\xffbin", None])
        with self.assertRaises(RedisReplyError) as cm:
            r.command("INCR", "l")
        self.assertEqual(cm.exception.code, "WRONGTYPE")
        with self.assertRaises(RedisReplyError) as cm:
            r.command("NO-SUCH-COMMAND")
        self.assertEqual(cm.exception.code, "ERR")
        self.assertIsInstance(cm.exception, RedisError)
        # The connection is still usable after an error reply.
        self.assertEqual(r.command("PING"), "PONG")

    def test_keys_and_dump(self):
        r = self.redis
        # More keys than one SCAN batch (COUNT 1000), set in one MSET.
        args = []
        for i in range(2500):
            args += [b"bulk:%d" % i, b"v%d" % i]
        r.command("MSET", *args)
        r.command("HSET", "h", "f", "v")
        r.command("SADD", "s", "m")
        keys = r.keys()
        self.assertEqual(len(keys), 2502)
        self.assertEqual(len(r.keys(match="bulk:1*")), 1111)
        dump = r.dump()
        self.assertEqual(dump[b"bulk:2499"], b"v2499")
        self.assertEqual(dump[b"h"], "hash")
        self.assertEqual(dump[b"s"], "set")
        self.assertEqual(r.info("keyspace")["db0"].split(",")[0], "keys=2502")

    def test_scan_for_positive_control(self):
        r = self.redis
        planted = b"plaintext-canary-" + str(time.time_ns()).encode()
        absent = b"never-written-" + str(time.time_ns()).encode()
        hexed = b"hex-canary-" + str(time.time_ns()).encode()
        b64 = b"b64-canary-" + str(time.time_ns()).encode()
        in_key = b"key-canary-" + str(time.time_ns()).encode()
        in_hash = b"hash-canary-" + str(time.time_ns()).encode()
        r.command("SET", b"entry:1", b"prefix " + planted + b" suffix")
        r.command("SET", b"entry:2", b"x" + binascii.hexlify(hexed))
        r.command("SET", b"entry:3", base64.urlsafe_b64encode(b"ab" + b64 + b"tail"))
        r.command("SET", b"k:" + in_key, b"1")
        r.command("HSET", b"entry:4", b"field", in_hash)
        found = r.scan_for([planted, absent, hexed, b64, in_key, in_hash])
        self.assertIn("entry:1", " ".join(found.get(planted, [])))
        self.assertIn("entry:2", " ".join(found.get(hexed, [])))
        self.assertIn("entry:3", " ".join(found.get(b64, [])))
        self.assertEqual(found.get(in_key), ["key %r (raw)" % (b"k:" + in_key)])
        self.assertIn("hash value of b'entry:4'", " ".join(found.get(in_hash, [])))
        self.assertNotIn(absent, found)
        r.flushall()
        self.assertEqual(r.scan_for([planted]), {})

    def test_kill_then_start_is_empty(self):
        r = self.redis
        r.command("SET", "before-kill", "1")
        port, pid = r.port, r.pid
        r.kill()
        self.assertFalse(r.running)
        self.assertFalse(r.ping())
        with self.assertRaises(RedisError):
            r.command("GET", "before-kill")
        with self.assertRaises(RedisError):
            RedisClient(port=port, timeout=1).close()   # refused
        r.start()
        self.assertEqual(r.port, port)
        self.assertNotEqual(r.pid, pid)
        self.assertEqual(r.keys(), [])
        self.assertIsNone(r.command("GET", "before-kill"))
        r.restart()
        self.assertTrue(r.ping())

    def test_pause_and_resume(self):
        r = self.redis
        r.command("SET", "p", "1")
        r.pause()
        try:
            self.assertTrue(r.paused)
            t = time.monotonic()
            # The kernel still accepts the connection; nothing answers.
            with RedisClient(port=r.port, timeout=0.3, source_host=r.own_host) as c:
                with self.assertRaises(RedisTimeout):
                    c.command("GET", "p")
            self.assertLess(time.monotonic() - t, 3)
            self.assertFalse(r.ping(timeout=0.3))
        finally:
            r.resume()
        self.assertFalse(r.paused)
        self.assertEqual(r.command("GET", "p"), b"1")

    def test_debug_sleep_makes_it_slow(self):
        t = time.monotonic()
        self.assertEqual(self.redis.command("DEBUG", "SLEEP", 0.3), "OK")
        self.assertGreaterEqual(time.monotonic() - t, 0.3)

    def test_maxmemory_noeviction_refuses_writes(self):
        r = self.redis
        r.command("SET", "kept", "1")
        r.set_maxmemory(1, "noeviction")
        self.assertEqual(r.info("memory")["maxmemory_policy"], "noeviction")
        with self.assertRaises(RedisReplyError) as cm:
            r.command("SET", "k", "v" * 1000)
        self.assertEqual(cm.exception.code, "OOM")
        self.assertEqual(r.command("GET", "kept"), b"1")    # reads still work
        r.set_maxmemory(0)
        self.assertEqual(r.command("SET", "k", "v"), "OK")

    def test_flushall(self):
        self.redis.command("SET", "a", "1")
        self.assertEqual(self.redis.flushall(), "OK")
        self.assertEqual(self.redis.keys(), [])

    def test_subscribe_collects_messages(self):
        r = self.redis
        with r.subscribe("keyway:inv", patterns=["keyway:p:*"]) as sub:
            with RedisClient(port=r.port) as c:
                self.assertEqual(c.command("PUBLISH", "keyway:inv", b"purge \x00 1"), 1)
                self.assertEqual(c.command("PUBLISH", "keyway:p:x", "pat"), 1)
                self.assertEqual(c.command("PUBLISH", "elsewhere", "no"), 0)
            msgs = sub.wait(2, timeout=5)
            self.assertEqual(msgs, [redis_server.Message(b"keyway:inv", b"purge \x00 1", None),
                                    redis_server.Message(b"keyway:p:x", b"pat", b"keyway:p:*")])
            self.assertEqual(sub.wait(1, predicate=lambda m: m.pattern is None), msgs[:1])
            self.assertIn(b"purge", sub.scan_for([b"purge", b"absent-needle"]))
            self.assertNotIn(b"absent-needle", sub.scan_for([b"absent-needle"]))
            sub.clear()
            self.assertEqual(sub.wait(1, timeout=0.2), [])
        self.assertFalse(sub.alive)
        self.assertIsNone(sub.error)

    def test_subscription_ends_when_the_server_dies(self):
        sub = self.redis.subscribe("c")
        self.redis.kill()
        self.assertEqual(sub.wait(1, timeout=5), [])
        self.assertFalse(sub.alive)
        self.assertIn("closed", sub.error)
        sub.close()

    def test_monitor_sees_other_clients_commands(self):
        r = self.redis
        mon = r.start_monitor()
        with RedisClient(port=r.port) as c:
            c.command("SET", b"key \"q\"\n", b"\x00\xff\x7f")
            r.command("SET", "from-the-harness", "1")
            c.command("GET", "x")
        cmds = mon.stop()
        self.assertEqual([m.args for m in cmds], [[b"SET", b"key \"q\"\n", b"\x00\xff\x7f"], [b"GET", b"x"]])
        self.assertEqual([m.name for m in cmds], ["SET", "GET"])
        self.assertTrue(all(m.client.startswith("127.0.0.1:") and m.db == 0 for m in cmds), cmds)
        self.assertAlmostEqual(cmds[0].time, time.time(), delta=60)
        self.assertIsNone(mon.error)

        with r.start_monitor(include_own=True) as mon:
            r.command("ECHO", "own")
        self.assertIn([b"ECHO", b"own"], [m.args for m in mon.commands])

        # monitor(seconds): what another client sent meanwhile.
        def later():
            time.sleep(0.2)
            with RedisClient(port=r.port) as c:
                c.command("INCR", "during")
        t = threading.Thread(target=later)
        t.start()
        cmds = r.monitor(1.0)
        t.join()
        self.assertEqual([m.args for m in cmds], [[b"INCR", b"during"]])

    def test_parse_monitor_args(self):
        self.assertEqual(redis_server.parse_monitor_args(b'"SET" "a\\\\b" "\\x00\\xff" "q\\"" "\\r\\n\\t"'),
                         [b"SET", b"a\\b", b"\x00\xff", b'q"', b"\r\n\t"])


class RedisServerOptionsTest(unittest.TestCase):
    """A missing binary, a password, a unix socket, persistence, maxmemory at start, a port clash, a
    start failure, cleanup at exit."""

    def test_missing_binary_is_an_error_not_a_skip(self):
        with mock.patch.dict(os.environ, {"KEYWAY_REDIS_SERVER": "/nonexistent/redis-server"}):
            with self.assertRaisesRegex(RedisError, "/nonexistent/redis-server is not an executable.*"
                                                    "install Debian's redis-server"):
                RedisServer()

    def test_requirepass_is_enforced(self):
        password = "pw \"%d\"\\" % time.time_ns()
        with RedisServer(password=password) as r:
            self.assertEqual(r.command("SET", "a", "1"), "OK")
            with r.client(auth=False) as c:
                with self.assertRaises(RedisReplyError) as cm:
                    c.command("GET", "a")
                self.assertEqual(cm.exception.code, "NOAUTH")
                with self.assertRaises(RedisReplyError) as cm:
                    c.command("AUTH", "wrong")
                self.assertEqual(cm.exception.code, "WRONGPASS")
                self.assertEqual(c.command("AUTH", password), "OK")
                self.assertEqual(c.command("GET", "a"), b"1")
            self.assertEqual(Path(r.password_file).read_text(), password)
            self.assertEqual(stat.S_IMODE(os.stat(r.password_file).st_mode), 0o600)
            # Not in the server's argv (it comes from the config file).
            self.assertNotIn(password.encode(), Path("/proc/%d/cmdline" % r.pid).read_bytes())

    def test_unix_socket(self):
        with RedisServer(unix_socket=True) as r:
            self.assertTrue(stat.S_ISSOCK(os.stat(r.socket_path).st_mode))
            with r.client(unix=True) as c:
                self.assertEqual(c.command("SET", "via-unix", "1"), "OK")
            self.assertEqual(r.command("GET", "via-unix"), b"1")
            r.restart()
            with r.client(unix=True) as c:
                self.assertIsNone(c.command("GET", "via-unix"))
        with RedisServer() as r:
            with self.assertRaisesRegex(RedisError, "no unix socket"):
                r.client(unix=True)

    def test_persistence_keeps_acknowledged_writes_across_a_kill(self):
        with RedisServer(persistence=True) as r:
            r.command("SET", "durable", "kept")
            r.kill()
            r.start()
            self.assertEqual(r.command("GET", "durable"), b"kept")

    def test_maxmemory_at_start(self):
        with RedisServer(maxmemory=4 * 1024 * 1024, maxmemory_policy="allkeys-lru") as r:
            self.assertEqual(r.command("CONFIG", "GET", "maxmemory"), [b"maxmemory", b"4194304"])
            self.assertEqual(r.info("memory")["maxmemory_policy"], "allkeys-lru")

    def test_port_clash_gets_another_port(self):
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        ports = iter([taken.getsockname()[1]])
        real = redis_server._free_port
        with mock.patch.object(redis_server, "_free_port", lambda: next(ports, None) or real()):
            with RedisServer() as r:
                self.assertNotEqual(r.port, taken.getsockname()[1])
                self.assertTrue(r.ping())
                self.assertIn("Address already in use", r.log_path.read_text())
        taken.close()

    def test_start_failure_quotes_the_output(self):
        with self.assertRaisesRegex(RedisError, r"(?s)exited 1 while starting.*no-such-directive"):
            RedisServer(extra_config={"no-such-directive": "1"})

    def test_stop_ends_the_server_and_removes_its_dir(self):
        r = RedisServer(start=False)
        self.assertIsNone(r.pid)
        r.start()
        sub, mon = r.subscribe("c"), r.start_monitor()
        r.pause()   # stop() ends a paused server too
        pid, d = r.pid, r.dir
        r.stop()
        r.stop()
        self.assertTrue(_wait_gone(pid))
        self.assertFalse(sub.alive or mon.alive)
        self.assertEqual(d.exists(), bool(os.environ.get("KEYWAY_IT_KEEP")))

    def test_no_server_outlives_its_test_process(self):
        script = textwrap.dedent("""
            import sys, time
            sys.path.insert(0, %r)
            from redis_server import RedisServer
            r = RedisServer()
            print(r.pid, r.dir, flush=True)
            if sys.argv[1] == "hang":
                time.sleep(60)
        """ % str(HERE))
        for how in ("exit", "hang"):
            with self.subTest(how=how):
                p = subprocess.Popen([sys.executable, "-c", script, how], stdout=subprocess.PIPE, text=True)
                pid, tmp = p.stdout.readline().split()
                pid = int(pid)
                self.addCleanup(shutil.rmtree, tmp, True)   # a killed process removes nothing
                self.assertFalse(_gone(pid))
                if how == "hang":
                    p.send_signal(signal.SIGKILL)   # no atexit: the kernel's parent-death signal
                p.wait(10)
                self.assertTrue(_wait_gone(pid), "redis-server %d outlived its test process (%s)" % (pid, how))


if __name__ == "__main__":
    unittest.main()
