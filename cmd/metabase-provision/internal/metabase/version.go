package metabase

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Feature levels: Metabase's "minor" number (0.50 OSS and 1.50 EE share one).
const (
	// MinSupported: dashboards carry dashcards and are placed with PUT.
	MinSupported = 48
	// apiKeysSince: the X-API-Key header.
	apiKeysSince = 49
	// mbql5Since: GET /api/card/:id needs ?legacy-mbql=true.
	mbql5Since = 57
)

// ErrUnsupportedVersion is returned (wrapped) for Metabase older than 0.48.
var ErrUnsupportedVersion = errors.New("unsupported Metabase version")

// Version is a Metabase release, from a tag such as "v0.50.1" or "v1.50.1".
type Version struct {
	Tag string
	// Edition is 0 for the open-source edition, 1 for Enterprise.
	Edition int
	// Level is the feature level (50 for v0.50.x and v1.50.x).
	Level int
	Patch int
}

// ParseVersion parses a version tag: "v0.50.1", "v1.49.3.2", "v0.50.0-RC1",
// "0.48". It rejects anything it cannot place (such as "vLOCAL_DEV").
func ParseVersion(tag string) (Version, error) {
	v := Version{Tag: tag}
	s := strings.TrimPrefix(strings.TrimSpace(tag), "v")
	if i := strings.IndexAny(s, "-+ "); i >= 0 {
		s = s[:i]
	}
	parts := strings.Split(s, ".")
	if len(parts) < 2 {
		return v, fmt.Errorf("version tag %q: want vX.Y[.Z]", tag)
	}
	nums := make([]int, len(parts))
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || len(p) > 6 {
			return v, fmt.Errorf("version tag %q: %q is not a number", tag, p)
		}
		nums[i] = n
	}
	v.Edition, v.Level = nums[0], nums[1]
	if len(nums) > 2 {
		v.Patch = nums[2]
	}
	return v, nil
}

// AtLeast reports whether v has at least feature level level.
func (v Version) AtLeast(level int) bool { return v.Level >= level }

// String is the tag as Metabase reported it.
func (v Version) String() string { return v.Tag }

// checkSupported fails with ErrUnsupportedVersion below 0.48.
func checkSupported(v Version) error {
	if !v.AtLeast(MinSupported) {
		return fmt.Errorf("%w %s: metabase-provision needs 0.%d or newer (dashboards are placed with PUT /api/dashboard/:id and its dashcards)",
			ErrUnsupportedVersion, v.Tag, MinSupported)
	}
	return nil
}
