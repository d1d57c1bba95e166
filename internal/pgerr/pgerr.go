// Package pgerr holds the SQLSTATE codes pgproxy sends itself and builds
// ErrorResponse messages with PostgreSQL's field layout.
//
// Errors are turned into ErrorResponses only at the edge (the session
// boundary in package proxy); everything below returns Go errors, and an
// error that should reach the client with a specific SQLSTATE implements
// Coded (see *Error).
package pgerr

import (
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgproto3"
)

// SQLSTATE codes pgproxy sends itself, named as in PostgreSQL's errcodes.txt.
const (
	ProtocolViolation          = "08P01" // protocol_violation
	ConnectionFailure          = "08006" // connection_failure
	CannotConnectNow           = "57P03" // cannot_connect_now: no backend fits the route
	AdminShutdown              = "57P01" // admin_shutdown: proxy draining
	InvalidAuthorization       = "28000" // invalid_authorization_specification
	InvalidPassword            = "28P01" // invalid_password
	ReadOnlySQLTransaction     = "25006" // read_only_sql_transaction
	InFailedSQLTransaction     = "25P02" // in_failed_sql_transaction
	InvalidSQLStatementName    = "26000" // invalid_sql_statement_name
	TooManyConnections         = "53300" // too_many_connections
	FeatureNotSupported        = "0A000" // feature_not_supported
	InvalidParameterValue      = "22023" // invalid_parameter_value
	ProgramLimitExceeded       = "54000" // program_limit_exceeded
	InternalError              = "XX000" // internal_error
	SyntaxError                = "42601" // syntax_error
	InsufficientPrivilege      = "42501" // insufficient_privilege
	UndefinedObject            = "42704" // undefined_object
	QueryCanceled              = "57014" // query_canceled
	SuccessfulCompletion       = "00000"
	InvalidCatalogName         = "3D000" // invalid_catalog_name
	ObjectNotInPrerequisiteSta = "55000" // object_not_in_prerequisite_state
	CantChangeRuntimeParam     = "55P02" // cant_change_runtime_param
)

// Coded is implemented by errors that carry the SQLSTATE the client should see.
type Coded interface {
	error
	SQLState() string
}

// Error is an error with a SQLSTATE, a severity and an optional detail/hint.
type Error struct {
	Code     string
	Severity string // ERROR or FATAL; empty = FATAL
	Message  string
	Detail   string
	Hint     string
	Err      error // wrapped cause, never shown to the client
}

// New returns a FATAL error with code and a formatted message.
func New(code, format string, args ...any) *Error {
	return &Error{Code: code, Severity: "FATAL", Message: fmt.Sprintf(format, args...)}
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s (SQLSTATE %s): %v", e.Message, e.Code, e.Err)
	}
	return fmt.Sprintf("%s (SQLSTATE %s)", e.Message, e.Code)
}

// SQLState implements Coded.
func (e *Error) SQLState() string { return e.Code }

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Response converts err into an ErrorResponse. Errors that do not implement
// Coded become code, with a generic message (internal details stay in logs).
func Response(err error, fallbackCode, fallbackMessage string) *pgproto3.ErrorResponse {
	var pe *Error
	if errors.As(err, &pe) {
		sev := pe.Severity
		if sev == "" {
			sev = "FATAL"
		}
		return &pgproto3.ErrorResponse{Severity: sev, SeverityUnlocalized: sev, Code: pe.Code, Message: pe.Message, Detail: pe.Detail, Hint: pe.Hint}
	}
	var c Coded
	if errors.As(err, &c) {
		return &pgproto3.ErrorResponse{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: c.SQLState(), Message: c.Error()}
	}
	return &pgproto3.ErrorResponse{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: fallbackCode, Message: fallbackMessage}
}

// Encode appends the wire form of an ErrorResponse to dst.
func Encode(dst []byte, severity, code, message string) []byte {
	out, err := (&pgproto3.ErrorResponse{Severity: severity, SeverityUnlocalized: severity, Code: code, Message: message}).Encode(dst)
	if err != nil { // only for messages > 1 GB, which we never build
		return dst
	}
	return out
}
