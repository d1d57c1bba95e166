package masking

import (
	"bytes"
	"encoding/binary"
	"strconv"
	"testing"
)

func keyed() *Set { return &Set{key: []byte("k")} }

func TestValue(t *testing.T) {
	s := keyed()
	for _, tc := range []struct {
		name   string
		m      Method
		typ    uint32
		bin    bool
		in     []byte
		want   string // "" with null
		null   bool
		length int // checked instead of want when > 0
	}{
		{"redact text", Redact, oidText, false, []byte("secret"), "***", false, 0},
		{"redact int is NULL", Redact, oidInt4, false, []byte("12"), "", true, 0},
		{"partial", Partial, oidVarchar, false, []byte("76.123.456-7"), "***56-7", false, 0},
		{"partial short", Partial, oidText, false, []byte("abcd"), "***", false, 0},
		{"partial utf8", Partial, oidText, false, []byte("ñandú-ñoño"), "***ñoño", false, 0},
		{"partial bpchar padding", Partial, oidBpchar, false, []byte("123456  "), "***3456", false, 0},
		{"partial int is NULL", Partial, oidInt8, true, make([]byte, 8), "", true, 0},
		{"null", Null, oidText, false, []byte("x"), "", true, 0},
		{"hash text", Hash, oidText, false, []byte("a@b.c"), "", false, 16},
		{"hash int4 binary", Hash, oidInt4, true, []byte{0, 0, 0, 7}, "", false, 4},
		{"hash int2 binary", Hash, oidInt2, true, []byte{0, 7}, "", false, 2},
		{"hash uuid binary", Hash, oidUUID, true, make([]byte, 16), "", false, 16},
		{"hash date is NULL", Hash, 1082, false, []byte("2024-01-01"), "", true, 0},
	} {
		out, null := s.Value(nil, tc.m, tc.typ, tc.bin, tc.in)
		switch {
		case null != tc.null:
			t.Errorf("%s: null = %v", tc.name, null)
		case tc.length > 0 && len(out) != tc.length:
			t.Errorf("%s: %q has %d bytes, want %d", tc.name, out, len(out), tc.length)
		case tc.length == 0 && !tc.null && string(out) != tc.want:
			t.Errorf("%s: %q, want %q", tc.name, out, tc.want)
		}
		if !tc.null && bytes.Contains(out, tc.in) && len(tc.in) > 4 {
			t.Errorf("%s: output %q holds the input", tc.name, out)
		}
	}
}

// A value hashes alike in text and binary format, and differently under another key.
func TestHashStableAcrossFormats(t *testing.T) {
	s := keyed()
	text, _ := s.Value(nil, Hash, oidInt4, false, []byte("918273"))
	var be [4]byte
	binary.BigEndian.PutUint32(be[:], 918273)
	bin, _ := s.Value(nil, Hash, oidInt4, true, be[:])
	if got := int32(binary.BigEndian.Uint32(bin)); string(text) != strconv.Itoa(int(got)) {
		t.Errorf("int4: text %s, binary %d", text, got)
	}
	// numeric 1234.50 in binary: ndigits 2, weight 0, sign 0, dscale 2, digits 1234, 5000
	num := []byte{0, 2, 0, 0, 0, 0, 0, 2, 0x04, 0xd2, 0x13, 0x88}
	nt, _ := s.Value(nil, Hash, oidNumeric, false, []byte("1234.50"))
	nb, _ := s.Value(nil, Hash, oidNumeric, true, num)
	if tx, err := numericText(nb); err != nil || tx != string(nt) {
		t.Errorf("numeric: text %s, binary %s (%v)", nt, tx, err)
	}
	other := &Set{key: []byte("other")}
	a, _ := s.Value(nil, Hash, oidText, false, []byte("x@y"))
	b, _ := other.Value(nil, Hash, oidText, false, []byte("x@y"))
	if bytes.Equal(a, b) {
		t.Errorf("the key does not change the hash")
	}
}

