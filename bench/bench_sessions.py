"""Many talking avatars on one GPU: N sessions in one process, each DiffPoseTalk (DDIM) + FlashAvatar at 512²
25 fps with one WHEP viewer (an aiortc client on loopback, in viewer processes of their own as remote browsers
would be: `whep_viewers.py`), speech from a file in real time. Sessions share the
process's models (one copy of each) and their DiffPoseTalk hops run as batches.

Prints the curve N → late frames, g2g p95 (the worst session's), GPU memory (and per session beyond the first),
GPU busy %, CPU per session, and where it saturates; each N runs in a fresh child process.

    python bench/bench_sessions.py --sessions 1,8,16,32 --seconds 30           # the curve (GPU)
    python bench/bench_sessions.py --competing-duty 0.7                       # one session, a GPU 70 % busy,
                                                                              # priority on and off
    python bench/bench_sessions.py --cpu-demo                                 # 4 demo sessions at 128² on the CPU

Goals: 0 late frames and g2g p95 <= 250 ms in every session; GPU memory per session beyond the first <= 100 MiB;
on the CPU demo, every session renders >= 90 % of its frames.

The sessions are the daemon's default one and N-1 made by its session host (as `POST /api/sessions` makes
them); every figure is taken over --seconds that start once all are built, their viewers connected and 2 s
more have passed.

How each number is measured:
- late frames: the pipeline's frames_late counter (a frame rendered more than its lateness bound after its pts),
  plus frames dropped by the clock or the renderer, summed over the sessions.
- g2g p95: per session, from the capture time of the audio that drove a frame to the arrival of the frame's last
  RTP packet at its viewer (as bench_e2e measures it); the worst session's p95 is printed.
- GPU memory: torch's allocated bytes after the first session and after the last one is built; the difference
  over N-1 is the cost of one more session. The tensors a second session holds beyond the shared models are
  also counted directly (drivers.memory.tensor_bytes), which works on the CPU too.
- GPU busy %: torch.cuda.utilization (NVML) or `nvidia-smi`, sampled every half second during the run.
- CPU per session: the process's CPU time over the run, divided by the wall time and N (in cores).
- cores by thread: each thread's CPU time over the run (/proc/self/task), grouped by the thread's name
  (every session's render thread is one group; library threads without a Python name by their OS name). With
  --cpu-demo also as CPU ms per rendered frame: on a shared, loaded machine the share of frames rendered
  follows the cores the run was given, the CPU time per frame follows the code.

With --processes K the N sessions are split over K processes sharing the GPU (as `avatar-bridge workers
--per-gpu K` runs them), which measure over the same seconds; their figures are added up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI does (bridge/cli.py)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _avatar_common import DEFAULT_GOLDEN, REPO, golden_flame_model  # (puts the checkout on the path)

if TYPE_CHECKING:
    from drivers.batch_window import BatchWindow

INTERPRETER_BOUND = 0.8  # cores per process past which its interpreter lock, not the GPU, is the likely limit
GOALS = {"g2g_p95_ms": 250.0, "extra_session_mib": 100.0, "cpu_demo_rendered": 0.90}
WARMUP_S = 2.0  # measurements start this long after each session's first frame
RESULT = "RESULT "  # a child's one line of figures for the parent
STALL_S = 0.004  # a wake-up this late counts as a stall of the process's threads
VIEWERS_PER_PROCESS = 8  # WHEP viewers one viewer process receives and decodes
VIEWER_START_S = 120.0  # how long a viewer process may take to connect its viewers


# ------------------------------------------------------------------------------------------- sessions
def session_config(args: argparse.Namespace, n: int) -> Any:
    """The daemon's config, which its n sessions share: the golden FlashAvatar + DiffPoseTalk (or, with
    --cpu-demo, the demo head and the procedural driver), speech from a file in real time, HTTP on a free
    port, no control surfaces, room for n sessions."""
    from bridge.core.config import load_config
    from drivers.audio.decode import demo_clip_path

    common: dict[str, Any] = {
        "video": {"width": args.size, "height": args.size, "fps": 25},
        "audio": {"source": "file", "file": str(args.audio or demo_clip_path()), "realtime": True, "loop": True},
        "http": {"enabled": True, "host": "127.0.0.1", "port": 0},
        "osc": {"enabled": False}, "vmc": {"enabled": False}, "midi": {"enabled": False},
        "pipeline": {"gpu_priority": args.priority == "on"},
        "sessions": {"max": n},
    }
    if args.cpu_demo:
        return load_config(None, environ={}, overrides={
            **common, "face": {"driver": "procedural"}, "avatar": {"kind": "demo", "device": "cpu"}})
    fa, dpt = args.golden_fa, args.golden_dpt
    return load_config(None, environ={}, overrides={
        **common,
        "face": {"driver": "diffposetalk", "diffposetalk": {
            "checkpoint": str(args.dpt_checkpoint or dpt / "dpt_tiny_head.pt"),
            "stats": str(args.dpt_stats or dpt / "stats_head.npz"), "sampler": "ddim",
            "device": args.device}},
        "avatar": {"kind": "flashavatar", "device": args.device, "checkpoint": str(fa / "chkpnt_seed0.pth"),
                   "flame_model": str(golden_flame_model(fa)), "flame_masks": str(fa / "FLAME_masks_synthetic.pkl"),
                   "flame_mesh": str(fa / "FlameMesh.obj"), "eyelids_dir": str(fa),
                   "shape": str(fa / "golden_seed0.npz")},
    })


async def open_sessions(daemon: Any, n: int) -> list[Any]:
    """The daemon's default session and n-1 more made through its session host (as `POST /api/sessions`
    makes them, with the daemon's settings): the one place that knows how sessions are made."""
    from bridge.core.config import SessionSpec

    sessions = [daemon.session]
    for i in range(1, n):
        sessions.append(await daemon.create_session(SessionSpec(), name=f"bench{i}"))
    return sessions


