"""The daemon under attack: `avatar-bridge run` in its own process on loopback (demo head, demo speech, small
picture), spoken to over real HTTP, UDP and TCP like any other program on the machine would.

Running it in a separate process keeps the attacker (this test process) and the daemon apart: a stalled
event loop shows up as unanswered requests here, not as a stalled test.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from bridge.core.config import merge_tables

REPO = Path(__file__).resolve().parents[2]
READY = re.compile(r"running: .* http://[^:]+:(\d+)/")


def base_config(tmp: Path) -> dict[str, Any]:
    """The demo daemon in small: 64x64 at 25 fps, the demo speech on a loop, every control surface on a free
    loopback port, a writable presets folder, short timeouts so the tests do not wait long."""
    presets = tmp / "presets"
    if not presets.exists():
        shutil.copytree(REPO / "presets", presets)
    return {
        "video": {"width": 64, "height": 64, "fps": 25},
        "audio": {"source": "file", "loop": True, "realtime": True},
        "http": {"host": "127.0.0.1", "port": 0, "idle_timeout_s": 2.0},
        "webrtc": {"max_viewers": 4, "max_sessions_per_address": 3, "connect_timeout_s": 3.0},
        # A small packet budget: a flood from a busy machine's slow sender is still far over it.
        "osc": {"enabled": True, "port": 0, "max_packets_per_second": 200, "tcp_idle_timeout_s": 2.0,
                "tcp_max_connections_per_source": 4},
        "vmc": {"enabled": True, "port": 0, "max_packets_per_second": 200},
        "midi": {"enabled": False},
        "idle": {"blink": False, "gaze": False, "sway": False},
        "mixer": {"max_manual": 64},
        "presets": {"dir": str(presets), "max_captured": 8},
    }


class Answer:
    """One HTTP answer: status, headers, raw body, and the body as JSON when it is JSON."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"<{self.status} {self.body[:300]!r}>"


