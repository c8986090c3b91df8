"""Stage 3 promises, seen from outside: HTTPS through the VIP reaches every tier; losing a load balancer moves the VIP,
losing a web or an app host costs no request. Every loop is bounded; every failure is undone in `finally`."""

from __future__ import annotations

import itertools
import json
import os
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
import testinfra.utils.ansible_runner
import webstack_probe as probe

INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
RUNNER = testinfra.utils.ansible_runner.AnsibleRunner(INVENTORY)
LBS = RUNNER.get_hosts("loadbalancers")
WEB = RUNNER.get_hosts("webservers")
APP = RUNNER.get_hosts("appservers")
REPLICA = RUNNER.get_hosts("db_replicas")[0]
VIP = "10.251.3.100"
# How long the soft track (HAProxy sees a web server) may fail before the VIP moves: keepalived_track_soft_fall runs,
# one a second (the role's defaults).
KEEPALIVED_SOFT_FALL_S = 3
RESULTS = probe.ROOT / "build" / "stage3-failover.json"

testinfra_hosts = [LBS[0]]


def holder() -> str:
    """The load balancer that holds the VIP now (exactly one of those that answer must; a killed one does not)."""
    holders = probe.vip_holders(LBS, VIP)
    assert len(holders) == 1, holders
    return holders[0]


def diagnostics() -> str:
    """What the load balancers did lately (VRRP transitions, HAProxy's last log lines), for a failure message."""
    out = []
    for lb in LBS:
        script = ("journalctl -t keepalived-notify --no-pager -o short-precise | tail -6; "
                  "journalctl -u haproxy --no-pager -o short-precise | tail -15")
        shown = subprocess.run(["docker", "exec", lb, "sh", "-c", script],
                               check=False, capture_output=True, text=True, timeout=30)
        out.append(f"--- {lb}\n{shown.stdout}{shown.stderr}")
    return "\n" + "\n".join(out)


def vrrp_state(lb: str) -> str:
    """`lb`'s keepalived state line ("STATE INSTANCE PRIORITY SINCE"): unchanged means no VRRP transition since."""
    return str(probe.node(lb).check_output("cat /run/keepalived/state")).strip()


def wait_for_holder(expected: str | None = None, timeout: float = 20) -> str:
    return probe.wait_for_holder(LBS, VIP, expected, timeout)


