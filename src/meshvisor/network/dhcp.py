"""DHCP for VMs and DNS for every workload on one network: one `dnsmasq` bound only to the network's bridge (its
gateway address), serving static leases and the platform's names only.

The platform decides every address (IPAM); dnsmasq only hands each known MAC its address, the gateway, the
resolver (itself), the network's domain and MTU, and stays silent for any other MAC. As DNS it answers the names
the platform gives it (`<instance>.<network>.meshvisor.internal`), never forwards a name under
`meshvisor.internal`, and forwards other names to the host's resolver only when the network is allowed out
(`upstream`: a `nat` network); otherwise it refuses them. State lives in a directory the caller gives, one set
of files per network:

    <network id>.hosts    `mac,address` lines the platform writes (dnsmasq re-reads it on SIGHUP)
    <network id>.names    `address name` lines the platform writes (re-read on SIGHUP too)
    <network id>.opts     per-MAC DHCP options (classless static routes: a meshed VM's way to its sidecar)
    <network id>.leases   what dnsmasq handed out
    <network id>.pid      dnsmasq's pid, by which `stop` ends it
    <network id>.log      dnsmasq's log
    <network id>.ifindex  the bridge dnsmasq was bound to (a bridge made again means dnsmasq is started again)
    <network id>.lock     held while dnsmasq is started, signalled or stopped: two workloads attached at once
                          (two threads or two processes) must not both start it

dnsmasq runs as a daemon of its own (it outlives the worker that started it) and drops root for its default
unprivileged user, so the state directory must be readable and searchable by that user.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from meshvisor.core.errors import InvalidInput, NotFound, PermanentError, TransientError

from .names import bridge_name
from .netlink import find_link, link_kind, netns_path, rtnl
from .spec import NetworkSpec, parse_ipv4, validate_mac

DNSMASQ = "dnsmasq"
DOMAIN = DNS_DOMAIN = "meshvisor.internal"
NAME = re.compile(r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}")
NSENTER = "nsenter"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0


def hosts_file_text(spec: NetworkSpec, leases: Mapping[str, str], tagged: Iterable[str] = ()) -> str:
    """The dhcp-hostsfile for `leases` (MAC → address), checked against the network; the MACs in `tagged` carry
    their own tag (`route_tag`), which their options in the opts file name. Sorted, so the same leases always
    give the same text."""
    network = spec.network
    reserved = {network.network_address, network.broadcast_address, ipaddress.IPv4Address(spec.gateway)}
    by_address: dict[ipaddress.IPv4Address, str] = {}
    tags = {validate_mac(mac) for mac in tagged}
    lines = []
    for raw_mac, raw_address in leases.items():
        mac = validate_mac(raw_mac)
        address = parse_ipv4(raw_address, f"address for {mac}")
        if address not in network or address in reserved:
            raise InvalidInput(f"address {address} for {mac} is not a free host address of {spec.cidr}")
        if address in by_address:
            raise InvalidInput(f"address {address} is given to both {by_address[address]} and {mac}")
        by_address[address] = mac
        lines.append(f"{mac},set:{route_tag(mac)},{address}" if mac in tags else f"{mac},{address}")
    if len({line.split(",")[0] for line in lines}) != len(lines):
        raise InvalidInput("a MAC address appears twice in the leases")
    return "".join(f"{line}\n" for line in sorted(lines))


def route_tag(mac: str) -> str:
    """The dnsmasq tag of one MAC's own options."""
    return "r" + mac.replace(":", "")


Route = tuple[str, str]  # (destination CIDR, next hop)