class DaemonProcess:
    """Starts, queries and stops one daemon process; its log is kept in a file (never a full pipe)."""

    def __init__(self, tmp: Path, overrides: dict[str, Any] | None = None, verbose: bool = False) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.tmp = tmp
        self.config = merge_tables(base_config(tmp), overrides or {})
        self.config_path = tmp / "daemon.toml"
        self.log_path = tmp / "daemon.log"
        self.verbose = verbose
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    # ---- lifecycle -----------------------------------------------------------------------------------
    def launch(self) -> subprocess.Popen[bytes]:
        """Start the process without waiting for it to be ready."""
        self.config_path.write_text(tomli_w.dumps(self.config))
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        env.pop("CI_DEBUG", None)
        args = [sys.executable, "-m", "bridge.cli", *(["-vv"] if self.verbose else []),
                "run", "--config", str(self.config_path)]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.tmp)
        return self.proc

    def start(self, timeout: float = 90.0) -> DaemonProcess:
        self.launch()
        assert self.proc is not None
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            m = READY.search(self.log())
            if m:
                self.port = int(m.group(1))
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"the daemon exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            time.sleep(0.1)
        raise TimeoutError(f"the daemon did not start within {timeout} s:\n{self.log()[-3000:]}")

    def stop(self, wait: float = 20.0) -> float:
        """SIGTERM; the seconds until the process has exited (killed after `wait`: then `wait` is returned)."""
        if self.proc is None or self.proc.poll() is not None:
            return 0.0
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(wait)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            return wait
        return time.monotonic() - started

    def open_fds(self) -> int:
        """How many file descriptors the daemon process holds."""
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    # ---- HTTP (blocking, stdlib: usable from threads and hypothesis tests) -----------------------------
    def request(self, method: str, path: str, body: bytes | str | None = None,
                headers: dict[str, str] | None = None, timeout: float = 30.0) -> Answer:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            data = body.encode() if isinstance(body, str) else body
            hdrs = dict(headers or {})
            if not any(k.lower() == "host" for k in hdrs):
                hdrs["Host"] = f"127.0.0.1:{self.port}"
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for key, value in hdrs.items():
                conn.putheader(key, value)
            if data is not None:
                conn.putheader("Content-Length", str(len(data)))
            conn.endheaders(data)
            resp = conn.getresponse()
            return Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        finally:
            conn.close()

    def post_json(self, path: str, payload: Any, headers: dict[str, str] | None = None) -> Answer:
        return self.request("POST", path, json.dumps(payload),
                            {"Content-Type": "application/json", **(headers or {})})

    def get_json(self, path: str) -> Any:
        answer = self.request("GET", path)
        assert answer.status == 200, (path, answer)
        return answer.json

    def status(self) -> dict[str, Any]:
        return self.get_json("/api/status")  # type: ignore[no-any-return]

    def state(self) -> dict[str, Any]:
        return self.get_json("/api/state")  # type: ignore[no-any-return]

    def frames(self) -> int:
        return int(self.status()["frames"])

    def counter(self, name: str) -> int:
        return int(self.status()["counters"].get(name, 0))

    def surface_port(self, name: str) -> int:
        bound = self.state()["surfaces"][name]["bound"]
        return int(bound[1])

    def viewers(self) -> dict[str, Any]:
        return self.get_json("/api/webrtc/viewers")  # type: ignore[no-any-return]

    # ---- the invariant every attack test ends with ------------------------------------------------------
    def assert_rendering(self, since: int, more: int = 5, timeout: float = 60.0) -> int:
        """The daemon is alive and its frame counter went on past `since` (counting frames, not timing them)."""
        end = time.monotonic() + timeout
        frames = since
        while time.monotonic() < end:
            assert self.alive(), f"the daemon died:\n{self.log()[-3000:]}"
            with contextlib.suppress(OSError):
                frames = self.frames()
                if frames >= since + more:
                    return frames
            time.sleep(0.1)
        raise AssertionError(f"rendering stopped: {frames} frames, expected more than {since + more}")


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll until `predicate()` is truthy (a generous bound: it guards against hangs, it does not time)."""
    end = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < end:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout} s (last: {last!r})")


STALL_S = 1.0  # the longest an answer to /health may take while an attack runs, on a calm machine


@dataclass
class Probe:
    """One /health request: its status (0 when it failed or timed out) and how long the answer took."""

    status: int
    seconds: float


def _probe(daemon: DaemonProcess, timeout: float) -> Probe:
    t0 = time.monotonic()
    try:
        status = daemon.request("GET", "/health", timeout=timeout).status
    except OSError:
        status = 0
    return Probe(status, time.monotonic() - t0)


@contextlib.contextmanager
def health_probe(daemon: DaemonProcess, stall_s: float = STALL_S) -> Iterator[list[Probe]]:
    """Asks /health over and over on a thread while the block runs and records each answer's latency; when the
    block ends, fails if any probe failed or took longer than the bound: `stall_s`, or four times the slowest
    of 20 probes sent just before the block, whichever is larger (a loaded machine is slow everywhere, a
    stalled loop only while the attack runs). The daemon is a separate process, so a stall shows up here as
    a slow answer, and the whole time of a stall is seen by the probe in flight."""
    calm = max(_probe(daemon, 30).seconds for _ in range(20))
    bound = max(stall_s, 4 * calm)
    probes: list[Probe] = []
    done = threading.Event()

    def probe() -> None:
        while not done.is_set():
            probes.append(_probe(daemon, 30))

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    try:
        yield probes
    finally:
        done.set()
        prober.join(40)
    assert probes, "no /health probe ran while the block ran"
    failed = [p for p in probes if p.status != 200]
    slowest = max(probes, key=lambda p: p.seconds)
    assert not failed, f"/health failed while the block ran: {failed[:5]}"
    assert slowest.seconds <= bound, (f"the event loop stalled: /health took {slowest.seconds:.2f} s, over the "
                                      f"bound of {bound:.2f} s (slowest calm probe {calm:.3f} s, {len(probes)} probes)")
