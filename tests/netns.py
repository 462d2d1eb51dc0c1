"""A network namespace joined to this host by a veth pair, for mounts that must not share a
network path (each mount's traffic enters through its own link)."""

from __future__ import annotations

import os
import subprocess


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class NetNs:
    """`ip netns` NAME with 10.213.N.2 inside and 10.213.N.1 on the host side."""

    def __init__(self, n: int):
        self.name = f"s3mt{os.getpid() % 10000}n{n}"
        self.host_ip, self.ns_ip = f"10.213.{n}.1", f"10.213.{n}.2"
        self.host_if, self.ns_if = f"{self.name}h", f"{self.name}c"

    def __enter__(self) -> "NetNs":
        self.close()
        _ip("netns", "add", self.name)
        try:
            _ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
            _ip("link", "set", self.ns_if, "netns", self.name)
            _ip("addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
            _ip("link", "set", self.host_if, "up")
            _ip("-n", self.name, "addr", "add", f"{self.ns_ip}/30", "dev", self.ns_if)
            _ip("-n", self.name, "link", "set", self.ns_if, "up")
            _ip("-n", self.name, "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise
        return self

    @property
    def launcher(self) -> list[str]:
        # nsenter --net, not `ip netns exec`: that also makes a private mount namespace, and
        # the FUSE mount would be invisible outside it.
        return ["nsenter", f"--net=/var/run/netns/{self.name}"]

    def run(self, *argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([*self.launcher, *argv], capture_output=True, text=True, timeout=30)

    def close(self) -> None:
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)

    def __exit__(self, *exc) -> None:
        self.close()
