package wire

import (
	"fmt"
	"strings"
	"time"
)

// Object keys (see DESIGN.md). They are deterministic: a retried upload after
// a crash writes the same key. Ids are zero-padded to 16 digits so keys sort
// by id; dates are the capture date in UTC.

// ImageKey is "images/{station}/{yyyy}/{mm}/{dd}/{id}.{ext}".
func ImageKey(station string, captured time.Time, id uint64, ext string) string {
	return fmt.Sprintf("images/%s/%s/%016d.%s", keyPart(station), captured.UTC().Format("2006/01/02"), id, keyPart(ext))
}

// VerdictBatchKey is "verdicts/{station}/{yyyy}/{mm}/{dd}/{first-id}-{last-id}.jsonl".
func VerdictBatchKey(station string, day time.Time, first, last uint64) string {
	return fmt.Sprintf("verdicts/%s/%s/%016d-%016d.jsonl", keyPart(station), day.UTC().Format("2006/01/02"), first, last)
}

// LabelKey is "labels/{station}/{yyyy}/{mm}/{dd}/{verdict-id}-{seq}.json",
// dated by the verdict's capture time.
func LabelKey(station string, captured time.Time, verdictID, seq uint64) string {
	return fmt.Sprintf("labels/%s/%s/%016d-%016d.json", keyPart(station), captured.UTC().Format("2006/01/02"), verdictID, seq)
}

// keyPart keeps letters, digits, '.', '_' and '-' and replaces anything else
// (a '/' above all) with '_', so a station name is one path segment.
func keyPart(s string) string {
	if s == "" {
		return "_"
	}
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
			return r
		}
		return '_'
	}, s)
}
