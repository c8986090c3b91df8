"""Helpers for the Molecule verifiers: reach the stack from the controller like a client would."""

from __future__ import annotations

import http.client
import itertools
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import yaml

ROOT = Path(__file__).resolve().parents[2]
SITE = "www.foobar.com"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def inventory() -> dict[str, Any]:
    path = os.environ["MOLECULE_INVENTORY_FILE"]
    return dict(yaml.safe_load(Path(path).read_text(encoding="utf-8")))


def group_hosts(group: str) -> list[str]:
    return list((inventory()["all"]["children"].get(group) or {}).get("hosts", {}) or {})


def container_address(container: str) -> str:
    out = subprocess.run(["docker", "inspect", "-f", "{{json .NetworkSettings.Networks}}", container],
                         check=True, capture_output=True, text=True).stdout
    networks = json.loads(out)
    return str(next(iter(networks.values()))["IPAddress"])


def request(address: str, method: str, path: str, body: Any = None, port: int = 80,
            timeout: float = 5.0, headers: dict[str, str] | None = None, cafile: str | None = None) -> Reply:
    """One HTTP request to `address`; with `cafile`, HTTPS on port 443 verified for the site's name."""
    conn: http.client.HTTPConnection
    if cafile:
        context = ssl.create_default_context(cafile=cafile)
        conn = http.client.HTTPSConnection(address, 443 if port == 80 else port, timeout=timeout, context=context)
        conn.sock = context.wrap_socket(socket.create_connection((address, conn.port), timeout=timeout),
                                        server_hostname=SITE)
    else:
        conn = http.client.HTTPConnection(address, port, timeout=timeout)
    payload = None
    all_headers = {"Host": SITE, **(headers or {})}
    if body is not None:
        payload = body if isinstance(body, bytes) else json.dumps(body).encode("utf-8")
        all_headers.setdefault("Content-Type", "application/json")
    try:
        conn.request(method, path, body=payload, headers=all_headers)
        response = conn.getresponse()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        conn.close()


def burst(address: str, path: str, clients: int, per_client: int, stop_at: int | None = None) -> list[int]:
    """Statuses of `clients` threads sending `per_client` GETs each over one kept-alive connection apiece (a
    reconnect after a closed connection); all stop at the first `stop_at` status. Bounded: clients * per_client."""
    statuses: list[int] = []
    stop = threading.Event()

    def client() -> None:
        conn = http.client.HTTPConnection(address, 80, timeout=10)
        try:
            for _ in range(per_client):
                if stop.is_set():
                    return
                try:
                    conn.request("GET", path, headers={"Host": SITE})
                    response = conn.getresponse()
                    response.read()
                except (OSError, http.client.HTTPException):
                    conn.close()
                    statuses.append(0)
                    continue
                statuses.append(response.status)
                if response.status == stop_at:
                    stop.set()
                if response.will_close:
                    conn.close()
        finally:
            conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    return statuses


def pebble_root(container: str, listener_ca: Path) -> bytes:
    """A pebble CA's issuing root, from its management API (port 15000, served with the listener CA)."""
    context = ssl.create_default_context(cafile=str(listener_ca))
    context.check_hostname = False
    conn = http.client.HTTPSConnection(container_address(container), 15000, context=context, timeout=10)
    try:
        conn.request("GET", "/roots/0")
        return conn.getresponse().read()
    finally:
        conn.close()


FETCH_SCRIPT = r"""
import json, sys, urllib.error, urllib.request
request = urllib.request.Request(sys.argv[1], headers={"Host": sys.argv[2]})
try:
    with urllib.request.urlopen(request, timeout=5) as reply:
        print(json.dumps([reply.status, reply.read().decode("utf-8", "replace")]))
except urllib.error.HTTPError as error:
    print(json.dumps([error.code, error.read().decode("utf-8", "replace")]))
"""


