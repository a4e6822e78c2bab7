package plc

import "testing"

func TestSerialRoundTrip(t *testing.T) {
	for _, s := range []string{"", "A", "AB", "SN-2026-000123", "12345678901234567890"} {
		if got := decodeSerial(EncodeSerial(s)); got != s {
			t.Errorf("decodeSerial(EncodeSerial(%q)) = %q", s, got)
		}
	}
	if got := decodeSerial(EncodeSerial("123456789012345678901234")); got != "12345678901234567890" {
		t.Errorf("long serial: got %q, want the first 20 characters", got)
	}
}
