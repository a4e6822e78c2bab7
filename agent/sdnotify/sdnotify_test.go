package sdnotify

import (
	"os"
	"strconv"
	"testing"
	"time"
)

func TestWatchdogPeriod(t *testing.T) {
	for _, tc := range []struct {
		usec, pid string
		want      time.Duration
	}{
		{"", "", 0},
		{"abc", "", 0},
		{"2000000", "", 2 * time.Second},
		{"2000000", strconv.Itoa(os.Getpid()), 2 * time.Second},
		{"2000000", "1", 0}, // meant for another process
	} {
		t.Setenv("WATCHDOG_USEC", tc.usec)
		t.Setenv("WATCHDOG_PID", tc.pid)
		if got := WatchdogPeriod(); got != tc.want {
			t.Errorf("WATCHDOG_USEC=%q WATCHDOG_PID=%q: got %s, want %s", tc.usec, tc.pid, got, tc.want)
		}
	}
}