def get_from(container: str, address: str, path: str, port: int = 80) -> Reply:
    """GET sent from inside `container` (where the firewall lets only some hosts reach a port)."""
    try:
        out = subprocess.run(["docker", "exec", container, "python3", "-c", FETCH_SCRIPT,
                              f"http://{address}:{port}{path}", SITE],
                             check=False, capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired as error:  # a stalled docker exec fails like any other unanswered GET
        raise OSError(f"GET {address}:{port}{path} from {container}: no answer in 30 s") from error
    if out.returncode != 0:
        raise OSError(f"GET {address}:{port}{path} from {container}: {out.stderr.strip()[-300:]}")
    status, body = json.loads(out.stdout)
    return Reply(int(status), {}, str(body).encode("utf-8"))


def get_json_from(container: str, address: str, path: str, port: int = 80) -> Any:
    """get_from's JSON body; anything but 200 raises OSError (with the start of the body: an API's error text)."""
    reply = get_from(container, address, path, port)
    if reply.status != 200:
        raise OSError(f"GET {address}:{port}{path} from {container}: {reply.status} {reply.body[:300]!r}")
    return reply.json()


def unique_text(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def wait_for(predicate: Any, timeout: float, interval: float = 0.5) -> bool:
    """Poll predicate() until it is truthy or `timeout` seconds pass (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except OSError:
            pass
        time.sleep(interval)
    return False


def parse_recap(stdout: str) -> dict[str, dict[str, int]]:
    """PLAY RECAP counters per host from ansible-playbook output (colour codes removed)."""
    plain = re.sub(r"\x1b\[[0-9;]*m", "", stdout)
    recap: dict[str, dict[str, int]] = {}
    for line in plain.split("PLAY RECAP")[-1].splitlines():
        match = re.match(r"^(\S+)\s+:\s+(ok=.*)$", line.strip())
        if match:
            recap[match.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(2))}
    return recap


def run_playbook(playbook: Path, inventory: str, *extra: str, env: dict[str, str] | None = None
                 ) -> tuple[subprocess.CompletedProcess[str], dict[str, dict[str, int]]]:
    """Run a playbook with the repository's roles and filters (`env` on top); return the result and its recap."""
    environ = dict(os.environ,
                   ANSIBLE_ROLES_PATH=str(ROOT / "roles"),
                   ANSIBLE_FILTER_PLUGINS=str(ROOT / "filter_plugins"),
                   ANSIBLE_COLLECTIONS_PATH=str(ROOT / "collections"),
                   ANSIBLE_PIPELINING="true",
                   ANSIBLE_NOCOLOR="1",
                   ANSIBLE_FORCE_COLOR="0",
                   **(env or {}))
    result = subprocess.run(["ansible-playbook", "-i", inventory, str(playbook), *extra],
                            env=environ, capture_output=True, text=True, timeout=900, check=False)
    recap = parse_recap(result.stdout)
    assert recap, result.stdout[-3000:] + result.stderr[-2000:]
    return result, recap


def scenario_inventory() -> str:
    """The scenario's whole inventory directory, as Molecule's own converge uses it (its linked connection settings
    too)."""
    return str(Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent)


# When wait_alone gives up: one deadline for the whole test session, set by its first call.
ALONE_DEADLINE: list[float] = []


def wait_alone(timeout: float = 3600) -> None:
    """Under tools/molecule_run.py's /solo: wait (bounded) until the other scenarios running beside this one have
    ended (the file WEBSTACK_ALONE_FILE names exists), so a test that times failovers has the CPU to itself. Outside
    it (the variable unset: a scenario run alone), at once. The bound is the session's, not each test's: once it
    has passed, every later call fails at once."""
    flag = os.environ.get("WEBSTACK_ALONE_FILE")
    if not flag:
        return
    if not ALONE_DEADLINE:
        ALONE_DEADLINE.append(time.monotonic() + timeout)
    left = max(0.0, ALONE_DEADLINE[0] - time.monotonic())
    if not Path(flag).exists() and not wait_for(lambda: Path(flag).exists(), left, interval=2):
        raise AssertionError(f"the scenarios beside this one did not end within {timeout:g} s ({flag} absent)")


def playbook_recap(*extra: str) -> dict[str, dict[str, int]]:
    """Run site.yml against the scenario's hosts (must succeed) and return the PLAY RECAP counters."""
    result, recap = run_playbook(ROOT / "site.yml", scenario_inventory(), *extra)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    return recap


def in_rotation(lb: str, server: str, timeout: float) -> bool:
    """Wait (bounded) until `server` answers one of 4 requests through the load balancer again."""
    return wait_for(lambda: server in {request(lb, "GET", "/").headers["x-served-by"] for _ in range(4)},
                    timeout=timeout)


def node(name: str) -> Any:
    """A testinfra host of the scenario's inventory."""
    import testinfra

    return testinfra.get_host(f"ansible://{name}?ansible_inventory={os.environ['MOLECULE_INVENTORY_FILE']}")


BACKUPS = "/var/backups/mariadb"  # the wiring's webstack_backup_directory


def table_state(host: Any, table: str) -> tuple[int, str]:
    """Rows and CHECKSUM TABLE of `table` on a testinfra host's MariaDB: equal when the contents are."""
    rows = host.check_output(f'mariadb -N -B -e "SELECT COUNT(*) FROM {table}; CHECKSUM TABLE {table}"').split()
    return int(rows[0]), rows[-1]


def boot_container(name: str, hostname: str, network: str, address: str, image: str,
                   aliases: tuple[str, ...] = ()) -> None:
    """Start a host booted like the scenario's platforms (systemd as PID 1, tools/systemd-container.yml) at `address`
    of `network`, and wait (bounded) until systemd has finished booting it."""
    sys.path.insert(0, str(ROOT / "tools"))
    import lab

    names = [arg for alias in aliases for arg in ("--network-alias", alias)]
    subprocess.run(["docker", "run", "-d", "--name", name, "--hostname", hostname, "--network", network,
                    "--ip", address, *names, "--label", "owner=molecule", *lab.SYSTEMD_FLAGS, image,
                    lab.SYSTEMD["command"]], check=True, capture_output=True)
    assert wait_booted(name), f"{name}: systemd did not finish booting"


def wait_booted(container: str, timeout: float = 60) -> bool:
    """Wait (bounded) until systemd in `container` has finished booting (running, or degraded). Polled: right after
    a start `systemctl is-system-running --wait` can fail at once, before systemd answers on its bus."""
    return wait_for(lambda: subprocess.run(["docker", "exec", container, "systemctl", "is-system-running"],
                                           capture_output=True, text=True, check=False).stdout.strip()
                    in ("running", "degraded"), timeout=timeout)


def start_booted(container: str) -> bool:
    """`docker start` a stopped (killed) container and wait (bounded) until its systemd has booted."""
    subprocess.run(["docker", "start", container], check=True, capture_output=True)
    return wait_booted(container)


@contextmanager
def spare_container(name: str, hostname: str, network: str, address: str, image: str) -> Iterator[str]:
    """A new machine to scale out onto (boot_container), in no inventory. Yields its name; removed afterwards."""
    try:
        boot_container(name, hostname, network, address, image)
        yield name
    finally:
        subprocess.run(["docker", "rm", "-f", name], check=False, capture_output=True)


def replace_container(name: str) -> None:
    """The machine `name` lost for good (`docker rm -f`: its disks too) and a new one in its place from the same
    bare image: same name, hostname, network, address and network aliases, nothing installed."""
    inspected = json.loads(subprocess.run(["docker", "inspect", name], check=True, capture_output=True,
                                          text=True).stdout)[0]
    (network, settings), = inspected["NetworkSettings"]["Networks"].items()
    # The address asked for at creation, else the one it has (empty on a stopped container): known before the rm.
    address = (settings.get("IPAMConfig") or {}).get("IPv4Address") or settings["IPAddress"]
    assert address, f"{name}: no address to give its replacement"
    aliases = tuple(alias for alias in settings.get("Aliases") or ()
                    if alias not in (name, inspected["Config"]["Hostname"], inspected["Id"][:12]))
    subprocess.run(["docker", "rm", "-f", "-v", name], check=True, capture_output=True)
    # The image it was made from (its id: the tag may name a newer build by now).
    boot_container(name, inspected["Config"]["Hostname"], network, address, inspected["Image"], aliases)


def promoted_inventory(source: Path, target: Path, name: str) -> Path:
    """The inventory directory `source` copied to `target` (links resolved) with the edit promote.yml asks for in its
    file `name`: the replica in db_primary, the primary in db_replicas (groups at the top, or under all.children)."""
    shutil.copytree(source, target, symlinks=False)
    path = target / name
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    groups = document if "db_primary" in document else document["all"]["children"]
    groups["db_primary"], groups["db_replicas"] = groups["db_replicas"], groups["db_primary"]
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return target


def take_backup(host: Any, directory: str = BACKUPS) -> str:
    """Run the backup role's service now and wait for it; return the new backup's name, its checksums verified."""
    host.check_output("systemctl start webstack-backup.service")
    newest = str(host.check_output(f"ls {directory} | tail -n 1"))
    host.check_output(f"cd {directory}/{newest} && sha256sum --quiet --strict -c SHA256SUMS")
    return newest


@contextmanager
def stopped(host: Any, service: str) -> Iterator[None]:
    """Stop a service for the duration of the block; always start it again."""
    host.run(f"systemctl stop {service}")
    try:
        yield
    finally:
        host.run(f"systemctl start {service}")


SCAN_SCRIPT = r"""
import json, socket, sys, concurrent.futures as cf
targets = json.loads(sys.argv[1]); timeout = float(sys.argv[2])
def probe(t):
    s = socket.socket(); s.settimeout(timeout)
    try:
        s.connect((t[0], t[1])); return "open"
    except ConnectionRefusedError:
        return "refused"
    except OSError:
        return "filtered"
    finally:
        s.close()
with cf.ThreadPoolExecutor(64) as pool:
    print(json.dumps(dict(zip([f"{a}:{p}" for a, p in targets], pool.map(probe, targets)))))
"""


def scan(container: str | None, targets: list[tuple[str, int]], timeout: float = 2.0) -> dict[str, str]:
    """TCP connect from inside `container` (None: from the controller, an outsider to every group) to each
    (address, port), in parallel (bounded by `timeout`).

    open = handshake done, refused = RST (closed but not filtered), filtered = no answer within timeout.
    """
    where = ["docker", "exec", container, "python3"] if container else [sys.executable]
    out = subprocess.run([*where, "-c", SCAN_SCRIPT, json.dumps(targets), str(timeout)],
                         check=True, capture_output=True, text=True, timeout=60).stdout
    return dict(json.loads(out))


@dataclass
class Outcome:
    """One request of a load loop: when it started, how long it took, and what came back."""

    started: float
    seconds: float
    status: int | None
    error: str = ""
    write: bool = False

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 400


@dataclass
class LoadLoop:
    """A bounded request loop in a thread: `interval` apart, at most `limit` requests, stops when told to.

    With `write_every` = n, every n-th request is a POST of a new item (the write path to the primary); with
    `cafile`, requests go over HTTPS, verified against it. With `overlap`, each request starts `interval` after the
    previous one started, in a thread of its own, without waiting for it to end (at most timeout / interval + 1 in
    flight): a request hanging on a dead host then no longer delays the next, so `max_gap` measures how long the
    service answered nobody (as many independent clients see it), not the client's timeout.
    """

    address: str
    path: str = "/api/items"
    interval: float = 0.1
    timeout: float = 15.0
    limit: int = 600
    write_every: int = 0
    cafile: str | None = None
    overlap: bool = False
    outcomes: list[Outcome] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []
        self.launched = 0  # requests started; once the loop has ended, each has its outcome (see `finished`)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _one(self, write: bool) -> None:
        start = time.monotonic()
        try:
            if write:
                status: int | None = request(self.address, "POST", "/api/items", {"text": unique_text("load")},
                                             timeout=self.timeout, cafile=self.cafile).status
            else:
                status = request(self.address, "GET", self.path, timeout=self.timeout, cafile=self.cafile).status
            error = ""
        except (OSError, http.client.HTTPException) as exc:  # every way a request can fail is an outcome
            status, error = None, repr(exc)
        with self._lock:
            self.outcomes.append(Outcome(start, time.monotonic() - start, status, error, write))

    def _run(self) -> None:
        launched = 0
        while not self._stop.is_set() and launched < self.limit:
            start = time.monotonic()
            write = self.write_every > 0 and launched % self.write_every == self.write_every - 1
            launched += 1
            self.launched = launched
            if self.overlap:
                worker = threading.Thread(target=self._one, args=(write,), daemon=True)
                worker.start()
                self._workers.append(worker)
            else:
                self._one(write)
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - start)))
        for worker in self._workers:
            worker.join(timeout=self.timeout + 5)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2 * self.timeout + 10)

    def finished(self) -> list[Outcome]:
        """The outcomes once the loop has ended; raises if a request started has none (still hanging)."""
        with self._lock:
            outcomes = list(self.outcomes)
        if len(outcomes) != self.launched:
            raise AssertionError(f"{self.launched - len(outcomes)} request(s) of {self.launched} never finished")
        return outcomes

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    @property
    def max_gap(self) -> float:
        """Longest time between the end of one successful request and the end of the next."""
        ends = sorted(o.started + o.seconds for o in self.outcomes if o.ok)
        return max((b - a for a, b in itertools.pairwise(ends)), default=0.0)

    def summary(self) -> str:
        return (f"ok={len(self.outcomes) - len(self.failed)} fail={len(self.failed)} "
                f"maxgap={self.max_gap:.2f}s slowest={max((o.seconds for o in self.outcomes), default=0):.2f}s "
                f"failures={[(o.status, o.error) for o in self.failed][:5]}")


