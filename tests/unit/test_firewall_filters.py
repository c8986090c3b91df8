"""Firewall filters: role flows -> concrete ufw rules, resolved from inventory groups."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import firewall_rules
import pytest
import webstack
import yaml

ROLES_DIR = Path(__file__).resolve().parents[2] / "roles"

GROUPS = {
    "all": ["lb-01", "web-01", "web-02"],
    "loadbalancers": ["lb-01"],
    "webservers": ["web-01", "web-02"],
    "appservers": ["web-01", "web-02"],
    "db_primary": ["web-01"],
    "db_replicas": ["web-02"],
    "monitoring": [],
}
HOSTVARS: dict[str, dict[str, Any]] = {
    "lb-01": {"webstack_address": "10.0.0.10"},
    "web-01": {"webstack_address": "10.0.0.11"},
    "web-02": {"webstack_address": "10.0.0.2"},
}
MYSQL_FLOWS = [
    {"port": 3306, "proto": "tcp", "from_group": "appservers"},
    {"port": 3306, "proto": "tcp", "from_group": "db_replicas"},
]


def write_defaults(root: Path, role: str, text: str) -> None:
    (root / role / "defaults").mkdir(parents=True)
    (root / role / "defaults" / "main.yml").write_text(text, encoding="utf-8")


def test_role_values_concatenates_defaults_and_honours_host_overrides(tmp_path: Path) -> None:
    write_defaults(tmp_path, "nginx", "nginx_firewall_flows: [{port: 80, proto: tcp, from_group: loadbalancers}]\n")
    write_defaults(tmp_path, "app", "app_firewall_flows: [{port: 8000, proto: tcp, from_group: webservers}]\n")
    write_defaults(tmp_path, "mysql", "mysql_firewall_flows: [{port: 3306, proto: tcp, from_group: appservers}]\n")
    host_vars = {"app_firewall_flows": [{"port": 9000, "proto": "tcp", "from_group": "webservers"}]}
    flows = webstack.role_values(["nginx", "app", "mysql"], str(tmp_path), host_vars, "firewall_flows")
    assert [flow["port"] for flow in flows] == [80, 9000, 3306]


def test_role_values_keeps_equal_items_once(tmp_path: Path) -> None:
    write_defaults(tmp_path, "a", "a_packages: [python3-pymysql, x]\n")
    write_defaults(tmp_path, "b", "b_packages: [python3-pymysql, y]\n")
    assert webstack.role_values(["a", "b"], str(tmp_path), {}, "packages") == ["python3-pymysql", "x", "y"]


def test_role_values_is_role_packages_generalised() -> None:
    roles = ["nginx", "app", "mysql"]
    packages = webstack.role_packages(roles, str(ROLES_DIR), {})
    assert webstack.role_values(roles, str(ROLES_DIR), {}, "packages") == packages


def test_role_values_names_what_is_missing_or_wrong(tmp_path: Path) -> None:
    write_defaults(tmp_path, "x", "---\n")
    with pytest.raises(ValueError, match="x_firewall_flows"):
        webstack.role_values(["x"], str(tmp_path), {}, "firewall_flows")
    with pytest.raises(ValueError, match="nosuchrole_firewall_flows"):
        webstack.role_values(["nosuchrole"], str(tmp_path), {}, "firewall_flows")
    with pytest.raises(TypeError, match=r"x_firewall_flows .* must be a list"):
        webstack.role_values(["x"], str(tmp_path), {"x_firewall_flows": "80/tcp"}, "firewall_flows")


SITE_WORDS = ("foobar", "loadbalancers", "webservers", "appservers", "db_primary", "db_replicas", "monitoring")


def test_role_defaults_hold_no_site_vocabulary_and_flows_come_from_the_roles_settings() -> None:
    """The wiring names the site and its groups; a role's defaults only its own settings (an empty group: no flow)."""
    for defaults_file in sorted(ROLES_DIR.glob("*/defaults/main.yml")):
        role = defaults_file.parent.parent.name
        defaults = yaml.safe_load(defaults_file.read_text(encoding="utf-8"))
        for name, value in defaults.items():
            text = yaml.safe_dump(value)
            found = [word for word in SITE_WORDS if re.search(rf"\b{word}\b", text)]
            assert not found, f"{role}: {name} names the site's {found}"
        flows = str(defaults.get(f"{role}_firewall_flows", ""))
        names = set(re.findall(r"\b([a-z]+_[a-z_]+)\b", flows)) - {"from_group", "regex_replace"}
        assert all(name.startswith(role + "_") for name in names), f"{role}: flows built from {sorted(names)}"


