"""`avatar-bridge doctor` (is this machine ready, and what to do where it is not) and `avatar-bridge devices`.

Every check prints one line: OK, WARN (works, but something is missing or degraded) or FAIL (the configured
daemon cannot run), followed by what to do. The exit code is non-zero only when a check FAILs.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import platform
import socket
import sys
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.core.config import Config, load_config
from bridge.core.errors import UserError

OK, WARN, FAIL = "OK", "WARN", "FAIL"


@dataclass
class Check:
    status: str
    name: str
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"[{self.status:<4}] {self.name}: {self.detail}"
        return text + (f"\n         → {self.fix}" if self.fix and self.status != OK else "")


# ---------------------------------------------------------------- runtime
def check_python() -> Check:
    version = ".".join(map(str, sys.version_info[:3]))
    if (sys.version_info.major, sys.version_info.minor) < (3, 10):  # an old interpreter running the source
        return Check(FAIL, "python", version, "install Python 3.10 or newer")
    return Check(OK, "python", f"{version} ({sys.executable})")


def check_torch() -> tuple[Check, Any]:
    try:
        import torch
    except Exception as exc:
        return Check(FAIL, "torch", f"not importable ({exc})",
                     "pip install torch (CPU: --index-url https://download.pytorch.org/whl/cpu)"), None
    return Check(OK, "torch", f"{torch.__version__}, {torch.get_num_threads()} CPU threads"), torch


def check_cuda(torch: Any, cfg: Config) -> Check:
    wants_gpu = cfg.avatar.device == "cuda" or cfg.avatar.renderer == "gsplat"
    if torch is None:
        return Check(FAIL if wants_gpu else WARN, "cuda", "unknown (torch missing)", "install torch first")
    if not torch.cuda.is_available():
        status = FAIL if wants_gpu else WARN
        return Check(status, "cuda", f"not available (torch {torch.__version__}); the CPU renderer will be used",
                     "for real-time FlashAvatar install an NVIDIA driver and a CUDA build of torch"
                     + ("; or set avatar.device/renderer to 'auto'" if wants_gpu else ""))
    props = torch.cuda.get_device_properties(0)
    return Check(OK, "cuda", f"{torch.cuda.get_device_name(0)}, {props.total_memory / 2**30:.1f} GiB, "
                 f"CUDA {torch.version.cuda}")


def check_gsplat(torch: Any, cfg: Config) -> Check:
    cuda = torch is not None and torch.cuda.is_available()
    try:
        gsplat = importlib.import_module("gsplat")
    except Exception as exc:
        if cfg.avatar.renderer == "gsplat":
            return Check(FAIL, "gsplat", f"not importable ({exc})", "pip install gsplat, or set avatar.renderer = 'auto'")
        if cuda:
            return Check(WARN, "gsplat", "not installed; the slower CPU renderer will be used",
                         "pip install gsplat (needs the CUDA toolkit matching torch)")
        return Check(OK, "gsplat", "not installed (not needed without CUDA)")
    return Check(OK, "gsplat", f"{getattr(gsplat, '__version__', '?')}" + ("" if cuda else " (idle: no CUDA)"))


def check_numba(cfg: Config) -> Check:
    """numba compiles the CPU tile rasteriser; without it the CPU renderer is the much slower torch one."""
    try:
        numba = importlib.import_module("numba")
    except Exception as exc:
        status = FAIL if cfg.avatar.renderer == "tiles" else WARN
        return Check(status, "numba", f"not importable ({exc}); the slower torch CPU renderer will be used",
                     "pip install numba" + (", or set avatar.renderer = 'auto'" if status == FAIL else ""))
    return Check(OK, "numba", f"{numba.__version__} (compiled CPU renderer)")


# ---------------------------------------------------------------- audio
def query_audio() -> tuple[list[dict[str, Any]], str | None]:
    """(devices, problem): PortAudio's device list, or why it is unavailable."""
    try:
        import sounddevice as sd
    except OSError as exc:
        return [], f"PortAudio library not found ({exc})"
    except Exception as exc:
        return [], f"sounddevice not importable ({exc})"
    try:
        return [dict(d, index=i) for i, d in enumerate(sd.query_devices())], None
    except Exception as exc:
        return [], f"PortAudio cannot list devices ({exc})"