@dataclass
class Writer:
    """POSTs a new item to `address` every `interval` s in a thread, at most `limit`, until stopped; records each
    acknowledged id with when its answer came, and the failures (for what a failover keeps and loses)."""

    address: str
    cafile: str | None = None
    interval: float = 0.1
    limit: int = 1500
    acknowledged: list[tuple[float, int]] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        for _ in range(self.limit):
            if self.stop.is_set():
                return
            try:
                reply = request(self.address, "POST", "/api/items", {"text": unique_text("writer")}, timeout=10,
                                cafile=self.cafile)
                if reply.status == 201:
                    self.acknowledged.append((time.monotonic(), int(reply.json()["id"])))
                else:
                    self.failed.append(str(reply.status))
            except (OSError, http.client.HTTPException) as exc:
                self.failed.append(repr(exc))
            self.stop.wait(self.interval)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)

    def acknowledged_after(self, moment: float) -> bool:
        return any(at > moment for at, _ in self.acknowledged)

    def ids(self, until: float = float("inf")) -> set[int]:
        """The ids acknowledged up to `until` (monotonic time), all by default."""
        return {item for at, item in self.acknowledged if at <= until}

    @property
    def longest_gap(self) -> float:
        """Longest time between two acknowledgements in a row: how long writes were not taken."""
        return max((b - a for (a, _), (b, _) in itertools.pairwise(self.acknowledged)), default=0.0)


