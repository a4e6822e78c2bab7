package wire

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// ByteSize is a number of bytes that configuration files may write as a plain
// integer or with a unit: "512KiB", "8GiB", "1.5GB", "200MB", "64kB". Units
// are B, kB/KB, MB, GB, TB (powers of 1000) and KiB, MiB, GiB, TiB (powers of
// 1024), case-insensitive.
type ByteSize int64

var byteUnits = []struct {
	suffix string
	mult   float64
}{
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40},
	{"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12},
	{"k", 1 << 10}, {"m", 1 << 20}, {"g", 1 << 30}, {"t", 1 << 40},
	{"b", 1},
}

// ParseByteSize parses a size such as "8GiB" or "1048576".
func ParseByteSize(s string) (ByteSize, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	if t == "" {
		return 0, fmt.Errorf("byte size is empty")
	}
	mult := 1.0
	for _, u := range byteUnits {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("byte size %q: want a number with an optional unit (B, kB, MB, GB, KiB, MiB, GiB)", s)
	}
	n := f * mult
	if n < 0 || n > math.MaxInt64 {
		return 0, fmt.Errorf("byte size %q is out of range", s)
	}
	return ByteSize(n), nil
}

// UnmarshalText implements encoding.TextUnmarshaler (used by YAML decoding).
func (b *ByteSize) UnmarshalText(text []byte) error {
	v, err := ParseByteSize(string(text))
	if err != nil {
		return err
	}
	*b = v
	return nil
}

// MarshalText writes the size in the largest binary unit that divides it.
func (b ByteSize) MarshalText() ([]byte, error) { return []byte(b.String()), nil }

// String formats the size as "8GiB", "1500B".
func (b ByteSize) String() string {
	for _, u := range []struct {
		name string
		n    int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if b != 0 && int64(b)%u.n == 0 {
			return strconv.FormatInt(int64(b)/u.n, 10) + u.name
		}
	}
	return strconv.FormatInt(int64(b), 10) + "B"
}