def check_audio(cfg: Config) -> list[Check]:
    devices, problem = query_audio()
    mic = cfg.audio.source == "microphone"
    passthrough = cfg.outputs.passthrough.enabled
    if problem:
        status = FAIL if (mic or passthrough) else WARN
        fix = {"Linux": "sudo apt install libportaudio2", "Darwin": "brew install portaudio"}.get(
            platform.system(), "reinstall the sounddevice package")
        return [Check(status, "portaudio", problem, fix)]
    inputs = [d for d in devices if d["max_input_channels"] > 0]
    outputs = [d for d in devices if d["max_output_channels"] > 0]
    checks = [Check(OK, "portaudio", f"{len(inputs)} input and {len(outputs)} output device(s)")]
    if mic:
        want = cfg.audio.device
        if not inputs:
            checks.append(Check(FAIL, "microphone", "no audio input device",
                                "plug in a microphone or use audio.source = 'file'; list devices with "
                                "`avatar-bridge devices`"))
        elif want is not None and not _find_device(inputs, want):
            checks.append(Check(FAIL, "microphone", f"audio.device = {want!r} matches no input",
                                "pick a name or index from `avatar-bridge devices`"))
        else:
            checks.append(Check(OK, "microphone", "default input" if want is None else f"{want!r} found"))
    elif not inputs:
        checks.append(Check(WARN, "microphone", "no audio input device (fine for file input)",
                            "connect a microphone to drive the avatar live"))
    want = cfg.outputs.passthrough.device
    if cfg.outputs.passthrough.create or (isinstance(want, str) and want.startswith("pulse:")):
        checks.append(check_sound_server())
    elif passthrough and want is not None and not _find_device(outputs, want):
        checks.append(Check(FAIL, "audio output", f"outputs.passthrough.device = {want!r} matches no output",
                            "pick one from `avatar-bridge devices`, or on Linux set outputs.passthrough.create = true"))
    return checks


def check_sound_server() -> Check:
    """The virtual microphone and `pulse:` outputs need a PulseAudio/PipeWire server that pactl reaches."""
    from drivers.output.virtual_mic import pactl

    try:
        server = next((line.split(":", 1)[1].strip() for line in pactl("info").splitlines()
                       if line.startswith("Server Name:")), "a sound server")
    except UserError as exc:
        return Check(FAIL, "sound server", str(exc).split(";")[0], str(exc).split(";", 1)[-1].strip())
    return Check(OK, "sound server", f"{server} answers (the virtual microphone can be made)")


def _find_device(devices: list[dict[str, Any]], want: str | int) -> bool:
    if isinstance(want, int) or (isinstance(want, str) and want.isdigit()):
        return any(d["index"] == int(want) for d in devices)
    return any(str(want).lower() in d["name"].lower() for d in devices)


# ---------------------------------------------------------------- virtual camera
def v4l2loopback_devices(sys_root: Path = Path("/sys")) -> list[tuple[str, str]]:
    """(/dev/videoN, card label) for every v4l2loopback device."""
    found = []
    base = sys_root / "devices" / "virtual" / "video4linux"
    if base.is_dir():
        for node in sorted(base.iterdir()):
            with contextlib.suppress(OSError):
                found.append((f"/dev/{node.name}", (node / "name").read_text().strip()))
    return found


def check_virtualcam(cfg: Config) -> Check:
    enabled = cfg.outputs.virtualcam.enabled
    system = platform.system()
    if system == "Linux":
        devs = v4l2loopback_devices()
        if not devs:
            loaded = Path("/sys/module/v4l2loopback").exists()
            detail = "module loaded but no device" if loaded else "v4l2loopback not loaded"
            return Check(FAIL if enabled else WARN, "virtual camera", detail,
                         "run install/linux.sh (or: sudo modprobe v4l2loopback devices=1 exclusive_caps=1 "
                         "card_label='Avatar Bridge')")
        return Check(OK, "virtual camera", ", ".join(f"{d} ({label})" for d, label in devs))
    try:
        import pyvirtualcam  # noqa: F401
    except Exception as exc:
        return Check(FAIL if enabled else WARN, "virtual camera", f"pyvirtualcam not importable ({exc})",
                     "pip install pyvirtualcam")
    guide = "install/macos.md" if system == "Darwin" else "install/windows.md"
    return Check(OK if not enabled else WARN, "virtual camera",
                 "uses OBS Virtual Camera (checked when the daemon opens it)",
                 f"install OBS 30+ and start its virtual camera once; see {guide}")


