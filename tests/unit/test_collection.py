"""The roles as the collection webstack.stack: built, installed elsewhere, used by a playbook outside the repository."""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import webstack
import yaml

ROOT = Path(__file__).resolve().parents[2]
GALAXY: dict[str, Any] = yaml.safe_load((ROOT / "galaxy.yml").read_text(encoding="utf-8"))
ROLES = sorted(p.name for p in (ROOT / "roles").iterdir() if (p / "tasks" / "main.yml").exists())
FQCN_FILTER = re.compile(r"\|\s*webstack\.stack\.([a-z_]+)")
EXAMPLE = re.compile(r"^## Example\n(?:(?!^## ).)*?^```yaml\n(.*?)^```", re.MULTILINE | re.DOTALL)


def role_files() -> list[Path]:
    return [p for p in (ROOT / "roles").rglob("*") if p.is_file() and p.suffix in (".yml", ".j2", ".md")]


def collection_filters() -> set[str]:
    """The names plugins/filter gives its filters (each module's FilterModule, as Ansible loads them)."""
    names: set[str] = set()
    for plugin in (ROOT / "plugins" / "filter").glob("*.py"):
        names.update(importlib.import_module(plugin.stem).FilterModule().filters())
    return names


def test_version_is_the_newest_changelog_release() -> None:
    releases = re.findall(r"^## \[(\d+\.\d+\.\d+)\]", (ROOT / "CHANGELOG.md").read_text(encoding="utf-8"),
                          re.MULTILINE)
    assert releases and GALAXY["version"] == releases[0], (GALAXY["version"], releases[:1])


def test_dependencies_cover_the_roles_modules_at_the_tested_versions() -> None:
    used = set()
    for path in (ROOT / "roles").rglob("*.yml"):
        text = path.read_text(encoding="utf-8")
        used.update(re.findall(r"^\s*-?\s*((?:community|ansible)\.[a-z_]+)\.[a-z_0-9]+:", text, re.MULTILINE))
    used.discard("ansible.builtin")
    missing = sorted(used - set(GALAXY["dependencies"]))
    assert not missing, f"galaxy.yml dependencies miss {missing}"
    # The ranges are requirements.yml's, which test_roles checks against the installed bundle.
    tested = {item["name"]: item["version"]
              for item in yaml.safe_load((ROOT / "requirements.yml").read_text(encoding="utf-8"))["collections"]}
    differ = {name: (wanted, tested.get(name)) for name, wanted in GALAXY["dependencies"].items()
              if tested.get(name) != wanted}
    assert not differ, f"galaxy.yml ranges differ from requirements.yml's (galaxy, requirements): {differ}"


def test_roles_call_only_collection_filters_by_their_full_name() -> None:
    site_filters = set(webstack.FilterModule().filters())
    provided = collection_filters()
    for path in role_files():
        text = path.read_text(encoding="utf-8")
        unknown = set(FQCN_FILTER.findall(text)) - provided
        assert not unknown, f"{path.relative_to(ROOT)} calls webstack.stack filters plugins/filter lacks: {unknown}"
        site = sorted(name for name in site_filters if re.search(rf"\|\s*{name}\b", text))
        assert not site, f"{path.relative_to(ROOT)} uses the repository's own filters {site}: not in the collection"
    assert not list((ROOT / "roles").glob("*/filter_plugins")), "roles in a collection cannot carry plugins"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The collection built from the checkout and installed into an empty directory; an environment that sees
    only that directory and the ansible bundle, run from a directory without ansible.cfg."""
    work = tmp_path_factory.mktemp("collection")
    subprocess.run(["ansible-galaxy", "collection", "build", str(ROOT), "--output-path", str(work)],
                   check=True, capture_output=True, text=True, timeout=120)
    tarball = work / f"webstack-stack-{GALAXY['version']}.tar.gz"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(ANSIBLE_COLLECTIONS_PATH=str(work / "collections"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_HOME=str(work / "home"), ANSIBLE_LOCALHOST_WARNING="false")
    subprocess.run(["ansible-galaxy", "collection", "install", "--offline", str(tarball),
                    "-p", str(work / "collections")],
                   check=True, capture_output=True, text=True, timeout=120, env=env, cwd=work)
    return env


def workdir(env: dict[str, str]) -> Path:
    """The fixture's directory (no ansible.cfg): ANSIBLE_HOME and the installed collections live in it."""
    return Path(env["ANSIBLE_HOME"]).parent


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), env=env, cwd=workdir(env), capture_output=True, text=True, timeout=120,
                          check=False)