def opts_file_text(spec: NetworkSpec, routes: Mapping[str, Sequence[Route]]) -> str:
    """The dhcp-optsfile: for each MAC in `routes` (MAC → (CIDR, next hop) pairs), option 121 (classless static
    routes) with its routes and then the default route by the gateway (a client that takes option 121 ignores
    the router option, RFC 3442). Every next hop is on the network. Sorted: the same routes, the same text."""
    lines = []
    for raw_mac, pairs in routes.items():
        mac = validate_mac(raw_mac)
        fields = []
        for cidr, raw_via in pairs:
            try:
                destination = ipaddress.IPv4Network(cidr)
            except ValueError as exc:
                raise InvalidInput(f"invalid route destination {cidr!r} for {mac}") from exc
            via = parse_ipv4(raw_via, f"next hop for {mac}")
            if via not in spec.network:
                raise InvalidInput(f"next hop {via} for {mac} is not on {spec.cidr}")
            fields += [str(destination), str(via)]
        lines.append(
            f"tag:{route_tag(mac)},option:classless-static-route,{','.join(fields)},0.0.0.0/0,{spec.gateway}"
        )
    return "".join(f"{line}\n" for line in sorted(lines))


SERVICES_LABEL = "svc"  # `<service>.svc.meshvisor.internal`: no network may be named so


def service_dns_name(service: str) -> str | None:
    """`<service>.svc.meshvisor.internal` (None when the name is no DNS label)."""
    return dns_name(service, SERVICES_LABEL)


def dns_name(instance: str, network: str) -> str | None:
    """`<instance>.<network>.meshvisor.internal`, or None when a name is no DNS label (a platform name may begin
    or end with a hyphen; such an instance has no name in DNS)."""
    name = f"{instance}.{network}.{DOMAIN}"
    return name if NAME.fullmatch(name) else None


def names_file_text(names: Mapping[str, str]) -> str:
    """The addn-hosts file for `names` (name → address), sorted: the same names always give the same text."""
    lines = []
    for name, raw_address in names.items():
        if not NAME.fullmatch(name):
            raise InvalidInput(f"{name!r} is not a DNS name")
        lines.append(f"{parse_ipv4(raw_address, f'address of {name}')} {name}")
    return "".join(f"{line}\n" for line in sorted(lines))


def dnsmasq_argv(
    prefix: str,
    spec: NetworkSpec,
    state_dir: Path,
    lease_time: str = "1h",
    dnsmasq: str = DNSMASQ,
    dns: DnsSpec | None = None,
) -> list[str]:
    """The dnsmasq command line for one network: static leases only, the platform's names, on the bridge only."""
    network = spec.network
    stem = state_dir / spec.network_id
    dns = dns or DnsSpec()
    return [
        dnsmasq,
        "--conf-file=/dev/null",  # no system-wide configuration
        "--no-hosts",  # not the host's /etc/hosts either
        f"--addn-hosts={stem}.names",
        f"--local=/{DOMAIN}/",  # the platform's names are answered here or not at all
        "--domain-needed",
        "--bogus-priv",
        *([] if dns.upstream else ["--no-resolv"]),  # other names: the host's resolver, or refused
        *([f"--domain={dns.domain}", f"--dhcp-option=option:domain-search,{dns.domain}"] if dns.domain else []),
        f"--dhcp-option=option:dns-server,{spec.gateway}",
        "--bind-interfaces",
        f"--interface={bridge_name(prefix, spec.network_id)}",
        "--except-interface=lo",
        f"--dhcp-range={network.network_address},static,{network.netmask},{lease_time}",
        # Silent for a MAC it has no lease for: every host's dnsmasq of a network hears a VM's broadcasts over
        # VXLAN with the same server address (the gateway), and must not NAK another host's VM.
        "--dhcp-ignore=tag:!known",
        f"--dhcp-hostsfile={stem}.hosts",
        f"--dhcp-optsfile={stem}.opts",
        f"--dhcp-leasefile={stem}.leases",
        f"--pid-file={stem}.pid",
        f"--dhcp-option=option:router,{spec.gateway}",
        f"--dhcp-option=option:mtu,{spec.mtu}",
        f"--log-facility={stem}.log",
        "--log-dhcp",
    ]


