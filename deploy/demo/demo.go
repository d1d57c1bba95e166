// Package demo embeds the demo SQL files of deploy/demo so `pgproxy demo`
// and tests can load them without knowing the repository layout:
// marts.sql (the OFITEC marts the Metabase cards read) and etl.sql (a
// tagged raw → stage → vault → marts ETL that produces lineage events).
package demo

import "embed"

//go:embed *.sql
var files embed.FS

// SQL returns the content of one embedded file ("marts.sql", "etl.sql"),
// or "" when it is not there.
func SQL(name string) string {
	b, err := files.ReadFile(name)
	if err != nil {
		return ""
	}
	return string(b)
}
