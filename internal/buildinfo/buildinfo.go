// Package buildinfo holds the version stamped at link time (see the Makefile).
package buildinfo

import "runtime"

// Set with -ldflags "-X github.com/ofitec/pgproxy/internal/buildinfo.Version=...".
var (
	Version = "dev"
	Commit  = "none"
)

// GoVersion is the Go toolchain that built the binary.
func GoVersion() string { return runtime.Version() }
