package metabase

import (
	"errors"
	"testing"
)

func TestParseVersion(t *testing.T) {
	cases := []struct {
		tag       string
		level     int
		edition   int
		ok        bool
		supported bool
	}{
		{"v0.50.1", 50, 0, true, true},
		{"v1.49.3.2", 49, 1, true, true},
		{"v0.48.0-RC1", 48, 0, true, true},
		{"0.57.2", 57, 0, true, true},
		{"v0.47.9", 47, 0, true, false},
		{"v0.46.5", 46, 0, true, false},
		{"vLOCAL_DEV", 0, 0, false, false},
		{"v0", 0, 0, false, false},
		{"", 0, 0, false, false},
		{"v0.x.1", 0, 0, false, false},
		{"v-1.50", 0, 0, false, false},
	}
	for _, tc := range cases {
		t.Run(tc.tag, func(t *testing.T) {
			v, err := ParseVersion(tc.tag)
			if (err == nil) != tc.ok {
				t.Fatalf("ParseVersion(%q) error %v, want ok=%v", tc.tag, err, tc.ok)
			}
			if !tc.ok {
				return
			}
			if v.Level != tc.level || v.Edition != tc.edition {
				t.Errorf("got %+v", v)
			}
			err = checkSupported(v)
			if (err == nil) != tc.supported {
				t.Errorf("checkSupported = %v, want supported=%v", err, tc.supported)
			}
			if err != nil && !errors.Is(err, ErrUnsupportedVersion) {
				t.Errorf("error %v does not wrap ErrUnsupportedVersion", err)
			}
		})
	}
}

func FuzzParseVersion(f *testing.F) {
	for _, s := range []string{"v0.50.1", "v1.49.3.2", "v0.48.0-RC1", "vLOCAL_DEV", "", "v..", "v9999999.1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseVersion(s)
		if err == nil && (v.Level < 0 || v.Edition < 0 || v.Tag != s) {
			t.Fatalf("ParseVersion(%q) = %+v", s, v)
		}
	})
}
