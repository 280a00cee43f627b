#!/usr/bin/env bash
# Builds every client driver into the cache (see README.md); each step is
# skipped when its output is newer than its sources.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
for client in java go node python; do
    echo "client driver: $client"
    bash "$here/$client/build.sh"
done
