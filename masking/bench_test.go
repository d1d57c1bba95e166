package masking

import (
	"context"
	"encoding/binary"
	"strconv"
	"testing"
)

// The hot paths of a masked session, on the bench's shape (make bench,
// test/bench/masking.go): 100-row results of 4 text columns, 2 masked.

const benchSQL = "SELECT id, email, vat, city FROM res_partner WHERE id BETWEEN 417 AND 417 + 99;"

func BenchmarkCheck(b *testing.B) {
	s, cat := testSet(b)
	ctx := context.Background()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if err := s.Check(ctx, cat, benchSQL); err != nil {
			b.Fatal(err)
		}
	}
}

func benchFields() []Field {
	return []Field{
		{TableOID: 1, Attnum: 1, TypeOID: oidInt4},
		{TableOID: 1, Attnum: 3, TypeOID: oidText},
		{TableOID: 1, Attnum: 4, TypeOID: oidText},
		{TableOID: 1, Attnum: 2, TypeOID: oidText},
	}
}

func BenchmarkResolve(b *testing.B) {
	s, cat := testSet(b)
	ctx := context.Background()
	fields := benchFields()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := s.Resolve(ctx, cat, fields); err != nil {
			b.Fatal(err)
		}
	}
}

// benchRows are 100 DataRows of (id, email, vat, city), in text format.
func benchRows() [][]byte {
	var rows [][]byte
	for i := 1; i <= 100; i++ {
		vals := []string{strconv.Itoa(i), "customer" + strconv.Itoa(i) + "@example.com", "76." + strconv.Itoa(i) + ".123-4", "Santiago"}
		body := binary.BigEndian.AppendUint16(nil, uint16(len(vals)))
		for _, v := range vals {
			body = binary.BigEndian.AppendUint32(body, uint32(len(v)))
			body = append(body, v...)
		}
		msg := append([]byte{'D'}, binary.BigEndian.AppendUint32(nil, uint32(len(body)+4))...)
		rows = append(rows, append(msg, body...))
	}
	return rows
}

// BenchmarkRewriteRows rewrites one 100-row result (b.N results).
func BenchmarkRewriteRows(b *testing.B) {
	s, cat := testSet(b)
	cols, err := s.Resolve(context.Background(), cat, benchFields())
	if err != nil || !cols.Any() {
		b.Fatal(err, cols)
	}
	rows := benchRows()
	var buf []byte
	counts := make([]float64, 4)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		for _, r := range rows {
			if buf, err = cols.RewriteRow(buf[:0], r, counts); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkCheckCached is BenchmarkCheck through a CheckCache, with the
// constants changing each time as pgbench's do.
func BenchmarkCheckCached(b *testing.B) {
	s, cat := testSet(b)
	ctx := context.Background()
	var c CheckCache
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		n := strconv.Itoa(i%900 + 1)
		if err := c.Check(ctx, s, cat, "SELECT id, email, vat, city FROM res_partner WHERE id BETWEEN "+n+" AND "+n+" + 99;"); err != nil {
			b.Fatal(err)
		}
	}
}
