// Pins the SeaweedFS commit (an S3-compatible object store, Apache-2.0) that the local stack runs for a
// lake on s3a://; go.sum records its checksum. SeaweedFS tags its releases without the "v" Go needs,
// so the module proxy knows its commits only as pseudo-versions; its go.mod has replace directives,
// so `go install` refuses it and build.sh builds it inside a copy of the module.
module userpulse.local/infra/seaweedfs

go 1.26

require github.com/seaweedfs/seaweedfs v0.0.0-20261109003541-7506e5f91cd6
