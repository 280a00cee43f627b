#!/usr/bin/env bash
# Installs the kafkajs driver's dependencies into
# ${SWITCHYARD_CACHE:-$HOME/.cache/switchyard}/clients/node/node_modules.
# client.js is run in place with NODE_PATH pointing there. Skipped when the
# installed package.json and package-lock.json match the ones here.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dest="${SWITCHYARD_CACHE:-$HOME/.cache/switchyard}/clients/node"

if [[ -d "$dest/node_modules" ]] \
  && cmp -s "$here/package.json" "$dest/package.json" \
  && { [[ ! -f "$here/package-lock.json" ]] || cmp -s "$here/package-lock.json" "$dest/package-lock.json"; } \
  && [[ -f "$dest/.installed" ]]; then
  echo "node client: up to date in $dest" >&2
  exit 0
fi

mkdir -p "$dest"
rm -f "$dest/.installed" "$dest/package-lock.json"
cp "$here/package.json" "$dest/"
cd "$dest"
if [[ -f "$here/package-lock.json" ]]; then
  cp "$here/package-lock.json" "$dest/"
  npm ci --no-audit --no-fund --loglevel=error
else
  npm install --no-audit --no-fund --loglevel=error
fi
# Fail the build, not a test, when a codec's prebuilt binary is missing.
NODE_PATH="$dest/node_modules" node -e \
  "for (const m of ['kafkajs', 'kafkajs-snappy', '@2l/kafkajs-lz4', '@mongodb-js/zstd']) require(m)"
touch "$dest/.installed"
echo "node client: installed into $dest" >&2
