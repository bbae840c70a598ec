#!/usr/bin/env bash
# One command from a fresh clone to the test results: set up with the test tools, then run the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash install/setup.sh --dev
. .venv/bin/activate
ruff check bridge drivers tests bench
mypy bridge drivers
python -m pytest -q -ra "$@"
