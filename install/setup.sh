#!/usr/bin/env bash
# Sets up Avatar Bridge in ./.venv on a fresh Linux machine: system libraries (when run as root with apt),
# PyTorch (a CPU build unless an NVIDIA GPU is present), the package and, with --dev, the test tools.
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
for arg in "$@"; do
  case "$arg" in
    --dev) dev=1 ;;
    *) echo "usage: install/setup.sh [--dev]" >&2; exit 2 ;;
  esac
done

say() { printf 'setup: %s\n' "$*" >&2; }

# System packages: PortAudio for microphones, pactl + libpulse for the virtual microphone; for the tests also
# headless Chromium, liblo's oscsend, espeak-ng, sox, a PulseAudio server, Janus with janus.js, and GStreamer's
# webrtcbin for the system Python. Only attempted where we may (root + apt); otherwise say what to install.
apt_pkgs=(libportaudio2 pulseaudio-utils libpulse0)
if [ "$dev" = 1 ]; then
  apt_pkgs+=(chromium chromium-driver liblo-tools espeak-ng sox)
  apt_pkgs+=(pulseaudio libasound2-plugins janus libjs-janus-gateway libjs-webrtc-adapter)
  apt_pkgs+=(python3-gst-1.0 gir1.2-gst-plugins-bad-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good
             gstreamer1.0-plugins-bad gstreamer1.0-nice)
fi
missing=()
for p in "${apt_pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    say "installing ${missing[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    # The tests start their own Janus on loopback; a system-wide one would listen on every interface.
    if [[ " ${missing[*]} " == *" janus "* ]] && command -v systemctl >/dev/null 2>&1; then
      systemctl disable --now janus >/dev/null 2>&1 || true
    fi
  else
    say "please install these system packages: ${missing[*]} (e.g. sudo apt install ${missing[*]})"
    # CI runs every test, so a test tool missing there is an error here, not a skip later.
    case "${CI:-}" in
      1|[Tt]rue|TRUE|[Yy]es|YES)
        say "CI needs them installed (run as root where apt-get works); stopping"
        exit 1 ;;
    esac
  fi
fi

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  say "Python 3.10 or newer is needed (found: $("$python" --version 2>&1)); set PYTHON=/path/to/python3.x"
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  "$python" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null

if ! python -c 'import torch' 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
    say "installing PyTorch with CUDA"
    python -m pip install -q 'torch>=2.3,<2.15'
  else
    # Without an NVIDIA GPU a CPU build is all that is needed; set TORCH_INDEX_URL to PyTorch's CPU wheel
    # index (https://download.pytorch.org/whl/cpu) to avoid downloading the CUDA libraries.
    say "installing PyTorch for the CPU"
    if [ -n "${TORCH_INDEX_URL:-}" ]; then
      python -m pip install -q torch==2.13.0 --index-url "$TORCH_INDEX_URL"
    else
      python -m pip install -q torch==2.13.0
    fi
  fi
fi

extras=""
[ "$dev" = 1 ] && extras="[dev]"
say "installing avatar-bridge${extras}"
python -m pip install -q -e ".${extras}"
say "done: activate with '. .venv/bin/activate', then run 'avatar-bridge --help'"
