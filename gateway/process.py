"""Stopping a gateway subprocess the one right way (launchers, the main job, tests, the harness)."""
from __future__ import annotations

import signal
import subprocess


def stop_process(process: subprocess.Popen, grace: float = 20.0) -> None:
    """SIGTERM (graceful: the gateway drains calls and closes Milvus Lite), then SIGKILL after `grace` s."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
