"""Start and stop a real `tritonserver` (the 2.51 binary shipped in the nvidia-pytriton wheel) locally.

Nothing is installed by hand: the binary, the python backend and its Python 3.11 stub come from the
installed wheel; a backend directory is assembled from symlinks under the build dir. The server binds
127.0.0.1 only, logs to a file, is ready when `/v2/health/ready` says so, and stops with SIGTERM
(then SIGKILL after a grace period).
"""
from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WORKDIR = PROJECT_ROOT / "build" / "triton"


class TritonStartError(RuntimeError):
    """tritonserver did not become ready; the message carries the tail of its log."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pytriton_server_dir() -> Path:
    """`pytriton/tritonserver` inside the installed nvidia-pytriton wheel (found without importing it)."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise TritonStartError("nvidia-pytriton is not installed: pip install -e '.[triton-cpu]' (it ships tritonserver)")
    root = Path(list(spec.submodule_search_locations)[0]) / "tritonserver"
    if not (root / "bin" / "tritonserver").is_file():
        raise TritonStartError(f"no tritonserver binary under {root}")
    return root


def build_backend_dir(workdir: Path) -> Path:
    """`<workdir>/backends/python/` with the python backend library, utils and this Python's stub."""
    root = pytriton_server_dir()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    sources = {
        "libtriton_python.so": root / "backends" / "python" / "libtriton_python.so",
        "triton_python_backend_utils.py": root / "backends" / "python" / "triton_python_backend_utils.py",
        "triton_python_backend_stub": root / "python_backend_stubs" / version / "triton_python_backend_stub",
    }
    target = workdir / "backends" / "python"
    target.mkdir(parents=True, exist_ok=True)
    for name, source in sources.items():
        if not source.exists():
            raise TritonStartError(f"{source} is missing from the nvidia-pytriton wheel (Python {version})")
        link = target / name
        if link.is_symlink() or link.exists():
            if link.resolve() == source.resolve():
                continue
            link.unlink()
        try:
            link.symlink_to(source)
        except FileExistsError:  # another server sharing this workdir made it a moment ago
            pass
    return workdir / "backends"


def server_environment() -> dict[str, str]:
    """PATH with this venv first (the stub finds its Python there), libpython on LD_LIBRARY_PATH, and
    the project root on PYTHONPATH (the repository's python models apply it; the stub itself ignores it)."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in [libdir, env.get("LD_LIBRARY_PATH", "")] if p)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(PROJECT_ROOT), env.get("PYTHONPATH", "")] if p)
    return env


class TritonServer:
    """A local tritonserver process on 127.0.0.1; use as a context manager or call start()/stop()."""

    def __init__(
        self,
        repository: str | Path,
        grpc_port: int | None = None,
        http_port: int | None = None,
        metrics_port: int | None = None,
        workdir: str | Path = DEFAULT_WORKDIR,
        log_file: str | Path | None = None,
        startup_timeout: float = 120.0,
        extra_args: list[str] | None = None,
    ) -> None:
        self.repository = Path(repository).resolve()
        self.grpc_port = grpc_port or free_port()
        self.http_port = http_port or free_port()
        self.metrics_port = metrics_port or free_port()
        self.workdir = Path(workdir).resolve()
        self.log_file = Path(log_file) if log_file else self.workdir / f"tritonserver-{self.grpc_port}.log"
        self.startup_timeout = startup_timeout
        self.extra_args = extra_args or []
        self.process: subprocess.Popen | None = None

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    def command(self) -> list[str]:
        return [
            str(pytriton_server_dir() / "bin" / "tritonserver"),
            f"--model-repository={self.repository}",
            f"--backend-directory={build_backend_dir(self.workdir)}",
            "--http-address=127.0.0.1", f"--http-port={self.http_port}",
            "--grpc-address=127.0.0.1", f"--grpc-port={self.grpc_port}",
            "--metrics-address=127.0.0.1", f"--metrics-port={self.metrics_port}",
            "--allow-cpu-metrics=false", "--allow-gpu-metrics=false",
            "--exit-timeout-secs=10",
            *self.extra_args,
        ]

    def start(self) -> "TritonServer":
        if self.process is not None:
            return self
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        command = self.command()
        with open(self.log_file, "wb") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=server_environment(), start_new_session=True
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise TritonStartError(f"tritonserver exited with code {self.process.returncode}:\n{self.log_tail()}")
            if self.is_ready():
                return
            time.sleep(0.2)
        raise TritonStartError(f"tritonserver not ready after {self.startup_timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 12) -> str:
        """Triton's error lines (E...) followed by the last lines of the log: what a failed start says."""
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return "(no log)"
        kept = [line for line in text.splitlines() if line.strip() and not line.startswith(("+", "| "))]
        errors = [line for line in kept if line[:1] == "E" and line[1:5].isdigit()]
        tail = [line for line in kept[-lines:] if line not in errors]
        return "\n".join(errors[-20:] + tail)

    def stop(self, grace: float = 15.0) -> int | None:
        """SIGTERM the server (it drains in-flight requests), SIGKILL its process group if it hangs."""
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        try:  # python backend stubs of a killed server would otherwise linger
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return process.returncode

    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
