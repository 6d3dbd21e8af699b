// Pins the FerretDB release (MongoDB wire protocol on SQLite) used by the local stack; go.sum
// records its checksum. build.sh builds it: `go install ...@v1.24.x` does not work here because the
// module proxy refuses v1.24.1 and the version-list queries `go install` makes.
module userpulse.local/infra/ferretdb

go 1.22

require github.com/FerretDB/FerretDB v1.24.0