def test_the_build_holds_the_roles_and_filters_only(installed: dict[str, str]) -> None:
    root = Path(installed["ANSIBLE_COLLECTIONS_PATH"]) / "ansible_collections" / "webstack" / "stack"
    assert sorted(p.name for p in (root / "roles").iterdir()) == ROLES
    assert sorted(p.name for p in (root / "plugins" / "filter").glob("*.py")) == sorted(
        p.name for p in (ROOT / "plugins" / "filter").glob("*.py"))
    assert not (root / "molecule").exists() and not (root / "collections").exists() and not (root / "build").exists()


def test_an_outside_playbook_uses_the_collection_filters(installed: dict[str, str]) -> None:
    here = workdir(installed)
    (here / "code").mkdir(exist_ok=True)
    (here / "code" / "wsgi.py").write_text("application = None\n")
    playbook = here / "filters.yml"
    playbook.write_text(yaml.safe_dump([{
        "name": "The collection's filters, from outside the repository", "hosts": "localhost", "gather_facts": False,
        "vars": {"code": str(here / "code")},
        "tasks": [{"name": "Use them", "ansible.builtin.debug": {"msg": {
            "release": "{{ code | webstack.stack.release_id }}",
            "servers": "{{ ['localhost'] | webstack.stack.backend_servers(hostvars, 80) }}",
            "rules": "{{ [{'port': 80, 'proto': 'tcp', 'from_group': 'any'}]"
                     " | webstack.stack.firewall_rules(groups, hostvars) }}",
            "ufw": "{{ [] | webstack.stack.ufw_rule_errors(['10.0.0.0/8'], 22) }}",
            "vrrp": "{{ {} | webstack.stack.keepalived_input_errors | type_debug }}"}}}]}]))
    result = run(installed, "ansible-playbook", "-i", "localhost,", "-c", "local", str(playbook))
    assert result.returncode == 0, result.stdout + result.stderr
    assert '"release": "r-' in result.stdout and '"address": "localhost"' in result.stdout, result.stdout
    assert '"from": "any"' in result.stdout, result.stdout


@pytest.mark.parametrize("role", ROLES)
def test_the_readme_example_is_a_playbook_of_the_installed_collection(installed: dict[str, str], role: str) -> None:
    match = EXAMPLE.search((ROOT / "roles" / role / "README.md").read_text(encoding="utf-8"))
    assert match, f"roles/{role}/README.md has no '## Example' yaml block"
    assert f"role: webstack.stack.{role}" in match.group(1), f"roles/{role}/README.md: use the collection name"
    here = workdir(installed)
    playbook = here / f"example-{role}.yml"
    playbook.write_text(match.group(1))
    result = run(installed, "ansible-playbook", "-i", "localhost,", "--syntax-check", str(playbook))
    assert result.returncode == 0, result.stdout + result.stderr


def test_ansible_doc_shows_each_options_default(installed: dict[str, str]) -> None:
    result = run(installed, "ansible-doc", "-t", "role", "--json", "webstack.stack.haproxy")
    assert result.returncode == 0, result.stderr
    options = json.loads(result.stdout)["webstack.stack.haproxy"]["entry_points"]["main"]["options"]
    assert options["haproxy_check_fall"]["default"] == 2


def test_the_preload_callback_loads_the_jinja_plugins_in_the_main_process() -> None:
    """Enabled for site.yml and Molecule; loading once, before tasks fork, leaves every builtin filter and test cached
    for the forks to inherit."""
    config = (ROOT / "ansible.cfg").read_text(encoding="utf-8")
    assert re.search(r"^callbacks_enabled = webstack\.stack\.preload\b", config, re.MULTILINE)
    molecule = yaml.safe_load((ROOT / ".config" / "molecule" / "config.yml").read_text(encoding="utf-8"))
    assert "webstack.stack.preload" in molecule["provisioner"]["env"]["ANSIBLE_CALLBACKS_ENABLED"].split(",")
    script = f"""
import importlib.util
from ansible.plugins.loader import init_plugin_loader, filter_loader, test_loader
init_plugin_loader([])
spec = importlib.util.spec_from_file_location("preload", {str(ROOT / "plugins" / "callback" / "preload.py")!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
print(module.preload())
print(sorted(set(filter_loader._cached_non_collection_wrappers) & {{"to_json", "ansible.builtin.regex_replace"}}))
print(sorted(set(test_loader._cached_non_collection_wrappers) & {{"match", "ansible.builtin.version"}}))
"""
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True).stdout.split("\n")
    assert int(out[0]) > 100, out
    assert out[1] == "['ansible.builtin.regex_replace', 'to_json']" and out[2] == "['ansible.builtin.version', 'match']"
