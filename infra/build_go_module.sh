#!/usr/bin/env bash
# Builds a Go program of a module pinned in PIN_DIR/go.mod (checksum in its go.sum) from the Go module
# proxy: build_go_module.sh PIN_DIR MODULE PACKAGE OUT [VERSION_FILE]
# The module is built inside a copy of its source, as its own main module: `go install module@version`
# refuses a module whose go.mod has replace directives (SeaweedFS), and a release may need a file its
# own task runner generates (FerretDB's version file: VERSION_FILE, given the pinned version).
set -euo pipefail
pin_dir="$1" module="$2" package="$3" out="$(realpath -m "$4")" version_file="${5:-}"
version="$(awk -v m="$module" '$1 == "require" && $2 == m {print $3}' "$pin_dir/go.mod")"

cd "$pin_dir"
go mod download "$module"  # verified against go.sum
module_dir="$(go list -m -f '{{.Dir}}' "$module")"

work="$(mktemp -d)"
trap 'chmod -R u+w "$work"; rm -rf "$work"' EXIT
cp -r "$module_dir/." "$work"
chmod -R u+w "$work"
if [[ -n "$version_file" ]]; then echo "$version" > "$work/$version_file"; fi
mkdir -p "$(dirname "$out")"
(cd "$work" && GOFLAGS=-buildvcs=false go build -trimpath -o "$out" "$package")
echo "built $out ($module $version)"