@contextmanager
def load_clients(address: str, count: int, **settings: Any) -> Iterator[list[LoadLoop]]:
    """`count` LoadLoops against `address` at once, each with `settings` (interval, limit, write_every, ...), all
    stopped when the block ends."""
    with ExitStack() as stack:
        yield [stack.enter_context(LoadLoop(address, **settings)) for _ in range(count)]


def outcomes_of(loops: list[LoadLoop]) -> list[Outcome]:
    """Every outcome of loops that have ended (LoadLoop.finished: raises if a request never finished)."""
    return [outcome for loop in loops for outcome in loop.finished()]


def code_base(directory: Path, change: str) -> Path:
    """A copy of the working copy's app/ under `directory` with `change` appended to its WSGI module: a code base
    with a release id of its own, to deploy."""
    copy = directory / "app"
    shutil.copytree(ROOT / "app", copy, ignore=shutil.ignore_patterns("__pycache__"))
    wsgi = copy / "foobar_app" / "wsgi.py"
    wsgi.write_text(wsgi.read_text(encoding="utf-8") + change, encoding="utf-8")
    return copy


@contextmanager
def disconnected(container: str) -> Iterator[None]:
    """Cut a container off its network (a host that is gone but not refusing); always reconnect it, same address."""
    out = subprocess.run(["docker", "inspect", container], check=True, capture_output=True, text=True).stdout
    info = json.loads(out)[0]
    network, settings = next(iter(info["NetworkSettings"]["Networks"].items()))
    subprocess.run(["docker", "network", "disconnect", network, container], check=True, capture_output=True)
    try:
        yield
    finally:
        aliases = [a for a in settings.get("Aliases") or [] if a not in (container, info["Id"][:12])]
        extra = [arg for alias in aliases for arg in ("--alias", alias)]
        subprocess.run(["docker", "network", "connect", "--ip", settings["IPAddress"], *extra, network, container],
                       check=True, capture_output=True)


