"""Tests of cdcd_readthrough against a private redis-server.

cdcd's side is played by FakeCDCD in the order cdcd's sink keeps: the
covering revisions move first (with cdcd's forward-only script), then the
keys are deleted. Run: python3 -m unittest -v test_cdcd_readthrough
"""

import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import unittest

import redis

import cdcd_readthrough as rt

HERE = os.path.dirname(os.path.abspath(__file__))

# The rules the Go package's tests use.
RULES = os.path.join(HERE, "..", "..", "readthrough", "testdata", "rules.json")


def cdcd_script():
    """cdcd's revision update, read from its sink (sinks/revisions.go):
    forward-only, and a value that is not an LSN is overwritten; ARGV
    holds pairs of a key and its LSN."""
    with open(os.path.join(HERE, "..", "..", "sinks", "revisions.go"), encoding="utf-8") as f:
        go = f.read()
    behind = re.search(r"const lsnBehind = `(.*?)`", go, re.S).group(1)
    body = re.search(r"var setRevisions = redis\.NewScript\(lsnBehind \+ `(.*?)`\)", go, re.S).group(1)
    return behind + body


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A private redis-server that keeps nothing on disk."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="cdcd-py-redis-")
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port)
        for _ in range(200):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


server = None


def setUpModule():
    global server
    server = Server()


def tearDownModule():
    server.stop()


class FakeCDCD:
    def __init__(self, client):
        self.client, self.lsn = client, 0
        self.set_revision = client.register_script(cdcd_script())

    def next_lsn(self):
        self.lsn += 0x100
        return "0/%X" % self.lsn

    def commit(self, revs, *keys):
        lsn = self.next_lsn()
        if revs:
            self.set_revision(keys=[], args=[a for r in revs for a in (r, lsn)])
        if keys:
            self.client.unlink(*keys)

    def commit_pattern(self, rev_pattern, key_pattern):
        lsn = self.next_lsn()
        for r in self.client.scan_iter(rev_pattern):
            self.set_revision(keys=[], args=[r, lsn])
        keys = list(self.client.scan_iter(key_pattern))
        if keys:
            self.client.unlink(*keys)


class Base(unittest.TestCase):
    def setUp(self):
        self.client = redis.Redis(port=server.port)
        self.client.flushall()
        self.rules = RULES
        self.cdcd = FakeCDCD(self.client)

    def cache(self, **kw):
        return rt.ReadThrough(self.client, self.rules, **kw)

    def race_stale(self, cache, key, commit):
        """get key with a load that reads "stale" and then lets commit
        run; nothing may be stored."""
        def load():
            commit()
            return "stale"
        self.assertEqual(cache.get(key, load), b"stale")
        self.assertIsNone(self.client.get(key), "the stale value was stored")


class TestTemplate(unittest.TestCase):
    def test_match_all(self):
        cases = [
            ("nodb:{run_id}:climate", "nodb:42:climate", [{"run_id": "42"}]),
            ("nodb:{run_id}:climate", "nodb:42:weather", []),
            ("impact:{id}:v{version}", "impact:3:v12", [{"id": "3", "version": "12"}]),
            ("a:{x}:{y}", "a:1:2:3", [{"x": "1", "y": "2:3"}, {"x": "1:2", "y": "3"}]),
            ("{a}{b}", "xy", [{"a": "", "b": "xy"}, {"a": "x", "b": "y"}, {"a": "xy", "b": ""}]),
            ("pair:{id}:{id}", "pair:5:6", []),
            ("{a}:{a}", "x:y:x:y", [{"a": "x:y"}]),
            ("item:{{{id}}}", "item:{7}", [{"id": "7"}]),
            ("state:summary:core", "state:summary:core", [{}]),
        ]
        for text, key, want in cases:
            got, complete = rt.Template(text).match_all(key)
            self.assertTrue(complete)
            self.assertEqual(got, want, (text, key))

    def test_limit(self):
        got, complete = rt.Template("{a}:{b}:{c}").match_all("1:2:3:4:5", 4)
        self.assertEqual((len(got), complete), (4, False))

    def test_parse_lsn(self):
        self.assertEqual(rt.parse_lsn("0/16B3748"), 0x16B3748)
        self.assertEqual(rt.parse_lsn(b"1/0"), 1 << 32)
        self.assertIsNone(rt.parse_lsn("rt:abc"))

    def test_scripts_are_the_go_packages(self):
        with open(os.path.join(HERE, "..", "..", "readthrough", "scripts.go"), encoding="utf-8") as f:
            go = f.read()
        for name, py in [("observe", rt.OBSERVE), ("compareAndSet", rt.COMPARE_AND_SET), ("keep", rt.KEEP)]:
            m = re.search(r"var %s = redis\.NewScript\(`(.*?)`\)" % name, go, re.S)
            self.assertIsNotNone(m, name)
            self.assertEqual(m.group(1).strip(), py.strip(), name)


