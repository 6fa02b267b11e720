"""A real SuperLink and SuperNodes as local processes, for the deployment tests.

Stopping a process kills its whole process tree: SuperLink and SuperNode start their SuperExec
in a session of its own, and the ServerApp/ClientApp processes it starts would otherwise
outlive the SuperLink or SuperNode. All waits are bounded.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    """Until something accepts TCP connections on 127.0.0.1:port (or the process died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before port {port} opened")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def make_certificates(folder: Path) -> dict[str, Path]:
    """CA, server certificate for 127.0.0.1/localhost, via scripts/deploy/make-certs.sh."""
    subprocess.run(["bash", str(REPO / "scripts/deploy/make-certs.sh"), str(folder)], check=True,
                   capture_output=True, timeout=60)
    return {"ca": folder / "ca.crt", "cert": folder / "server.pem", "key": folder / "server.key"}


def make_node_key(folder: Path, name: str) -> Path:
    """An ECDSA P-384 OpenSSH key pair for SuperNode authentication; returns the private key."""
    subprocess.run(["bash", str(REPO / "scripts/deploy/make-node-keys.sh"), str(folder), name], check=True,
                   capture_output=True, timeout=60)
    return folder / name


@dataclass
class Deployment:
    """One SuperLink, its SuperNodes and the `flwr` CLI, isolated under `root`."""

    root: Path
    certs: dict[str, Path] | None = None
    auth: bool = False
    port: int = field(default_factory=free_port)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.home = self.root / "flwr-home"
        self.logs = self.root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "FLWR_HOME": str(self.home),
                    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
                    "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PYTHONUNBUFFERED": "1"}
        self.write_connection()

    def write_connection(self) -> None:
        """`[superlink.dep]` in $FLWR_HOME/config.toml: how `flwr run . dep` reaches the SuperLink."""
        self.home.mkdir(parents=True, exist_ok=True)
        security = (f'root-certificates = "{self.certs["ca"]}"' if self.certs else "insecure = true")
        (self.home / "config.toml").write_text(
            '[superlink]\ndefault = "dep"\n\n'
            f'[superlink.dep]\naddress = "127.0.0.1:{self.port}"\n{security}\n')

    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        log = (self.logs / f"{name}.log").open("ab")
        proc = subprocess.Popen(args, env={**self.env, **(env or {})}, stdout=log, stderr=subprocess.STDOUT,
                                cwd=self.root, start_new_session=True)
        self.procs[name] = proc
        return proc

    def _tls_args(self) -> list[str]:
        return ["--root-certificates", str(self.certs["ca"])] if self.certs else ["--insecure"]

    def start_superlink(self) -> None:
        args = [str(BIN / "flower-superlink"), "--host", "127.0.0.1", "--port", str(self.port),
                "--database", str(self.root / "state.db"), "--disable-runtime-dependency-installation"]
        if self.certs:
            args += ["--ssl-ca-certfile", str(self.certs["ca"]), "--ssl-certfile", str(self.certs["cert"]),
                     "--ssl-keyfile", str(self.certs["key"])]
        else:
            args.append("--insecure")
        if self.auth:
            args.append("--enable-supernode-auth")
        wait_for_port(self.port, 60, self._spawn("superlink", args))

    def start_supernode(self, partition: int, partitions: int, key: Path | None = None,
                        name: str | None = None) -> subprocess.Popen:
        args = [str(BIN / "flower-supernode"), "--superlink", f"127.0.0.1:{self.port}",
                "--port", str(free_port()), "--max-retries", "10", "--max-wait-time", "120",
                "--node-config", f"partition-id={partition} num-partitions={partitions}", *self._tls_args()]
        if key is not None:
            args += ["--auth-supernode-private-key", str(key)]
        return self._spawn(name or f"supernode-{partition}", args)

    def start_resident_supernode(self, partition: int, partitions: int, name: str | None = None) -> subprocess.Popen:
        """`RESIDENT=1 scripts/deploy/supernode.sh`: a SuperNode whose ClientApps run in feddqc-executor."""
        env = {"SUPERLINK": f"127.0.0.1:{self.port}", "RUNTIME_PORT": str(free_port()), "RESIDENT": "1",
               "THREADS": "1", "PYTHON": sys.executable}
        args = ["bash", str(REPO / "scripts/deploy/supernode.sh"), str(partition), str(partitions),
                "--max-retries", "10", "--max-wait-time", "120"]
        return self._spawn(name or f"supernode-{partition}", args, env)

    def flwr(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "flwr"), *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, cwd=self.root)

    def register(self, public_key: Path) -> None:
        proc = self.flwr("supernode", "register", str(public_key), "dep")
        assert proc.returncode == 0, proc.stdout + proc.stderr

    def run(self, overrides: Path, timeout: float = 240) -> subprocess.CompletedProcess:
        """`flwr run <repo> dep --stream`: returns when the run finished (or raises on timeout)."""
        return self.flwr("run", str(REPO), "dep", "--stream", "--run-config", str(overrides), timeout=timeout)

    def start_run(self, overrides: Path) -> subprocess.Popen:
        """`flwr run --stream` in the background, for tests that act while the run goes on."""
        return self._spawn("flwr-run", [str(BIN / "flwr"), "run", str(REPO), "dep", "--stream",
                                        "--run-config", str(overrides)])

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, name: str) -> None:
        """SIGKILL one started process with everything it spawned (a node and its ClientApps)."""
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        with contextlib.suppress(psutil.NoSuchProcess):
            for child in psutil.Process(proc.pid).children(recursive=True):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)

    def __enter__(self) -> Deployment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


def tools_available() -> str | None:
    """Why TLS/auth tests cannot run here, or None."""
    missing = [t for t in ("openssl", "ssh-keygen") if shutil.which(t) is None]
    return f"missing {', '.join(missing)} (see scripts/deploy/make-certs.sh)" if missing else None