# --- A virtual IP shared by containers (stage 3) -----------------------------------------------------------


def vip_holders(containers: list[str], vip: str) -> list[str]:
    """The containers that have `vip` on an interface now (a killed one answers nothing and is not listed)."""
    holders = []
    for container in containers:
        shown = subprocess.run(["docker", "exec", container, "ip", "-4", "-o", "addr", "show"], check=False,
                               capture_output=True, text=True, timeout=10)
        if shown.returncode == 0 and f"inet {vip}/" in shown.stdout:
            holders.append(container)
    return holders


def wait_for_holder(containers: list[str], vip: str, expected: str | None = None, timeout: float = 20) -> str:
    """Wait (bounded) until exactly one of `containers` holds the VIP (and it is `expected`, if given)."""
    found: list[str] = []

    def settled() -> bool:
        found[:] = vip_holders(containers, vip)
        return len(found) == 1 and expected in (None, found[0])

    assert wait_for(settled, timeout=timeout, interval=0.2), f"VIP holders {found} (expected {expected})"
    settle_neighbour(found[0], vip)
    return found[0]


def neighbour_mac(address: str) -> str:
    """The MAC the controller's neighbour (ARP) entry for `address` names, or "" when it has none."""
    shown = subprocess.run(["ip", "neigh", "show", "to", address], check=False, capture_output=True, text=True,
                           timeout=10).stdout
    match = re.search(r"lladdr (\S+)", shown)
    return match.group(1) if match else ""