class TestReadThrough(Base):
    def test_fills_then_hits(self):
        c = self.cache(ttl=60)
        self.assertEqual(c.get("item:1", lambda: "one"), b"one")
        self.assertEqual(c.get("item:1", lambda: self.fail("load on a hit")), b"one")
        self.assertTrue(0 < self.client.pttl("item:1") <= 60000)
        for rev in ("rev:item:1", "rev:owners"):
            self.assertTrue(self.client.get(rev).startswith(b"rt:"))
        self.assertEqual((c.stats["hits"], c.stats["misses"], c.stats["stored"]), (1, 1, 1))

    def test_forced_race_is_refused(self):
        for kw in ({}, {"set_then_check": True}):
            with self.subTest(**kw):
                self.client.flushall()
                c = self.cache(**kw)
                self.cdcd.commit(["rev:item:7"])
                db = {"item:7": "old"}

                def load():
                    read = db["item:7"]
                    db["item:7"] = "new"
                    self.cdcd.commit(["rev:item:7"], "item:7")
                    return read

                self.assertEqual(c.get("item:7", load), b"old")
                self.assertIsNone(self.client.get("item:7"), "the stale value was stored")
                self.assertEqual(c.stats["refused"][rt.REVISION_MOVED], 1)
                self.assertEqual(c.get("item:7", lambda: db["item:7"]), b"new")
                self.assertEqual(self.client.get("item:7"), b"new")

    def test_forced_race_under_a_pattern(self):
        c = self.cache()
        self.race_stale(c, "list:ann:2", lambda: self.cdcd.commit_pattern("rev:list:*", "list:*"))

    def test_every_covering_revision_guards(self):
        c = self.cache()
        self.race_stale(c, "item:3", lambda: self.cdcd.commit(["rev:owners"], "item:3"))

    def test_every_reading_guards(self):
        c = self.cache()
        for rev in ("rev:list:a", "rev:list:a:b"):
            self.race_stale(c, "list:a:b:c", lambda: self.cdcd.commit([rev], "list:a:b:c"))

    def test_keys_nothing_guards(self):
        c = self.cache()
        for key, err in (("nobody:1", rt.NoSectionError), ("bare:1", rt.UnguardedError), ("odd:1", rt.UnguardedError)):
            with self.assertRaises(err):
                c.get(key, lambda: self.fail("load for a key nothing guards"))
        open_ = self.cache(allow_unguarded=True)
        self.assertEqual(open_.get("bare:1", lambda: "v"), b"v")
        self.assertEqual(self.client.get("bare:1"), b"v")
        with self.assertRaises(rt.NoSectionError):
            open_.get("nobody:1", lambda: "v")

    def test_singleflight(self):
        c = self.cache()
        loads, release = [], threading.Event()

        def load():
            loads.append(1)
            release.wait(5)
            return "nine"

        results = []
        threads = [threading.Thread(target=lambda: results.append(c.get("item:9", load))) for _ in range(6)]
        for t in threads:
            t.start()
        time.sleep(0.1)
        release.set()
        for t in threads:
            t.join()
        self.assertEqual(len(loads), 1)
        self.assertEqual(results, [b"nine"] * 6)

    def test_replica(self):
        commit = 0x5000
        cases = [
            ("replayed past the commit", lambda: commit + 0x30, None, False, True, None),
            ("replayed up to the commit's start", lambda: commit, None, False, False, rt.REPLICA_BEHIND),
            ("token without the primary", lambda: 1 << 40, None, True, False, rt.REPLICA_UNKNOWN),
            ("token, replica past the primary", lambda: "0/9000", lambda: "0/9000", True, True, None),
            ("token, replica behind the primary", lambda: "0/8FFF", lambda: "0/9000", True, False, rt.REPLICA_BEHIND),
        ]
        for name, replayed, primary, token, stored, reason in cases:
            with self.subTest(name):
                self.client.flushall()
                if not token:
                    self.client.set("rev:item:1", "0/%X" % commit)
                    self.client.set("rev:owners", "0/10")
                c = self.cache(replica=rt.Replica(replayed, primary, wait=0.05, poll=0.001))
                self.assertEqual(c.get("item:1", lambda: "v"), b"v")
                self.assertEqual(self.client.get("item:1") is not None, stored)
                if reason:
                    self.assertEqual(c.stats["refused"][reason], 1)


if __name__ == "__main__":
    unittest.main()
