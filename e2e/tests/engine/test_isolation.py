"""Users stay apart end to end, checked through the real stack and real clients:

- 200 interleaved queries from alice's and bob's sessions in parallel return only the asking
  user's answers, and bob is denied demo.c every time even while alice is reading it;
- the catalog's own access log records the user (alice), never an engine identity, for her
  reads and her commits;
- every S3 request made for a user's query is signed with a key the catalog vended to that user
  for that query, never with a key vended to someone else, nor any static key.

Expected answers come from pyiceberg reading the tables directly, not from the engine.
"""

import collections
import hashlib
import random
import re
import uuid
from concurrent.futures import ThreadPoolExecutor

import adbc_driver_flightsql.dbapi as adbc
import pyarrow.compute as pc
import pytest

from test_catalog_queries import assert_denied, connect, denied, query

import seed  # noqa: E402  (on the path through test_catalog_queries)


pytestmark = pytest.mark.usefixtures("needs_catalog")


@pytest.fixture(scope="module")
def truth(catalog):
    admin = catalog.pyiceberg(catalog.token("sqe-admin"))
    return {t: admin.load_table(f"demo.{t}").scan().to_arrow() for t in "abc"}


def fingerprint(access_key: str) -> str:
    """The engine logs sha256(key) hex, first 16 digits (engine/src/secret.rs)."""
    return hashlib.sha256(access_key.encode()).hexdigest()[:16]


def _count_and_sum(table, column, mask):
    picked = table.filter(mask)
    return {"n": picked.num_rows, "s": pc.sum(picked.column(column)).as_py()}


def mod_is(column, k: int):
    """column % 50 == k (pyarrow integer division truncates, as SQL's % does for positives)."""
    return pc.equal(pc.subtract(column, pc.multiply(pc.divide(column, 50), 50)), k)


def workload(truth) -> list[tuple[str, str, object]]:
    """200 (user, sql, expected) items, interleaved. Each query carries a tag that must come back
    unchanged, and each answer is specific to the user's own tables and predicate."""
    a, b, c = truth["a"], truth["b"], truth["c"]
    items = []
    for i in range(100):
        k = i % 50
        tag = f"alice-{i}"
        if i % 4 == 0:
            sql = f"SELECT '{tag}' AS tag, count(*) AS n, sum(id) AS s FROM lake.demo.c WHERE id % 50 = {k}"
            expected = {"tag": tag, **_count_and_sum(c, "id", mod_is(c.column("id"), k))}
        elif i % 4 == 1:
            sql = f"SELECT '{tag}' AS tag, count(*) AS n, sum(id) AS s FROM lake.demo.a WHERE id % 50 = {k} AND active"
            mask = pc.and_(mod_is(a.column("id"), k), a.column("active"))
            expected = {"tag": tag, **_count_and_sum(a, "id", mask)}
        elif i % 4 == 2:
            sql = f"SELECT '{tag}' AS tag, table_name FROM information_schema.tables WHERE table_schema = 'demo' ORDER BY table_name"
            expected = [{"tag": tag, "table_name": t} for t in ["a", "b", "c"]]
        else:
            sql = f"SELECT '{tag}' AS tag, count(*) AS n, sum(order_id) AS s FROM lake.demo.b WHERE order_id % 50 = {k}"
            mask = mod_is(b.column("order_id"), k)
            expected = {"tag": tag, **_count_and_sum(b, "order_id", mask)}
        items.append(("alice", sql, expected))
    regions = ["emea", "amer", "apac"]
    for i in range(100):
        k = i % 50
        tag = f"bob-{i}"
        if i % 4 == 0:
            # bob asks for c while alice's sessions are reading it: always denied.
            sql = f"SELECT '{tag}' AS tag, count(*) AS n FROM lake.demo.c WHERE id % 50 = {k}"
            expected = "DENIED"
        elif i % 4 == 1:
            r = regions[i % 3]
            sql = f"SELECT '{tag}' AS tag, count(*) AS n, sum(order_id) AS s FROM lake.demo.b WHERE order_id % 50 = {k} AND region = '{r}'"
            mask = pc.and_(
                mod_is(b.column("order_id"), k),
                pc.equal(b.column("region"), r),
            )
            expected = {"tag": tag, **_count_and_sum(b, "order_id", mask)}
        elif i % 4 == 2:
            sql = f"SELECT '{tag}' AS tag, table_name FROM information_schema.tables WHERE table_schema = 'demo' ORDER BY table_name"
            expected = [{"tag": tag, "table_name": t} for t in ["a", "b"]]
        else:
            sql = f"SELECT '{tag}' AS tag, count(*) AS n, sum(id) AS s FROM lake.demo.a WHERE id % 50 = {k}"
            mask = mod_is(a.column("id"), k)
            expected = {"tag": tag, **_count_and_sum(a, "id", mask)}
        items.append(("bob", sql, expected))
    # Interleave alice and bob, then shuffle deterministically so neither runs in a block.
    mixed = [x for pair in zip(items[:100], items[100:]) for x in pair]
    random.Random(7).shuffle(mixed)
    return mixed