def settle_neighbour(holder: str, vip: str, timeout: float = 6) -> bool:
    """After the VIP moved, the controller (the client here) must send to the holder: wait (bounded) for the
    holder's gratuitous ARPs to reach its neighbour entry. When they do not in time, that is said (a warning in
    pytest's summary, False returned) and the entry is dropped so the next packet asks again (only the holder
    answers): what a test does next is then not charged with the VIP move's cost."""
    shown = subprocess.run(["docker", "exec", holder, "ip", "-4", "-o", "addr", "show"], check=True,
                           capture_output=True, text=True, timeout=10).stdout
    interface = next((line.split()[1] for line in shown.splitlines() if f"inet {vip}/" in line), "eth0")
    mac = subprocess.run(["docker", "exec", holder, "cat", f"/sys/class/net/{interface}/address"], check=True,
                         capture_output=True, text=True, timeout=10).stdout.strip()
    if wait_for(lambda: neighbour_mac(vip) in ("", mac), timeout=timeout, interval=0.2):
        return True
    stale = neighbour_mac(vip)
    flushed = subprocess.run(["ip", "neigh", "flush", "to", vip], check=False, capture_output=True,
                             timeout=10).returncode == 0
    warnings.warn(f"{timeout} s after the VIP moved to {holder} ({mac}), the controller still sent {vip} to "
                  f"{stale}: {'entry flushed' if flushed else 'could not flush the entry'}", stacklevel=2)
    return False


