"""Stage 1 under real failures: a write is never applied twice, hostile input gets a clear answer, a converge never
wipes a replica's data (each host killed or cut off: test_stage1_chaos.py). Runs after test_stage1.py (file order)."""

from __future__ import annotations

import shlex
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import webstack_probe as probe
from test_stage1 import INVENTORY, LB, PRIMARY, REPLICA, WEB

testinfra_hosts = [LB]

# nginx answers 502 for POST /api/items *after* the app has written the row: the request is mirrored to the
# app, the client's own copy goes to a closed port. What a backend dying after its commit looks like.
FAULT = """
        location = /api/items {
            mirror /webstack-fault-mirror;
            mirror_request_body on;
            proxy_pass http://127.0.0.1:9;
        }
        location = /webstack-fault-mirror {
            internal;
            proxy_pass http://app/api/items;
            proxy_set_header Host $host;
        }
"""


@pytest.fixture(scope="module")
def lb() -> str:
    return probe.container_address(LB)


def rows_with(text: str) -> int:
    query = f"SELECT COUNT(*) FROM foobar.items WHERE text = '{text}'"
    return int(probe.node(PRIMARY).check_output(f'mysql -N -B -e "{query}"'))


@contextmanager
def failing_after_commit(hosts: list[str]) -> Iterator[None]:
    """Install FAULT in the site's server block on `hosts`; always put the role's nginx.conf back."""
    script = ("import sys; p='/etc/nginx/nginx.conf'; s=open(p).read(); "
              "open('/root/nginx.conf.orig','w').write(s); "
              "i=s.index('        location / {'); open(p,'w').write(s[:i]+sys.argv[1]+s[i:])")
    try:
        for host in hosts:
            probe.node(host).check_output(f"python3 -c {shlex.quote(script)} {shlex.quote(FAULT)}")
            probe.node(host).check_output("nginx -t -q && systemctl reload nginx")
        yield
    finally:
        for host in hosts:
            probe.node(host).run("cp /root/nginx.conf.orig /etc/nginx/nginx.conf && systemctl reload nginx")
        # A reload hands over to new workers asynchronously: wait until every host serves the role's config.
        for host in hosts:
            address = probe.container_address(host)
            assert probe.wait_for(lambda a=address: probe.get_from(LB, a, "/api/items").status == 200, timeout=10)


def test_a_post_applied_before_a_failure_is_not_replayed(lb: str) -> None:
    text = probe.unique_text("once")
    with failing_after_commit(WEB):
        time.sleep(0.5)
        reply = probe.request(lb, "POST", "/api/items", {"text": text}, timeout=10)
        time.sleep(1)  # the mirrored request finishes on its own
    assert reply.status == 502, reply  # the client learns of the failure...
    assert rows_with(text) == 1  # ...and the row exists exactly once (no layer-7 retry of a POST)


def test_idempotency_key_makes_a_replayed_post_return_the_same_row(lb: str) -> None:
    text = probe.unique_text("keyed")
    key = {"Idempotency-Key": text}
    first = probe.request(lb, "POST", "/api/items", {"text": text}, headers=key)
    again = probe.request(lb, "POST", "/api/items", {"text": text}, headers=key)
    assert (first.status, again.status) == (201, 200)
    assert first.json()["id"] == again.json()["id"] and again.headers["idempotent-replayed"] == "true"
    assert rows_with(text) == 1


def test_oversized_body_is_refused_at_the_edge(lb: str) -> None:
    reply = probe.request(lb, "POST", "/api/items", b'{"text": "' + b"x" * 20000 + b'"}')
    assert reply.status == 413


def test_hostile_json_is_a_400(lb: str) -> None:
    for body in (b"[" * 5000 + b"]" * 5000, b'{"text": "\\ud800"}'):
        assert probe.request(lb, "POST", "/api/items", body).status == 400


