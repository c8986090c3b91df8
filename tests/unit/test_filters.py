"""Inventory-to-data filters."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import backends
import pytest
import release
import webstack


def test_release_id_changes_with_content_only(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("x = 1\n")
    first = release.release_id(str(tmp_path))
    (tmp_path / "pkg" / "__pycache__").mkdir()
    (tmp_path / "pkg" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"junk")
    assert release.release_id(str(tmp_path)) == first
    assert first.startswith("r-") and len(first) == 14
    (tmp_path / "pkg" / "a.py").write_text("x = 2\n")
    assert release.release_id(str(tmp_path)) != first


def test_release_id_rejects_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a directory"):
        release.release_id(str(tmp_path / "missing"))


def test_backend_servers_prefers_address_var() -> None:
    hostvars = {"web-01": {"webstack_address": "10.0.0.1"}, "web-02": {"ansible_host": "10.0.0.2"}}
    servers = backends.backend_servers(["web-01", "web-02"], hostvars, 80)
    assert servers == [
        {"name": "web-01", "address": "10.0.0.1", "port": 80},
        {"name": "web-02", "address": "10.0.0.2", "port": 80},
    ]


def test_dns_records_apex_a_and_www_cname() -> None:
    records = webstack.dns_records(["www.foobar.com", "foobar.com"], "foobar.com", ["192.0.2.10"])
    assert records == [
        {"name": "foobar.com.", "type": "A", "ttl": 300, "value": "192.0.2.10"},
        {"name": "www.foobar.com.", "type": "CNAME", "ttl": 300, "value": "foobar.com."},
    ]
    assert webstack.zone_lines(records)[1].split() == ["www.foobar.com.", "300", "IN", "CNAME", "foobar.com."]


def test_dns_records_refuse_foreign_names_and_no_address() -> None:
    with pytest.raises(ValueError, match="not inside the zone"):
        webstack.dns_records(["www.example.org"], "foobar.com", ["192.0.2.1"])
    with pytest.raises(ValueError, match="no address"):
        webstack.dns_records(["www.foobar.com"], "foobar.com", [])


def test_group_roles_in_order_without_duplicates() -> None:
    roles = webstack.group_roles(
        ["webservers", "appservers", "db_primary", "db_replicas"],
        {"webservers": ["nginx"], "appservers": ["app"], "db_primary": ["mysql"], "db_replicas": ["mysql"]},
    )
    assert roles == ["nginx", "app", "mysql"]


def test_role_packages_reads_defaults_and_honours_overrides(tmp_path: Path) -> None:
    for role, packages in {"nginx": ["nginx"], "app": ["gunicorn", "python3-pymysql"],
                           "mysql": ["mariadb-server", "python3-pymysql"]}.items():
        (tmp_path / role / "defaults").mkdir(parents=True)
        (tmp_path / role / "defaults" / "main.yml").write_text(f"{role}_packages: {packages}\n")
    result = webstack.role_packages(["nginx", "app", "mysql"], str(tmp_path), {"nginx_packages": ["nginx-light"]})
    assert result == ["nginx-light", "gunicorn", "python3-pymysql", "mariadb-server"]


def test_role_packages_names_the_missing_variable(tmp_path: Path) -> None:
    (tmp_path / "x" / "defaults").mkdir(parents=True)
    (tmp_path / "x" / "defaults" / "main.yml").write_text("---\n")
    with pytest.raises(ValueError, match="x_packages"):
        webstack.role_packages(["x"], str(tmp_path), {})


def test_real_roles_declare_their_packages() -> None:
    roles_dir = Path(__file__).resolve().parents[2] / "roles"
    packages = webstack.role_packages(["nginx", "app", "mysql"], str(roles_dir), {})
    assert "nginx" in packages and "mariadb-server" in packages and "gunicorn" in packages


def test_drain_commands_name_each_load_balancer_and_the_server() -> None:
    commands = webstack.drain_commands(["lb-01", "lb-02"], "web", "web-01")
    assert [c["host"] for c in commands] == ["lb-01", "lb-02"]
    assert commands[0]["drain"].endswith("; /usr/local/sbin/haproxy-server web web-01 drain --wait 10")
    assert commands[0]["ready"].endswith("; /usr/local/sbin/haproxy-server web web-01 ready --wait 30")
    assert commands[0]["drain"].startswith("[ -x /usr/local/sbin/haproxy-server ] || exit 0")
    assert webstack.drain_commands([], "web", "web-01") == []
    with pytest.raises(ValueError, match="server"):
        webstack.drain_commands(["lb-01"], "web", "web 01; reboot")
    for hostile in ("web-01;reboot", "$(reboot)", "web`id`", ""):
        with pytest.raises(ValueError, match="server"):
            webstack.drain_commands(["lb-01"], "web", hostile)


def test_upstream_drain_commands_name_each_web_server_and_the_upstream() -> None:
    commands = webstack.upstream_drain_commands(["web-01", "web-02"], "10.0.0.5:8000")
    assert [c["host"] for c in commands] == ["web-01", "web-02"]
    assert commands[0]["drain"] == ("[ -x /usr/local/sbin/nginx-upstream ] || exit 0; "
                                    "/usr/local/sbin/nginx-upstream 10.0.0.5:8000 drain --wait 10")
    assert commands[1]["ready"].endswith("; /usr/local/sbin/nginx-upstream 10.0.0.5:8000 ready")
    assert webstack.upstream_drain_commands([], "app-01:8000") == []
    for hostile in ("10.0.0.5", "10.0.0.5:8000;reboot", "$(id):80", "a b:80", "10.0.0.5:8000\n", ""):
        with pytest.raises(ValueError, match="server"):
            webstack.upstream_drain_commands(["web-01"], hostile)


def test_drain_commands_refuse_a_name_with_a_trailing_newline() -> None:
    with pytest.raises(ValueError):
        webstack.drain_commands(["lb-01"], "web", "web-01\n")


def test_secret_fingerprints_are_salted_and_stable() -> None:
    first = webstack.secret_fingerprints({"b": "x", "a": "x"}, "s" * 16)
    assert list(first) == ["a", "b"] and first["a"] != first["b"]  # the name is in the hash: equal values differ
    assert first == webstack.secret_fingerprints({"a": "x", "b": "x"}, "s" * 16)
    assert first != webstack.secret_fingerprints({"a": "x", "b": "x"}, "t" * 16)
    assert "x" not in "".join(first.values())
    with pytest.raises(ValueError, match="salt"):
        webstack.secret_fingerprints({"a": "x"}, "short")


def test_changed_secrets_name_only_the_remembered_ones_that_differ() -> None:
    salt = "0123456789abcdef"
    remembered = {"salt": salt, "fingerprints": webstack.secret_fingerprints({"a": "1", "b": "2"}, salt)}
    assert webstack.changed_secrets({"a": "1", "b": "2"}, remembered) == []
    assert webstack.changed_secrets({"a": "9", "b": "2", "new": "3"}, remembered) == ["a"]
    assert webstack.changed_secrets({"a": "9", "b": "8"}, remembered, allowed=["a"]) == ["b"]
    assert webstack.changed_secrets({"a": "9"}, {}) == []  # a host that never recorded any
    with pytest.raises(TypeError, match="fingerprints"):
        webstack.changed_secrets({"a": "9"}, {"salt": salt, "fingerprints": "garbage"})


def test_secret_selection_reads_what_an_operator_types() -> None:
    names = ["a", "b", "c"]
    for none in (False, None, "", "false", "False"):
        assert webstack.secret_selection(none, names) == []
    for every in (True, "true", "all"):
        assert webstack.secret_selection(every, names) == names
    assert webstack.secret_selection("c, a", names) == ["a", "c"]
    assert webstack.secret_selection(["b"], names) == ["b"]
    with pytest.raises(ValueError, match=r"unknown secret\(s\) \['x'\]"):
        webstack.secret_selection("a,x", names)


def test_ssh_peers_take_address_and_host_key_from_facts() -> None:
    hostvars = {"lb-02": {"webstack_address": "10.0.0.3", "ansible_ssh_host_key_ed25519_public": "AAAAkey"},
                "lb-03": {"webstack_address": "10.0.0.4"}}
    assert webstack.ssh_peers(["lb-02"], hostvars, 2222) == [
        {"address": "10.0.0.3", "port": 2222, "host_key": "ssh-ed25519 AAAAkey"}]
    # No facts (unreachable this run): no key, so the role keeps the one it trusted before.
    assert webstack.ssh_peers(["lb-03"], hostvars) == [{"address": "10.0.0.4", "port": 22, "host_key": ""}]


def test_promotion_contradictions_name_a_promoted_replica_and_a_fenced_primary() -> None:
    def state(host: str, role: str | None) -> dict[str, object]:
        if role is None:
            return {"item": host, "failed": True, "msg": "file not found"}
        return {"item": host, "content": base64.b64encode(json.dumps({"role": role}).encode()).decode()}

    assert webstack.promotion_contradictions([state("db-01", None), state("db-02", None)], "db-01") == []
    assert webstack.promotion_contradictions([state("db-01", "fenced"), state("db-02", "primary")], "db-02") == []
    found = webstack.promotion_contradictions([state("db-01", "fenced"), state("db-02", "primary")], "db-01")
    assert found == ["db-01 was fenced (replaced as the primary), but the inventory still names it the primary",
                     "db-02 was promoted to primary, but the inventory names db-01"]
    assert webstack.promotion_contradictions([{"item": "db-03", "unreachable": True}], "db-01") == []


def test_the_last_promotion_decides_and_an_earlier_one_needs_a_reseed() -> None:
    def state(host: str, role: str, at: float | None) -> dict[str, object]:
        record = {"role": role} | ({} if at is None else {"at": at})
        return {"item": host, "content": base64.b64encode(json.dumps(record).encode()).decode()}

    # db-01 promoted (a switch back), lost again, db-02 promoted after it: db-02 is the primary now.
    states = [state("db-01", "primary", 100.0), state("db-02", "primary", 200.0)]
    assert webstack.promotion_contradictions(states, "db-01", reseed=True) == [
        "db-02 was promoted to primary, but the inventory names db-01"]
    assert webstack.promotion_contradictions(states, "db-02", reseed=True) == []
    assert webstack.promotion_contradictions(states, "db-02") == [
        "db-01 was promoted to primary before db-02 was: it holds data of its own, list it as a replica and run once "
        "with -e mysql_replication_reseed=true"]
    # A record without a time (written before records had one) is the oldest.
    assert webstack.promotion_contradictions([state("db-01", "primary", None), state("db-02", "primary", 5.0)],
                                             "db-02", reseed=True) == []
    # Two without one (or at the same time): which is the primary is the operator's call.
    found = webstack.promotion_contradictions([state("db-01", "primary", None), state("db-02", "primary", None)],
                                              "db-02", reseed=True)
    assert len(found) == 1 and found[0].startswith("db-01 and db-02 were each promoted"), found


def test_a_record_whose_time_is_null_counts_as_the_oldest() -> None:
    """As the mysql role reads it (`| float`): null is 0, not an error."""
    def state(host: str, at: object) -> dict[str, object]:
        record = json.dumps({"role": "primary", "at": at}).encode()
        return {"item": host, "content": base64.b64encode(record).decode()}

    assert webstack.promotion_contradictions([state("db-01", None), state("db-02", 5.0)], "db-02", reseed=True) == []