# ---------------------------------------------------------------- ports
def port_free(host: str, port: int, kind: int) -> str | None:
    """None when (host, port) can be bound, else the reason."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, kind) as s:
        if kind == socket.SOCK_STREAM:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def check_ports(cfg: Config) -> list[Check]:
    checks = []
    table = [
        ("http", cfg.http.enabled, cfg.http.host, cfg.http.port, socket.SOCK_STREAM, "TCP"),
        ("osc", cfg.osc.enabled, cfg.osc.host, cfg.osc.port, socket.SOCK_DGRAM, "UDP"),
        ("vmc", cfg.vmc.enabled, cfg.vmc.host, cfg.vmc.port, socket.SOCK_DGRAM, "UDP"),
    ]
    for name, enabled, host, port, kind, proto in table:
        label = f"port {name}"
        if not enabled:
            checks.append(Check(OK, label, "disabled"))
            continue
        problem = port_free(host, port, kind)
        if problem:
            checks.append(Check(WARN, label, f"{proto} {host}:{port} cannot be bound ({problem})",
                                f"stop what uses it (another avatar-bridge?) or set {name}.port in the config"))
        else:
            checks.append(Check(OK, label, f"{proto} {host}:{port} free"))
    return checks


# ---------------------------------------------------------------- model files
def _loader(module: str, func: str) -> Callable[..., Any] | None:
    try:
        return getattr(importlib.import_module(module), func)  # type: ignore[no-any-return]
    except Exception:
        return None


def _open_torch_archive(path: Path) -> str:
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
        if not any(n.endswith("data.pkl") for n in names):
            raise ValueError("a zip file but not a torch checkpoint (no data.pkl inside)")
        return f"torch archive, {len(names)} entries"
    with path.open("rb") as f:
        head = f.read(2)
    if head[:1] != b"\x80":
        raise ValueError("neither a torch zip archive nor a legacy pickle")
    return "legacy torch pickle"


def _open_numpy(path: Path) -> str:
    import numpy as np

    from drivers.safe_load import check_numpy_file

    check_numpy_file(path)
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            return f"npz with {len(data.files)} arrays"
    arr = np.load(path, allow_pickle=False, mmap_mode="r")
    return f"array {tuple(arr.shape)}"


def _opener(kind: str, path: Path) -> Callable[[Path], str]:
    """The project's own loader for `kind` when it is installed, else a format check that really opens the file."""
    flame_files = "drivers.avatar.flame.files"
    if kind == "flame_model" and (load_flame := _loader(flame_files, "load_flame_arrays")) is not None:
        return lambda p: f"FLAME model, {len(load_flame(p, cache=False))} arrays"
    if kind == "flame_masks" and (load_masks := _loader(flame_files, "load_masks")) is not None:
        return lambda p: f"{len(load_masks(p))} FLAME masks"
    if kind == "eyelids_dir":
        if (load_eyelids := _loader(flame_files, "load_eyelids")) is not None:
            return lambda p: f"eyelid blendshapes {len(load_eyelids(p))}"
        return _check_eyelids
    if kind == "flame_mesh" and (load_obj := _loader("drivers.avatar.flame.obj", "load_obj")) is not None:
        return lambda p: f"OBJ mesh {type(load_obj(p)).__name__} loaded"
    if path.suffix in (".npy", ".npz"):
        return _open_numpy
    if path.suffix in (".pth", ".pt", ".tar", ".ckpt"):
        return _open_torch_archive
    return _read_probe


