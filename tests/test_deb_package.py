"""The Debian package: `sh scripts/build-deb` builds it; it installs, runs, upgrades and purges cleanly.

These tests install the package for real (dpkg -i touches /opt, /etc, /lib/systemd, /var/lib and the
user database), so they need root and a Debian machine; elsewhere they are skipped, but under CI (CI set
in the environment, as .ci/run runs) a missing prerequisite fails them instead, so the package can't go
untested there unnoticed. They also refuse to run where dutytail is already installed (as a package or
by hand) rather than replace and then purge someone's agent, and they purge what they installed.
systemd does not run in CI's container: postinst's enable-and-start path is the one for containers and
chroots there, checked by the enablement symlink it leaves and by starting the agent as the service
user by hand.
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import json
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
UNIT_SOURCE = REPO / "systemd" / "dutytail.service"
OPT = Path("/opt/dutytail")
ETC = Path("/etc/dutytail")
STATE = Path("/var/lib/dutytail")
CONFIG = ETC / "config.yaml"
ENV_FILE = ETC / "env"
UNIT = Path("/lib/systemd/system/dutytail.service")
BINARY = OPT / "bin" / "dutytail"
WANTS = Path("/etc/systemd/system/multi-user.target.wants/dutytail.service")
MASK = Path("/etc/systemd/system/dutytail.service")
DSH_STATE = [Path("/var/lib/systemd/deb-systemd-helper-enabled"), Path("/var/lib/systemd/deb-systemd-helper-masked")]
# Everything the package puts on a host (postinst's files and the enablement included): none may remain
# after a purge.
PACKAGE_PATHS = [OPT, ETC, STATE, UNIT, Path("/usr/bin/dutytail"), Path("/usr/share/doc/dutytail"),
                 Path("/usr/share/lintian/overrides/dutytail"), WANTS, MASK]
GECOS_MARK = "dutytail agent (created by the dutytail package)"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
LOCK = Path(tempfile.gettempdir()) / "dutytail-deb-test.lock"  # one run at a time per machine: one dpkg database
# A clean environment for dpkg, its maintainer scripts and the installed program: nothing of the test's
# venv, pyenv or FLASHDUTY_* leaks into what the package does.
CLEAN_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
             "DEBIAN_FRONTEND": "noninteractive", "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": ""}


def _python3_ok() -> bool:
    """Debian's /usr/bin/python3, >= 3.11, with venv: what build-deb makes the venv with."""
    code = "import sys, ensurepip, venv; sys.exit(sys.version_info < (3, 11))"
    return os.access("/usr/bin/python3", os.X_OK) and subprocess.run(
        ["/usr/bin/python3", "-c", code], capture_output=True, check=False).returncode == 0


def unmet() -> str | None:
    if sys.platform != "linux" or os.geteuid() != 0:
        return "needs root on Linux: the test installs the package with dpkg"
    for tool, package in (("dpkg", "dpkg"), ("dpkg-deb", "dpkg"), ("dpkg-shlibdeps", "dpkg-dev"),
                          ("strip", "binutils"), ("adduser", "adduser"), ("runuser", "util-linux"),
                          ("setpriv", "util-linux")):
        if shutil.which(tool) is None:
            return f"{tool} not found (Debian package {package})"
    if not _python3_ok():
        return "/usr/bin/python3 (>= 3.11) with venv not found (Debian packages python3, python3-venv)"
    return None


def require(reason: str | None) -> None:
    """Skip on a developer's machine; under CI the package must be tested, so fail there."""
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the package tests: {reason} (see .ci/run)")
    pytest.skip(reason)


def run(*args: str | Path, check: bool = True, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess[str]:
    kwargs.setdefault("env", CLEAN_ENV)
    kwargs.setdefault("cwd", "/")
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout,
                            check=False, **kwargs)
    if check:
        assert result.returncode == 0, f"{args} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


def package_status() -> str:
    """dpkg's two-letter state of dutytail ("ii" installed, "rc" removed with config, "" unknown)."""
    result = run("dpkg-query", "-W", "-f", "${db:Status-Abbrev}", "dutytail", check=False)
    return result.stdout.strip() if result.returncode == 0 else ""


