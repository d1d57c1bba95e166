package admin

import (
	"context"
	"testing"
)

// BenchmarkExec measures one admin command end to end (parse, read the
// deps, build the result set) with the fake deps of the tests.
func BenchmarkExec(b *testing.B) {
	for _, q := range []string{"SHOW BACKENDS", "SHOW SESSIONS", "SHOW CONFIG", "PAUSE 127.0.0.1:5434"} {
		b.Run(q, func(b *testing.B) {
			c := New(newFake().deps())
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Exec(ctx, q); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
