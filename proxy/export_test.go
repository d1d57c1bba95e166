package proxy

// Test hooks for package proxy_test.
var (
	QueryValue    = queryValue
	QueryPrepared = queryPrepared
)
