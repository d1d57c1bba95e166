package proxy

// Test hooks for package proxy_test.
var (
	QueryValue    = queryValue
	QueryPrepared = queryPrepared
	// LargeObjectFunctions: the FunctionCall OIDs that do not pin.
	LargeObjectFunctions = largeObjectFunctions
)
