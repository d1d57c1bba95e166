package masking

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math"
	"testing"
)

// Tests added by a mutation check of the rewriters, the resolver and the
// refusal analysis: each fails when the piece it names is broken.

// row builds a DataRow of values (nil: NULL).
func row(vals ...[]byte) []byte {
	r := binary.BigEndian.AppendUint16([]byte{'D', 0, 0, 0, 0}, uint16(len(vals)))
	for _, v := range vals {
		if v == nil {
			r = binary.BigEndian.AppendUint32(r, 0xffffffff)
			continue
		}
		r = binary.BigEndian.AppendUint32(r, uint32(len(v)))
		r = append(r, v...)
	}
	binary.BigEndian.PutUint32(r[1:], uint32(len(r)-1))
	return r
}

// values splits a DataRow into its values (nil: NULL).
func values(t *testing.T, msg []byte) [][]byte {
	t.Helper()
	b := msg[7:]
	var out [][]byte
	for len(b) > 0 {
		l := int32(binary.BigEndian.Uint32(b))
		b = b[4:]
		if l < 0 {
			out = append(out, nil)
			continue
		}
		out = append(out, b[:l])
		b = b[l:]
	}
	return out
}

func TestPartialNotUTF8(t *testing.T) {
	s := keyed()
	for in, want := range map[string]string{
		"\xff\xfeabcd": "***abcd", // the last 4 bytes
		"\xffabc":      "***",     // 4 bytes: all of it redacted
		"\xffabcd":     "***abcd",
	} {
		out, null := s.Value(nil, Partial, oidText, false, []byte(in))
		if null || string(out) != want {
			t.Errorf("partial(%q) = %q (null %v), want %q", in, out, null, want)
		}
	}
}

// One Columns hashes many values with one keyed hash: equal values give
// equal hashes, the same as Value's, in every row.
func TestRewriteRowHashReused(t *testing.T) {
	s := keyed()
	c := &Columns{set: s, cols: []ColumnMask{{Method: Hash, Type: oidText}, {Method: Hash, Type: oidText}}}
	want, _ := s.Value(nil, Hash, oidText, false, []byte("a@b"))
	other, _ := s.Value(nil, Hash, oidText, false, []byte("c@d"))
	for i := 0; i < 3; i++ {
		out, err := c.RewriteRow(nil, row([]byte("a@b"), []byte("c@d")), nil)
		if err != nil {
			t.Fatal(err)
		}
		v := values(t, out)
		if !bytes.Equal(v[0], want) || !bytes.Equal(v[1], other) {
			t.Fatalf("row %d: %q %q, want %q %q", i, v[0], v[1], want, other)
		}
	}
}

// Hashed integers stay within the type and non-negative.
func TestHashIntegerRange(t *testing.T) {
	s := keyed()
	for i := 0; i < 300; i++ {
		in := binary.BigEndian.AppendUint64(nil, uint64(i)*0x9e3779b97f4a7c15)
		for _, w := range []struct {
			typ   uint32
			width int
		}{{oidInt2, 2}, {oidInt4, 4}, {oidInt8, 8}} {
			out, null := s.Value(nil, Hash, w.typ, true, in[8-w.width:])
			if null || len(out) != w.width {
				t.Fatalf("int%d: %v %v", w.width, out, null)
			}
			var n int64
			switch w.width {
			case 2:
				n = int64(int16(binary.BigEndian.Uint16(out)))
			case 4:
				n = int64(int32(binary.BigEndian.Uint32(out)))
			default:
				n = int64(binary.BigEndian.Uint64(out))
			}
			if n < 0 {
				t.Fatalf("int%d hash %d is negative", w.width, n)
			}
		}
	}
}

// The same value hashes alike in text and binary format for every type
// hashed in canonical form.
func TestHashCanonicalTextBinary(t *testing.T) {
	s := keyed()
	f4 := binary.BigEndian.AppendUint32(nil, math.Float32bits(1.1))
	uuid := []byte{0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38, 0x0a, 0x11}
	for _, tc := range []struct {
		name      string
		typ       uint32
		text, bin []byte
	}{
		{"int4 with spaces", oidInt4, []byte(" 0042 "), []byte{0, 0, 0, 42}},
		{"float4", oidFloat4, []byte("1.1"), f4},
		{"uuid upper case", oidUUID, []byte("A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"), uuid},
		{"bytea hex", oidBytea, []byte(`\x0102ff`), []byte{1, 2, 0xff}},
	} {
		mt := (&macer{}).mac(s.key, nil, mustCanon(t, tc.typ, false, tc.text))
		mb := (&macer{}).mac(s.key, nil, mustCanon(t, tc.typ, true, tc.bin))
		if !bytes.Equal(mt, mb) {
			t.Errorf("%s: text and binary hash differently", tc.name)
		}
	}
	// float4 in binary is 4 bytes, float8 8.
	for typ, n := range map[uint32]int{oidFloat4: 4, oidFloat8: 8} {
		out, null := s.Value(nil, Hash, typ, true, make([]byte, n))
		if null || len(out) != n {
			t.Errorf("float%d binary hash: %d bytes", n, len(out))
		}
	}
}