func TestNumericText(t *testing.T) {
	for _, tc := range []struct {
		in   []byte
		want string
	}{
		{[]byte{0, 2, 0, 0, 0, 0, 0, 2, 0x04, 0xd2, 0x13, 0x88}, "1234.50"},
		{[]byte{0, 1, 0xff, 0xff, 0x40, 0, 0, 4, 0x00, 0x05}, "-0.0005"},
		{[]byte{0, 0, 0, 0, 0, 0, 0, 0}, "0"},
		{[]byte{0, 1, 0, 1, 0, 0, 0, 0, 0, 12}, "120000"},
	} {
		got, err := numericText(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("numericText(%v) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestRewriteRow(t *testing.T) {
	s := keyed()
	c := &Columns{set: s, cols: []ColumnMask{{}, {Name: "public.t.email", Method: Redact, Type: oidText}, {Name: "public.t.n", Method: Null, Type: oidInt4}}}
	row := []byte{'D', 0, 0, 0, 0, 0, 3}
	for _, v := range [][]byte{[]byte("keep"), []byte("a-long-secret-value"), nil} {
		if v == nil {
			row = binary.BigEndian.AppendUint32(row, 0xffffffff)
			continue
		}
		row = binary.BigEndian.AppendUint32(row, uint32(len(v)))
		row = append(row, v...)
	}
	binary.BigEndian.PutUint32(row[1:], uint32(len(row)-1))
	counted := make([]float64, 3)
	out, err := c.RewriteRow(nil, row, counted)
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{'D', 0, 0, 0, 0, 0, 3, 0, 0, 0, 4, 'k', 'e', 'e', 'p', 0, 0, 0, 3, '*', '*', '*', 0xff, 0xff, 0xff, 0xff}
	binary.BigEndian.PutUint32(want[1:], uint32(len(want)-1))
	if !bytes.Equal(out, want) {
		t.Errorf("got  %v\nwant %v", out, want)
	}
	if counted[0] != 0 || counted[1] != 1 || counted[2] != 0 {
		t.Errorf("counted %v, want [0 1 0] (NULLs are not masked values)", counted)
	}
	if _, err := c.RewriteRow(nil, row[:len(row)-3], nil); err == nil {
		t.Errorf("a truncated row is accepted")
	}
}

// Values hashed again are answered by the Policy's memo with what HMAC
// gives them; each value keeps its own hash, in every session.
func TestHashMemo(t *testing.T) {
	p, err := New(Config{Rules: []Rule{{User: "bi", Columns: map[string]Method{"public.t.a": Hash}}}, Key: []byte("k")})
	if err != nil {
		t.Fatal(err)
	}
	s1, s2 := p.Match("bi", "db", ""), p.Match("bi", "db", "")
	if s1.memo == nil || s1.memo != s2.memo {
		t.Fatal("the sessions of a Policy do not share its memo")
	}
	fresh := &Set{key: p.key} // no memo: HMAC every time
	var h1, h2 macer
	seen := map[string]string{}
	for pass := 0; pass < 2; pass++ {
		for i := 0; i < 3*memoSlots; i += 7 {
			v := []byte("customer" + strconv.Itoa(i) + "@example.com")
			mc := &h1
			if i%2 == 1 {
				mc = &h2 // another session
			}
			got, _ := s1.value(mc, nil, Hash, oidText, false, v)
			want, _ := fresh.Value(nil, Hash, oidText, false, v)
			if string(got) != string(want) {
				t.Fatalf("pass %d: %s hashes to %s through the memo, %s without", pass, v, got, want)
			}
			if prev, ok := seen[string(got)]; ok && prev != string(v) {
				t.Fatalf("%s and %s share the hash %s", prev, v, got)
			}
			seen[string(got)] = string(v)
		}
	}
	// Another key (a RELOAD with another masking.key): other hashes.
	p2, _ := New(Config{Rules: []Rule{{User: "bi", Columns: map[string]Method{"public.t.a": Hash}}}, Key: []byte("k2")})
	a, _ := s1.value(&h1, nil, Hash, oidText, false, []byte("x@y.z"))
	b, _ := p2.Match("bi", "db", "").value(&h1, nil, Hash, oidText, false, []byte("x@y.z"))
	if string(a) == string(b) {
		t.Error("another key gives the same hash (the macer kept the old key)")
	}
}

// Sessions hashing at once through one memo each get HMAC's answer.
func TestHashMemoConcurrent(t *testing.T) {
	p, err := New(Config{Rules: []Rule{{User: "bi", Columns: map[string]Method{"public.t.a": Hash}}}, Key: []byte("k")})
	if err != nil {
		t.Fatal(err)
	}
	fresh := &Set{key: p.key}
	done := make(chan string, 4)
	for g := 0; g < 4; g++ {
		go func() {
			s := p.Match("bi", "db", "")
			var mc macer
			for i := 0; i < 20000; i++ {
				v := []byte("v" + strconv.Itoa(i%3000))
				got, _ := s.value(&mc, nil, Hash, oidText, false, v)
				want, _ := fresh.Value(nil, Hash, oidText, false, v)
				if string(got) != string(want) {
					done <- string(v) + ": " + string(got) + " != " + string(want)
					return
				}
			}
			done <- ""
		}()
	}
	for g := 0; g < 4; g++ {
		if msg := <-done; msg != "" {
			t.Error(msg)
		}
	}
}
