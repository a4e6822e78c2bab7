package agent

import (
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"
)

func testLogger(t *testing.T) zerolog.Logger {
	return zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)
}

// scrapeLive gathers the running agent's registry without HTTP.
func scrapeLive(t *testing.T, r *running) map[string]*dto.MetricFamily {
	t.Helper()
	l := r.a.live.Load()
	if l == nil {
		t.Fatal("agent not running")
	}
	fams, err := l.m.reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, f := range fams {
		out[f.GetName()] = f
	}
	return out
}

func containsStr(s, sub string) bool { return strings.Contains(s, sub) }