def test_group_flow_resolves_to_each_host_address_sorted_and_deduplicated() -> None:
    # web-01 and web-02 are both app servers and web-02 is also the replica: one rule per address.
    rules = firewall_rules.firewall_rules(MYSQL_FLOWS, GROUPS, HOSTVARS)
    assert rules == [
        {"port": 3306, "proto": "tcp", "from": "10.0.0.2", "comment": "webstack appservers,db_replicas web-02"},
        {"port": 3306, "proto": "tcp", "from": "10.0.0.11", "comment": "webstack appservers web-01"},
    ]


def test_the_host_itself_is_skipped() -> None:
    rules = firewall_rules.firewall_rules(MYSQL_FLOWS, GROUPS, HOSTVARS, self_host="web-01")
    assert [rule["from"] for rule in rules] == ["10.0.0.2"]


def test_a_host_alone_in_the_group_gets_no_rule() -> None:
    # Stage 0: one host in every group; its own traffic stays on loopback.
    groups = {"appservers": ["web-01"], "db_replicas": []}
    assert firewall_rules.firewall_rules(MYSQL_FLOWS, groups, HOSTVARS, self_host="web-01") == []


def test_any_is_one_rule_without_addresses_and_sorts_first() -> None:
    flows = [{"port": 443, "proto": "tcp", "from_group": "loadbalancers"},
             {"port": 443, "proto": "tcp", "from_group": "any"},
             {"port": 80, "proto": "tcp", "from_group": "any"},
             {"port": 80, "proto": "tcp", "from_group": "any"}]
    rules = firewall_rules.firewall_rules(flows, GROUPS, HOSTVARS, self_host="lb-01")
    assert [(r["port"], r["from"]) for r in rules] == [(80, "any"), (443, "any")]
    assert rules[0]["comment"] == "webstack any"


def test_proto_defaults_to_tcp_and_udp_is_kept_apart() -> None:
    flows: list[dict[str, Any]] = [{"port": "53", "from_group": "webservers"},
                                   {"port": 53, "proto": "udp", "from_group": "webservers"}]
    rules = firewall_rules.firewall_rules(flows, GROUPS, HOSTVARS, self_host="web-02")
    assert [(r["port"], r["proto"], r["from"]) for r in rules] == [(53, "tcp", "10.0.0.11"), (53, "udp", "10.0.0.11")]


def test_custom_address_var_and_ipv6_and_cidr() -> None:
    hostvars = {"web-01": {"mgmt": "2001:db8::1"}, "web-02": {"mgmt": "192.0.2.0/28"}}
    rules = firewall_rules.firewall_rules([{"port": 22, "proto": "tcp", "from_group": "webservers"}], GROUPS, hostvars,
                                    address_var="mgmt")
    assert [r["from"] for r in rules] == ["192.0.2.0/28", "2001:db8::1"]


def test_unknown_group_fails_naming_it() -> None:
    with pytest.raises(ValueError, match="unknown group 'appserver'"):
        firewall_rules.firewall_rules([{"port": 3306, "proto": "tcp", "from_group": "appserver"}], GROUPS, HOSTVARS)


