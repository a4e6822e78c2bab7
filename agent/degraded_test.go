package agent

import (
	"net"
	"testing"
	"time"

	"github.com/takt-edge/takt/agent/internal/stationtest"
	"github.com/takt-edge/takt/cloudsync"
	"github.com/takt-edge/takt/cloudsync/cloudtest"
	"github.com/takt-edge/takt/cloudsync/wire"
)

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// Degraded states found outside the MQTT role reach operators as alerts: the provider
// chain falling back (no CUDA here) and the store dropping images to stay in its quota
// while the object store is unreachable.
func TestDegradedStatesRaiseAlerts(t *testing.T) {
	broker := cloudtest.StartMosquitto(t)
	sub := stationtest.NewSubscriber(t, broker.URL, "ops-console", false)
	cfg := testConfig(t)
	cfg.Camera.FPS = 20 // long enough a run for the alerts to go out while it lasts
	cfg.MQTT = testMQTTConfig(broker.URL)
	cfg.Model.Providers = []string{"cuda", "cpu"}
	cfg.Sync = cloudsync.DefaultConfig()
	cfg.Sync.Endpoint, cfg.Sync.Bucket = "http://"+closedAddr(t), "takt"
	cfg.Sync.AccessKey, cfg.Sync.SecretKey = "station", "not-used"
	cfg.Sync.DrainTimeout = time.Millisecond
	cfg.Store = StoreConfig{ImagesMaxBytes: 120_000}
	if _, err := runAgent(t, cfg); err != nil {
		t.Fatalf("Run: %v", err)
	}
	kinds := func() map[string]string {
		rcv := sub.Received()
		out := map[string]string{}
		for _, a := range rcv.Alerts {
			out[a.Kind] = a.Message
		}
		return out
	}
	stationtest.WaitUntil(t, 10*time.Second, "provider_fallback and disk_quota alerts", func() bool {
		k := kinds()
		return k[wire.AlertProviderFallback] != "" && k[wire.AlertDiskQuota] != ""
	})
	t.Logf("alerts: %v", kinds())
}