def leftovers() -> list[str]:
    found = [str(p) for p in PACKAGE_PATHS if p.exists() or p.is_symlink()]
    for state_dir in DSH_STATE:
        if state_dir.is_dir():
            found += [str(p) for p in state_dir.rglob("*dutytail*")]
    return found


def mode(path: Path) -> tuple[int, str, str]:
    st = path.stat()
    return stat.S_IMODE(st.st_mode), pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def agent_version() -> str:
    text = (REPO / "agent" / "__init__.py").read_text()
    found = re.search(r'^__version__ = "([^"]+)"', text, re.M)
    assert found
    return found[1]


# --- building ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package, built from this working tree the way a user does (into a temporary OUTDIR)."""
    require(unmet())
    out = tmp_path_factory.mktemp("dist")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    started = time.monotonic()
    result = subprocess.run(["sh", str(REPO / "scripts" / "build-deb"), str(out)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, f"build-deb failed:\n{result.stdout}\n{result.stderr}"
    built = sorted(out.glob("dutytail_*.deb"))
    assert len(built) == 1, built
    arch = run("dpkg", "--print-architecture").stdout.strip()
    assert built[0].name == f"dutytail_{field(built[0], 'Version')}_{arch}.deb"
    assert result.stdout.strip() == str(built[0])  # build-deb prints the path of what it built
    print(f"build-deb: {time.monotonic() - started:.1f} s, {built[0].stat().st_size / 1e6:.1f} MB")
    return built[0]


def field(deb: Path, name: str) -> str:
    return run("dpkg-deb", "--field", deb, name).stdout.strip()


def test_package_metadata_and_contents(deb: Path, tmp_path: Path) -> None:
    assert field(deb, "Package") == "dutytail"
    assert field(deb, "Version") == agent_version()
    depends = [d.strip() for d in field(deb, "Depends").split(",")]
    assert "python3 (>= 3.11)" in depends
    assert "python3 (<< 3.12)" in depends  # the venv's lib/python3.11 and its compiled modules: that python only
    assert "adduser" in depends  # postinst creates the user with it
    assert any(d.startswith("libc6 (>= ") for d in depends)  # dpkg-shlibdeps read the compiled modules

    root = tmp_path / "root"
    run("dpkg-deb", "--raw-extract", deb, root)
    assert (root / "DEBIAN" / "conffiles").read_text().split() == ["/etc/dutytail/config.yaml"]
    for script in ("postinst", "prerm", "postrm"):
        assert os.access(root / "DEBIAN" / script, os.X_OK), script
        run("sh", "-n", root / "DEBIAN" / script)
    # the unit is the repository's, unchanged (tests/test_systemd_unit.py covers its content)
    assert (root / "lib/systemd/system/dutytail.service").read_bytes() == UNIT_SOURCE.read_bytes()
    # the secrets file is postinst's, never a file of the package (an upgrade would replace it)
    assert not (root / "etc/dutytail/env").exists()
    assert (root / "etc/dutytail/conf.d").is_dir() and not any((root / "etc/dutytail/conf.d").iterdir())
    assert os.readlink(root / "usr/bin/dutytail") == str(BINARY)

    # The venv was moved from the staging directory to /opt/dutytail: its interpreter is the system's,
    # every script's shebang and pyvenv.cfg name /opt/dutytail, and nothing names anything else.
    venv = root / "opt/dutytail"
    assert os.readlink(venv / "bin/python3") == "/usr/bin/python3"
    cfg = dict(line.split(" = ", 1) for line in (venv / "pyvenv.cfg").read_text().splitlines() if " = " in line)
    assert cfg["home"] == "/usr/bin"
    assert cfg["include-system-site-packages"] == "false"
    if "command" in cfg:  # Python >= 3.11 records how the venv was made
        assert cfg["command"].endswith(" -m venv /opt/dutytail"), cfg
    scripts = [p for p in (venv / "bin").iterdir() if p.is_file() and not p.is_symlink() and os.access(p, os.X_OK)]
    assert {p.name for p in scripts} >= {"dutytail"}
    for script in scripts:
        assert script.read_text().splitlines()[0] == "#!/opt/dutytail/bin/python", script
    assert not {"pip", "pip3", "easy_install"} & {p.name for p in (venv / "bin").iterdir()}
    assert not list(venv.glob("lib/python3*/site-packages/pip")), "pip is not shipped"
    assert not list(venv.glob("lib/python3*/site-packages/*.dist-info/direct_url.json"))
    # no byte code (postinst compiles it on the host) and nothing writable by anyone but root
    listing = run("dpkg-deb", "--contents", deb).stdout.splitlines()
    assert not [line for line in listing if "__pycache__" in line or line.endswith((".pyc", ".pyo"))]
    for line in listing:
        perms, owner = line.split()[:2]
        assert owner == "root/root", line
        if perms[0] != "l":
            assert perms[5] != "w" and perms[8] != "w", line
    # every distribution's RECORD matches its files (the relocation and stripping kept them true)
    check = ("import importlib.metadata as m, sys\n"
             "for d in m.distributions(path=[sys.argv[1]]):\n"
             "    for f in d.files or []:\n"
             "        if f.hash and f.locate().exists():\n"
             "            import hashlib, base64\n"
             "            h = base64.urlsafe_b64encode(hashlib.sha256(f.locate().read_bytes()).digest())\n"
             "            assert h.rstrip(b'=').decode() == f.hash.value, (d.metadata['Name'], str(f))\n")
    site = next(venv.glob("lib/python3*/site-packages"))
    run("/usr/bin/python3", "-I", "-B", "-c", check, site)


def test_lintian_reports_no_errors(deb: Path) -> None:
    """Warnings are allowed (see the summary printed); errors must be fixed or overridden with a reason in
    packaging/debian/lintian-overrides."""
    lintian = shutil.which("lintian")
    require(None if lintian else "lintian not found (Debian package lintian)")
    result = run(lintian, "--no-tag-display-limit", deb, check=False, timeout=300)
    tags = [line for line in result.stdout.splitlines() if re.match(r"^[EWIPX]: ", line)]
    errors = [line for line in tags if line.startswith("E: ")]
    summary: dict[str, int] = {}
    for line in tags:
        key = " ".join(line.split()[:3])
        summary[key] = summary.get(key, 0) + 1
    print("lintian:", json.dumps(summary, indent=1))
    assert not errors, "\n".join(errors)
    assert result.returncode == 0, result.stdout + result.stderr


# --- installing -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Installed:
    deb: Path
    user_existed: bool  # a dutytail user made by hand before the package: postinst and purge leave it


@pytest.fixture(scope="module")
def installed(deb: Path) -> Iterator[Installed]:
    """dpkg -i of the package on a machine that has no dutytail; purged afterwards whatever happened."""
    with LOCK.open("w") as lock:
        deadline = time.monotonic() + 600
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail(f"{LOCK} held for 10 minutes by another run of these tests")
                time.sleep(1)
        present = leftovers()
        status = package_status()
        if status not in ("", "un", "pn") or present:
            require(f"dutytail is already on this machine (dpkg state {status!r}; {present}): the test would "
                    "replace and purge it")
        try:
            pwd.getpwnam("dutytail")
            user_existed = True
        except KeyError:
            user_existed = False
        try:
            result = run("dpkg", "-i", deb, timeout=300)
            assert package_status() == "ii", result.stdout + result.stderr
            yield Installed(deb, user_existed)
        finally:
            if package_status() not in ("", "un", "pn"):
                run("dpkg", "--purge", "dutytail", check=False, timeout=300)


def test_installed_files(installed: Installed) -> None:
    for path in (BINARY, CONFIG, ENV_FILE, UNIT, ETC / "conf.d", STATE):
        assert path.exists(), path
    assert mode(ENV_FILE) == (0o600, "root", "root")
    assert mode(CONFIG) == (0o640, "root", "dutytail")  # readable by the service user, nobody else
    assert mode(STATE) == (0o700, "dutytail", "dutytail")  # as StateDirectory=/StateDirectoryMode= make it
    user = pwd.getpwnam("dutytail")
    assert user.pw_dir == str(STATE)
    assert user.pw_shell == "/usr/sbin/nologin"
    if not installed.user_existed:
        assert user.pw_uid < 1000  # a system user
        assert user.pw_gecos.startswith(GECOS_MARK)
        assert grp.getgrgid(user.pw_gid).gr_name == "dutytail"  # the unit's Group=
        assert "dutytail" in grp.getgrnam("adm").gr_mem  # log access
    # enabled, though systemd isn't running (an image built this way starts the agent when it boots)
    assert os.readlink(WANTS) == str(UNIT)
    # byte code compiled by postinst, for the service that can't write /opt
    assert list(OPT.glob("lib/python3*/site-packages/agent/__pycache__/cli.*.pyc"))


def test_installed_binary_runs(installed: Installed) -> None:
    version = agent_version()
    assert run(BINARY, "--version").stdout.split() == ["dutytail", version]
    assert run("dutytail", "--version").stdout.split() == ["dutytail", version]  # /usr/bin/dutytail
    assert run(OPT / "bin" / "python", "-m", "agent", "--version").stdout.split() == ["dutytail", version]
    # the venv sees only its own packages, not the system's python3-* ones
    result = run(OPT / "bin" / "python", "-c", "import sys; print(sys.prefix); print(sys.base_prefix)")
    assert result.stdout.split() == [str(OPT), "/usr"]


def test_shipped_config_checks_as_the_service_user(installed: Installed) -> None:
    """Exactly as docs/install.md says to check it: the service's user, with the env file loaded."""
    command = ("set -a; . /etc/dutytail/env; exec runuser -u dutytail -- "
               "/opt/dutytail/bin/dutytail check-config -c /etc/dutytail/config.yaml")
    result = run("sh", "-c", command, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "dry run" in result.stdout  # no push URL in the starter config: nothing is sent
    # the service user can read the config but not the secrets
    assert run("runuser", "-u", "dutytail", "--", "cat", ENV_FILE, check=False).returncode != 0


def test_installed_unit_verifies(installed: Installed) -> None:
    if SYSTEMD_ANALYZE is None:
        require("systemd-analyze not found (Debian package systemd)")
    result = run(SYSTEMD_ANALYZE, "verify", "--man=no", UNIT, check=False, timeout=60)
    assert result.returncode == 0, result.stderr
    # verify exits 0 on unknown keys and missing binaries, it only logs them: any output is a failure
    assert result.stderr == "", f"systemd-analyze verify complained:\n{result.stderr}"


def test_agent_runs_as_the_service_user(installed: Installed, tmp_path: Path) -> None:
    """Started as the unit would (its user and groups, in its StateDirectory) until /readyz says ready;
    its state lands in /var/lib/dutytail and it stops cleanly on SIGTERM."""
    original = CONFIG.read_bytes()
    port = free_port()
    log = tmp_path / "agent.log"
    try:
        CONFIG.write_bytes(original + f"\nhealth:\n  listen: 127.0.0.1:{port}\n".encode())
        with log.open("w") as out:
            agent = subprocess.Popen(
                ["setpriv", "--reuid=dutytail", "--regid=dutytail", "--init-groups", "--",
                 str(BINARY), "run", "-c", str(CONFIG)],
                cwd=STATE, env=CLEAN_ENV, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            ready = None
            while time.monotonic() < deadline and agent.poll() is None:
                with contextlib.suppress(OSError):
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
                        ready = json.load(answer)
                        break
                time.sleep(0.2)
            assert ready is not None and ready["ready"], f"not ready: {ready}\n{log.read_text()}"
            status = run(BINARY, "status", "-c", CONFIG, "--json")
            assert json.loads(status.stdout)
            assert (STATE / "outbox.db").exists()
            assert pwd.getpwuid((STATE / "outbox.db").stat().st_uid).pw_name == "dutytail"
        finally:
            agent.send_signal(signal.SIGTERM)
            try:
                agent.wait(timeout=30)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait()
        output = log.read_text()
        assert agent.returncode == 0, output
        assert '"agent_stopped"' in output
    finally:
        CONFIG.write_bytes(original)


# --- upgrade, reinstall, remove, purge --------------------------------------------------------------


def repack(deb: Path, version: str, out: Path) -> Path:
    """The same package under another version: an upgrade without a second build."""
    out.mkdir(parents=True, exist_ok=True)
    root = out / f"root-{version}"
    run("dpkg-deb", "--raw-extract", deb, root)
    control = root / "DEBIAN" / "control"
    control.write_text(re.sub(r"^Version: .*$", f"Version: {version}", control.read_text(), flags=re.M))
    target = out / f"dutytail_{version}.deb"
    run("dpkg-deb", "--root-owner-group", "-Znone", "--build", root, target)
    return target


def test_upgrade_keeps_config_and_state_and_purge_leaves_nothing(installed: Installed, tmp_path: Path) -> None:
    # an admin's edits and the agent's state
    edited = CONFIG.read_text() + "\nlabels: {site: edited-by-the-admin}\n"
    CONFIG.write_text(edited)
    secrets = ENV_FILE.read_text() + 'FLASHDUTY_PUSH_URL="https://example.invalid/push?integration_key=k"\n'
    ENV_FILE.write_text(secrets)
    marker = STATE / "state-marker"
    marker.write_text("the agent's state\n")
    os.chown(marker, pwd.getpwnam("dutytail").pw_uid, grp.getgrnam("dutytail").gr_gid)
    # byte code Python writes at run time (root running the CLI), which dpkg does not know about:
    # a real one, and one of a module a later version no longer has
    written = next(OPT.glob("lib/python3*/site-packages/yaml")) / "__pycache__"
    shutil.rmtree(written)
    run(OPT / "bin" / "python", "-c", "import yaml")
    assert list(written.glob("*.pyc"))
    stray = next(OPT.glob("lib/python3*/site-packages/agent")) / "__pycache__" / "gone.cpython-311.pyc"
    stray.write_bytes(b"")

    def kept() -> None:
        assert CONFIG.read_text() == edited
        assert mode(CONFIG) == (0o640, "root", "dutytail")
        assert ENV_FILE.read_text() == secrets
        assert mode(ENV_FILE) == (0o600, "root", "root")
        assert marker.read_text() == "the agent's state\n"
        assert not [p.name for p in ETC.iterdir() if ".dpkg-" in p.name or p.name.endswith((".ucf-dist", "~"))]

    newer = f"{field(installed.deb, 'Version')}+upgrade1"
    result = run("dpkg", "-i", repack(installed.deb, newer, tmp_path), timeout=300)
    assert "dpkg-new" not in result.stdout + result.stderr
    assert run("dpkg-query", "-W", "-f", "${Version}", "dutytail").stdout == newer
    kept()
    assert not stray.exists()  # prerm removed byte code
    assert run(BINARY, "--version").returncode == 0

    run("dpkg", "-i", repack(installed.deb, newer, tmp_path / "again"), timeout=300)  # reinstall, same version
    kept()

    # remove: the program goes, the config, secrets and state stay
    run("dpkg", "--remove", "dutytail", timeout=300)
    assert package_status() == "rc"
    assert not OPT.exists(), list(OPT.rglob("*"))[:20]
    assert not UNIT.exists()
    kept()

    # purge: nothing of the package is left
    run("dpkg", "--purge", "dutytail", timeout=300)
    assert leftovers() == []
    listed = run("dpkg", "-l", "dutytail", check=False)  # "no packages found", or at most "un"/"pn"
    still_known = re.search(r"^(?!un|pn)[a-z]{2}\s+dutytail\s", listed.stdout, re.M)
    assert listed.returncode != 0 or not still_known, listed.stdout
    if not installed.user_existed:
        with pytest.raises(KeyError):
            pwd.getpwnam("dutytail")  # the user postinst created goes with it
        with pytest.raises(KeyError):
            grp.getgrnam("dutytail")
        assert "dutytail" not in grp.getgrnam("adm").gr_mem