def record(case: str, load: probe.LoadLoop) -> None:
    """Keep the measured figures for make bench and the closing note (build/stage3-failover.json)."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(RESULTS.read_text(encoding="utf-8")) if RESULTS.exists() else {}
    results[case] = {"requests": len(load.outcomes), "failed": len(load.failed), "max_gap_s": round(load.max_gap, 2)}
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"{case}: {load.summary()}")


def test_https_through_the_vip_reaches_both_web_and_both_app_hosts(root: str) -> None:
    replies = [probe.request(VIP, "GET", "/", cafile=root) for _ in range(20)]
    assert all(r.status == 200 for r in replies), [r.status for r in replies]
    # nginx names itself by host name, the app by inventory name.
    assert {r.headers["x-proxied-by"] for r in replies} == {web.removeprefix("webstack-m3-") for web in WEB}
    assert {r.headers["x-served-by"] for r in replies} == set(APP)
    # Both app servers read the latest items from the one cache (db-02): after the first miss, hits.
    states = {r.headers.get("x-cache") for r in replies}
    assert "HIT" in states and states <= {"HIT", "MISS"}, states


def test_exactly_one_load_balancer_holds_the_vip_and_it_is_the_first() -> None:
    assert holder() == LBS[0]
    for lb in LBS:
        state = probe.node(lb).check_output("cat /run/keepalived/state")
        assert state.split()[0] == ("MASTER" if lb == LBS[0] else "BACKUP"), (lb, state)


def test_a_write_through_the_vip_is_on_the_replica(root: str) -> None:
    text = probe.unique_text("stage3")
    assert probe.request(VIP, "POST", "/api/items", {"text": text}, cafile=root).status == 201
    assert probe.wait_for(lambda: text in probe.node(REPLICA).check_output(
        f"mysql -N -B -e \"SELECT text FROM foobar.items WHERE text = '{text}'\""), timeout=10)


def test_vrrp_is_allowed_between_the_load_balancers_only() -> None:
    for lb in LBS:
        rules = probe.node(lb).check_output("ufw show added")
        peer = probe.container_address(next(other for other in LBS if other != lb))
        assert f"allow from {peer} proto vrrp" in rules, rules
    assert "vrrp" not in probe.node(WEB[0]).check_output("ufw show added")


RUNTIME_API = ("python3 -c \"import socket; s = socket.socket(socket.AF_UNIX); "
               "s.connect('/run/haproxy/admin.sock'); s.sendall(b'show stat\\n'); "
               "print(b''.join(iter(lambda: s.recv(65536), b'')).decode())\"")


def server_state(lb: str, server: str) -> str:
    """`lb`'s HAProxy's status of `server` in backend web (runtime API, show stat): "UP" and "DOWN" once settled,
    "UP 1/2" while failed checks take it down, "DOWN 1/2" while passed checks bring it up."""
    shown = probe.node(lb).check_output(RUNTIME_API)
    for fields in (line.split(",") for line in shown.splitlines()):
        if len(fields) > 17 and fields[0] == "web" and fields[1] == server:
            return str(fields[17])
    raise AssertionError(shown)


def wait_all_web_up(timeout: float = 60) -> None:
    """Wait (bounded) until every load balancer sees every web server UP with no check in transition: each failure
    case starts from a healthy stack (after a partition, a load balancer may hold the VIP with web servers still
    rising, or still going down from checks sent before the network healed)."""
    def settled() -> bool:
        try:
            return all(server_state(lb, web) == "UP" for lb in LBS for web in WEB)
        except AssertionError:
            return False

    assert probe.wait_for(settled, timeout=timeout), {lb: {web: server_state(lb, web) for web in WEB} for lb in LBS}


@pytest.mark.parametrize("case", probe.VIP_LOSSES)
def test_losing_the_vip_holder_moves_the_vip(root: str, case: str) -> None:
    first = wait_for_holder(LBS[0])
    wait_all_web_up()
    load = probe.lose_vip_holder(case, LBS, VIP, VIP, cafile=root)
    record(f"vip holder: {case}", load)
    # Requests started every 0.05 s, each on its own: the gap is how long no client was answered.
    assert load.max_gap < 10, load.summary()
    # Preemption (nopreempt off): the first load balancer takes the VIP back once it is healthy again...
    wait_for_holder(first, timeout=60)
    back = vrrp_state(first)
    # ... and keeps it while its HAProxy's view of the web servers settles: checks sent before a partition healed
    # fail after it; that must not move the VIP again (every move breaks the connections open on the holder).
    wait_all_web_up()
    time.sleep(KEEPALIVED_SOFT_FALL_S)
    assert vrrp_state(first) == back, f"the VIP moved again after returning to {first}:{diagnostics()}"


@pytest.mark.parametrize("tier", ["webservers", "appservers"])
def test_losing_a_web_or_app_host_costs_no_request(root: str, tier: str) -> None:
    victim = RUNNER.get_hosts(tier)[-1]
    wait_for_holder(LBS[0], timeout=60)
    wait_all_web_up()
    # 25 s: a GET stuck on a connection the victim took down is retried after `timeout server` (10 s).
    before = vrrp_state(LBS[0])
    with probe.LoadLoop(VIP, interval=0.1, limit=300, timeout=25, cafile=root) as load:
        time.sleep(1)
        with probe.killed(victim):
            time.sleep(6)
        time.sleep(1)
    record(f"{tier} host killed", load)
    assert load.failed == [], load.summary() + diagnostics()
    # The other load balancer was never needed: a lost web or app host does not move the VIP.
    assert vrrp_state(LBS[0]) == before, f"the VIP left {LBS[0]} while {victim} was down:{diagnostics()}"
    header, name = (("x-proxied-by", victim.removeprefix("webstack-m3-")) if tier == "webservers"
                    else ("x-served-by", victim))
    assert probe.wait_for(lambda: name in {probe.request(VIP, "GET", "/", cafile=root).headers[header]
                                           for _ in range(6)}, timeout=60), f"{victim} is not back in rotation"


def test_the_load_balancers_re_encrypt_to_the_web_servers(root: str) -> None:
    """HAProxy reaches nginx over TLS only, checking the internal CA's certificate and the server's name: the web
    servers' plain port is filtered from the load balancers, and a web server that presents a certificate of another
    CA is taken out by its failing checks while the site keeps answering; it is back once its certificate is."""
    config = probe.node(LBS[0]).check_output("cat /etc/haproxy/haproxy.cfg")
    for web in WEB:
        assert f"{web} {probe.container_address(web)}:8443 check ssl verify required ca-file " \
               f"/etc/ssl/webstack/ca.crt verifyhost {web}" in config, config
    ports = probe.scan(LBS[0], [(probe.container_address(w), p) for w in WEB for p in (80, 8443)])
    for web in WEB:
        assert ports[f"{probe.container_address(web)}:80"] == "filtered", ports
        assert ports[f"{probe.container_address(web)}:8443"] == "open", ports
    victim = WEB[1]
    rogue = ("set -e; cd /etc/ssl/webstack; cp -p host.crt host.crt.keep; cp -p host.key host.key.keep; "
             "openssl req -x509 -nodes -days 2 -newkey ec -pkeyopt ec_paramgen_curve:P-256 "
             f"-subj /CN={victim} -addext subjectAltName=DNS:{victim} -keyout host.key -out host.crt 2>/dev/null; "
             "systemctl reload nginx")
    restore = ("cd /etc/ssl/webstack && mv -f host.crt.keep host.crt && mv -f host.key.keep host.key && "
               "systemctl reload nginx")
    with probe.LoadLoop(VIP, interval=0.1, limit=600, cafile=root) as load:
        probe.node(victim).check_output(rogue)
        try:
            assert probe.wait_for(lambda: all(server_state(lb, victim) == "DOWN" for lb in LBS), timeout=30)
        finally:
            probe.node(victim).check_output(restore)
        assert probe.wait_for(lambda: all(server_state(lb, victim) == "UP" for lb in LBS), timeout=30)
        # Enough requests to count on, however fast the checks were (the loop stops at its limit anyway).
        probe.wait_for(lambda: len(load.outcomes) > 30, timeout=10, interval=0.1)
    print(f"web host with a foreign certificate: {load.summary()}")
    assert len(load.outcomes) > 30 and load.failed == [], load.summary()


def served_serial(address: str, cafile: str) -> str:
    """Serial of the certificate a load balancer serves for the site's name (verified against `cafile`)."""
    context = ssl.create_default_context(cafile=cafile)
    with socket.create_connection((address, 443), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=probe.SITE) as tls:
        certificate = tls.getpeercert()
        assert certificate is not None
        return str(certificate["serialNumber"]).lstrip("0").upper()


