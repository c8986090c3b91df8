"""Role contracts: argument specs mirror defaults, bad input fails first and names the variable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
ROLES = sorted(p.name for p in (ROOT / "roles").iterdir() if (p / "tasks" / "main.yml").exists())


def load(path: Path) -> dict[str, Any]:
    return dict(yaml.safe_load(path.read_text(encoding="utf-8")) or {})


@pytest.mark.parametrize("role", ROLES)
def test_argument_specs_mirror_defaults(role: str) -> None:
    defaults = load(ROOT / "roles" / role / "defaults" / "main.yml")
    specs = load(ROOT / "roles" / role / "meta" / "argument_specs.yml")["argument_specs"]["main"]["options"]
    assert set(defaults) == set(specs), f"{role}: defaults and argument_specs differ"
    assert all(name.startswith(role + "_") for name in defaults), f"{role}: unprefixed variable"
    drift = {name: (spec.get("default"), defaults[name]) for name, spec in specs.items()
             if spec.get("default") != defaults[name]}
    assert drift == {}, f"{role}: argument_specs default differs from defaults/main.yml (spec, defaults): {drift}"
    described = [name for name, spec in specs.items() if not str(spec.get("description", "")).strip()]
    assert described == [], f"{role}: options without a description: {described}"
    # required means required: an option with a default the role ships is never marked required.
    assert [n for n, spec in specs.items() if spec.get("required")] == [], f"{role}: required option with a default"


@pytest.mark.parametrize("role", ROLES)
def test_readme_variables_are_generated_from_argument_specs(role: str) -> None:
    sys.path.insert(0, str(ROOT / "tools"))
    import role_docs

    table = role_docs.variables_table(ROOT / "roles" / role / "meta" / "argument_specs.yml")
    readme = (ROOT / "roles" / role / "README.md").read_text(encoding="utf-8")
    assert role_docs.with_table(readme, table) == readme, (
        f"roles/{role}/README.md: variables table out of date; run tools/role_docs.py --write roles/{role}")


@pytest.mark.parametrize("role", ROLES)
def test_every_default_has_a_comment(role: str) -> None:
    lines = (ROOT / "roles" / role / "defaults" / "main.yml").read_text(encoding="utf-8").splitlines()
    for index, line in enumerate(lines):
        if line and not line.startswith((" ", "#", "-")) and line != "---":
            assert lines[index - 1].startswith("#"), f"{role}: {line.split(':')[0]} has no comment line"


@pytest.mark.parametrize("role", ROLES)
def test_meta_lists_debian_bookworm_and_trixie(role: str) -> None:
    platforms = load(ROOT / "roles" / role / "meta" / "main.yml")["galaxy_info"]["platforms"]
    assert {"name": "Debian", "versions": ["bookworm", "trixie"]} in platforms
    assert (ROOT / "roles" / role / "README.md").exists()


BAD_INPUT = [
    ("nginx", {"nginx_worker_connections": "many"}, "nginx_worker_connections"),
    ("app", {"app_port": "http", "app_source_dir": "/x", "app_release_id": "r", "app_db_password": "p"}, "app_port"),
    ("mysql", {"mysql_replication_role": "leader"}, "mysql_replication_role"),
    ("haproxy", {"haproxy_backends": [{"name": "web", "balance": "fastest", "servers": []}]}, "balance"),
    ("redis", {"redis_maxmemory_policy": "lru", "redis_password": "x" * 20}, "redis_maxmemory_policy"),
]


def run_role(role: str, extra: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ANSIBLE_ROLES_PATH=str(ROOT / "roles"), ANSIBLE_FILTER_PLUGINS=str(ROOT / "filter_plugins"),
               ANSIBLE_COLLECTIONS_PATH=str(ROOT / "collections"),
               ANSIBLE_NOCOLOR="1", ANSIBLE_CALLBACKS_ENABLED="ansible.posix.profile_tasks")
    return subprocess.run(
        ["ansible-playbook", "-i", "localhost,", "-c", "local", "--check",
         str(ROOT / "tests" / "unit" / "fixtures" / "role.yml"),
         "-e", json.dumps({"role_under_test": role, **extra})],
        env=env, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize(("role", "extra", "variable"), BAD_INPUT)
def test_bad_input_fails_before_any_change(role: str, extra: dict[str, Any], variable: str) -> None:
    result = run_role(role, extra)
    out = result.stdout
    assert result.returncode != 0, out
    assert variable in out, out
    assert "Validating arguments against arg spec" in out
    # Nothing ran after validation: the validation task is the only failure and nothing changed.
    assert "changed=0" in out and "failed=1" in out, out


def test_empty_backend_fails_in_preflight_naming_the_fix() -> None:
    result = run_role("haproxy", {"haproxy_backends": [{"name": "web", "servers": []}], "haproxy_stats_password": "x"})
    out = result.stdout
    assert result.returncode != 0
    assert "Check the inputs that argument specs cannot" in out and "every backend at least one server" in out
    assert "empty: ['web']" in out
    assert "changed=0" in out and "failed=1" in out, out


def test_a_short_cache_password_fails_in_preflight_naming_the_fix() -> None:
    result = run_role("redis", {"redis_password": "short"})
    assert result.returncode != 0
    assert "redis_password must be at least 16 printable characters" in result.stdout, result.stdout
    assert "changed=0" in result.stdout


def test_requirements_collections_are_installed_at_compatible_versions() -> None:
    wanted = load(ROOT / "requirements.yml")["collections"]
    listing = subprocess.run(["ansible-galaxy", "collection", "list", "--format", "json"],
                             capture_output=True, text=True, check=True).stdout
    installed: dict[str, str] = {}
    for collections in json.loads(listing).values():
        for name, info in collections.items():
            installed.setdefault(name, info["version"])
    for item in wanted:
        assert item["name"] in installed, f"{item['name']} missing from the ansible bundle"
        assert Version(installed[item["name"]]) in SpecifierSet(item["version"]), (item, installed[item["name"]])


def test_monitoring_without_a_receiver_fails_in_preflight_naming_the_fix() -> None:
    result = run_role("monitoring_server", {})
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "monitoring_server_alertmanager_webhook_urls" in out and "alerts must reach someone" in out, out
    assert "changed=0" in result.stdout and "failed=1" in result.stdout, result.stdout
    passed = run_role("monitoring_server", {"monitoring_server_require_receiver": False})
    assert "Check the inputs that argument specs cannot" in passed.stdout
    assert "alerts must reach someone" not in passed.stdout + passed.stderr


def test_site_refuses_a_monitored_stage_without_a_receiver(tmp_path: Path) -> None:
    """Before any host is touched: the base play's first checks run on the controller."""
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", WEBSTACK_SECRETS_DIR=str(tmp_path))
    result = subprocess.run(
        ["ansible-playbook", "-i", str(ROOT / "inventories" / "stage2"), str(ROOT / "site.yml"),
         "-e", "ansible_connection=local", "-e", f"ansible_python_interpreter={sys.executable}", "--limit", "lb-01"],
        env=env, capture_output=True, text=True, timeout=300, check=False, cwd=ROOT)
    out = result.stdout + result.stderr
    assert result.returncode != 0 and "webstack_alert_webhook_urls" in out, out[-3000:]
    assert "changed=0" in result.stdout and "Gathering Facts" in result.stdout