def test_200_interleaved_queries_from_alice_and_bob_return_only_their_own_answers(engine, truth):
    work = workload(truth)
    assert len(work) == 200
    # Four connections (sessions) per user; each worker thread owns one connection.
    workers = [(u, n) for u in ("alice", "bob") for n in range(4)]
    queues = {w: [] for w in workers}
    counters = {"alice": 0, "bob": 0}
    for user, sql, expected in work:
        w = (user, counters[user] % 4)
        counters[user] += 1
        queues[w].append((sql, expected))

    def run(worker):
        user, _ = worker
        results = []
        with connect(engine, user) as conn, conn.cursor() as cur:
            for sql, expected in queues[worker]:
                try:
                    cur.execute(sql)
                    got = cur.fetch_arrow_table().to_pylist()
                except adbc.Error as e:
                    got = e
                results.append((user, sql, expected, got))
        return results

    with ThreadPoolExecutor(max_workers=len(workers)) as pool:
        outcomes = [r for rs in pool.map(run, workers) for r in rs]

    assert len(outcomes) == 200
    wrong = []
    denied_count = 0
    for user, sql, expected, got in outcomes:
        if expected == "DENIED":
            if isinstance(got, adbc.Error):
                assert_denied(got, sql)
                denied_count += 1
            else:
                wrong.append((user, sql, "expected a denial", got))
        elif isinstance(got, adbc.Error):
            wrong.append((user, sql, expected, str(got)))
        elif isinstance(expected, list):
            if got != expected:
                wrong.append((user, sql, expected, got))
        elif got != [expected]:
            wrong.append((user, sql, expected, got))
    assert not wrong, f"{len(wrong)} of 200 answers wrong, e.g. {wrong[:3]}"
    assert denied_count == 25


def test_the_catalog_records_alice_for_her_reads_and_commits_and_bob_cannot_write(engine, catalog):
    # A read: every catalog call in the window is made as alice.
    mark = len(catalog.access_log_lines())
    n = query(engine, "alice", "SELECT count(*) AS n FROM lake.demo.c").column("n").to_pylist()
    assert n == [1500]
    lines = catalog.access_log_lines()[mark:]
    assert any(re.search(r'"GET \S*/namespaces/demo/tables/c\b', l) for l in lines), lines
    principals = {re.search(r"principal=(\S+)", l).group(1) for l in lines}
    assert principals == {"alice"}, lines

    # A write: create and insert in alice's namespace; the commit (POST) is alice's.
    name = f"audit_{uuid.uuid4().hex[:8]}"
    mark = len(catalog.access_log_lines())
    with connect(engine, "alice") as conn, conn.cursor() as cur:
        cur.execute(f"CREATE TABLE lake.alice_ws.{name} (id BIGINT)")
        cur.fetchall()
        cur.execute(f"INSERT INTO lake.alice_ws.{name} VALUES (1), (2), (3)")
        assert cur.fetchall() == [(3,)]
    try:
        lines = [l for l in catalog.access_log_lines()[mark:] if name in l]
        commits = [l for l in lines if re.search(rf'"POST \S*/tables/{name}\b', l)]
        assert commits, lines
        assert all("principal=alice" in l for l in lines), lines
    finally:
        with connect(engine, "alice") as conn, conn.cursor() as cur:
            cur.execute(f"DROP TABLE lake.alice_ws.{name}")
            cur.fetchall()

    # bob can read demo.a but not write it; nothing changes.
    admin = catalog.pyiceberg(catalog.token("sqe-admin"))
    before = admin.load_table("demo.a")
    assert_denied(denied(engine, "bob", "INSERT INTO lake.demo.a (id) VALUES (999999)"))
    after = catalog.pyiceberg(catalog.token("sqe-admin")).load_table("demo.a")
    assert after.current_snapshot().snapshot_id == before.current_snapshot().snapshot_id
    assert after.scan().to_arrow().num_rows == 3000