def test_a_renewal_reaches_the_other_load_balancer_without_ansible(root: str) -> None:
    """A forced renewal on the ACME client (lb-01): its deploy hook pushes the bundle to lb-02, which serves the new
    serial -- no Ansible run -- with no failed HTTPS request to lb-02 meanwhile; a bundle that is not a certificate
    for the site is refused by the receiver."""
    acme, other = LBS[0], LBS[1]
    address = probe.container_address(other)
    before = served_serial(address, root)
    with probe.LoadLoop(address, path="/healthz", interval=0.1, limit=900, cafile=root) as load:
        renewed = probe.node(acme).run("REQUESTS_CA_BUNDLE=/etc/webstack/pebble-listener-ca.pem certbot renew "
                                       "--force-renewal --no-random-sleep-on-renew --non-interactive")
        assert renewed.rc == 0, renewed.stderr
        assert probe.wait_for(lambda: served_serial(address, root) != before, timeout=60), "lb-02 kept the old one"
        time.sleep(1)
    print(f"renewal pushed: {load.summary()}")
    assert load.failed == [], load.summary()
    assert served_serial(address, root) == served_serial(probe.container_address(acme), root)
    # The sync key runs the receiver whatever command is asked for, and the receiver wants a certificate.
    ssh = ("ssh -i /etc/letsencrypt/webstack-sync/id_ed25519 -o BatchMode=yes -o IdentitiesOnly=yes "
           f"-o UserKnownHostsFile=/etc/letsencrypt/webstack-sync/known_hosts certsync@{address}")
    junk = probe.node(acme).run(f"echo not-a-certificate | {ssh} id")
    assert junk.rc != 0 and "refused" in junk.stderr and "uid=" not in junk.stdout, (junk.stdout, junk.stderr)
    assert served_serial(address, root) != before


