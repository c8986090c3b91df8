"""The wiring (playbooks/group_vars/all) under any inventory: whatever the inventory sets wins, from anywhere."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PRECEDENCE = ("all_inventory,groups_inventory,all_plugins_inventory,all_plugins_play,"
                      "groups_plugins_inventory,groups_plugins_play")


def ansible(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """An Ansible CLI run from the repository (its ansible.cfg), no colour."""
    environ = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), **(env or {}))
    return subprocess.run(list(argv), cwd=ROOT, env=environ, capture_output=True, text=True, timeout=120, check=False)


def host_vars(inventory: Path, host: str, env: dict[str, str] | None = None) -> dict[str, object]:
    """The variables of `host` as a play of this repository sees them (untemplated)."""
    result = ansible("ansible-inventory", "-i", str(inventory), "--playbook-dir", str(ROOT / "playbooks"),
                     "--host", host, env=env)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


@pytest.fixture
def own_inventory(tmp_path: Path) -> Path:
    """An inventory outside the repository that sets one value at each level a user might use."""
    inventory = tmp_path / "my-inventory"
    (inventory / "group_vars" / "all").mkdir(parents=True)
    (inventory / "host_vars").mkdir()
    hosts = {"all": {"vars": {"webstack_domain": "example.org"},
                     "children": {"webservers": {"hosts": {"web-01": {"ansible_host": "192.0.2.1"}}},
                                  "appservers": {"hosts": {"web-01": None}},
                                  "db_primary": {"hosts": {"web-01": None}}}}}
    (inventory / "hosts.yml").write_text(yaml.safe_dump(hosts), encoding="utf-8")
    files = {"group_vars/all/stage.yml": {"webstack_stage": 0},
             # Sorts before "wiring.yml": the name must not matter.
             "group_vars/all/vault.yml": {"webstack_db_app_password": "from-the-vault"},
             "group_vars/webservers.yml": {"nginx_server_name": "www.example.org"},
             "host_vars/web-01.yml": {"webstack_app_port": 9000}}
    for name, values in files.items():
        (inventory / name).write_text(yaml.safe_dump(values), encoding="utf-8")
    return inventory


def test_every_inventory_level_wins_over_the_wiring(own_inventory: Path) -> None:
    found = host_vars(own_inventory, "web-01")
    assert found["webstack_db_app_password"] == "from-the-vault"
    assert found["webstack_domain"] == "example.org"
    assert found["nginx_server_name"] == "www.example.org"
    assert found["webstack_app_port"] == 9000
    # ...and the wiring itself is there, though nothing in the inventory links to it.
    assert found["webstack_max_body_bytes"] == 16384
    assert str(found["app_port"]) == "{{ webstack_app_port }}"


def test_ansibles_default_precedence_would_let_the_wiring_win(own_inventory: Path) -> None:
    """Why ansible.cfg sets `precedence` (and playbooks/preflight.yml refuses to run without it)."""
    found = host_vars(own_inventory, "web-01", env={"ANSIBLE_PRECEDENCE": DEFAULT_PRECEDENCE})
    assert found["webstack_db_app_password"] != "from-the-vault"


@pytest.mark.parametrize(("argv", "env", "message"), [
    ([], {}, "No hosts: pass your inventory with -i"),
    (["-i", "inventories/example"], {"ANSIBLE_PRECEDENCE": DEFAULT_PRECEDENCE}, "would override your inventory"),
])
def test_site_refuses_a_missing_inventory_or_another_precedence(argv: list[str], env: dict[str, str],
                                                               message: str) -> None:
    result = ansible("ansible-playbook", "site.yml", *argv, env=env)
    assert result.returncode != 0
    assert message in " ".join(result.stdout.split()), result.stdout[-2000:]


def test_the_example_inventory_is_a_stage_2_of_real_hosts() -> None:
    found = host_vars(ROOT / "inventories" / "example", "web-02")
    assert found["webstack_stage"] == 2
    assert found["ansible_host"] == "203.0.113.12" and found["webstack_address"] == "10.0.1.12"
    assert found["ansible_user"] == "debian" and found["webstack_admin_users"] == ["debian"]
    result = ansible("ansible-playbook", "--syntax-check", "-i", "inventories/example", "site.yml")
    assert result.returncode == 0, result.stderr
