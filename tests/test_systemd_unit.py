"""The shipped unit and drop-in: statically, through `systemd-analyze verify`, and its hardening score.

`systemd-analyze verify` exits 0 on unknown keys and unparsable values (it only logs "ignoring"), so any
stderr output fails the test. Nothing is filtered: on systemd 252 verify does not resolve `User=`, so a
machine without the `dutytail` user prints nothing about it; verify does need every `Exec*=` binary to
exist, hence the stand-in executable. Only a missing `systemd-analyze` skips these tests.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

SYSTEMD_DIR = Path(__file__).resolve().parent.parent / "systemd"
UNIT = SYSTEMD_DIR / "dutytail.service"
DROP_IN = SYSTEMD_DIR / "dutytail-read-all-logs.conf"
INSTALLED_BINARY = "/opt/dutytail/bin/dutytail"
CONFIG = "/etc/dutytail/config.yaml"
# Exposure measured when the unit was written (1.7). A change that raises it must say why here.
MAX_EXPOSURE = 2.0
MAX_EXPOSURE_WITH_DROP_IN = 2.2
GOOD_LEVELS = {"OK", "SAFE", "PERFECT"}
AGENT_SHUTDOWN_TIMEOUT = 10.0  # the agent's default shutdown_timeout, seconds

SYSTEMD_ANALYZE = shutil.which("systemd-analyze") or (
    "/usr/bin/systemd-analyze" if os.access("/usr/bin/systemd-analyze", os.X_OK) else None
)
needs_analyze = pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")

Unit = dict[str, dict[str, list[str]]]


def parse_unit(text: str) -> Unit:
    """Section -> key -> every value in order (unit files repeat keys, which configparser can't hold)."""
    unit: Unit = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            unit.setdefault(section, {})
            continue
        assert not line.endswith("\\"), f"line continuations are not used in the unit: {raw!r}"
        key, _, value = line.partition("=")
        unit[section].setdefault(key.strip(), []).append(value.strip())
    return unit


def one(unit: Unit, key: str, section: str = "Service") -> str:
    values = unit[section].get(key)
    assert values is not None, f"{key}= missing from [{section}]"
    assert len(values) == 1, f"{key}= set {len(values)} times: {values}"
    return values[0]


def seconds(value: str) -> float:
    """systemd time spans as written in this unit: "30s", "5min", "1min 30s", bare seconds."""
    factors = {"": 1.0, "s": 1.0, "sec": 1.0, "ms": 0.001, "min": 60.0, "m": 60.0, "h": 3600.0}
    total = 0.0
    for number, suffix in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value):
        total += float(number) * factors[suffix]
    return total


@pytest.fixture
def unit() -> Unit:
    return parse_unit(UNIT.read_text())


# --- static properties ------------------------------------------------------------------------------