def test_with_no_web_server_up_the_vip_stays_and_answers_503_at_once(root: str) -> None:
    """Every web server down: both load balancers lower their priority alike, so the first keeps the VIP and
    HAProxy answers 503 at once (no VIP at all would leave clients waiting for a timeout); back to 200 after."""
    wait_for_holder(LBS[0], timeout=60)
    wait_all_web_up()
    try:
        for web in WEB:
            probe.node(web).run("systemctl stop nginx")
        assert probe.wait_for(lambda: all(server_state(lb, web) == "DOWN" for lb in LBS for web in WEB),
                              timeout=30)
        time.sleep(4)  # the track script's fall (2 x 1 s) and an election, had there been one
        assert holder() == LBS[0]
        state = probe.node(LBS[0]).check_output("cat /run/keepalived/state").split()
        assert state[0] == "MASTER", state
        start = time.monotonic()
        assert probe.request(VIP, "GET", "/", cafile=root, timeout=5).status == 503
        assert time.monotonic() - start < 1
    finally:
        for web in WEB:
            probe.node(web).run("systemctl start nginx")
    assert probe.wait_for(lambda: probe.request(VIP, "GET", "/", cafile=root).status == 200, timeout=30)
    wait_all_web_up()


def test_a_converge_with_a_dead_load_balancer_leaves_the_others_as_they_are(root: str) -> None:
    """One dead host (killed, not stopped) must not fail the run on the others nor make it change anything: its
    peers keep the SSH host key and the addresses they knew. Once it is back (started again, as after a power
    loss), a run limited to it changes nothing either.

    This is also stage 3's second run (the scenario has no separate Molecule idempotence step): every one of the
    nine hosts is shown to converge with changed=0, eight in the full run and the ninth in the limited one."""
    dead = next(lb for lb in LBS if lb != holder())
    inventory = str(Path(INVENTORY).parent)
    with probe.LoadLoop(VIP, interval=0.2, limit=1200, timeout=5, cafile=root) as load, probe.killed(dead):
        result, recap = probe.run_playbook(probe.ROOT / "site.yml", inventory)
    # Unreachable over SSH or mitogen; Ansible's own docker connection reports a stopped container as a failed task.
    assert recap[dead]["ok"] == 0 and recap[dead]["unreachable"] + recap[dead]["failed"] == 1, recap[dead]
    others = {host: counters for host, counters in recap.items() if host != dead}
    assert set(others) == set(RUNNER.get_hosts("all")) - {dead}, sorted(recap)
    assert all(c["failed"] == 0 and c["unreachable"] == 0 and c["changed"] == 0 for c in others.values()), (
        others, changed_tasks(result.stdout))
    assert load.failed == [], load.summary()
    wait_for_holder(LBS[0], timeout=60)
    # Every play of lb-02 runs under this limit (none of its plays is for the first load balancer only).
    back, recap = probe.run_playbook(probe.ROOT / "site.yml", inventory, "--limit", dead)
    assert back.returncode == 0 and recap[dead]["changed"] == 0, (recap, changed_tasks(back.stdout))


def changed_tasks(stdout: str) -> list[str]:
    """The `changed:` lines of a playbook's output, each after the task it belongs to."""
    tasks = [line for line in stdout.splitlines() if line.startswith(("TASK [", "changed:"))]
    return [f"{task} {line}" for task, line in itertools.pairwise(tasks) if line.startswith("changed:")]
