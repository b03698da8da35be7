"""Read-through caching that never stores a stale value, for cdcd.

The Python twin of the Go package github.com/cdcd/cdcd/readthrough; the
protocol is described in docs/consistency.md. Needs redis-py (Debian's
python3-redis is enough) and nothing else.

    cache = ReadThrough(redis.Redis(), "rules.json", ttl=300)
    summary = cache.get("state:summary:core", lambda: build_summary(db))

On a miss, get reads the revisions that cover the key (the rules file's
revision templates rendered with the values found in the key), creating
them when absent, calls load, and stores its result only if none of those
revisions moved meanwhile. cdcd moves a revision before, or atomically
with, deleting the keys it covers, so a value read before a commit is
either stored before the delete (and deleted with it) or refused.

A ReadThrough is safe to share between threads.
"""

import json
import re
import secrets
import threading
import time

__all__ = [
    "ReadThrough", "Replica", "ReadThroughError", "NoSectionError",
    "UnguardedError", "AmbiguousError", "Template", "parse_lsn",
]

# The scripts are the Go package's (readthrough/scripts.go), word for word.

OBSERVE = """
local v = redis.call('GET', KEYS[1])
if v then return v end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
"""

COMPARE_AND_SET = """
for i = 2, #KEYS do
  if redis.call('GET', KEYS[i]) ~= ARGV[i + 1] then return 0 end
end
if tonumber(ARGV[2]) > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[1])
end
return 1
"""