def test_lifecycle(unit: Unit) -> None:
    assert one(unit, "Type") == "notify"
    assert one(unit, "NotifyAccess") == "main"  # check commands must not be able to send READY/WATCHDOG
    assert one(unit, "ExecStart") == f"{INSTALLED_BINARY} run -c {CONFIG}"
    # The config is validated by the same binary, against the same file, before the agent starts.
    assert one(unit, "ExecStartPre") == f"{INSTALLED_BINARY} check-config -c {CONFIG}"
    assert one(unit, "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one(unit, "Restart") == "on-failure"
    assert seconds(one(unit, "RestartSec")) == 5
    assert seconds(one(unit, "WatchdogSec")) == 30
    # systemd's hard stop must leave the agent its whole flush window, with room to spare.
    assert seconds(one(unit, "TimeoutStopSec")) >= 2 * AGENT_SHUTDOWN_TIMEOUT
    assert one(unit, "KillMode") == "mixed"
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_identity_and_directories(unit: Unit) -> None:
    assert one(unit, "User") == "dutytail"
    assert one(unit, "Group") == "dutytail"
    assert one(unit, "SupplementaryGroups").split() == ["adm"]
    assert one(unit, "EnvironmentFile") == "-/etc/dutytail/env"  # optional: "-"
    assert one(unit, "StateDirectory") == "dutytail"
    assert one(unit, "StateDirectoryMode") == "0700"
    assert one(unit, "WorkingDirectory") == "/var/lib/dutytail"  # a relative state_dir lands in it
    assert one(unit, "ConfigurationDirectory") == "dutytail"
    assert one(unit, "UMask") == "0077"
    assert int(one(unit, "LimitNOFILE")) >= 65536


def test_hardening_choices(unit: Unit) -> None:
    svc = unit["Service"]
    assert one(unit, "ProtectSystem") == "strict"
    assert one(unit, "ProtectHome") == "read-only"
    assert svc["CapabilityBoundingSet"] == [""]  # no capabilities at all
    assert "AmbientCapabilities" not in svc
    for key in (
        "PrivateTmp",
        "PrivateDevices",
        "NoNewPrivileges",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectKernelLogs",
        "ProtectControlGroups",
        "ProtectClock",
        "ProtectHostname",
        "RestrictNamespaces",
        "RestrictRealtime",
        "RestrictSUIDSGID",
        "LockPersonality",
    ):
        assert one(unit, key) == "yes", key
    assert one(unit, "RestrictAddressFamilies").split() == ["AF_UNIX", "AF_INET", "AF_INET6"]
    assert svc["SystemCallFilter"][0] == "@system-service"
    assert one(unit, "SystemCallArchitectures") == "native"
    # Deliberately absent: each would be inherited by check commands and break common ones
    # (JIT runtimes; process checks; load/memory probes). See the comments in the unit.
    for key in ("MemoryDenyWriteExecute", "ProtectProc", "ProcSubset", "PrivateUsers"):
        assert key not in svc, key


def test_drop_in_adds_only_dac_read_search() -> None:
    drop_in = parse_unit(DROP_IN.read_text())
    assert set(drop_in) == {"Service"}
    assert drop_in["Service"] == {
        "CapabilityBoundingSet": ["CAP_DAC_READ_SEARCH"],
        "AmbientCapabilities": ["CAP_DAC_READ_SEARCH"],
    }


# --- systemd-analyze --------------------------------------------------------------------------------


def install_for_analysis(tmp_path: Path, with_drop_in: bool = False) -> Path:
    """The unit as shipped, except that the agent binary points at a stand-in executable."""
    binary = tmp_path / "bin" / "dutytail"
    binary.parent.mkdir()
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(0o755)
    text = UNIT.read_text()
    assert INSTALLED_BINARY in text
    unit_path = tmp_path / "dutytail.service"
    unit_path.write_text(text.replace(INSTALLED_BINARY, str(binary)))
    unit_path.chmod(0o644)  # verify warns about executable unit files
    if with_drop_in:
        # verify and security read drop-ins from "<unit>.d/" next to a unit given by path.
        conf_dir = tmp_path / "dutytail.service.d"
        conf_dir.mkdir()
        shutil.copyfile(DROP_IN, conf_dir / "read-all-logs.conf")
        (conf_dir / "read-all-logs.conf").chmod(0o644)
    return unit_path


def analyze(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE is not None
    env = {**os.environ, "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": "", "LC_ALL": "C.UTF-8"}
    env.pop("SYSTEMD_UNIT_PATH", None)
    return subprocess.run(
        [SYSTEMD_ANALYZE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False
    )


def exposure(result: subprocess.CompletedProcess[str]) -> tuple[float, str]:
    """(score, level) from "→ Overall exposure level for dutytail.service: 1.7 OK :-)"."""
    found = re.search(r"Overall exposure level for dutytail\.service: (\d+(?:\.\d+)?) (\w+)", result.stdout)
    assert found, f"no overall exposure line in:\n{result.stdout}\n{result.stderr}"
    return float(found[1]), found[2]


@needs_analyze
@pytest.mark.parametrize("with_drop_in", [False, True], ids=["unit", "unit+read-all-logs"])
def test_verify_is_silent(tmp_path: Path, with_drop_in: bool) -> None:
    unit_path = install_for_analysis(tmp_path, with_drop_in)
    result = analyze("verify", "--man=no", str(unit_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", f"systemd-analyze verify complained:\n{result.stderr}"


@needs_analyze
def test_verify_catches_mistakes(tmp_path: Path) -> None:
    """Guards the test itself: a typo in the unit must show up on stderr even though verify exits 0."""
    unit_path = install_for_analysis(tmp_path)
    unit_path.write_text(unit_path.read_text().replace("ProtectSystem=strict", "ProtectSystem=stricter"))
    result = analyze("verify", "--man=no", str(unit_path), cwd=tmp_path)
    assert "stricter" in result.stderr


@needs_analyze
def test_security_exposure(tmp_path: Path) -> None:
    unit_path = install_for_analysis(tmp_path)
    result = analyze("security", "--offline=yes", str(unit_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    score, level = exposure(result)
    assert level in GOOD_LEVELS, result.stdout
    assert score <= MAX_EXPOSURE, result.stdout


@needs_analyze
def test_security_exposure_with_drop_in(tmp_path: Path) -> None:
    """The drop-in really takes effect (the capability shows up) and the unit stays OK with it."""
    unit_path = install_for_analysis(tmp_path, with_drop_in=True)
    result = analyze("security", "--offline=yes", str(unit_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert re.search(r"AmbientCapabilities=\s+Service process receives ambient", result.stdout), result.stdout
    score, level = exposure(result)
    assert level in GOOD_LEVELS, result.stdout
    assert score <= MAX_EXPOSURE_WITH_DROP_IN, result.stdout
