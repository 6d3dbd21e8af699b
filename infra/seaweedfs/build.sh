#!/usr/bin/env bash
# Builds the pinned SeaweedFS server (`weed`) into $1 (default .tools/bin/weed) from the Go module proxy.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exec bash "$here/../build_go_module.sh" "$here" github.com/seaweedfs/seaweedfs ./weed \
  "${1:-$here/../../.tools/bin/weed}"
