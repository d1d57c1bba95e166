package main

import _ "embed"

// concurrencyModel is the reasoning behind the relay's design, kept with the
// generator so every regenerated docs/benchmarks.md carries it.
//
//go:embed model.md
var concurrencyModel string
