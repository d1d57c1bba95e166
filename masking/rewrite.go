package masking

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"math"
	"math/big"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Type OIDs the rewriters know (pg_type.dat).
const (
	oidBool    = 16
	oidBytea   = 17
	oidName    = 19
	oidInt8    = 20
	oidInt2    = 21
	oidInt4    = 23
	oidText    = 25
	oidFloat4  = 700
	oidFloat8  = 701
	oidUnknown = 705
	oidBpchar  = 1042
	oidVarchar = 1043
	oidNumeric = 1700
	oidUUID    = 2950
)

// typeClass is what a rewriter needs to know of a column's type.
type typeClass uint8

const (
	classOther typeClass = iota
	classString
	classInt
	classNumeric
	classFloat
	classUUID
	classBytea
)

func classOf(typ uint32) (typeClass, int) {
	switch typ {
	case oidText, oidVarchar, oidBpchar, oidName, oidUnknown:
		return classString, 0
	case oidInt2:
		return classInt, 2
	case oidInt4:
		return classInt, 4
	case oidInt8:
		return classInt, 8
	case oidNumeric:
		return classNumeric, 0
	case oidFloat4:
		return classFloat, 4
	case oidFloat8:
		return classFloat, 8
	case oidUUID:
		return classUUID, 0
	case oidBytea:
		return classBytea, 0
	}
	return classOther, 0
}

// redacted is what redact writes in a string column.
const redacted = "***"

// Value returns the masked form of one non-NULL value of type typ in the
// given format (binary or text), appended to dst; null says the result is
// NULL instead (dst unchanged). Types a method cannot write a value of
// (redact and partial on anything but strings; hash on anything but
// strings, integers, numeric, floats, uuid and bytea) become NULL.
func (s *Set) Value(dst []byte, m Method, typ uint32, bin bool, v []byte) (out []byte, null bool) {
	return s.value(&macer{}, dst, m, typ, bin, v)
}

func (s *Set) value(mc *macer, dst []byte, m Method, typ uint32, bin bool, v []byte) (out []byte, null bool) {
	class, width := classOf(typ)
	switch m {
	case Redact:
		if class == classString {
			return append(dst, redacted...), false
		}
		return dst, true
	case Partial:
		if class != classString {
			return dst, true
		}
		if typ == oidBpchar {
			v = bytes.TrimRight(v, " ")
		}
		return appendPartial(dst, v), false
	case Hash:
		canon, ok := canonical(class, width, bin, v)
		if !ok {
			return dst, true
		}
		return hashValue(dst, mc.mac(s.key, s.memo, canon), class, width, bin), false
	}
	return dst, true // Null, and anything unknown
}

// appendPartial appends "***" and the last 4 characters of v; a value of
// 4 characters or fewer is redacted whole.
func appendPartial(dst, v []byte) []byte {
	dst = append(dst, redacted...)
	ascii := true
	for _, c := range v {
		if c >= utf8.RuneSelf {
			ascii = false
			break
		}
	}
	if !ascii && utf8.Valid(v) {
		n := utf8.RuneCount(v)
		if n <= 4 {
			return dst
		}
		i := len(v)
		for k := 0; k < 4; k++ {
			_, size := utf8.DecodeLastRune(v[:i])
			i -= size
		}
		return append(dst, v[i:]...)
	}
	if len(v) <= 4 {
		return dst
	}
	return append(dst, v[len(v)-4:]...)
}

