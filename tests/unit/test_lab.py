"""Pure parts of the lab tool: naming, inventory parsing, docker arguments."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import lab
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]

INVENTORY = {
    "_meta": {"hostvars": {}},
    "all": {"children": ["ungrouped", "loadbalancers", "webservers", "db_primary"]},
    "loadbalancers": {"hosts": ["lb-01"]},
    "webservers": {"hosts": ["web-01", "web-02"]},
    "db_primary": {"hosts": ["web-01"]},
}


def test_names_carry_the_project_and_stage_prefix() -> None:
    assert lab.container_name(0, "web-01") == "webstack-s0-web-01"
    assert lab.network_name(2) == "webstack-s2"
    assert lab.subnet(1) == "10.250.1.0/24"
    with pytest.raises(ValueError):
        lab.subnet(12)


def test_parse_inventory_collects_groups_per_host() -> None:
    hosts = lab.parse_inventory(INVENTORY, 1)
    assert [h.name for h in hosts] == ["lb-01", "web-01", "web-02"]
    assert hosts[1].groups == ("db_primary", "webservers")
    assert lab.entry_host(hosts).name == "lb-01"


def test_entry_is_first_web_server_without_load_balancer() -> None:
    hosts = lab.parse_inventory({"webservers": {"hosts": ["web-01"]}}, 0)
    assert lab.entry_host(hosts).name == "web-01"
    with pytest.raises(ValueError):
        lab.entry_host([])


def test_run_args_boot_systemd_and_alias_the_entry() -> None:
    host = lab.LabHost("lb-01", ("loadbalancers",), 1)
    args = lab.run_args(host, "img:tag", Path("/k.pub"), entry=True)
    assert args[-2:] == ["img:tag", "/lib/systemd/systemd"]
    assert "--privileged" not in args
    assert "SIGRTMIN+3" in args and "net.ipv4.ip_nonlocal_bind=1" in args
    assert "www.foobar.com" in args and "/k.pub:/etc/webstack-lab/authorized_keys:ro" in args


def test_systemd_flags_come_from_the_one_definition() -> None:
    definition = {"command": "/sbin/init", "stop_signal": "SIGRTMIN+3", "capabilities": ["SYS_ADMIN", "NET_ADMIN"],
                  "security_opts": ["seccomp=unconfined"], "tmpfs": ["/run"], "volumes": ["/a:/b:rw"],
                  "cgroupns_mode": "host"}
    assert lab.systemd_flags(definition) == [
        "--cap-add", "SYS_ADMIN", "--cap-add", "NET_ADMIN", "--security-opt", "seccomp=unconfined",
        "--tmpfs", "/run", "-v", "/a:/b:rw", "--cgroupns=host", "--stop-signal", "SIGRTMIN+3"]
    # Nothing else writes the flags: the Molecule platforms, pebble and the lab all read tools/systemd-container.yml.
    for path in [*ROOT.glob("molecule/*/molecule.yml"), ROOT / "tools" / "pebble.yml", ROOT / "tools" / "lab.py"]:
        text = path.read_text(encoding="utf-8")
        assert "SYS_ADMIN" not in text and "/sys/fs/cgroup" not in text, f"{path}: systemd flags written again"
    for path in ROOT.glob("molecule/*/molecule.yml"):
        platforms = yaml.safe_load(path.read_text(encoding="utf-8"))["platforms"]
        extra = {key for platform in platforms for key in platform} - {
            "name", "hostname", "image", "networks", "groups", "docker_networks"}
        assert not extra, f"{path}: platform keys the shared create playbook ignores: {extra}"


def test_overlay_inventory_holds_only_connection_details() -> None:
    overlay = lab.overlay_inventory({"web-01": "10.250.0.2"}, Path("/key"), Path("/kh"))
    hostvars = overlay["all"]["hosts"]["web-01"]
    assert hostvars["ansible_host"] == "10.250.0.2"
    assert set(hostvars) == {"ansible_host", "ansible_user", "ansible_ssh_private_key_file", "ansible_ssh_common_args"}
    assert overlay["all"]["vars"] == {}
    assert lab.lab_vars(2)["certbot_acme_directory"].startswith("https://pebble:")
    assert lab.lab_vars(1) == {"webstack_rate_limit_exempt": ["10.250.1.1/32"]}


def test_lab_checks_host_keys_against_its_own_known_hosts() -> None:
    overlay = lab.overlay_inventory({"web-01": "10.250.0.2"}, Path("/key"), Path("/lab/known_hosts"))
    args = overlay["all"]["hosts"]["web-01"]["ansible_ssh_common_args"]
    assert "UserKnownHostsFile=/lab/known_hosts" in args and "StrictHostKeyChecking=yes" in args
    assert "/dev/null" not in args and "StrictHostKeyChecking=no" not in args
    scans = {"10.250.0.3": "# 10.250.0.3:22 SSH-2.0-OpenSSH\n10.250.0.3 ssh-ed25519 BBB\n",
             "10.250.0.2": "10.250.0.2 ssh-ed25519 AAA\n\n"}
    assert lab.known_hosts_lines(scans) == ["10.250.0.2 ssh-ed25519 AAA", "10.250.0.3 ssh-ed25519 BBB"]


def test_mitogen_is_the_default_and_can_be_switched_off() -> None:
    assert lab.mitogen_env({})["ANSIBLE_STRATEGY"] == "mitogen_linear"
    assert lab.mitogen_env({})["ANSIBLE_STRATEGY_PLUGINS"].endswith("ansible_mitogen/plugins/strategy")
    assert lab.mitogen_env({"WEBSTACK_MITOGEN": "0"}) == {"ANSIBLE_STRATEGY": "linear"}


def test_role_docs_table_lists_each_variable(tmp_path: Path) -> None:
    import role_docs

    specs = tmp_path / "argument_specs.yml"
    specs.write_text("---\nargument_specs:\n  main:\n    options:\n      x_port:\n        type: int\n"
                     "        default: 80\n        description: Port to listen on.\n      x_names:\n"
                     "        type: list\n        elements: str\n        default: [a]\n"
                     "        description: Names | aliases.\n")
    table = role_docs.variables_table(specs).splitlines()
    assert table[2] == "| `x_port` | int | `80` | Port to listen on. |"
    assert table[3] == '| `x_names` | list of str | `["a"]` | Names \\| aliases. |'
    readme = "# x\n\n## Variables\n\nold\n\n## Example\n\ny\n"
    assert role_docs.with_table(readme, "T") == "# x\n\n## Variables\n\nT\n\n## Example\n\ny\n"


WRK_OUTPUT = """Running 10s test @ http://10.250.1.4/api/items
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    10.20ms    3.10ms  40.00ms   80.00%
  Latency Distribution
     50%    9.80ms
     75%   11.00ms
     90%   13.00ms
     99%   21.50ms
  15000 requests in 10.00s, 3.00MB read
  Socket errors: connect 0, read 1, write 0, timeout 2
  Non-2xx or 3xx responses: 4
