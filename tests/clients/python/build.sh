#!/usr/bin/env bash
# Installs the aiokafka driver's dependencies (requirements.txt, exact
# versions) into the python3 that runs tests/clients/python/client.py.
# Skipped when every one of them is importable at its pinned version.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-python3}"

if "$python" - "$here/requirements.txt" <<'PY'
import sys
from importlib.metadata import PackageNotFoundError, version

for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if not line:
        continue
    name, want = line.split("==")
    try:
        if version(name) != want:
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
PY
then
  echo "python client: up to date" >&2
  exit 0
fi
"$python" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -r "$here/requirements.txt"
"$python" -c "import aiokafka, cramjam"
echo "python client: installed" >&2