# ------------------------------------------------------------------------------------------- measuring
class GpuBusy:
    """Samples the GPU's busy % every half second on a thread (NVML through torch, else nvidia-smi)."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gpu-busy", daemon=True)

    def start(self) -> GpuBusy:
        self._thread.start()
        return self

    def stop(self) -> float | None:
        self._done.set()
        self._thread.join(2)
        return sum(self.samples) / len(self.samples) if self.samples else None

    @staticmethod
    def sample() -> float | None:
        import torch

        if not torch.cuda.is_available():
            return None
        with contextlib.suppress(Exception):
            return float(torch.cuda.utilization())
        if shutil.which("nvidia-smi"):
            with contextlib.suppress(Exception):
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                      "-i", str(torch.cuda.current_device())], capture_output=True, text=True,
                                     timeout=2).stdout
                return float(out.strip().splitlines()[0])
        return None

    def _run(self) -> None:
        while not self._done.wait(0.5):
            value = self.sample()
            if value is None:
                return
            self.samples.append(value)


def gpu_allocated() -> int | None:
    import torch

    return int(torch.cuda.memory_allocated()) if torch.cuda.is_available() and torch.cuda.is_initialized() else None


def gpu_reserved() -> int | None:
    """What torch's allocator holds from the driver (tensors, free blocks and graph pools): nearer what
    `nvidia-smi` shows for the process than the allocated bytes."""
    import torch

    return int(torch.cuda.memory_reserved()) if torch.cuda.is_available() and torch.cuda.is_initialized() else None


def extra_session_bytes(first: Any, second: Any) -> int:
    """Tensor bytes the second session's avatar and face driver hold beyond what they share with the first's."""
    from drivers.memory import tensor_bytes

    shared = [first.avatar, first.face_driver]
    return tensor_bytes(second.avatar, shared) + tensor_bytes(second.face_driver, shared)


@dataclass
class Measured:
    """One session's figures (frame counters, and the viewer's once measured)."""

    late: int = 0
    dropped: int = 0
    rendered: int = 0
    g2g_p95_ms: float = float("nan")
    render_p50_ms: float = float("nan")
    viewer_frames: int = 0

    @property
    def ticks(self) -> int:
        return self.rendered + self.dropped

    def __sub__(self, earlier: Measured) -> Measured:
        """The counts between `earlier` and this (the render time stays this one's)."""
        return Measured(self.late - earlier.late, self.dropped - earlier.dropped, self.rendered - earlier.rendered,
                        render_p50_ms=self.render_p50_ms)


async def run_sessions(args: argparse.Namespace, n: int) -> dict[str, Any]:
    """Serve `n` sessions with one viewer each and measure them for --seconds once all are built and warm (see
    the module docstring)."""
    import torch
    from bench_e2e import Probe, g2g_values, percentiles, sending_tracks, start_probe, watch_stalls

    from bridge.http.app import build_app
    from bridge.runtime.daemon import Daemon

    load = None
    load_proc = None
    if args.competing_duty is not None:
        if args.competing_where == "thread":
            from gpu_load import CompetingLoad

            load = CompetingLoad(args.competing_duty).start()
        else:
            load_proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("gpu_load.py")),
                                          "--duty", str(args.competing_duty)])
    t0 = time.monotonic()
    daemon = Daemon(session_config(args, n), http_app=build_app)
    alloc_first, reserved_first = gpu_allocated(), gpu_reserved()
    done = threading.Event()
    figures: dict[str, Any] = {}
    threads: list[threading.Thread] = []
    viewers = RemoteViewers()

    async def measure(d: Any) -> None:
        try:
            sessions = await open_sessions(d, n)
            figures["build_s"] = time.monotonic() - t0
            figures["alloc_all"], figures["reserved_all"] = gpu_allocated(), gpu_reserved()
            figures["counted"] = extra_session_bytes(sessions[0], sessions[1]) if n > 1 else None
            probes = [Probe() for _ in sessions]
            for s, p in zip(sessions, probes):
                threads.extend(start_probe(s, p, done))
            if args.viewers:
                base = f"http://127.0.0.1:{d.http_port}"
                await viewers.start([base + ("/whep" if s is d.session else f"/sessions/{s.name}/whep")
                                     for s in sessions])
            if args.barrier is not None:  # the other processes of this run measure over the same seconds
                await asyncio.to_thread(meet, args.barrier, args.peers)
            await asyncio.sleep(WARMUP_S)
            before = [counts(s) for s in sessions]
            after_pts = [s.clock.now() for s in sessions]
            busy = GpuBusy().start()
            stalls: list[tuple[float, float]] = []
            threads.append(watch_stalls(time.monotonic, stalls, done, threshold=STALL_S))
            threads0 = thread_cpu()
            cpu0, wall0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
            await asyncio.sleep(args.seconds)
            wall = time.monotonic() - wall0
            cpu1 = resource.getrusage(resource.RUSAGE_SELF)
            figures["threads"] = thread_groups(threads0, thread_cpu(), wall)
            figures["stalls"] = {"count": len(stalls), "stalled_s": sum(d for _, d in stalls),
                                 "longest_ms": 1000 * max((d for _, d in stalls), default=0.0)}
            figures["gpu_busy"] = busy.stop()
            figures["wall"] = wall
            figures["cpu_s"] = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
            per = [counts(s) - b for s, b in zip(sessions, before)]
            if args.viewers:
                seen = await viewers.stop()
                for s, p, a, m, (location, watched) in zip(sessions, probes, after_pts, per, seen):
                    video = next((t for t in sending_tracks(s, location) if getattr(t, "kind", "") == "video"), None)
                    clock_origin = time.monotonic() - s.clock.now()
                    g2g = g2g_values(watched["complete"], getattr(video, "first_media_time", None), p,
                                     clock_origin, a)
                    m.g2g_p95_ms, m.viewer_frames = percentiles(g2g)[1], int(watched["decoded"])
            figures["per"] = per
            figures["batches"] = hop_batches(sessions[0], wall0)
            figures["frame_batches"] = frame_batches(sessions[0], wall0)
            figures["late_parts"] = late_parts(sessions)
        finally:
            d.request_stop()

    tasks: list[asyncio.Task[None]] = []
    try:
        await daemon.serve(lambda d: tasks.append(asyncio.get_running_loop().create_task(measure(d))))
    finally:
        done.set()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        await viewers.close()
        for t in threads:
            t.join(2.0)
        achieved = load.stop() if load is not None else None
        if load_proc is not None:
            load_proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                load_proc.wait(10)
    for task in tasks:
        task.result()  # a failed measurement is the run's error
    per = figures["per"]
    cuda = torch.cuda.is_available()
    wall = figures["wall"]
    return {
        "n": n, "seconds": wall, "build_s": figures["build_s"],
        "late": sum(m.late for m in per), "dropped": sum(m.dropped for m in per),
        "late_sessions": sum(1 for m in per if m.late or m.dropped),
        "g2g_p95_worst_ms": max((m.g2g_p95_ms for m in per), default=float("nan")),
        "rendered_share": [m.rendered / m.ticks if m.ticks else 0.0 for m in per],
        "render_p50_ms": sorted(m.render_p50_ms for m in per)[len(per) // 2],
        "viewer_frames": [m.viewer_frames for m in per],
        "gpu_alloc_first_mib": None if alloc_first is None else alloc_first / 2**20,
        "gpu_alloc_all_mib": None if figures["alloc_all"] is None else figures["alloc_all"] / 2**20,
        "gpu_peak_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "gpu_reserved_first_mib": None if reserved_first is None else reserved_first / 2**20,
        "gpu_reserved_all_mib": None if figures["reserved_all"] is None else figures["reserved_all"] / 2**20,
        "extra_session_counted_mib": None if figures["counted"] is None else figures["counted"] / 2**20,
        "gpu_busy_pct": figures["gpu_busy"], "cpu_cores": figures["cpu_s"] / wall if wall > 0 else float("nan"),
        "cpu_count": os.cpu_count(), "competing_achieved": achieved, "load_average": os.getloadavg()[0],
        "device": torch.cuda.get_device_name() if cuda else "cpu", "hop_batches": figures["batches"],
        "frame_batches": figures["frame_batches"],
        "threads": figures["threads"], "rendered_total": sum(m.rendered for m in per),
        "late_parts": figures["late_parts"], "stalls": figures["stalls"],
    }


def late_parts(sessions: Sequence[Any]) -> dict[str, float] | None:
    """Where the time of the sessions' most recent late frames went (median ms of each part): the clock
    handing the frame over late, the frame waiting for its render thread, the render itself."""
    import statistics

    late = [lf for s in sessions for lf in list(s.pipeline.late_frames)]
    if not late:
        return None
    return {"frames": float(len(late)),
            **{part: 1000 * statistics.median(getattr(lf, part) for lf in late)
               for part in ("tick_late", "waited", "render", "late")}}


def thread_cpu() -> dict[int, tuple[str, float]]:
    """CPU seconds of each of the process's threads so far (Linux: /proc/self/task), by native id, with the
    Python name of the thread where it has one (native threads of libraries keep their OS name)."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, tuple[str, float]] = {}
    for task in Path("/proc/self/task").glob("*"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            tid = int(task.name)
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            comm = (task / "comm").read_text().strip()
            out[tid] = (names.get(tid, f"[{comm}]"), (int(fields[11]) + int(fields[12])) / tick)
    return out


def thread_groups(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]],
                  wall: float) -> dict[str, float]:
    """Cores each kind of thread used over `wall` seconds: threads grouped by name with digits and session
    ids taken out (every session's render thread is one group)."""
    import re

    groups: dict[str, float] = {}
    for tid, (name, cpu) in after.items():
        spent = cpu - before.get(tid, (name, 0.0))[1]
        kind = re.sub(r"[0-9a-f]{24}|\d+", "#", name)
        groups[kind] = groups.get(kind, 0.0) + spent / max(wall, 1e-9)
    return dict(sorted(groups.items(), key=lambda kv: -kv[1]))


def meet(folder: Path, peers: int, timeout_s: float = 600.0) -> None:
    """Wait until `peers` processes (this one included) have built their sessions: each leaves a file in
    `folder` and waits for the others'."""
    (folder / f"ready-{os.getpid()}").touch()
    end = time.monotonic() + timeout_s
    while len(list(folder.glob("ready-*"))) < peers:
        if time.monotonic() > end:
            raise RuntimeError(f"the other processes of the run did not build their sessions in {timeout_s:.0f} s")
        time.sleep(0.05)


class RemoteViewers:
    """The sessions' WHEP viewers, in processes of their own (`whep_viewers.py`, VIEWERS_PER_PROCESS each):
    like remote browsers, their receiving and decoding take neither the measured process's cores nor its
    interpreter lock."""

    def __init__(self) -> None:
        self.procs: list[asyncio.subprocess.Process] = []
        self.locations: list[str] = []

    async def start(self, urls: Sequence[str]) -> None:
        from whep_viewers import READY

        script = str(Path(__file__).with_name("whep_viewers.py"))
        for i in range(0, len(urls), VIEWERS_PER_PROCESS):
            proc = await asyncio.create_subprocess_exec(sys.executable, script, *urls[i:i + VIEWERS_PER_PROCESS],
                                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            self.procs.append(proc)
        for proc in self.procs:
            line = await self._line(proc, READY, VIEWER_START_S)
            self.locations += json.loads(line)

    async def stop(self) -> list[tuple[str, dict[str, Any]]]:
        """End the viewers: per viewer (its resource's Location, what it saw)."""
        from whep_viewers import RESULT

        seen: list[dict[str, Any]] = []
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(b"stop\n")
            await proc.stdin.drain()
        for proc in self.procs:
            seen += json.loads(await self._line(proc, RESULT, 60.0))
        return list(zip(self.locations, seen))

    async def close(self) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(proc.wait(), 10)
        self.procs = []

    @staticmethod
    async def _line(proc: asyncio.subprocess.Process, prefix: str, timeout_s: float) -> str:
        """The rest of the first line of `proc`'s output that starts with `prefix`."""
        assert proc.stdout is not None

        async def find() -> str:
            assert proc.stdout is not None
            while True:
                raw = await proc.stdout.readline()
                if not raw:
                    raise RuntimeError(f"a viewer process ended before it printed {prefix.strip()}")
                line = raw.decode(errors="replace").rstrip("\n")
                if line.startswith(prefix):
                    return line[len(prefix):]

        return await asyncio.wait_for(find(), timeout_s)


def hop_batches(session: Any, since: float) -> dict[str, float] | None:
    """The DiffPoseTalk batches run since `since` (time.monotonic) (see `batch_figures`)."""
    from drivers.face.diffposetalk.streaming import DiffPoseTalkFaceDriver

    driver = session.face_driver
    batcher = driver.hop_batcher if isinstance(driver, DiffPoseTalkFaceDriver) else None
    return None if batcher is None else batch_figures(batcher, since)


def frame_batches(session: Any, since: float) -> dict[str, float] | None:
    """The FlashAvatar frame batches run since `since` (see `batch_figures`), once enough sessions share the
    avatar for its frames to render together."""
    from drivers.avatar.flashavatar.avatar import FlashAvatarAvatar
    from drivers.avatar.scene.avatar import SceneAvatar

    head = session.avatar.head if isinstance(session.avatar, SceneAvatar) else session.avatar
    batcher = head.frame_batcher if isinstance(head, FlashAvatarAvatar) else None
    return None if batcher is None else batch_figures(batcher, since)


def batch_figures(batcher: BatchWindow[Any], since: float) -> dict[str, float] | None:
    """A batcher's batches since `since`: how many per second, their mean size, and their median and p95 run
    time."""
    recent = [b for b in list(batcher.history) if b.started >= since]
    if not recent:
        return None
    span = max(1e-9, recent[-1].started - recent[0].started)
    times = sorted(b.seconds * 1000 for b in recent)
    return {"per_s": len(recent) / span, "mean_size": sum(b.size for b in recent) / len(recent),
            "p50_ms": times[len(times) // 2], "p95_ms": times[min(len(times) - 1, int(0.95 * len(times)))]}


def counts(session: Any) -> Measured:
    """The session's frame counters so far (a run's figures are the difference of two)."""
    snap = session.stats.snapshot()
    stages, counters = snap["stages"], snap["counters"]
    m = Measured(late=int(counters.get("frames_late", 0)),
                 dropped=sum(int(stages.get(k, {}).get("dropped", 0)) for k in ("clock", "render")),
                 rendered=int(stages.get("render", {}).get("count", 0)))
    m.render_p50_ms = float(stages.get("render", {}).get("p50_ms", float("nan")))
    return m


# ------------------------------------------------------------------------------------------- the parent
def child(args: argparse.Namespace, n: int, extra: Sequence[str] = ()) -> dict[str, Any] | None:
    """Run one measurement in a fresh process (its models, memory and CPU time its own); with --processes K,
    the n sessions are split over K processes that share the GPU and measure over the same seconds, and their
    figures are combined."""
    k = max(1, min(args.processes, n))
    cmd = [sys.executable, str(Path(__file__).resolve()), *child_flags(args), *extra]
    if k == 1:
        proc = subprocess.run([*cmd, "--one", str(n)], stdout=subprocess.PIPE, text=True, check=False)
        return child_result(n, proc.stdout, proc.returncode)
    import tempfile

    sizes = [n // k + (1 if i < n % k else 0) for i in range(k)]
    with tempfile.TemporaryDirectory(prefix="bench-sessions-") as barrier:
        procs = [subprocess.Popen([*cmd, "--one", str(m), "--barrier", barrier, "--peers", str(k)],
                                  stdout=subprocess.PIPE, text=True) for m in sizes]
        outs = [p.communicate() for p in procs]
    parts = [child_result(m, out, p.returncode) for m, (out, _), p in zip(sizes, outs, procs)]
    if any(part is None for part in parts):
        return None
    return combined([part for part in parts if part is not None])


def child_result(n: int, stdout: str, returncode: int) -> dict[str, Any] | None:
    for line in stdout.splitlines():
        if line.startswith(RESULT):
            result: dict[str, Any] = json.loads(line[len(RESULT):])
            return result
        print(f"  [{n}] {line}")
    print(f"  N={n}: the run failed (exit {returncode})")
    return None


def combined(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from the processes of a run: counts summed, the worst g2g, GPU memory summed (a process's
    first session carries its own copy of the models), the CPU summed, the GPU's busy share as the highest any
    process saw (each samples the whole GPU)."""
    first = parts[0]

    def total(key: str) -> float | None:
        values = [p[key] for p in parts]
        return None if any(v is None for v in values) else float(sum(values))

    return {
        **first,
        "n": sum(p["n"] for p in parts), "processes": len(parts),
        "seconds": max(p["seconds"] for p in parts), "build_s": max(p["build_s"] for p in parts),
        "late": sum(p["late"] for p in parts), "dropped": sum(p["dropped"] for p in parts),
        "late_sessions": sum(p["late_sessions"] for p in parts),
        "g2g_p95_worst_ms": max((p["g2g_p95_worst_ms"] for p in parts), default=float("nan")),
        "rendered_share": [x for p in parts for x in p["rendered_share"]],
        "viewer_frames": [x for p in parts for x in p["viewer_frames"]],
        "gpu_alloc_all_mib": total("gpu_alloc_all_mib"), "gpu_peak_mib": total("gpu_peak_mib"),
        "gpu_busy_pct": max((p["gpu_busy_pct"] for p in parts if p["gpu_busy_pct"] is not None), default=None),
        "cpu_cores": sum(p["cpu_cores"] for p in parts),
        "hop_batches": first["hop_batches"], "frame_batches": first["frame_batches"],
        "gpu_reserved_all_mib": total("gpu_reserved_all_mib"),
        "late_parts": first["late_parts"], "rendered_total": sum(p["rendered_total"] for p in parts),
        "stalls": max((p["stalls"] for p in parts), key=lambda st: st["stalled_s"]),  # the most stalled process
        "threads": dict(sorted(((name, sum((p.get("threads") or {}).get(name, 0.0) for p in parts))
                                for name in {k for p in parts for k in (p.get("threads") or {})}),
                               key=lambda kv: -kv[1])),
    }


def child_flags(args: argparse.Namespace) -> list[str]:
    flags = ["--seconds", str(args.seconds), "--size", str(args.size), "--device", args.device,
             "--golden-fa", str(args.golden_fa), "--golden-dpt", str(args.golden_dpt), "--viewers", str(args.viewers),
             "--competing-where", args.competing_where, "--processes", str(args.processes)]
    if args.cpu_demo:
        flags.append("--cpu-demo")
    for flag, value in (("--audio", args.audio), ("--dpt-checkpoint", args.dpt_checkpoint),
                        ("--dpt-stats", args.dpt_stats)):
        if value is not None:
            flags += [flag, str(value)]
    return flags


def fmt(value: float | None, spec: str = ".0f") -> str:
    return "-" if value is None or value != value else format(value, spec)


def print_curve(results: list[dict[str, Any]]) -> None:
    print(f"\n{'N':>4}{'late':>7}{'dropped':>9}{'late sess':>10}{'g2g p95 worst':>15}{'GPU MiB':>9}"
          f"{'per extra':>11}{'counted':>9}{'GPU busy':>10}{'CPU cores':>11}{'per session':>13}{'built s':>9}")
    base = next((r for r in results if r["n"] == 1), None)
    for r in results:
        per_extra = None
        if r["n"] > 1 and r["gpu_alloc_first_mib"] is not None:
            per_extra = (r["gpu_alloc_all_mib"] - r["gpu_alloc_first_mib"]) / (r["n"] - 1)
        print(f"{r['n']:>4}{r['late']:>7}{r['dropped']:>9}{r['late_sessions']:>10}{fmt(r['g2g_p95_worst_ms']):>15}"
              f"{fmt(r['gpu_alloc_all_mib']):>9}{fmt(per_extra, '.1f'):>11}"
              f"{fmt(r['extra_session_counted_mib'], '.1f'):>9}{fmt(r['gpu_busy_pct']):>9}%"
              f"{r['cpu_cores']:>11.2f}{r['cpu_cores'] / r['n']:>13.3f}{r['build_s']:>9.1f}")
    if base is not None:
        print(f"(device: {base['device']}; GPU MiB: allocated after all sessions were built; per extra: "
              "(all - first) / (N-1); counted: tensors a second session holds beyond the shared models)")
    for r in results:
        top = list((r.get("threads") or {}).items())[:8]
        if top:
            print(f"N={r['n']}: cores by thread: " + ", ".join(f"{name} {cores:.2f}" for name, cores in top))
    for r in results:
        lp = r.get("late_parts")
        if lp:
            print(f"N={r['n']}: the last {lp['frames']:.0f} late frames, median ms: clock handed over "
                  f"{lp['tick_late']:.1f} late, waited {lp['waited']:.1f} for the render thread, rendered in "
                  f"{lp['render']:.1f}, done {lp['late']:.1f} past their pts")
    for r in results:
        hb = r.get("hop_batches")
        if hb:
            print(f"N={r['n']}: DiffPoseTalk batches {hb['per_s']:.0f}/s of {hb['mean_size']:.1f} hops on average, "
                  f"{hb['p50_ms']:.1f} ms median, {hb['p95_ms']:.1f} ms p95 each")
        st = r.get("stalls")
        if st:
            print(f"N={r['n']}: interpreter stalls over {STALL_S * 1000:.0f} ms (a thread waking every 2 ms found "
                  f"the lock held, whose switch interval is 5 ms, or no core free): {st['count']}, "
                  f"{100 * st['stalled_s'] / r['seconds']:.0f} % of the time, longest {st['longest_ms']:.0f} ms")
        fb = r.get("frame_batches")
        if fb:
            print(f"N={r['n']}: FlashAvatar frame batches {fb['per_s']:.0f}/s of {fb['mean_size']:.1f} frames on "
                  f"average, {fb['p50_ms']:.1f} ms median, {fb['p95_ms']:.1f} ms p95 each")
        if r["n"] > 1 and r.get("gpu_reserved_first_mib") is not None and r.get("gpu_reserved_all_mib") is not None:
            extra = (r["gpu_reserved_all_mib"] - r["gpu_reserved_first_mib"]) / (r["n"] - 1)
            print(f"N={r['n']}: GPU memory reserved by torch {r['gpu_reserved_all_mib']:.0f} MiB, "
                  f"{extra:.1f} MiB per session beyond the first (allocated: the table's 'per extra')")


def meets_goals(r: dict[str, Any], viewers: bool) -> bool:
    """0 late or dropped frames, and (with viewers) g2g p95 within the goal in every session."""
    return not r["late"] and not r["dropped"] and (not viewers or r["g2g_p95_worst_ms"] <= GOALS["g2g_p95_ms"])


def saturation(results: list[dict[str, Any]], viewers: bool) -> str:
    """Where the curve stops meeting the goals, and the resource nearest its limit there."""
    bad = [r for r in results if not meets_goals(r, viewers)]
    if not bad:
        return f"no saturation up to N={max(r['n'] for r in results)}: every session met the goals"
    r = bad[0]
    good = [g["n"] for g in results if g not in bad and g["n"] < r["n"]]
    cpu_share = r["cpu_cores"] / max(1, r["cpu_count"] or 1)
    gpu_share = (r["gpu_busy_pct"] or 0.0) / 100.0
    per_process = r["cpu_cores"] / r.get("processes", 1)
    if r["device"] == "cpu":
        which = f"the CPU, which renders and drives the faces here ({r['cpu_cores']:.1f} of {r['cpu_count']} cores busy)"
    elif per_process >= INTERPRETER_BOUND:
        which = (f"each process's Python interpreter ({per_process:.2f} cores per process of work that mostly "
                 "holds the interpreter's lock, which runs one thread at a time; the GPU is "
                 f"{r['gpu_busy_pct'] or 0:.0f} % busy): split the sessions over more processes (--processes, "
                 "`avatar-bridge workers --per-gpu`)")
    elif cpu_share >= gpu_share:
        which = (f"the CPU ({r['cpu_cores']:.1f} of {r['cpu_count']} cores busy: video encoding for the viewers, one "
                 "encode per session and frame, is the likely share; NVENC or one encode shared by several viewers "
                 "would lift it)")
    else:
        which = f"the GPU ({r['gpu_busy_pct']:.0f} % busy)"
    return (f"saturates between N={max(good) if good else 0} and N={r['n']} ({r['late']} late, {r['dropped']} dropped, "
            f"g2g p95 {fmt(r['g2g_p95_worst_ms'])} ms): nearest its limit is {which}")


def print_cpu_demo(r: dict[str, Any]) -> None:
    """The CPU demo's figures: the share of frames each session rendered, where the CPU time went (per thread
    kind, in ms per rendered frame: a property of the code, unlike wall figures on a loaded machine) and the
    goal line."""
    shares = r["rendered_share"]
    for i, share in enumerate(shares):
        print(f"session {i}: rendered {share:.1%} of its frames (goal >= {GOALS['cpu_demo_rendered']:.0%})")
    rendered = r["rendered_total"]
    spent = {name: cores * r["seconds"] for name, cores in (r.get("threads") or {}).items()}  # CPU seconds
    if rendered and spent:
        total = sum(spent.values())
        print(f"CPU time per rendered frame, by thread ({rendered} frames, {total:.1f} CPU s in {r['seconds']:.0f} s):")
        for name, seconds in spent.items():
            if seconds * 1000 / rendered >= 0.05:
                print(f"  {name:<40}{seconds * 1000 / rendered:>8.2f} ms")
        print(f"  {'all':<40}{total * 1000 / rendered:>8.2f} ms   (4 sessions x 25 fps on {r['cpu_count']} cores "
              f"leave {r['cpu_count'] * 1000 / 100:.0f} ms)")
    print(f"a render takes {r['render_p50_ms']:.1f} ms (median, wall); load average {r['load_average']:.2f} at the "
          f"end (this run's own load included)")
    goal(f"every session renders >= {GOALS['cpu_demo_rendered']:.0%} of its frames (worst {min(shares):.1%})",
         all(s >= GOALS["cpu_demo_rendered"] for s in shares))


def goal(text: str, ok: bool) -> None:
    print(f"goal: {text}: {'PASS' if ok else 'FAIL'}")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sessions", default="1,8,16,32", help="session counts of the curve (default 1,8,16,32)")
    p.add_argument("--seconds", type=float, default=30.0, help="how long each run streams (default 30)")
    p.add_argument("--size", type=int, default=None, help="square frame size (default 512; 128 with --cpu-demo)")
    p.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    p.add_argument("--viewers", type=int, default=1, choices=(0, 1), help="a WHEP viewer per session (default 1)")
    p.add_argument("--golden-fa", type=Path, default=DEFAULT_GOLDEN)
    p.add_argument("--golden-dpt", type=Path, default=Path(os.environ.get(
        "AVATAR_BRIDGE_GOLDEN_DPT", REPO.parent / "shared" / "golden" / "diffposetalk")))
    p.add_argument("--dpt-checkpoint", type=Path, default=None,
                   help="DiffPoseTalk checkpoint (default: the golden tiny one; bench/make_bench_models.py writes one "
                        "of the released model's sizes)")
    p.add_argument("--dpt-stats", type=Path, default=None, help="its statistics (default: the golden ones)")
    p.add_argument("--audio", type=Path, default=None, help="speech file (default: the demo clip, looped)")
    p.add_argument("--competing-duty", type=float, default=None,
                   help="one session with a competing GPU load this busy (e.g. 0.7), priority on and off")
    p.add_argument("--competing-where", default="process", choices=("process", "thread"),
                   help="the load in its own process (a game: the GPU time-slices processes) or on a thread of "
                        "this one (where stream priorities order the kernels)")
    p.add_argument("--priority", default=None, choices=("on", "off"),
                   help="high-priority CUDA streams (pipeline.gpu_priority); default on, and both with a load")
    p.add_argument("--cpu-demo", action="store_true", help="4 demo sessions at 128² with the procedural driver on "
                                                           "the CPU: the share of frames each renders")
    p.add_argument("--processes", type=int, default=1,
                   help="split each N over this many processes sharing the GPU (as `avatar-bridge workers "
                        "--per-gpu` runs them): each has its own interpreter, models and batches (default 1)")
    p.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # a child's single run
    p.add_argument("--barrier", type=Path, default=None, help=argparse.SUPPRESS)  # a child's meeting folder
    p.add_argument("--peers", type=int, default=1, help=argparse.SUPPRESS)  # processes meeting there
    args = p.parse_args(argv)
    if args.size is None:
        args.size = 128 if args.cpu_demo else 512
    if args.cpu_demo:
        args.device = "cpu"
    if args.one is not None:
        args.priority = args.priority or "on"
        import logging

        logging.basicConfig(level=logging.WARNING, format="  log %(name)s: %(message)s")
        result = asyncio.run(run_sessions(args, args.one))
        print(RESULT + json.dumps(result), flush=True)
        return 0
    if not args.cpu_demo:
        for path in (args.golden_fa / "chkpnt_seed0.pth", args.dpt_checkpoint or args.golden_dpt / "dpt_tiny_head.pt"):
            if not path.is_file():
                sys.exit(f"bench_sessions: {path} not found; pass --golden-fa and --golden-dpt or --dpt-checkpoint")

    if args.cpu_demo:
        print(f"bench_sessions --cpu-demo: 4 sessions, demo head {args.size}² + procedural driver on the CPU, "
              f"{args.seconds:.0f} s, {args.viewers} viewer each; load average {os.getloadavg()[0]:.2f} before",
              flush=True)
        r = child(args, 4, ["--priority", "on"])
        if r is None:
            return 1
        print_curve([r])
        print_cpu_demo(r)
        return 0

    if args.competing_duty is not None:
        print(f"bench_sessions: one session at {args.size}², a competing GPU load {args.competing_duty:.0%} busy "
              f"({args.competing_where}), {args.seconds:.0f} s", flush=True)
        rows = []
        for prio in ([args.priority] if args.priority else ["on", "off"]):
            r = child(args, 1, ["--priority", prio, "--competing-duty", str(args.competing_duty)])
            if r is not None:
                rows.append((prio, r))
        print(f"\n{'priority':>9}{'late':>7}{'dropped':>9}{'g2g p95 ms':>12}{'GPU busy':>10}{'load achieved':>15}")
        for prio, r in rows:
            print(f"{prio:>9}{r['late']:>7}{r['dropped']:>9}{fmt(r['g2g_p95_worst_ms']):>12}"
                  f"{fmt(r['gpu_busy_pct']):>9}%{fmt(None if r['competing_achieved'] is None else r['competing_achieved'] * 100):>14}%")
        return 0

    counts = [int(x) for x in args.sessions.split(",") if x.strip()]
    print(f"bench_sessions: N = {counts}, {args.size}² @ 25 fps, {args.seconds:.0f} s each, device {args.device}, "
          f"DiffPoseTalk DDIM + FlashAvatar, {args.viewers} WHEP viewer per session, sessions split over "
          f"{args.processes} process(es)", flush=True)
    results = []
    for n in counts:
        print(f"  N={n} ...", flush=True)
        r = child(args, n, ["--priority", args.priority or "on"])
        if r is not None:
            results.append(r)
    if not results:
        return 1
    print_curve(results)
    print(saturation(results, bool(args.viewers)))
    for r in results:
        if r["n"] > 1 and r["gpu_alloc_first_mib"] is not None:
            per_extra = (r["gpu_alloc_all_mib"] - r["gpu_alloc_first_mib"]) / (r["n"] - 1)
            goal(f"N={r['n']}: GPU memory per session beyond the first {per_extra:.0f} MiB <= "
                 f"{GOALS['extra_session_mib']:.0f} MiB", per_extra <= GOALS["extra_session_mib"])
        g2g = (f" and g2g p95 {fmt(r['g2g_p95_worst_ms'])} ms <= {GOALS['g2g_p95_ms']:.0f} ms" if args.viewers
               else " (no viewers: g2g not measured)")
        goal(f"N={r['n']}: 0 late frames (late {r['late']}, dropped {r['dropped']}){g2g} in every session",
             meets_goals(r, bool(args.viewers)))
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)  # as the CLI does: skip the interpreter's slow teardown of torch and aiortc