@pytest.mark.parametrize(("flow", "message"), [
    ({"port": 0, "proto": "tcp", "from_group": "any"}, "valid port"),
    ({"port": "http", "proto": "tcp", "from_group": "any"}, "valid port"),
    ({"port": True, "proto": "tcp", "from_group": "any"}, "valid port"),
    ({"port": 80, "proto": "icmp", "from_group": "any"}, "proto 'icmp'"),
    ({"port": 80, "proto": "tcp"}, "no from_group"),
])
def test_malformed_flows_fail_naming_the_flow(flow: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        firewall_rules.firewall_rules([flow], GROUPS, HOSTVARS)


def test_host_without_a_usable_address_fails_naming_it() -> None:
    with pytest.raises(ValueError, match="host web-02 of group appservers has no webstack_address"):
        firewall_rules.firewall_rules(MYSQL_FLOWS, GROUPS, {**HOSTVARS, "web-02": {}})
    with pytest.raises(ValueError, match="of host web-02 is 'web-02', not an IP address"):
        firewall_rules.firewall_rules(MYSQL_FLOWS, GROUPS, {**HOSTVARS, "web-02": {"webstack_address": "web-02"}})


def test_filters_are_registered() -> None:
    filters = webstack.FilterModule().filters()
    assert firewall_rules.FilterModule().filters()["firewall_rules"] is firewall_rules.firewall_rules
    # Playbooks read a role's exports as its variables, never its files: no filter reads role defaults.
    assert "webstack_role_values" not in filters and "webstack_role_packages" not in filters


# --- the ufw role's own filters (plugins/filter/ufw_rules.py, webstack.stack.ufw_*) ---------------------------

def load_ufw_filters() -> Any:
    spec = importlib.util.spec_from_file_location("ufw_rules", ROLES_DIR.parent / "plugins" / "filter" / "ufw_rules.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ufw = load_ufw_filters()

# What ufw 0.36.2 wrote for: SSH from 10.251.40.1, 3306 from app-01, 80 from any (v4 + v6), and three stale rules.
TUPLES = """\
### tuple ### allow tcp 22 0.0.0.0/0 any 10.251.40.1 in comment=7373682061646d696e
### tuple ### allow tcp 3306 0.0.0.0/0 any 10.251.40.12 in comment=77656273746163b
### tuple ### allow tcp 80 0.0.0.0/0 any 0.0.0.0/0 in
### tuple ### allow tcp 3306 0.0.0.0/0 any 10.251.40.13 in
### tuple ### allow_log tcp 9000:9010 0.0.0.0/0 any 10.9.0.0/16 in
### tuple ### allow udp 5000 0.0.0.0/0 any 0.0.0.0/0 in_eth0
### tuple ### allow tcp 80 ::/0 any ::/0 in
### tuple ### allow udp 5000 ::/0 any ::/0 in_eth0
"""
WANTED_RULES = [{"port": 3306, "proto": "tcp", "from": "10.251.40.12", "comment": "webstack appservers app-01"},
                {"port": 80, "proto": "tcp", "from": "any", "comment": "webstack any"}]


def test_wanted_rules_put_ssh_first() -> None:
    wanted = ufw.ufw_wanted_rules(WANTED_RULES, 22, ["10.251.40.1/32"])
    assert wanted[0] == {"port": 22, "proto": "tcp", "from": "10.251.40.1/32", "comment": "ssh admin"}
    assert [rule["port"] for rule in wanted] == [22, 3306, 80]


def test_stale_rules_are_exactly_the_undeclared_ones() -> None:
    wanted = ufw.ufw_wanted_rules(WANTED_RULES, 22, ["10.251.40.1/32"])
    stale = ufw.ufw_stale_rules(TUPLES, wanted)
    assert [s["line"].split()[3:6] for s in stale] == [
        ["allow", "tcp", "3306"], ["allow_log", "tcp", "9000:9010"], ["allow", "udp", "5000"], ["allow", "udp", "5000"]]
    assert stale[0] == {"line": TUPLES.splitlines()[3], "delete": True, "unsupported": "", "rule": "allow",
                        "log": False, "route": False, "from_ip": "10.251.40.13", "to_ip": "0.0.0.0/0",
                        "direction": "in", "to_port": "3306", "proto": "tcp"}
    assert stale[1]["log"] is True and stale[1]["from_ip"] == "10.9.0.0/16"
    assert stale[2]["interface"] == "eth0" and stale[3]["from_ip"] == "::/0" and stale[3]["to_ip"] == "::/0"


def test_nothing_is_stale_when_everything_is_declared() -> None:
    lines = "\n".join([*TUPLES.splitlines()[:3], TUPLES.splitlines()[6]])
    assert ufw.ufw_stale_rules(lines, ufw.ufw_wanted_rules(WANTED_RULES, 22, ["10.251.40.1/32"])) == []


def test_only_rules_ufw_lacks_or_holds_with_another_comment_are_added() -> None:
    wanted = ufw.ufw_wanted_rules(WANTED_RULES, 22, ["10.251.40.1/32"])
    # SSH is held with its comment; 3306 is held with a different (here: undecodable) comment; 80 has none.
    assert [r["port"] for r in ufw.ufw_missing_rules(TUPLES, wanted)] == [3306, 80]
    held = "\n".join(f"### tuple ### allow tcp {p} {d} any {s} in comment={c.encode().hex()}" for p, d, s, c in [
        (22, "0.0.0.0/0", "10.251.40.1", "ssh admin"),
        (3306, "0.0.0.0/0", "10.251.40.12", "webstack appservers app-01"),
        (80, "0.0.0.0/0", "0.0.0.0/0", "webstack any")])
    # 80 from any needs its IPv6 twin as well.
    assert [r["port"] for r in ufw.ufw_missing_rules(held, wanted)] == [80]
    held += "\n### tuple ### allow tcp 80 ::/0 any ::/0 in comment=" + b"webstack any".hex()
    assert ufw.ufw_missing_rules(held, wanted) == []
    assert ufw.ufw_missing_rules("", wanted) == wanted


def test_sources_are_compared_the_way_ufw_normalises_them() -> None:
    lines = "### tuple ### allow tcp 22 0.0.0.0/0 any 10.0.0.0/8 in\n### tuple ### allow tcp 22 ::/0 any 2001:db8::1 in"
    wanted = ufw.ufw_wanted_rules([], 22, ["10.1.2.3/8", "2001:db8::1/128"])
    assert ufw.ufw_stale_rules(lines, wanted) == []


def test_rules_the_module_cannot_delete_are_flagged() -> None:
    lines = ("### tuple ### allow_log-all tcp 26 0.0.0.0/0 any 0.0.0.0/0 in\n"
             "### tuple ### allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 OpenSSH - in\n"
             "### tuple ### allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 - OpenSSH in\n")
    stale = ufw.ufw_stale_rules(lines, [])
    assert [bool(s["unsupported"]) for s in stale] == [True, False, True]
    assert stale[1]["name"] == "OpenSSH" and "proto" not in stale[1] and "to_port" not in stale[1]


@pytest.mark.parametrize(("rules", "sources", "port", "message"), [
    ([], [], 22, "ufw_ssh_sources is empty"),
    ([], ["admins"], 22, "ufw_ssh_sources: 'admins'"),
    ([], ["any"], 0, "ufw_ssh_port"),
    ([{"port": 70000, "proto": "tcp", "from": "any"}], ["any"], 22, "ufw_rules[0]: port 70000"),
    ([{"port": 53, "proto": "icmp", "from": "any"}], ["any"], 22, "ufw_rules[0]: proto 'icmp'"),
    ([{"port": 53, "proto": "udp", "from": "db-01"}], ["any"], 22, "ufw_rules[0]: from 'db-01'"),
    ([{"port": 53, "proto": "udp", "from": "any", "comment": "it's"}], ["any"], 22, "single quote"),
])
def test_rule_errors_name_the_variable(rules: list[dict[str, Any]], sources: list[str], port: int,
                                       message: str) -> None:
    errors = ufw.ufw_rule_errors(rules, sources, port)
    assert any(message in error for error in errors), errors


def test_valid_rules_have_no_errors() -> None:
    assert ufw.ufw_rule_errors(WANTED_RULES, ["any", "192.0.2.0/24", "2001:db8::/32"], 22) == []


def test_sources_cover_the_controller() -> None:
    assert ufw.ufw_sources_cover(["10.251.40.1/32"], "10.251.40.1")
    assert ufw.ufw_sources_cover(["any"], "198.51.100.7")
    assert not ufw.ufw_sources_cover(["192.0.2.0/24", "2001:db8::/32"], "10.251.40.1")
    assert ufw.ufw_sources_cover(["2001:db8::/32"], "2001:db8::5")


def test_status_parsing_and_logging_comparison() -> None:
    status = ufw.ufw_status("Status: active\nLogging: on (low)\n"
                            "Default: deny (incoming), allow (outgoing), deny (routed)\nNew profiles: skip\n")
    assert status == {"active": True, "logging": "low", "incoming": "deny", "outgoing": "allow", "routed": "deny"}
    assert ufw.ufw_logging_matches(status, "low") and ufw.ufw_logging_matches(status, "on")
    assert not ufw.ufw_logging_matches(status, "medium") and not ufw.ufw_logging_matches(status, "off")
    inactive = ufw.ufw_status("Status: inactive\n")
    assert inactive["active"] is False and not ufw.ufw_logging_matches(inactive, "low")
    assert ufw.ufw_logging_matches(ufw.ufw_status("Status: active\nLogging: off\n"), "off")


# --- bad input stops the roles before anything changes -------------------------------------------------------

@pytest.mark.parametrize(("role", "extra", "message"), [
    ("ufw", {"ufw_logging": "loud"}, "ufw_logging"),
    ("ufw", {"ufw_rules": [{"port": 3306, "proto": "tcp", "from": "app-01"}]}, "ufw_rules[0]: from 'app-01'"),
    ("ufw", {"ufw_ssh_sources": []}, "ufw_ssh_sources is empty"),
    ("sshd", {"sshd_permit_root_login": "yes"}, "sshd_permit_root_login"),
    ("sshd", {"sshd_allow_users": []}, "sshd_allow_users must list at least one account"),
])
def test_bad_input_fails_before_any_change(role: str, extra: dict[str, Any], message: str) -> None:
    env = dict(os.environ, ANSIBLE_ROLES_PATH=str(ROLES_DIR),
               ANSIBLE_FILTER_PLUGINS=str(ROLES_DIR.parent / "filter_plugins"),
               ANSIBLE_COLLECTIONS_PATH=str(ROLES_DIR.parent / "collections"),
               ANSIBLE_NOCOLOR="1", ANSIBLE_CALLBACK_RESULT_FORMAT="json")
    result = subprocess.run(
        ["ansible-playbook", "-i", "localhost,", "-c", "local", "--check",
         str(ROLES_DIR.parent / "tests" / "unit" / "fixtures" / "role.yml"),
         "-e", json.dumps({"role_under_test": role, **extra})],
        env=env, capture_output=True, text=True, timeout=120, check=False)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert message in out, out
    assert "changed=0" in out and "failed=1" in out, out


# --- VRRP: a portless protocol (keepalived's flow between the load balancers) --------------------------------

VRRP_GROUPS = {"all": ["lb-01", "lb-02"], "loadbalancers": ["lb-01", "lb-02"]}
VRRP_HOSTVARS = {"lb-01": {"webstack_address": "10.0.0.10"}, "lb-02": {"webstack_address": "10.0.0.20"}}


def test_a_vrrp_flow_gives_a_rule_without_a_port_from_each_peer() -> None:
    rules = firewall_rules.firewall_rules([{"proto": "vrrp", "from_group": "loadbalancers"},
                                     {"port": 80, "proto": "tcp", "from_group": "any"}],
                                    VRRP_GROUPS, VRRP_HOSTVARS, self_host="lb-01")
    assert rules == [{"proto": "vrrp", "from": "10.0.0.20", "comment": "webstack loadbalancers lb-02"},
                     {"port": 80, "proto": "tcp", "from": "any", "comment": "webstack any"}]


def test_a_vrrp_flow_with_a_port_fails_naming_it() -> None:
    with pytest.raises(ValueError, match="vrrp, which has no ports"):
        firewall_rules.firewall_rules([{"port": 112, "proto": "vrrp", "from_group": "loadbalancers"}],
                                VRRP_GROUPS, VRRP_HOSTVARS)


def test_ufw_holds_vrrp_rules_with_the_port_any() -> None:
    """ufw 0.36.2 wrote this for `ufw allow proto vrrp from 10.0.0.20 comment ...` (keepalived molecule scenario)."""
    wanted = ufw.ufw_wanted_rules([{"proto": "vrrp", "from": "10.0.0.20", "comment": "webstack loadbalancers lb-02"}],
                                  22, ["any"])
    assert wanted[-1] == {"proto": "vrrp", "from": "10.0.0.20", "comment": "webstack loadbalancers lb-02"}
    held = ("### tuple ### allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in comment=" + b"ssh admin".hex() + "\n"
            "### tuple ### allow tcp 22 ::/0 any ::/0 in comment=" + b"ssh admin".hex() + "\n"
            "### tuple ### allow vrrp any 0.0.0.0/0 any 10.0.0.20 in comment=" + b"webstack loadbalancers lb-02".hex())
    assert ufw.ufw_missing_rules(held, wanted) == []
    assert ufw.ufw_stale_rules(held, wanted) == []
    assert ufw.ufw_missing_rules(held.rsplit("\n", 1)[0], wanted) == [wanted[-1]]
    assert ufw.ufw_rule_errors(wanted[1:], ["any"], 22) == []
    assert "has no ports" in ufw.ufw_rule_errors([{"proto": "vrrp", "port": 112, "from": "any"}], ["any"], 22)[0]
