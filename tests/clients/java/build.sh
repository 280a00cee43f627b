#!/usr/bin/env bash
# Builds the Java client driver and installs it, with all dependency jars, in
# <cache>/clients/java so that `java -cp "<cache>/clients/java/*" SwitchyardClient ...`
# runs it. Skipped when the installed jar is newer than every source file.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${SWITCHYARD_CACHE:-$HOME/.cache/switchyard}"
out="$cache/clients/java"
build="$cache/clients/java-build"
jar="$out/client-driver.jar"

if [[ -f "$jar" ]] && [[ -z "$(find "$here" -type f ! -path '*/target/*' -newer "$jar" -print -quit)" ]]; then
    exit 0
fi

rm -rf "$build/lib" # copy-dependencies would keep jars of older versions
mvn -q -B -Dstyle.color=never -f "$here/pom.xml" -DbuildDir="$build" package

mkdir -p "$out"
rm -f "$out"/*.jar
cp "$build"/lib/*.jar "$out/"
cp "$build/client-driver.jar" "$jar"
