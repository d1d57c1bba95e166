// Package pgcluster is the test harness around internal/pgcluster (the
// real primary + streaming replicas that `pgproxy demo` also starts): one
// cluster per test package (Main) and a skip under -short (Require). The
// cluster itself lives in internal/pgcluster so the pgproxy binary links no
// test code; its types and helpers are re-exported here so tests name one
// package.
package pgcluster

import "github.com/ofitec/pgproxy/internal/pgcluster"

type (
	Cluster = pgcluster.Cluster
	Node    = pgcluster.Node
	Options = pgcluster.Options
)

const (
	MD5User         = pgcluster.MD5User
	MD5Password     = pgcluster.MD5Password
	ScramUser       = pgcluster.ScramUser
	ScramPassword   = pgcluster.ScramPassword
	MonitorUser     = pgcluster.MonitorUser
	MonitorPassword = pgcluster.MonitorPassword
)

var (
	Start    = pgcluster.Start
	FreePort = pgcluster.FreePort
)
