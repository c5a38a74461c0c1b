"""The one hardening baseline: what every container request carries, whoever asks."""

from __future__ import annotations

import docker
import pytest

from reprobuild.sandbox.hardening import Hardening, container_config, host_config, tmpfs_options


@pytest.fixture
def api() -> docker.APIClient:
    # A client never connected: with an explicit API version nothing is asked of an engine.
    return docker.APIClient(base_url="unix:///nonexistent/reprobuild.sock", version="1.41")


def test_the_baseline_is_always_there(api: docker.APIClient) -> None:
    config = host_config(api, Hardening(cap_add=("NET_ADMIN",), read_only=False))
    assert config["CapDrop"] == ["ALL"] and config["CapAdd"] == ["NET_ADMIN"]
    assert config["SecurityOpt"] == ["no-new-privileges:true"]
    assert "seccomp=unconfined" not in str(config), "Docker's default profile stays on"
    assert config["NetworkMode"] == "none" and config["IpcMode"] == "private"
    assert config["Memory"] == config["MemorySwap"] == 2048 * 1024 * 1024, "no swap"
    assert config["PidsLimit"] == 512
    assert {u["Name"]: (u["Soft"], u["Hard"]) for u in config["Ulimits"]} == {
        "core": (0, 0), "nofile": (4096, 4096)}
    assert config["LogConfig"] == {"Type": "json-file",
                                   "Config": {"max-size": "10m", "max-file": "1"}}
    assert config["ReadonlyRootfs"] is False
    assert "Privileged" not in config or config["Privileged"] is False
    assert host_config(api, Hardening())["ReadonlyRootfs"] is True


def test_mounts_limits_and_the_request(api: docker.APIClient) -> None:
    hardening = Hardening(network_mode="bridge", tmpfs={"/w": tmpfs_options(64, uid=7, gid=7)},
                          volumes={"vol": ("/out", "rw")}, pids=9, memory_mb=64, cpus=0.5,
                          cpuset="0", sysctls={"net.ipv6.conf.all.disable_ipv6": "0"})
    config = container_config(api, "img", ["sh", "-c", "true"], hardening=hardening,
                              labels={"org.reprobuild.managed": "true"}, user="7:7",
                              stdin=True)
    host = config["HostConfig"]
    assert host["Tmpfs"] == {"/w": "size=64m,noexec,nosuid,nodev,uid=7,gid=7,mode=0755"}
    assert host["Binds"] == ["vol:/out:rw"]
    assert (host["NanoCpus"], host["CpusetCpus"], host["PidsLimit"]) == (500_000_000, "0", 9)
    assert host["Sysctls"] == {"net.ipv6.conf.all.disable_ipv6": "0"}
    assert config["User"] == "7:7" and config["Labels"] == {"org.reprobuild.managed": "true"}
    assert config["OpenStdin"] is True and config["StdinOnce"] is True
    plain = container_config(api, "img", ["true"], hardening=Hardening(), labels={}, user="1:1")
    assert plain["OpenStdin"] is False and plain["StdinOnce"] is False


def test_tmpfs_options_never_allow_setuid_or_devices() -> None:
    assert tmpfs_options(8, mode="0700") == "size=8m,noexec,nosuid,nodev,mode=0700"
    assert tmpfs_options(8, exec_=True, mode=None) == "size=8m,exec,nosuid,nodev"
