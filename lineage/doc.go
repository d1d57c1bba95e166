// Package lineage turns tagged SQL into OpenLineage RunEvents and delivers
// them (HTTP to Marquez, JSON lines to a file, or the console) without ever
// blocking the proxy's relay.
//
// Events follow the OpenLineage 2.0 spec (docs/lineage.md; schemas in
// lineage/testdata/openlineage). In short:
//
//	relay goroutine                    worker goroutine (Emitter.Run)           transport
//	HasTag(query bytes)  (no alloc)
//	ParseTags(sql)
//	run := e.Start(info, sql, tags) ─► queue ─► parse SQL (sqlscan.Tables),   ─► POST {url}/api/v1/lineage
//	run.Complete() / run.Fail(...)  ─►  (bounded,  build START / COMPLETE / FAIL     (retry 5xx/network,
//	                                    drop when  events with facets and          no retry on 4xx)
//	                                    full)      catalog metadata
//
// Start, Complete and Fail only take a timestamp and try a non-blocking send
// on the queue: a full queue drops the event and counts it
// (pgproxy_lineage_events_total{result="dropped"}). One worker goroutine
// handles the queue in order, so a run's START is always sent before its
// COMPLETE or FAIL. SQL is parsed on the worker, never on the caller.
package lineage
