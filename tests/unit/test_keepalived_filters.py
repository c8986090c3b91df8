"""keepalived role filters: its settings are checked before any change, each error naming the variable."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

PLUGIN = Path(__file__).resolve().parents[2] / "plugins" / "filter" / "keepalived_network.py"
_spec = importlib.util.spec_from_file_location("keepalived_network", PLUGIN)
assert _spec is not None and _spec.loader is not None
keepalived = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(keepalived)

GOOD: dict[str, Any] = {
    "keepalived_vrrp_version": 2, "keepalived_auth_pass": "s3cretpw", "keepalived_advert_int": 1,
    "keepalived_virtual_router_id": 51, "keepalived_priority": 150, "keepalived_preempt_delay": 0,
    "keepalived_vip_prefix": 24, "keepalived_track_interval": 1, "keepalived_track_fall": 2,
    "keepalived_track_rise": 2, "keepalived_track_soft_fall": 3, "keepalived_track_weight": 0,
    "keepalived_nopreempt": False,
    "keepalived_track_command": "/usr/bin/true", "keepalived_instance_name": "VI_1", "keepalived_interface": "eth0",
    "keepalived_vip": "10.0.0.100", "keepalived_unicast_src_ip": "10.0.0.10",
    "keepalived_unicast_peers": ["10.0.0.20"],
}


def test_good_settings_have_no_error() -> None:
    assert keepalived.keepalived_input_errors(GOOD) == []
    assert keepalived.keepalived_input_errors({**GOOD, "keepalived_vrrp_version": 3, "keepalived_auth_pass": "",
                                               "keepalived_advert_int": 0.25}) == []


@pytest.mark.parametrize(("version", "advert", "fine"), [
    (2, 1, True), (2, "255", True), (2, 0.5, False), (2, 1.5, False), (2, 256, False), (2, "x", False),
    (3, 0.25, True), (3, "0.01", True), (3, 40.95, True), (3, 1, True), (3, 0.005, False), (3, 41, False),
    (3, 0, False), (3, True, False),
])
def test_advert_int_suits_the_vrrp_version(version: int, advert: Any, fine: bool) -> None:
    error = keepalived.advert_int_error(version, advert)
    assert (error is None) == fine, error
    if error:
        assert "keepalived_advert_int" in error


def test_vrrpv3_refuses_a_password_it_would_ignore_and_v2_needs_one() -> None:
    v3 = keepalived.keepalived_input_errors({**GOOD, "keepalived_vrrp_version": 3, "keepalived_advert_int": 0.25})
    assert len(v3) == 1 and "keepalived_auth_pass must be empty" in v3[0]
    assert "s3cretpw" not in v3[0]
    v2 = keepalived.keepalived_input_errors({**GOOD, "keepalived_auth_pass": ""})
    assert len(v2) == 1 and "keepalived_auth_pass must be 1-8 characters" in v2[0]
    bad = keepalived.keepalived_input_errors({**GOOD, "keepalived_vrrp_version": 4})
    assert "keepalived_vrrp_version must be 2 or 3" in bad[0]


def test_sub_second_adverts_with_vrrpv2_point_to_version_3() -> None:
    errors = keepalived.keepalived_input_errors({**GOOD, "keepalived_advert_int": 0.25})
    assert len(errors) == 1 and "keepalived_vrrp_version 3" in errors[0]


def test_a_soft_track_needs_a_priority_drop_an_absolute_path_and_preemption() -> None:
    soft = {**GOOD, "keepalived_track_soft_command": "/usr/local/sbin/haproxy-serving web",
            "keepalived_track_soft_weight": -50}
    assert keepalived.keepalived_input_errors(soft) == []
    assert keepalived.keepalived_input_errors({**GOOD, "keepalived_track_soft_weight": 10}) == []  # no soft track
    errors = keepalived.keepalived_input_errors({**soft, "keepalived_track_soft_weight": 10,
                                                 "keepalived_nopreempt": True})
    assert [e.split(" ")[0] for e in errors] == ["keepalived_track_soft_weight", "keepalived_track_soft_command"]
    relative = keepalived.keepalived_input_errors({**soft, "keepalived_track_soft_command": "haproxy-serving"})
    assert "keepalived_track_soft_command must start with an absolute path" in relative[0]