// canonical is the form a value is hashed in: the same for text and binary
// format (integers and floats as Go formats them, numeric as PostgreSQL
// prints it, uuid in lower-case text, bytea as its bytes).
func canonical(class typeClass, width int, bin bool, v []byte) ([]byte, bool) {
	switch class {
	case classString:
		return v, true
	case classInt:
		if !bin {
			n, err := strconv.ParseInt(strings.TrimSpace(string(v)), 10, 64)
			if err != nil {
				return nil, false
			}
			return strconv.AppendInt(nil, n, 10), true
		}
		if len(v) != width {
			return nil, false
		}
		var n int64
		switch width {
		case 2:
			n = int64(int16(binary.BigEndian.Uint16(v)))
		case 4:
			n = int64(int32(binary.BigEndian.Uint32(v)))
		default:
			n = int64(binary.BigEndian.Uint64(v))
		}
		return strconv.AppendInt(nil, n, 10), true
	case classFloat:
		var f float64
		if bin {
			switch {
			case width == 4 && len(v) == 4:
				f = float64(math.Float32frombits(binary.BigEndian.Uint32(v)))
			case width == 8 && len(v) == 8:
				f = math.Float64frombits(binary.BigEndian.Uint64(v))
			default:
				return nil, false
			}
		} else {
			var err error
			if f, err = strconv.ParseFloat(strings.TrimSpace(string(v)), 64); err != nil {
				return nil, false
			}
			if width == 4 {
				f = float64(float32(f))
			}
		}
		return strconv.AppendFloat(nil, f, 'g', -1, 64), true
	case classNumeric:
		if !bin {
			return v, true
		}
		t, err := numericText(v)
		if err != nil {
			return nil, false
		}
		return []byte(t), true
	case classUUID:
		if bin {
			if len(v) != 16 {
				return nil, false
			}
			return []byte(uuidText(v)), true
		}
		return []byte(strings.ToLower(string(v))), true
	case classBytea:
		if bin {
			return v, true
		}
		if len(v) >= 2 && v[0] == '\\' && v[1] == 'x' {
			b, err := hex.DecodeString(string(v[2:]))
			if err != nil {
				return nil, false
			}
			return b, true
		}
		return v, true // escape format: hashed as written
	}
	return nil, false
}

// hashValue writes a value of the column's type derived from mac.
func hashValue(dst, mac []byte, class typeClass, width int, bin bool) []byte {
	u := binary.BigEndian.Uint64(mac[:8])
	switch class {
	case classString:
		return hex.AppendEncode(dst, mac[:8])
	case classInt:
		var n int64
		switch width {
		case 2:
			n = int64(u % math.MaxInt16)
		case 4:
			n = int64(u % math.MaxInt32)
		default:
			n = int64(u & math.MaxInt64)
		}
		if !bin {
			return strconv.AppendInt(dst, n, 10)
		}
		switch width {
		case 2:
			return binary.BigEndian.AppendUint16(dst, uint16(n))
		case 4:
			return binary.BigEndian.AppendUint32(dst, uint32(n))
		}
		return binary.BigEndian.AppendUint64(dst, uint64(n))
	case classNumeric:
		n := u % 1_000_000_000_000_000
		if !bin {
			return strconv.AppendUint(dst, n, 10)
		}
		return appendNumericInt(dst, n)
	case classFloat:
		f := float64(u % 1_000_000_000)
		if !bin {
			return strconv.AppendFloat(dst, f, 'g', -1, 64)
		}
		if width == 4 {
			return binary.BigEndian.AppendUint32(dst, math.Float32bits(float32(f)))
		}
		return binary.BigEndian.AppendUint64(dst, math.Float64bits(f))
	case classUUID:
		if bin {
			return append(dst, mac[:16]...)
		}
		return append(dst, uuidText(mac[:16])...)
	case classBytea:
		if bin {
			return append(dst, mac[:16]...)
		}
		return hex.AppendEncode(append(dst, '\\', 'x'), mac[:16])
	}
	return dst
}

func uuidText(b []byte) string {
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// numericText prints a numeric in binary format as numeric_out would.
func numericText(v []byte) (string, error) {
	if len(v) < 8 {
		return "", errors.New("numeric: short value")
	}
	ndigits := int(binary.BigEndian.Uint16(v[0:]))
	weight := int(int16(binary.BigEndian.Uint16(v[2:])))
	sign := binary.BigEndian.Uint16(v[4:])
	dscale := int(binary.BigEndian.Uint16(v[6:]))
	switch sign {
	case 0xC000:
		return "NaN", nil
	case 0xD000:
		return "Infinity", nil
	case 0xF000:
		return "-Infinity", nil
	}
	if len(v) != 8+2*ndigits {
		return "", errors.New("numeric: bad length")
	}
	n := new(big.Int)
	tenK := big.NewInt(10000)
	for i := 0; i < ndigits; i++ {
		n.Mul(n, tenK)
		n.Add(n, big.NewInt(int64(binary.BigEndian.Uint16(v[8+2*i:]))))
	}
	// n × 10000^(weight-ndigits+1) is the value; print it with dscale decimals.
	exp := 4 * (weight - ndigits + 1) // power of ten
	s := n.String()
	if n.Sign() == 0 {
		s = "0"
		exp = 0
	}
	if exp >= 0 {
		s += strings.Repeat("0", exp)
		exp = 0
	}
	frac := -exp
	if len(s) <= frac {
		s = strings.Repeat("0", frac-len(s)+1) + s
	}
	ip, fp := s[:len(s)-frac], s[len(s)-frac:]
	if len(fp) > dscale {
		fp = fp[:dscale] // numeric_send keeps only digits within dscale
	}
	for len(fp) < dscale {
		fp += "0"
	}
	out := ip
	if dscale > 0 {
		out += "." + fp
	}
	if sign == 0x4000 && strings.Trim(out, "0.") != "" {
		out = "-" + out
	}
	return out, nil
}

// appendNumericInt writes a non-negative integer in numeric's binary format.
func appendNumericInt(dst []byte, n uint64) []byte {
	var groups []uint16
	for n > 0 {
		groups = append([]uint16{uint16(n % 10000)}, groups...)
		n /= 10000
	}
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(groups)))
	weight := len(groups) - 1
	if len(groups) == 0 {
		weight = 0
	}
	dst = binary.BigEndian.AppendUint16(dst, uint16(int16(weight)))
	dst = binary.BigEndian.AppendUint16(dst, 0) // positive
	dst = binary.BigEndian.AppendUint16(dst, 0) // dscale
	for _, g := range groups {
		dst = binary.BigEndian.AppendUint16(dst, g)
	}
	return dst
}