def _dnsmasq_of(pid_file: Path) -> int | None:
    """The pid of the live dnsmasq that `pid_file` names and that was started with it, else None."""
    try:
        pid = int(pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":
        return None
    if not cmdline or not cmdline[0].endswith(b"dnsmasq") or f"--pid-file={pid_file}".encode() not in cmdline:
        return None
    return pid


def stop_stale(state_dir: Path, keep: set[str]) -> list[str]:
    """End the dnsmasq of every network in `state_dir` whose id is not in `keep` (by the pid its pid file names,
    only if that pid is that dnsmasq), and remove its files. The ids it stopped."""
    stopped = []
    for pid_file in sorted(state_dir.glob("*.pid")) if state_dir.is_dir() else []:
        if pid_file.stem in keep:
            continue
        pid = _dnsmasq_of(pid_file)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for suffix in (".pid", ".hosts", ".names", ".leases", ".log", ".ifindex", ".lock"):
            pid_file.with_suffix(suffix).unlink(missing_ok=True)
        stopped.append(pid_file.stem)
    return stopped


@dataclass(frozen=True)
class DnsSpec:
    """The network's DNS: its domain (`<network>.meshvisor.internal`, handed out by DHCP as the search domain)
    and whether names outside the platform go to the host's resolver."""

    domain: str | None = None
    upstream: bool = False


class DhcpServer:
    """The dnsmasq of one network on this host (in the root namespace, or in `netns` by name or path)."""

    def __init__(
        self,
        prefix: str,
        spec: NetworkSpec,
        state_dir: str | Path,
        netns: str | None = None,
        lease_time: str = "1h",
        dnsmasq: str = DNSMASQ,
        dns: DnsSpec | None = None,
    ) -> None:
        self.prefix = prefix
        self.spec = spec
        self.state_dir = Path(state_dir)
        self.netns = netns
        self.argv = dnsmasq_argv(prefix, spec, self.state_dir, lease_time, dnsmasq, dns)
        stem = self.state_dir / spec.network_id
        self.hosts_file = stem.with_suffix(".hosts")
        self.names_file = stem.with_suffix(".names")
        self.opts_file = stem.with_suffix(".opts")
        self.lease_file = stem.with_suffix(".leases")
        self.pid_file = stem.with_suffix(".pid")
        self.log_file = stem.with_suffix(".log")
        self.ifindex_file = stem.with_suffix(".ifindex")
        self.lock_file = stem.with_suffix(".lock")

    # -- state ------------------------------------------------------------------------------------------------
    def pid(self) -> int | None:
        """dnsmasq's pid if it runs for this network (the pid file names a live dnsmasq with our pid file)."""
        return _dnsmasq_of(self.pid_file)

    def running(self) -> bool:
        return self.pid() is not None

    # -- verbs ------------------------------------------------------------------------------------------------
    def ensure(
        self,
        leases: Mapping[str, str],
        names: Mapping[str, str] | None = None,
        routes: Mapping[str, Sequence[Route]] | None = None,
    ) -> int:
        """Serve exactly `leases` (MAC → address), `names` (name → address) and `routes` (MAC → its own static
        routes): rewrite the files and make dnsmasq re-read them (SIGHUP), or start dnsmasq. Idempotent: the
        same leases, names and routes with dnsmasq running change nothing. Returns the pid."""
        routes = {mac: pairs for mac, pairs in (routes or {}).items() if mac in leases and pairs}
        texts = {
            self.hosts_file: hosts_file_text(self.spec, leases, routes),
            self.names_file: names_file_text(names or {}),
            self.opts_file: opts_file_text(self.spec, routes),
        }
        index = self._bridge_index()
        with self._locked():
            changed = [self._write(path, text) for path, text in texts.items()]
            pid = self.pid()
            if pid is not None and (self._bound_index() != index or self._cmdline(pid) != self.argv):
                # Bound to a bridge that is gone (it would never hear the new one), or started for another spec.
                self._stop()
                pid = None
            return self._run(pid, index, any(changed))

    def _run(self, pid: int | None, index: int, changed: bool) -> int:
        if pid is None:
            return self._start(index)
        if changed:
            try:
                os.kill(pid, signal.SIGHUP)
            except ProcessLookupError:
                return self._start(index)
        return pid

    def stop(self) -> None:
        """End dnsmasq by the pid in its pid file (only if that pid is our dnsmasq); not running is success."""
        with self._locked():
            self._stop()

    def _stop(self) -> None:
        pid = self.pid()
        if pid is not None:
            try:
                os.kill(pid, signal.SIGTERM)
                if not self._wait_gone(pid, STOP_TIMEOUT):
                    os.kill(pid, signal.SIGKILL)
                    self._wait_gone(pid, STOP_TIMEOUT)
            except ProcessLookupError:
                pass
        self.pid_file.unlink(missing_ok=True)
        self.ifindex_file.unlink(missing_ok=True)

    def remove(self) -> None:
        """Stop and delete the network's state files."""
        with self._locked():
            self._stop()
            for path in (self.hosts_file, self.names_file, self.opts_file, self.lease_file, self.log_file,
                         self.lock_file):  # fmt: skip
                path.unlink(missing_ok=True)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """This network's dnsmasq to ourselves (an flock: other threads and processes wait)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.lock_file, "a") as held:
            fcntl.flock(held, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(held, fcntl.LOCK_UN)

    # -- helpers ----------------------------------------------------------------------------------------------
    @staticmethod
    def _write(path: Path, text: str) -> bool:
        try:
            if path.read_text() == text:
                return False
        except FileNotFoundError:
            pass
        tmp = path.with_name(f"{path.name}.tmp")
        tmp.write_text(text)
        tmp.chmod(0o644)  # dnsmasq re-reads it after dropping root
        os.replace(tmp, path)
        return True

    def _bridge_index(self) -> int:
        name = bridge_name(self.prefix, self.spec.network_id)
        with rtnl(self.netns) as ipr:
            link = find_link(ipr, name)
        if link is None or link_kind(link) != "bridge":
            raise NotFound(f"bridge {name} does not exist: ensure the network first")
        return int(link["index"])

    @staticmethod
    def _cmdline(pid: int) -> list[str]:
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return []
        return [part.decode(errors="replace") for part in raw.split(b"\0")[:-1]]

    def _bound_index(self) -> int | None:
        try:
            return int(self.ifindex_file.read_text())
        except (OSError, ValueError):
            return None

    def _start(self, index: int) -> int:
        argv = list(self.argv)
        if self.netns is not None:
            argv = [NSENTER, f"--net={netns_path(self.netns)}", "--", *argv]
        self.pid_file.unlink(missing_ok=True)
        self.lease_file.touch(exist_ok=True)
        try:
            # dnsmasq daemonizes; its first process exits once the daemon is set up, with an error if it failed.
            result = subprocess.run(argv, capture_output=True, text=True, timeout=START_TIMEOUT, check=False)
        except subprocess.TimeoutExpired as exc:
            raise TransientError(f"dnsmasq for network {self.spec.network_id} did not start in time") from exc
        except FileNotFoundError as exc:
            raise PermanentError(f"cannot run {argv[0]}: {exc} (is dnsmasq-base installed?)") from exc
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip()[-500:]
            raise PermanentError(f"dnsmasq for network {self.spec.network_id} failed to start: {detail}")
        deadline = time.monotonic() + START_TIMEOUT
        while (pid := self.pid()) is None:
            if time.monotonic() > deadline:
                raise PermanentError(f"dnsmasq for network {self.spec.network_id} started but is not running")
            time.sleep(0.05)
        self.ifindex_file.write_text(f"{index}\n")
        return pid

    @staticmethod
    def _wait_gone(pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
            except OSError:
                return True
            if state == "Z":
                return True
            time.sleep(0.05)
        return False
