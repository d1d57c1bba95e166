// Package pgwire holds the PostgreSQL wire-protocol codecs pgproxy needs
// beyond pgproto3: the startup-phase packets (StartupMessage, SSLRequest,
// GSSENCRequest, CancelRequest) decoded with PostgreSQL's own limits, and
// the small helpers that frame and pick apart typed messages without
// decoding what the relay does not need. It does no I/O policy: callers
// set deadlines and decide what to do with what it decodes.
//
// Returned strings are copies; returned byte slices alias the input.
package pgwire