def host_side_interface(container: str) -> str:
    """The controller-side end of the container's eth0 (its veth peer on the docker bridge)."""
    index = subprocess.run(["docker", "exec", container, "cat", "/sys/class/net/eth0/iflink"], check=True,
                           capture_output=True, text=True).stdout.strip()
    for link in Path("/sys/class/net").iterdir():
        if (link / "ifindex").read_text(encoding="utf-8").strip() == index:
            return link.name
    raise OSError(f"no interface of index {index} here: is docker running on this host?")


@contextmanager
def cut_off(container: str) -> Iterator[None]:
    """Drop every frame in and out of the container, ARP and raw sockets included (a `blackhole` qdisc on both ends
    of its veth); the link stays up, as when the host hangs off a dead switch port or a partitioned network."""
    ends = [["docker", "exec", container, "tc", "qdisc", "{}", "dev", "eth0", "root"],
            ["tc", "qdisc", "{}", "dev", host_side_interface(container), "root"]]
    applied: list[list[str]] = []
    try:
        for end in ends:
            subprocess.run([arg.format("replace") for arg in end] + ["blackhole"], check=True, capture_output=True)
            applied.append(end)
        yield
    finally:
        left = [end for end in applied
                if subprocess.run([arg.format("del") for arg in end], check=False, capture_output=True).returncode]
        if left:
            raise OSError(f"{container} may still be cut off: could not remove {left}")


@contextmanager
def killed(container: str) -> Iterator[None]:
    """`docker kill` (no clean shutdown), then start it again and wait until its systemd is up."""
    subprocess.run(["docker", "kill", container], check=True, capture_output=True)
    try:
        yield
    finally:
        start_booted(container)


@contextmanager
def service_stopped(container: str, service: str) -> Iterator[None]:
    """`systemctl stop` a service inside a container for the block; always start it again."""
    subprocess.run(["docker", "exec", container, "systemctl", "stop", service], check=True, capture_output=True)
    try:
        yield
    finally:
        subprocess.run(["docker", "exec", container, "systemctl", "start", service], check=False,
                       capture_output=True)


def crash_then_hang(container: str, service: str, hang_s: float = 6.0) -> None:
    """Inside a load loop the caller runs: 3 s of normal service, then `service` SIGKILLed (systemd restarts it),
    4 s later frozen with SIGSTOP for `hang_s` (every call to it times out), resumed (SIGCONT, always), 4 s more."""

    def signal(name: str) -> None:
        subprocess.run(["docker", "exec", container, "systemctl", "kill", "--signal", name, service], check=True,
                       capture_output=True)

    time.sleep(3)
    signal("KILL")
    time.sleep(4)
    signal("STOP")
    try:
        time.sleep(hang_s)
    finally:
        signal("CONT")
    time.sleep(4)


VIP_LOSSES = ("haproxy-stopped", "holder-killed", "holder-cut-off")


def lose_vip_holder(case: str, containers: list[str], vip: str, address: str, cafile: str | None = None,
                    settle: float = 2.0) -> LoadLoop:
    """One VIP failover under load: requests every 0.05 s (overlapping, 2 s timeout) to `address` while the holder
    loses HAProxy, is killed or is cut off; the VIP must move to another container. Undone before returning (the
    holder is back; whether it takes the VIP back is the caller's to check)."""
    first = wait_for_holder(containers, vip)
    others = [c for c in containers if c != first]
    failures: dict[str, Callable[[], AbstractContextManager[None]]] = {
        "haproxy-stopped": lambda: service_stopped(first, "haproxy"), "holder-killed": lambda: killed(first),
        "holder-cut-off": lambda: cut_off(first)}
    failure = failures[case]
    with LoadLoop(address, interval=0.05, limit=1200, timeout=2, cafile=cafile, overlap=True) as load:
        time.sleep(1)
        with failure():
            assert wait_for(lambda: len(holders := vip_holders(others, vip)) == 1 and holders[0] in others,
                            timeout=20, interval=0.2), f"the VIP did not leave {first} ({case})"
            time.sleep(settle)
        time.sleep(1)
    return load
