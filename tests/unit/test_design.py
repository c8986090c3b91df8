"""Design reports: the single points of failure each stage's inventory implies, and the committed docs are fresh."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import design
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[int, dict[str, Any]]:
    """The four stages' models, from their inventories and the wiring (ansible-playbook, no host contacted)."""
    out = tmp_path_factory.mktemp("design")
    with ThreadPoolExecutor(4) as pool:  # four ansible-playbook runs at once
        models = pool.map(lambda n: design.collect(ROOT / "inventories" / f"stage{n}", out / f"stage{n}.json"),
                          range(4))
        return dict(enumerate(models))


def test_stage0_one_server_is_a_spof_for_everything(models: dict[int, dict[str, Any]]) -> None:
    assert design.spofs(models[0]) == {"site down": ["web-01"], "writes down": [], "monitoring down": []}
    assert design.host_loss(models[0], "web-01").why == "the only web server and app server and database"


def test_stage1_the_lb_for_the_site_and_the_primary_for_writes(models: dict[int, dict[str, Any]]) -> None:
    assert design.spofs(models[1]) == {"site down": ["lb-01"], "writes down": ["web-01"], "monitoring down": []}
    assert design.host_loss(models[1], "web-02").effect == "nothing"


def test_stage2_adds_a_single_monitoring_server(models: dict[int, dict[str, Any]]) -> None:
    assert design.spofs(models[2]) == {"site down": ["lb-01"], "writes down": ["web-01"],
                                       "monitoring down": ["mon-01"]}


def test_stage3_no_spof_on_the_read_path_the_primary_for_writes(models: dict[int, dict[str, Any]]) -> None:
    model = models[3]
    assert design.spofs(model) == {"site down": [], "writes down": ["db-01"], "monitoring down": ["mon-01"]}
    holder = design.host_loss(model, "lb-01")
    assert holder.effect == "failover gap" and holder.gap_s == 1.5  # VRRPv3, 0.25 s adverts
    assert design.host_loss(model, "db-02").effect == "nothing"
    assert design.read_hosts(model, "app-01") == ["db-02", "db-01"]


def test_the_flows_are_the_firewall_rules_sources(models: dict[int, dict[str, Any]]) -> None:
    labels = {(e.source, e.target, e.label) for e in design.edges(models[3])}
    assert ("loadbalancers", "web-01", "tcp/8443") in labels
    assert ("webservers", "app-01", "tcp/8000") in labels
    assert ("loadbalancers", "lb-02", "vrrp") in labels
    assert ("any", "lb-01", "tcp/443") in labels
    assert not any(target.startswith("db") and source == "webservers" for source, target, _ in labels)


def test_a_bigger_stage_has_no_new_spof() -> None:
    """A model edited by hand: three app hosts over one replica, the app tier colocated nowhere."""
    model: dict[str, Any] = {
        "entry_group": "loadbalancers", "vip": "10.0.0.100", "vrrp": {"version": 2, "advert_int": 1},
        "groups": {"loadbalancers": ["lb-01", "lb-02"], "webservers": ["web-01"], "appservers": ["a1", "a2", "a3"],
                   "db_primary": ["db-01"], "db_replicas": ["db-02"], "monitoring": []},
        "hosts": {h: {"groups": [], "roles": [], "flows": []}
                  for h in ["lb-01", "lb-02", "web-01", "a1", "a2", "a3", "db-01", "db-02"]},
    }
    assert design.spofs(model)["site down"] == ["web-01"]
    assert design.host_loss(model, "lb-01").gap_s == 4.5
    assert design.read_hosts(model, "a3") == ["db-02", "db-01"]
    assert design.serving(model, {"lb-02", "web-01", "a2", "db-01"}) == (True, True)
    assert design.serving(model, {"lb-02", "web-01", "a2", "db-02"}) == (True, False)


@pytest.mark.parametrize("stage", range(4))
def test_the_committed_design_docs_are_fresh(models: dict[int, dict[str, Any]], stage: int) -> None:
    """docs/design/ is what `make design-docs` writes for the current inventories and wiring."""
    committed = design.DOCS / f"stage{stage}.md"
    assert committed.read_text(encoding="utf-8") == design.report(models[stage]), \
        f"{committed} is stale: run make design-docs"
    digest = design.model_digest(models[stage])
    assert f"model {digest}" in (design.DOCS / f"stage{stage}.svg").read_text(encoding="utf-8"), \
        f"docs/design/stage{stage}.svg is stale: run make design-docs"