// Columns is the masking of one result set: one entry per result column,
// Method None for those left as they are. It belongs to one session's
// server→client direction.
type Columns struct {
	set  *Set
	cols []ColumnMask
	mac  *macer
}

// Hasher is the hash method's state of one session's results (keyed
// once, not per result set): see Columns.UseHasher. Not safe for
// concurrent use.
type Hasher struct{ m macer }

// UseHasher makes c hash with h (else c keys a hash of its own, once).
func (c *Columns) UseHasher(h *Hasher) {
	if c != nil {
		c.mac = &h.m
	}
}

// ColumnMask is how one result column is rewritten.
type ColumnMask struct {
	Name   string // schema.table.column (a view's column names the view)
	Method Method
	Type   uint32
	Binary bool
}

// Masks returns the result's columns (shared: do not modify).
func (c *Columns) Masks() []ColumnMask {
	if c == nil {
		return nil
	}
	return c.cols
}

// Any reports whether any column is masked.
func (c *Columns) Any() bool {
	if c == nil {
		return false
	}
	for _, m := range c.cols {
		if m.Method != None {
			return true
		}
	}
	return false
}

// ErrBadRow is a DataRow that does not match its RowDescription.
var ErrBadRow = errors.New("masking: malformed DataRow")

// RewriteRow appends to dst the DataRow msg (type byte and length
// included) with its masked columns rewritten; counts (nil, or one per
// column) gets one more for each masked non-NULL value of its column.
func (c *Columns) RewriteRow(dst, msg []byte, counts []float64) ([]byte, error) {
	if len(msg) < 7 || msg[0] != 'D' {
		return dst, ErrBadRow
	}
	body := msg[5:]
	n := int(binary.BigEndian.Uint16(body))
	if n != len(c.cols) || counts != nil && len(counts) != n {
		return dst, ErrBadRow
	}
	start := len(dst)
	dst = append(dst, 'D', 0, 0, 0, 0)
	dst = append(dst, body[:2]...)
	p := 2
	for i := 0; i < n; i++ {
		if p+4 > len(body) {
			return dst[:start], ErrBadRow
		}
		l := int(int32(binary.BigEndian.Uint32(body[p:])))
		if l < -1 || l > len(body)-p-4 {
			return dst[:start], ErrBadRow
		}
		m := c.cols[i]
		if l == -1 || m.Method == None {
			end := p + 4 + max(l, 0)
			dst = append(dst, body[p:end]...)
			p = end
			continue
		}
		v := body[p+4 : p+4+l]
		p += 4 + l
		lenAt := len(dst)
		dst = append(dst, 0, 0, 0, 0)
		if c.mac == nil {
			c.mac = &macer{}
		}
		out, null := c.set.value(c.mac, dst, m.Method, m.Type, m.Binary, v)
		if null {
			dst = binary.BigEndian.AppendUint32(dst[:lenAt], math.MaxUint32) // -1
		} else {
			dst = out
			binary.BigEndian.PutUint32(dst[lenAt:], uint32(len(dst)-lenAt-4))
		}
		if counts != nil {
			counts[i]++
		}
	}
	if p != len(body) {
		return dst[:start], ErrBadRow
	}
	binary.BigEndian.PutUint32(dst[start+1:], uint32(len(dst)-start-1))
	return dst, nil
}