def _check_eyelids(folder: Path) -> str:
    missing = [n for n in ("l_eyelid.npy", "r_eyelid.npy") if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(f"missing {', '.join(missing)} in {folder}")
    return "; ".join(_open_numpy(folder / n) for n in ("l_eyelid.npy", "r_eyelid.npy"))


def _read_probe(path: Path) -> str:
    with path.open("rb") as f:
        f.read(64)
    return f"{path.stat().st_size / 2**20:.1f} MiB readable"


MODEL_HELP = "see install/models.md"


def model_files(cfg: Config) -> Iterator[tuple[str, str, Path | None, bool]]:
    """(check name, loader kind, configured path, required) for the files the configuration uses."""
    if cfg.avatar.kind == "flashavatar":
        a = cfg.avatar
        yield "FlashAvatar checkpoint", "checkpoint", a.checkpoint, True
        yield "FLAME model", "flame_model", a.flame_model, True
        yield "FLAME masks", "flame_masks", a.flame_masks, False
        yield "FLAME mesh (UV template)", "flame_mesh", a.flame_mesh, False
        yield "FLAME eyelids", "eyelids_dir", a.eyelids_dir, False
        yield "tracker frame", "tracker_frame", a.tracker_frame, False
        yield "shape", "shape", a.shape, False
    if cfg.face.driver == "diffposetalk":
        d = cfg.face.diffposetalk
        yield "DiffPoseTalk checkpoint", "dpt_checkpoint", d.checkpoint, True
        yield "DiffPoseTalk stats", "dpt_stats", d.stats, False
        yield "DiffPoseTalk style", "dpt_style", d.style, False
        yield "DiffPoseTalk shape", "dpt_shape", d.shape, False


def check_models(cfg: Config) -> list[Check]:
    checks: list[Check] = []
    for name, kind, path, required in model_files(cfg):
        if path is None:
            if required:
                checks.append(Check(FAIL, name, "not configured", MODEL_HELP))
            continue
        path = Path(path).expanduser()
        if not path.exists():
            checks.append(Check(FAIL, name, f"{path} does not exist", f"fix the path in the config; {MODEL_HELP}"))
            continue
        try:
            detail = _opener(kind, path)(path)
        except Exception as exc:
            checks.append(Check(FAIL, name, f"{path} does not open: {exc}", f"re-download it; {MODEL_HELP}"))
            continue
        checks.append(Check(OK, name, f"{path} ({detail})"))
    if not checks:
        checks.append(Check(OK, "models", f"none needed (avatar.kind = {cfg.avatar.kind!r}, "
                            f"face.driver = {cfg.face.driver!r}); {MODEL_HELP} for the photoreal avatar"))
    return checks


# ---------------------------------------------------------------- command
def run_checks(cfg: Config) -> list[Check]:
    checks = [check_python()]
    torch_check, torch = check_torch()
    checks += [torch_check, check_cuda(torch, cfg), check_gsplat(torch, cfg), check_numba(cfg)]
    checks += check_audio(cfg)
    checks.append(check_virtualcam(cfg))
    checks += check_ports(cfg)
    checks += check_models(cfg)
    return checks


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config)


def doctor(args: argparse.Namespace) -> int:
    cfg = _config(args)
    checks = run_checks(cfg)
    for c in checks:
        print(c.line())
    fails = sum(c.status == FAIL for c in checks)
    warns = sum(c.status == WARN for c in checks)
    print(f"\n{len(checks)} checks: {fails} FAIL, {warns} WARN" + (" — ready" if not fails else ""))
    return 1 if fails else 0


def midi_ports() -> tuple[list[str], str | None]:
    try:
        import mido

        return list(mido.get_input_names()), None
    except Exception as exc:
        return [], f"MIDI unavailable ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"


def devices(args: argparse.Namespace) -> int:
    audio, problem = query_audio()
    print("audio inputs:" if not problem else f"audio: {problem}")
    for d in audio:
        if d["max_input_channels"] > 0:
            print(f"  [{d['index']}] {d['name']} ({d['max_input_channels']} ch, {d['default_samplerate']:.0f} Hz)")
    if not problem:
        print("audio outputs:")
        for d in audio:
            if d["max_output_channels"] > 0:
                print(f"  [{d['index']}] {d['name']} ({d['max_output_channels']} ch)")
    ports, midi_problem = midi_ports()
    print(midi_problem or "MIDI inputs:")
    for name in ports:
        print(f"  {name}")
    cams = v4l2loopback_devices() if platform.system() == "Linux" else []
    print("virtual cameras:" if cams else "virtual cameras: none found (Linux: install/linux.sh; "
          "macOS/Windows: OBS Virtual Camera)")
    for dev, label in cams:
        print(f"  {dev} ({label})")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("doctor", help="check this machine and the configured model files",
                       description=__doc__)
    p.add_argument("--config", type=Path, default=None, help="TOML config to check (default: built-in defaults)")
    p.set_defaults(func=doctor)
    if "devices" not in sub.choices:  # another module may own the command
        d = sub.add_parser("devices", help="list audio inputs/outputs, MIDI ports and virtual cameras")
        d.set_defaults(func=devices)
