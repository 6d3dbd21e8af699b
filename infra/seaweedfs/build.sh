#!/usr/bin/env bash
# Builds the pinned SeaweedFS server (`weed`) into $1 (default .tools/bin/weed) from the Go module proxy.
# Its go.mod has replace directives, so it is built inside a copy of the module (as its own main module).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(realpath -m "${1:-$here/../../.tools/bin/weed}")"

cd "$here"
go mod download github.com/seaweedfs/seaweedfs  # verified against go.sum
module_dir="$(go list -m -f '{{.Dir}}' github.com/seaweedfs/seaweedfs)"

work="$(mktemp -d)"
trap 'chmod -R u+w "$work"; rm -rf "$work"' EXIT
cp -r "$module_dir/." "$work"
chmod -R u+w "$work"
mkdir -p "$(dirname "$out")"
(cd "$work" && GOFLAGS=-buildvcs=false go build -trimpath -o "$out" ./weed)
echo "built $out"
