"""Stage 3 right after its converge, in check mode. Times nothing (marked beside_others, so it runs first): under
make test it runs while the other scenarios still use the CPU; the failover tests wait until they have ended."""

from __future__ import annotations

from pathlib import Path

import pytest
import webstack_probe as probe
from test_stage3 import INVENTORY, changed_tasks


@pytest.mark.beside_others
def test_check_mode_reports_no_changes() -> None:
    """The tiers stage 3 adds or configures its own way: the load balancer pair (keepalived, the shared
    certificate, re-encryption) and the web tier on hosts of its own (TLS from the internal CA). The roles of the
    app and database tiers are checked the same way in stages 1 and 2; a 9-host run would double this test."""
    inventory = str(Path(INVENTORY).parent)
    result, recap = probe.run_playbook(probe.ROOT / "site.yml", inventory, "--check", "--diff",
                                       "--limit", "loadbalancers:webservers")
    changed = {host: counters["changed"] for host, counters in recap.items() if counters["changed"]}
    assert result.returncode == 0 and changed == {}, (changed, changed_tasks(result.stdout))
