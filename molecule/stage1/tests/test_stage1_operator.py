"""Stage 1 as an operator runs it: an inventory outside the repository, partial runs, a second controller, a vault,
a rotation under load, and what an outsider can reach.

Runs after test_stage1.py and test_stage1_failures.py (file order): the last test moves the database password to a
vault value, which the scenario's own inventory no longer matches.
"""

from __future__ import annotations

import json
import os
import secrets as random
import shutil
import subprocess
from pathlib import Path

import pytest
import webstack_probe as probe
from test_stage1 import INVENTORY, LB, PRIMARY, REPLICA, RUNNER

ALL = RUNNER.get_hosts("all")
PORTS = [22, 80, 443, 3306, 8000, 8080, 8404, 8888, 9100, 9104, 9113, 9999]
SECRETS_DIR = Path(os.environ["WEBSTACK_SECRETS_DIR"])

testinfra_hosts = [LB]


def secret(name: str) -> str:
    return SECRETS_DIR.joinpath(name).read_text(encoding="utf-8").split()[0]


def test_an_outsider_reaches_only_ssh_and_the_site() -> None:
    """The controller is in no group: SSH everywhere (admin network: any), the site on the LB, nothing else."""
    addresses = {host: probe.container_address(host) for host in ALL}
    result = probe.scan(None, [(addresses[h], p) for h in ALL for p in PORTS])
    for host in ALL:
        for port in PORTS:
            expected = "open" if port == 22 or (host == LB and port == 80) else "filtered"
            assert result[f"{addresses[host]}:{port}"] == expected, (host, port)


@pytest.mark.parametrize("partial", [["--tags", "firewall"], ["--tags", "haproxy"], ["--limit", REPLICA]],
                         ids=["tags-firewall", "tags-haproxy", "limit-one-web-host"])
def test_a_partial_run_computes_what_a_full_run_does(partial: list[str]) -> None:
    """Facts of every host are gathered under any tag or limit, so nothing (firewall rules, backends) differs."""
    recap = probe.playbook_recap(*partial)
    assert all(counters["changed"] == 0 for counters in recap.values()), recap


@pytest.mark.parametrize("partial", [[], ["--tags", "app"], ["--limit", REPLICA]],
                         ids=["full-run", "tags-app", "limit-one-web-host"])
def test_a_second_controller_without_the_secrets_changes_nothing(tmp_path: Path, partial: list[str]) -> None:
    """A run whose secrets dir is empty generates other passwords: it stops before any change, naming the secret
    and where it is expected, and the site keeps serving with the old ones -- also when the run skips the
    database and load balancer plays (--tags app) or covers one host (--limit)."""
    inventory = str(Path(INVENTORY).parent)
    result, recap = probe.run_playbook(probe.ROOT / "site.yml", inventory, *partial,
                                       env={"WEBSTACK_SECRETS_DIR": str(tmp_path / "secrets")})
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "webstack_db_app_password" in output and f"{tmp_path}/secrets/db_app_password" in output, output[-3000:]
    assert recap and all(counters["changed"] == 0 for counters in recap.values()), recap
    assert probe.request(probe.container_address(LB), "GET", "/api/items").status == 200


def test_a_partial_rotation_is_refused() -> None:
    """Rotating on some hosts only would leave the others with a secret nobody accepts: refused before any change."""
    result, recap = probe.run_playbook(probe.ROOT / "playbooks" / "rotate-secrets.yml", str(Path(INVENTORY).parent),
                                       "--limit", REPLICA)
    assert result.returncode != 0 and "without --limit" in result.stdout + result.stderr, result.stdout[-3000:]
    assert all(counters["changed"] == 0 for counters in recap.values()), recap


def outside_inventory(tmp_path: Path, values: dict[str, str]) -> tuple[Path, Path]:
    """The scenario's inventory copied outside the repository (links resolved) plus an encrypted
    group_vars/all/vault.yml holding `values`; returns the inventory and its vault password file."""
    inventory = tmp_path / "inventory"
    shutil.copytree(Path(INVENTORY).parent, inventory, symlinks=False)
    password_file = tmp_path / "vault-password"
    password_file.write_text(random.token_urlsafe(24) + "\n", encoding="utf-8")
    password_file.chmod(0o600)
    vault = inventory / "group_vars" / "all" / "vault.yml"
    vault.write_text("---\n" + "".join(f"{k}: {json.dumps(v)}\n" for k, v in values.items()), encoding="utf-8")
    subprocess.run(["ansible-vault", "encrypt", "--vault-password-file", str(password_file), str(vault)],
                   check=True, capture_output=True)
    assert vault.read_text(encoding="utf-8").startswith("$ANSIBLE_VAULT")
    return inventory, password_file


def test_a_vault_password_wins_and_its_rotation_costs_no_request(tmp_path: Path) -> None:
    """A password set in the inventory's vault beats the generated one: a plain converge refuses to switch to it,
    playbooks/rotate-secrets.yml switches under a read/write load with no failed request (with the generated
    replication password), and from then on the app and both database servers use the vault value."""
    new = random.token_urlsafe(24)
    inventory, password_file = outside_inventory(tmp_path, {"webstack_db_app_password": new})
    vault = ["--vault-password-file", str(password_file)]

    refused, _ = probe.run_playbook(probe.ROOT / "site.yml", str(inventory), *vault, "--tags", "database")
    assert refused.returncode != 0 and "webstack_db_app_password" in refused.stdout + refused.stderr

    replication_before = secret("db_replication_password")
    with probe.LoadLoop(probe.container_address(LB), interval=0.1, limit=1200, write_every=5) as load:
        rotated, _ = probe.run_playbook(probe.ROOT / "playbooks" / "rotate-secrets.yml", str(inventory), *vault,
                                        "-e", "webstack_rotate=db_app_password,db_replication_password")
    assert rotated.returncode == 0, rotated.stdout[-4000:]
    print(f"rotation under load: {load.summary()}")
    assert len(load.outcomes) > 50 and load.failed == [], load.summary()

    assert secret("db_replication_password") != replication_before
    assert secret("db_replication_password.previous") == replication_before
    for host in RUNNER.get_hosts("appservers"):
        config = json.loads(probe.node(host).check_output("cat /etc/foobar/app.json"))
        assert config["write_db"]["password"] == new and config["write_db"]["fallback_passwords"] == []
    for host in (PRIMARY, REPLICA):
        probe.node(host).check_output(f"mysql -h 127.0.0.1 -u foobar -p'{new}' foobar -e 'SELECT 1'")
    status = probe.node(REPLICA).check_output("mysql -e 'SHOW SLAVE STATUS\\G'")
    assert "Slave_IO_Running: Yes" in status and "Slave_SQL_Running: Yes" in status, status

    # The plays the two passwords reach (the secrets checks and records run under every tag).
    again, recap = probe.run_playbook(probe.ROOT / "site.yml", str(inventory), *vault, "--tags", "app,database")
    assert again.returncode == 0 and all(c["changed"] == 0 for c in recap.values()), again.stdout[-3000:]