def test_slow_sender_is_cut_off(lb: str) -> None:
    start = time.monotonic()
    with socket.create_connection((lb, 80), timeout=30) as sock:
        sock.sendall(b"POST /api/items HTTP/1.1\r\nHost: www.foobar.com\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"text\":")
        answer = sock.recv(200)  # then nothing more: the body never completes
    elapsed = time.monotonic() - start
    assert answer.startswith(b"HTTP/1.1 408") or answer == b"", answer
    assert elapsed < 15, f"held for {elapsed:.1f} s"  # timeout http-request 10 s


def test_a_converge_never_wipes_a_promoted_replica(lb: str) -> None:
    """A replica promoted by hand (replication reset, then written to) is refused, not re-seeded; only an explicit
    mysql_replication_reseed=true run replaces its data, and no copy of the dump is left anywhere."""
    replica = probe.node(REPLICA)
    text = probe.unique_text("promoted")
    replica.check_output("mysql -e 'STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only=0'")
    replica.check_output(f"mysql -e \"INSERT INTO foobar.items (text) VALUES ('{text}')\"")
    before = replica.check_output("mysql -N -B -e 'SELECT COUNT(*) FROM foobar.items'")
    result, recap = probe.run_playbook(probe.ROOT / "site.yml", str(Path(INVENTORY).parent), "--limit",
                                       f"{PRIMARY},{REPLICA}", "--tags", "database")
    assert result.returncode != 0 and recap[REPLICA]["failed"] == 1, result.stdout[-3000:]
    output = result.stdout + result.stderr
    assert "mysql_replication_reseed=true" in output and "nothing was changed" in output, output[-3000:]
    assert replica.check_output("mysql -N -B -e 'SELECT COUNT(*) FROM foobar.items'") == before
    assert text in replica.check_output(f"mysql -N -B -e \"SELECT text FROM foobar.items WHERE text = '{text}'\"")
    # The operator decides this replica's data goes: one run with the switch re-seeds it from the primary.
    result, recap = probe.run_playbook(probe.ROOT / "site.yml", str(Path(INVENTORY).parent), "--limit",
                                       f"{PRIMARY},{REPLICA}", "--tags", "database",
                                       "-e", "mysql_replication_reseed=true")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "Slave_SQL_Running: Yes" in replica.check_output("mysql -e 'SHOW SLAVE STATUS\\G'")
    assert text not in replica.check_output("mysql -N -B -e 'SELECT text FROM foobar.items'")
    assert replica.check_output("mysql -N -B -e 'SELECT @@global.read_only'") == "1"
    for host in (replica, probe.node(PRIMARY)):
        assert host.check_output("ls -d /tmp/webstack-seed-* 2>/dev/null || true") == ""
    assert not list(Path("/tmp").glob("webstack-seed-*"))


def test_per_client_limits_answer_429(lb: str) -> None:
    """nginx limits writes per client (10/s, burst 20); the load balancer limits every request per client
    (3,000 per 10 s in this scenario). Last in the file: the burst takes up to 20 s to age out."""
    # 24 writers at once from this address: over 10 a second even when the machine is busy (one after the other,
    # a loaded CI machine answered fewer than 10 a second and never met the limit), 144 writes at most.
    writes: list[int] = []

    def writer() -> None:
        for _ in range(6):
            writes.append(probe.request(lb, "POST", "/api/items", {"text": probe.unique_text("burst")},
                                        timeout=10).status)

    writers = [threading.Thread(target=writer) for _ in range(24)]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join(timeout=120)
    assert 429 in writes and 201 in writes, writes
    # Reads of a file nginx serves itself over 8 kept-alive connections, so neither the app's speed nor new
    # connections bound the rate: over 3,000 in 10 s even on a busy machine (16 one-shot readers of /healthz answered
    # 6,400 reads with 200 on a loaded CI machine). 8,000 reads at most; they stop at the first 429.
    start = time.monotonic()
    reads = probe.burst(lb, "/static/robots.txt", clients=8, per_client=1000, stop_at=429)
    elapsed = time.monotonic() - start
    assert 429 in reads and reads[0] == 200, (len(reads), round(elapsed, 1), reads[-5:])
    # The client is let in again once the burst has aged out of HAProxy's sliding 10 s window (up to 20 s).
    assert probe.wait_for(lambda: probe.request(lb, "GET", "/api/items").status == 200, timeout=30, interval=1)
