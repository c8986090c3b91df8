"""Stage 2 HTTPS: a real ACME (pebble) certificate at the load balancer, verified from outside."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import testinfra.utils.ansible_runner
import webstack_probe as probe

INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
RUNNER = testinfra.utils.ansible_runner.AnsibleRunner(INVENTORY)
LB = RUNNER.get_hosts("loadbalancers")[0]
WEB = RUNNER.get_hosts("webservers")
EPHEMERAL = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
PEM = "/etc/haproxy/certs/www.foobar.com.pem"

testinfra_hosts = [LB]


def tls_get(address: str, cafile: str, path: str = "/", alpn: list[str] | None = None) -> tuple[Any, str, int]:
    context = ssl.create_default_context(cafile=cafile)
    if alpn:
        context.set_alpn_protocols(alpn)
    with socket.create_connection((address, 443), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="www.foobar.com") as tls:
        cert = tls.getpeercert()
        selected = tls.selected_alpn_protocol() or ""
        if alpn:
            return cert, selected, 0
        tls.sendall(f"GET {path} HTTP/1.1\r\nHost: www.foobar.com\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    return cert, head, int(head.split()[1])


def serial(lb_host: Any) -> str:
    return str(lb_host.check_output(f"openssl x509 -in {PEM} -noout -serial"))


def test_chain_verifies_with_pebble_root(lb: str, pebble_root: str) -> None:
    cert, head, status = tls_get(lb, pebble_root)
    assert status == 200, head
    names = {value for kind, value in cert["subjectAltName"] if kind == "DNS"}
    assert {"www.foobar.com", "foobar.com"} <= names
    issuer = dict(item[0] for item in cert["issuer"])
    assert "Pebble" in issuer.get("commonName", "")
    assert "x-served-by:" in head.lower()


def test_untrusted_without_pebble_root(lb: str) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_get(lb, ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt")


def test_http_redirects_to_https_with_301(lb: str) -> None:
    reply = probe.request(lb, "GET", "/api/items")
    assert reply.status == 301
    assert reply.headers["location"] == "https://www.foobar.com/api/items"


def test_hsts_and_http2(lb: str, pebble_root: str) -> None:
    _, head, _ = tls_get(lb, pebble_root)
    assert "strict-transport-security: max-age=63072000" in head.lower()
    _, selected, _ = tls_get(lb, pebble_root, alpn=["h2", "http/1.1"])
    assert selected == "h2"


def test_acme_challenge_path_is_not_redirected(lb: str) -> None:
    reply = probe.request(lb, "GET", "/.well-known/acme-challenge/nothing-here")
    assert reply.status != 301


def test_forced_renewal_serves_new_serial_without_dropping_requests(lb: str, pebble_root: str) -> None:
    lb_host = probe.node(LB)
    before = serial(lb_host)
    failures: list[str] = []
    done = threading.Event()

    def load() -> None:
        deadline = time.monotonic() + 60  # bounded even if renewal hangs
        while not done.is_set() and time.monotonic() < deadline:
            try:
                status = tls_get(lb, pebble_root, "/healthz")[2]
                if status != 200:
                    failures.append(str(status))
            except (OSError, ssl.SSLError) as exc:
                failures.append(repr(exc))
            time.sleep(0.05)

    worker = threading.Thread(target=load)
    worker.start()
    try:
        result = lb_host.run("REQUESTS_CA_BUNDLE=/etc/webstack/pebble-listener-ca.pem "
                             "certbot renew --force-renewal --no-random-sleep-on-renew --non-interactive")
    finally:
        time.sleep(1)
        done.set()
        worker.join(timeout=70)
    assert result.rc == 0, result.stderr
    after = serial(lb_host)
    assert after != before
    served = tls_get(lb, pebble_root)[0]["serialNumber"]
    assert served.lstrip("0").upper() == after.split("=")[1].lstrip("0").upper()
    assert failures == [], failures


def test_deploy_hook_killed_mid_write_leaves_haproxy_reloadable(lb: str, pebble_root: str) -> None:
    """The hook blocks reading the chain (a FIFO stands in for it) and is killed -9 while its bundle is open."""
    live = "/etc/letsencrypt/live/www.foobar.com"
    # The hook's PID is killed (pkill -f would match this very script's command line).
    script = (f"set -e; mv {live}/fullchain.pem {live}/fullchain.pem.keep; mkfifo {live}/fullchain.pem; "
              f"RENEWED_LINEAGE={live} /usr/local/lib/webstack/certbot-deploy-hook >/dev/null 2>&1 & hook=$!; "
              f"sleep 1; kill -9 $hook; pkill -9 -f \"^cat {live}/fullchain.pem\" || true; sleep 0.5; "
              f"rm -f {live}/fullchain.pem; mv {live}/fullchain.pem.keep {live}/fullchain.pem; "
              "ls -A /etc/haproxy/certs")
    lb_host = probe.node(LB)
    listing = lb_host.check_output(f"sh -c '{script}'")
    assert listing.split() == ["www.foobar.com.pem"], listing  # nothing half-written where HAProxy loads certs
    assert lb_host.run("haproxy -c -q -f /etc/haproxy/haproxy.cfg && systemctl reload haproxy").rc == 0
    assert tls_get(lb, pebble_root, "/healthz")[2] == 200


def test_renewal_timer_is_certbots_own(lb: str) -> None:
    lb_host = probe.node(LB)
    assert lb_host.service("certbot.timer").is_enabled
    assert lb_host.run("crontab -l").rc != 0 or "certbot" not in lb_host.run("crontab -l").stdout
    cron = lb_host.file("/etc/cron.d/certbot")
    assert not cron.exists or "systemd" in cron.content_string  # Debian's cron entry defers to the timer


def test_mozilla_intermediate_compliance(lb: str, pebble_root: str, tmp_path: Path) -> None:
    import sslyze

    profile_file = Path(sslyze.__file__).parent / "mozilla_tls_profile" / "5.7.json"
    intermediate = json.loads(profile_file.read_text())["configurations"]["intermediate"]
    # Pebble issues 5-year certificates; every other check is Mozilla's intermediate profile unchanged.
    intermediate["maximum_certificate_lifespan"] = 5 * 366
    custom = tmp_path / "intermediate-pebble.json"
    custom.write_text(json.dumps(intermediate))
    result = subprocess.run([sys.executable, "-m", "sslyze", f"--custom_tls_config={custom}",
                             f"--certinfo_ca_file={pebble_root}",
                             f"www.foobar.com:443{{{lb}}}"], capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "ok - compliant" in result.stdout.lower(), result.stdout[-3000:]