Requests/sec:   1500.25
Transfer/sec:    300.00KB
"""


def test_parse_wrk_reads_rate_p99_and_errors() -> None:
    import bench

    assert bench.parse_wrk(WRK_OUTPUT) == {"rps": 1500.25, "p99_ms": 21.5, "errors": 7}
    assert bench.parse_wrk(WRK_OUTPUT.replace("21.50ms", "1.20s"))["p99_ms"] == 1200.0
    with pytest.raises(ValueError):
        bench.parse_wrk("garbage")


def test_converge_targets_scale_with_the_package_floor() -> None:
    import bench

    assert bench.targets(13.3)["rerun_max_s"] == 7.8
    assert bench.targets(10.0) == {"fresh_max_s": 15.0, "rerun_max_s": 5.8}
    assert bench.targets(26.6) == {"fresh_max_s": 39.9, "rerun_max_s": 15.5}


def test_latency_summary_is_median_p95_and_worst_in_ms() -> None:
    import bench

    seconds = [i / 1000 for i in range(100, 0, -1)]  # 1 ms .. 100 ms, unordered
    assert bench.latency_summary(seconds) == {"count": 100, "p50_ms": 51.0, "p95_ms": 96.0, "max_ms": 100.0}
    assert bench.latency_summary([0.004]) == {"count": 1, "p50_ms": 4.0, "p95_ms": 4.0, "max_ms": 4.0}


def test_linear_env_drops_the_mitogen_plugin_path() -> None:
    env = lab.linear_env({"ANSIBLE_STRATEGY_PLUGINS": "/x", "ANSIBLE_STRATEGY": "mitogen_linear", "HOME": "/root"})
    assert env == {"ANSIBLE_STRATEGY": "linear", "HOME": "/root"}


def test_the_virtual_ip_comes_from_the_inventory_and_stays_out_of_dockers_range() -> None:
    document = {"_meta": {"hostvars": {"lb-01": {"webstack_stage": 3, "webstack_vip": "10.250.3.100"},
                                       "lb-02": {"webstack_vip": "10.250.3.100"}}}}
    assert lab.inventory_vip(document) == "10.250.3.100"
    assert lab.inventory_vip({"_meta": {"hostvars": {"web-01": {"webstack_stage": 0}}}}) == ""
    assert ipaddress.ip_address("10.250.3.100") not in ipaddress.ip_network(lab.container_range(3))
    assert ipaddress.IPv4Network(lab.container_range(3)).subnet_of(ipaddress.IPv4Network(lab.subnet(3)))


def test_hosts_have_fixed_addresses_outside_dockers_range_and_below_the_vip() -> None:
    assert lab.host_address(3, 0) == "10.250.3.64"
    last = ipaddress.IPv4Address(lab.host_address(3, lab.HOSTS_MAX - 1))
    assert last < ipaddress.IPv4Address("10.250.3.100")
    assert ipaddress.ip_address(lab.host_address(3, 0)) not in ipaddress.ip_network(lab.container_range(3))
    with pytest.raises(ValueError, match="at most"):
        lab.host_address(3, lab.HOSTS_MAX)
    host = lab.LabHost(name="web-01", groups=("webservers",), stage=1)
    args = lab.run_args(host, "img:tag", Path("/k.pub"), entry=False, address="10.250.1.64")
    assert args[args.index("--ip") + 1] == "10.250.1.64"


def test_play_runs_a_playbook_with_the_labs_inventory_and_environment(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lab, "BUILD", tmp_path)
    with pytest.raises(SystemExit, match="make lab STAGE=1 first"):
        lab.play(1, "playbooks/deploy.yml", [])
    (tmp_path / "stage1").mkdir()
    (tmp_path / "stage1" / "lab.yml").write_text("{}\n", encoding="utf-8")
    seen: dict[str, object] = {}

    def run(cmd: list[str], cwd: Path, env: dict[str, str], check: bool) -> object:
        seen.update(cmd=cmd, env=env)
        return type("Done", (), {"returncode": 4})()

    monkeypatch.setattr("lab.subprocess.run", run)
    assert lab.main(["play", "1", "playbooks/deploy.yml", "-e", "deploy_ref=HEAD"]) == 4
    cmd = seen["cmd"]
    assert isinstance(cmd, list) and cmd[-2:] == ["-e", "deploy_ref=HEAD"]
    assert cmd[2:6] == ["-i", str(lab.ROOT / "inventories" / "stage1"), "-i", str(tmp_path / "stage1" / "lab.yml")]
    env = seen["env"]
    assert isinstance(env, dict) and env["WEBSTACK_SECRETS_DIR"] == str(tmp_path / "stage1" / "secrets")


def test_only_play_takes_playbook_arguments() -> None:
    with pytest.raises(SystemExit):
        lab.main(["play", "1"])
    with pytest.raises(SystemExit):
        lab.main(["smoke", "1", "-e", "x=1"])


def test_the_promoted_inventory_swaps_the_database_groups_only(tmp_path: Path) -> None:
    import webstack_probe as probe

    copy = probe.promoted_inventory(ROOT / "inventories" / "stage3", tmp_path / "stage3", "hosts.yml")
    original = yaml.safe_load((ROOT / "inventories" / "stage3" / "hosts.yml").read_text(encoding="utf-8"))
    swapped = yaml.safe_load((copy / "hosts.yml").read_text(encoding="utf-8"))
    before, after = original["all"]["children"], swapped["all"]["children"]
    assert after["db_primary"] == before["db_replicas"] and after["db_replicas"] == before["db_primary"]
    assert {k: v for k, v in after.items() if not k.startswith("db_")} == {
        k: v for k, v in before.items() if not k.startswith("db_")}
    assert (copy / "group_vars").is_dir() and not (copy / "group_vars").is_symlink()


def test_write_figures_count_the_gap_and_the_writes_the_primary_lacks() -> None:
    import bench
    import webstack_probe as probe

    writer = probe.Writer("192.0.2.1")
    writer.acknowledged = [(10.0, 1), (10.1, 2), (14.6, 3), (14.7, 4)]
    writer.failed = ["503", "503"]
    assert writer.ids(until=10.1) == {1, 2} and writer.acknowledged_after(14.6) and not writer.acknowledged_after(15)
    assert bench.write_figures(writer, 10.5, {1, 2, 3}) == {
        "acknowledged": 4, "failed": 2, "longest_write_gap_s": 4.5, "first_write_after_s": 4.1,
        "acknowledged_missing": 1}
    assert bench.write_figures(writer, 20.0, {1, 2, 3, 4})["first_write_after_s"] is None
