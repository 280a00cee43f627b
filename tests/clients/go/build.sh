#!/usr/bin/env bash
# Builds the franz-go client driver as <cache>/clients/franz-client.
# Skipped when the binary is newer than every source file.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${SWITCHYARD_CACHE:-$HOME/.cache/switchyard}"
bin="$cache/clients/franz-client"

if [[ -x "$bin" ]] && [[ -z "$(find "$here" -type f -newer "$bin" -print -quit)" ]]; then
    exit 0
fi

mkdir -p "$cache/clients"
cd "$here"
GOFLAGS="${GOFLAGS:-} -mod=mod" go build -trimpath -o "$bin.tmp" .
mv "$bin.tmp" "$bin"