def test_each_users_reads_are_signed_only_with_keys_vended_to_that_user(engine, stack, minio_audit):
    static_keys = {stack["SQE_MINIO_ROOT_USER"]}

    def run_as(user: str, table: str) -> tuple[set[str], set[str]]:
        """(fingerprints of keys the catalog vended to `user` for this query, keys S3 saw)."""
        vended_before = len(engine.events("storage_credentials"))
        audit_before = len(minio_audit.entries())
        query(engine, user, f"SELECT count(*) AS n, '{uuid.uuid4().hex}' AS nonce FROM lake.demo.{table}")
        requests_seen = minio_audit.wait_for(minio_audit.object_read(f"demo/{table}_"), since=audit_before)
        assert requests_seen, f"no S3 request recorded for {user}'s read of demo.{table}"
        vended = {e["access_key_fp"] for e in engine.events("storage_credentials")[vended_before:]
                  if e["user"] == user}
        others = {e["user"] for e in engine.events("storage_credentials")[vended_before:]} - {user}
        assert not others, f"keys were vended for {others} during {user}'s query"
        return vended, {e["accessKey"] for e in requests_seen}

    bob_vended, bob_used = run_as("bob", "a")
    alice_vended_a, alice_used_a = run_as("alice", "a")
    alice_vended_c, alice_used_c = run_as("alice", "c")

    for user, vended, used in [("bob", bob_vended, bob_used),
                               ("alice", alice_vended_a, alice_used_a),
                               ("alice", alice_vended_c, alice_used_c)]:
        assert used and not (used & static_keys), (user, used)
        assert {fingerprint(k) for k in used} <= vended, (user, used, vended)

    # Every key is someone's own: nothing vended to bob was used for alice's reads, or back.
    all_bob = {e["access_key_fp"] for e in engine.events("storage_credentials") if e["user"] == "bob"}
    all_alice = {e["access_key_fp"] for e in engine.events("storage_credentials") if e["user"] == "alice"}
    assert not (all_bob & all_alice), "a vended key was handed to both users"
    assert not ({fingerprint(k) for k in alice_used_a | alice_used_c} & all_bob)
    assert not ({fingerprint(k) for k in bob_used} & all_alice)
    # And every vended set came with a session token (temporary credentials).
    assert all(e["session_token"] for e in engine.events("storage_credentials"))


def test_a_self_join_loads_the_table_once_as_the_user(engine, catalog):
    # Planning and both scans share one loadTable (one snapshot, one set of vended keys); only
    # if DoGet came more than a quarter second after planning would the scans load it again.
    mark = len(catalog.access_log_lines())
    n = query(engine, "alice", "SELECT count(*) AS n FROM lake.demo.a x JOIN lake.demo.a y ON x.id = y.id")
    ids = collections.Counter(seed.rows_a().column("id").to_pylist())
    assert n.column("n").to_pylist() == [sum(c * c for c in ids.values())]
    loads = catalog.wait_for_lines(lambda l: re.search(r'"GET \S*/namespaces/demo/tables/a\b', l), since=mark)
    assert 1 <= len(loads) <= 2, loads
    assert all("principal=alice" in l for l in loads), loads