KEEP = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(ARGV[2]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
else
  redis.call('PERSIST', KEYS[1])
end
return 1
"""

# How long a value stored by a set-then-check fill lives before it is
# confirmed: if the process dies between the set and the check, a stale
# value outlives it by at most this long.
HOLD_MS = 2000

# A key with more readings than this against one template is refused.
MAX_READINGS = 16

# Reasons a fill is refused (keys of ReadThrough.stats["refused"]).
REVISION_MOVED = "revision_moved"
REPLICA_BEHIND = "replica_behind"
REPLICA_UNKNOWN = "replica_unknown"
ERROR = "error"


class ReadThroughError(Exception):
    """A key that cannot be filled under the protocol."""


class NoSectionError(ReadThroughError):
    """No section of the rules names the key."""


class UnguardedError(ReadThroughError):
    """The key's section has no revision that guards it."""


class AmbiguousError(ReadThroughError):
    """The key matches a key template in too many ways to guard it."""


class Template:
    """A key template of the rules file: {column} placeholders, {{ and }}
    for literal braces."""

    def __init__(self, text):
        self.text = text
        self.parts, self.columns = [], []
        lit, i = [], 0
        while i < len(text):
            c = text[i]
            if text.startswith("{{", i):
                lit.append("{")
                i += 2
            elif text.startswith("}}", i):
                lit.append("}")
                i += 2
            elif c == "{":
                end = text.find("}", i + 1)
                if end < 0 or "{" in text[i + 1:end] or not text[i + 1:end].strip():
                    raise ValueError("template %r: bad placeholder at offset %d" % (text, i))
                self.parts.append("".join(lit))
                lit = []
                self.columns.append(text[i + 1:end])
                i = end + 1
            elif c == "}":
                raise ValueError("template %r: unbalanced '}' at offset %d" % (text, i))
            else:
                lit.append(c)
                i += 1
        self.parts.append("".join(lit))

    def render(self, values):
        """The key for values by column; None when one is missing."""
        out = [self.parts[0]]
        for i, col in enumerate(self.columns):
            if col not in values:
                return None
            out.append(values[col])
            out.append(self.parts[i + 1])
        return "".join(out)

    def match_all(self, key, limit=0):
        """Every assignment of values under which the template renders key
        (at most limit, when positive), and whether that is all of them."""
        out = []
        more = [False]
        if not key.startswith(self.parts[0]):
            return out, True
        if not self.columns:
            return ([{}] if key == self.parts[0] else []), True
        n = len(self.columns)
        tail = [0] * (n + 1)
        for i in range(n - 1, -1, -1):
            tail[i] = tail[i + 1] + len(self.parts[i + 1])
        vals = [None] * n

        def consistent(i, v):
            return all(vals[j] == v for j in range(i) if self.columns[j] == self.columns[i])

        def step(i, pos):
            lit = self.parts[i + 1]
            ends = [len(key) - len(lit)] if i == n - 1 else range(pos, len(key) - tail[i] + 1)
            for end in ends:
                if end < pos or key[end:end + len(lit)] != lit:
                    continue
                v = key[pos:end]
                if not consistent(i, v):
                    continue
                vals[i] = v
                if i < n - 1:
                    if not step(i + 1, end + len(lit)):
                        return False
                    continue
                if limit > 0 and len(out) == limit:
                    more[0] = True
                    return False
                out.append(dict(zip(self.columns, vals)))
            return True

        step(0, len(self.parts[0]))
        return out, not more[0]


def parse_lsn(text):
    """The pg_lsn text X/Y as an integer, or None when it is not one."""
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    m = re.fullmatch(r"([0-9A-Fa-f]+)/([0-9A-Fa-f]+)", text or "")
    if not m:
        return None
    return int(m.group(1), 16) << 32 | int(m.group(2), 16)


class Replica:
    """Declares that load reads a streaming read replica.

    replayed() returns the replica's replay position
    (SELECT pg_last_wal_replay_lsn()::text on the replica, or an int).
    primary(), when given, returns the primary's position
    (SELECT pg_current_wal_lsn()::text on the primary): it is read when a
    revision holds no LSN yet. A fill is stored only if the replica
    replayed past every revision's LSN (a revision holds the start of its
    commit record) before load ran; get waits up to wait seconds for it.
    """

    def __init__(self, replayed, primary=None, wait=0.1, poll=0.005):
        self.replayed, self.primary, self.wait, self.poll = replayed, primary, wait, poll

    def target(self, observed):
        """The position the replica must reach, or a refusal reason."""
        target, tokens = 0, False
        for v in observed:
            lsn = parse_lsn(v)
            if lsn is None:
                tokens = True
            else:
                target = max(target, lsn + 1)
        if not tokens:
            return target, None
        if self.primary is None:
            return 0, REPLICA_UNKNOWN
        return max(target, _lsn(self.primary())), None

    def await_(self, target):
        deadline = time.monotonic() + self.wait
        while True:
            if _lsn(self.replayed()) >= target:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(self.poll)


def _lsn(v):
    if isinstance(v, int):
        return v
    lsn = parse_lsn(v)
    if lsn is None:
        raise ValueError("not a pg_lsn: %r" % (v,))
    return lsn


class _Cover:
    def __init__(self, section, key, revision):
        self.section, self.key, self.revision, self.unguarded = section, key, revision, None
        if revision is None:
            self.unguarded = "section %r has no revision" % section
        elif not set(revision.columns) <= set(key.columns):
            self.revision = None
            self.unguarded = "revision %r of section %r names a column key %r lacks" % (
                revision.text, section, key.text)


class ReadThrough:
    """Fills Redis keys from the database under the read-through protocol.

    client: a redis.Redis (or redis.cluster.RedisCluster) client.
    rules_file: the rules file cdcd runs with.
    ttl: seconds the stored values live (None: until cdcd deletes them).
    replica: a Replica when load reads a read replica.
    allow_unguarded: fill keys of sections without a usable revision with
    a plain SET (a stale value can then stay until it expires).
    set_then_check: fill by set, re-read and delete, as fills do where a key
    and its revisions live in different cluster slots.
    singleflight: one load per key at a time in this process.
    """

    def __init__(self, client, rules_file, ttl=None, replica=None, allow_unguarded=False,
                 set_then_check=False, singleflight=True):
        with open(rules_file, encoding="utf-8") as f:
            doc = json.load(f)
        self.covers = []
        for name, sec in doc.get("sections", {}).items():
            rev = Template(sec["revision"]) if sec.get("revision") else None
            for k in sec.get("keys", []):
                self.covers.append(_Cover(name, Template(k), rev))
        self.client = client
        self.ttl_ms = int(ttl * 1000) if ttl else 0
        self.replica = replica
        self.allow_unguarded = allow_unguarded
        self.set_then_check = set_then_check
        self.cluster = type(client).__name__ == "RedisCluster"
        self._observe = client.register_script(OBSERVE)
        self._cas = client.register_script(COMPARE_AND_SET)
        self._keep = client.register_script(KEEP)
        self._lock = threading.Lock()
        self._flights = {} if singleflight else None
        self.stats = {"hits": 0, "misses": 0, "stored": 0,
                      "refused": {REVISION_MOVED: 0, REPLICA_BEHIND: 0, REPLICA_UNKNOWN: 0, ERROR: 0}}

    def revisions(self, key):
        """The revision keys that guard key."""
        out, claimed = [], False
        for c in self.covers:
            readings, complete = c.key.match_all(key, MAX_READINGS)
            if not readings:
                continue
            claimed = True
            if c.revision is None:
                if self.allow_unguarded:
                    continue
                raise UnguardedError("key %r: %s" % (key, c.unguarded))
            if not complete:
                raise AmbiguousError("key %r against %r of section %r" % (key, c.key.text, c.section))
            for r in readings:
                rev = c.revision.render(r)
                if rev not in out:
                    out.append(rev)
        if not claimed:
            raise NoSectionError("key %r: no section of the rules names it" % (key,))
        return out

    def get(self, key, load):
        """The value cached under key or, on a miss, what load() returns
        (bytes or str), stored unless a covering revision moved while load
        ran."""
        revs = self.revisions(key)
        v = self.client.get(key)
        if v is not None:
            self._count("hits")
            return v
        self._count("misses")
        if self._flights is None:
            return self._fill(key, revs, load)
        return self._shared(key, lambda: self._fill(key, revs, load))

    def _shared(self, key, fill):
        with self._lock:
            flight = self._flights.get(key)
            leader = flight is None
            if leader:
                flight = self._flights[key] = {"done": threading.Event()}
        if not leader:
            flight["done"].wait()
            if "error" in flight:
                raise flight["error"]
            return flight["value"]
        try:
            flight["value"] = fill()
            return flight["value"]
        except BaseException as e:
            flight["error"] = e
            raise
        finally:
            with self._lock:
                del self._flights[key]
            flight["done"].set()

    def _fill(self, key, revs, load):
        observed = [self._observe(keys=[r], args=["rt:" + secrets.token_hex(16)]) for r in revs]
        refuse = None
        if self.replica is not None and revs:
            target, refuse = self.replica.target(observed)
            if refuse is None and not self.replica.await_(target):
                refuse = REPLICA_BEHIND
        v = load()
        if isinstance(v, str):
            v = v.encode()
        if refuse is not None:
            self._refused(refuse)
            return v
        try:
            stored = self._store(key, v, revs, observed)
        except Exception:
            # The value is fresh whether or not it could be stored.
            self._refused(ERROR)
            return v
        if stored:
            self._count("stored")
        else:
            self._refused(REVISION_MOVED)
        return v

    def _store(self, key, v, revs, observed):
        if not revs:
            self.client.set(key, v, px=self.ttl_ms or None)
            return True
        if not self.set_then_check and self._one_slot(key, revs):
            return self._cas(keys=[key] + revs, args=[v, self.ttl_ms] + observed) == 1
        self.client.set(key, v, px=min(HOLD_MS, self.ttl_ms) if self.ttl_ms else HOLD_MS)
        try:
            for rev, seen in zip(revs, observed):
                if self.client.get(rev) != seen:
                    self.client.delete(key)
                    return False
        except Exception:
            try:
                self.client.delete(key)
            except Exception:
                pass  # the hold bounds the rest
            raise
        self._keep(keys=[key], args=[v, self.ttl_ms])
        return True

    def _one_slot(self, key, revs):
        if not self.cluster:
            return True
        from redis.crc import key_slot
        s = key_slot(key.encode())
        return all(key_slot(r.encode()) == s for r in revs)

    def _count(self, name):
        with self._lock:
            self.stats[name] += 1

    def _refused(self, reason):
        with self._lock:
            self.stats["refused"][reason] += 1