func mustCanon(t *testing.T, typ uint32, bin bool, v []byte) []byte {
	t.Helper()
	class, width := classOf(typ)
	c, ok := canonical(class, width, bin, v)
	if !ok {
		t.Fatalf("canonical(%d, %v, %q) failed", typ, bin, v)
	}
	return c
}

func TestRewriteRowEdges(t *testing.T) {
	s := keyed()
	c := &Columns{set: s, cols: []ColumnMask{{Method: Null, Type: oidText}, {Method: Redact, Type: oidText}}}
	out, err := c.RewriteRow(nil, row([]byte("secret"), []byte("x")), nil)
	if err != nil {
		t.Fatal(err)
	}
	if v := values(t, out); v[0] != nil || string(v[1]) != "***" {
		t.Errorf("null method: %q, want NULL then ***", v)
	}
	trailing := append(row([]byte("a"), []byte("b")), 'z')
	binary.BigEndian.PutUint32(trailing[1:], uint32(len(trailing)-1))
	if _, err := c.RewriteRow(nil, trailing, nil); !errors.Is(err, ErrBadRow) {
		t.Errorf("trailing bytes: %v", err)
	}
	if _, err := c.RewriteRow(nil, row([]byte("a")), nil); !errors.Is(err, ErrBadRow) {
		t.Errorf("fewer columns than described: %v", err)
	}
}

func TestResolve(t *testing.T) {
	s, cat := testSet(t)
	ctx := context.Background()
	cols, err := s.Resolve(ctx, cat, []Field{
		{TableOID: 1, Attnum: 3, TypeOID: oidText, Format: 1}, // res_partner.email, binary
		{TableOID: 5, Attnum: 4, TypeOID: oidText},            // res_partner_child.vat: inherited
		{TableOID: 3, Attnum: 3, TypeOID: oidText},            // partner_v.low: computed from email
		{TableOID: 4, Attnum: 1, TypeOID: oidInt4},            // filtered_v.id: a view Check refuses
		{TableOID: 1, Attnum: 1, TypeOID: oidInt4},            // res_partner.id
	})
	if err != nil {
		t.Fatal(err)
	}
	m := cols.Masks()
	if m[0].Method != Hash || !m[0].Binary {
		t.Errorf("email: %+v, want hash, binary", m[0])
	}
	if m[1].Method != Partial {
		t.Errorf("inherited vat: %+v, want partial", m[1])
	}
	if m[2].Method != Null || m[3].Method != Null {
		t.Errorf("view columns: %+v %+v, want NULL", m[2], m[3])
	}
	if m[4].Method != None {
		t.Errorf("id: %+v, want none", m[4])
	}
}

func TestCheckMore(t *testing.T) {
	s, cat := testSet(t)
	cat.funcs["safe_fx"] = []string{"public"}
	for _, tc := range []struct{ sql, reason string }{
		{"SELECT public.safe_fx(id) FROM res_partner", ""},   // allow-listed
		{"SELECT id FROM partner_v WHERE low = 'x'", "view"}, // a tainted view column, in WHERE
		{"SELECT p.id FROM res_partner p JOIN sale_order o ON o.id::text = p.email", "join"},
		{"SELECT email AS e FROM res_partner ORDER BY e", "order_by"},
		{"SELECT id FROM res_partner p WHERE p IS NOT NULL", "whole_row"},
		{"WITH x AS (SELECT email FROM res_partner) SELECT 1", "cte"},
		{"UPDATE res_partner SET name = 'x' RETURNING vat", "returning"},
	} {
		err := s.Check(context.Background(), cat, tc.sql)
		var r *Refusal
		switch {
		case tc.reason == "" && err != nil:
			t.Errorf("%s: refused: %v", tc.sql, err)
		case tc.reason != "" && !errors.As(err, &r):
			t.Errorf("%s: %v, want a refusal (%s)", tc.sql, err, tc.reason)
		case tc.reason != "" && r.Reason != tc.reason:
			t.Errorf("%s: reason %q, want %q", tc.sql, r.Reason, tc.reason)
		}
	}
}
