package firmware

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/takt-edge/takt/cloudsync"
	"github.com/takt-edge/takt/cloudsync/cloudtest"
	"github.com/takt-edge/takt/cloudsync/wire"
)

// watchRig is a station whose firmware watcher hears a real Mosquitto and fetches from a
// real S3 server, with the test playing takt-cloud: it uploads releases and announces them.
type watchRig struct {
	t      *testing.T
	k      testKey
	s      *station
	s3     *cloudtest.S3
	bucket string
	topics wire.Topics
	mqtt   cloudsync.MQTTConfig
	sync   cloudsync.Config
	cloud  *cloudsync.Conn
	status chan wire.FirmwareStatusMsg
	rels   string
}

func newWatchRig(t *testing.T) *watchRig {
	r := &watchRig{t: t, k: newKey(t), s: newStation(t), s3: cloudtest.StartS3(t), rels: t.TempDir(),
		topics: wire.Topics{Site: "plant", Line: "line3", Station: "st-7"}, status: make(chan wire.FirmwareStatusMsg, 64)}
	broker := cloudtest.StartMosquitto(t)
	r.bucket = r.s3.NewBucket(t, "takt-releases")
	r.mqtt = cloudsync.DefaultMQTTConfig()
	r.mqtt.Broker, r.mqtt.ReconnectMin, r.mqtt.ReconnectMax = broker.URL, 50*time.Millisecond, time.Second
	r.sync = cloudsync.DefaultConfig()
	r.sync.Endpoint, r.sync.Bucket, r.sync.Region = "http://"+r.s3.Endpoint, r.bucket, r.s3.Region
	r.sync.AccessKey, r.sync.SecretKey, r.sync.PathStyle = r.s3.AccessKey, cloudsync.Secret(r.s3.SecretKey), true
	r.sync.BackoffMin, r.sync.BackoffMax = 20*time.Millisecond, 200*time.Millisecond

	cloudCfg := r.mqtt
	cloudCfg.ClientID = "takt-cloud-test"
	conn, err := cloudsync.NewConn(cloudCfg, cloudsync.ConnOptions{
		Subscriptions: map[string]func(cloudsync.Received){r.topics.Topic(wire.TopicFirmwareStatus): func(m cloudsync.Received) {
			var msg wire.FirmwareStatusMsg
			if err := wire.Decode(m.Payload, &msg); err != nil {
				t.Errorf("firmware/status: %v: %s", err, m.Payload)
				return
			}
			r.status <- msg
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	r.cloud = conn
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { conn.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	if err := conn.WaitConnected(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	return r
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// startWatcher runs a watcher until the returned stop is called.
func (r *watchRig) startWatcher() (stop func()) {
	cfg := r.mqtt
	cfg.ClientID = "st-7-firmware"
	w, err := NewWatcher(WatchConfig{Topics: r.topics, MQTT: cfg, Sync: r.sync, Logger: zerolog.New(zerolog.NewTestWriter(r.t))},
		func(rep Reporter) (*Updater, error) { return New(r.s.config(2*time.Second), r.k.keys, r.s.sup, rep) })
	if err != nil {
		r.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			r.t.Errorf("watcher Run: %v", err)
		}
	}
}

// announce uploads a release and publishes it, retained, on the station's or the line's
// firmware/available; sha overrides the announced sha256 when not empty.
func (r *watchRig) announce(version string, o relOpts, onLine bool, sha string) {
	r.t.Helper()
	data, err := os.ReadFile(makeRelease(r.t, r.rels, r.k.priv, version, o))
	if err != nil {
		r.t.Fatal(err)
	}
	key := "firmware/" + version + "/release.tar"
	r.s3.Put(r.t, r.bucket, key, data)
	if sha == "" {
		sum := sha256.Sum256(data)
		sha = hex.EncodeToString(sum[:])
	}
	msg, _ := json.Marshal(wire.FirmwareAvailableMsg{Schema: wire.MessageSchema, Version: version, Key: key, SHA256: sha, Size: int64(len(data))})
	r.publish(onLine, msg)
}

func (r *watchRig) publish(onLine bool, payload []byte) {
	r.t.Helper()
	topic := r.topics.Topic(wire.TopicFirmwareAvailable)
	if onLine {
		topic = r.topics.LineTopic(wire.TopicFirmwareAvailable)
	}
	if err := r.cloud.Publish(ctxTimeout(r.t, 10*time.Second), cloudsync.Publication{Topic: topic, Payload: payload, Retained: true}); err != nil {
		r.t.Fatal(err)
	}
}

// outcome waits for version's final firmware/status and returns the states seen for it.
func (r *watchRig) outcome(version string) (final wire.FirmwareStatusMsg, seen []string) {
	r.t.Helper()
	timeout := time.After(60 * time.Second)
	for {
		select {
		case m := <-r.status:
			if m.Version != version {
				continue
			}
			seen = append(seen, m.State)
			switch m.State {
			case wire.FirmwareCommitted, wire.FirmwareRolledBack, wire.FirmwareRejected:
				return m, seen
			}
		case <-timeout:
			r.t.Fatalf("no final firmware/status for %s within 60s; saw %v", version, seen)
		}
	}
}

// TestWatchInstallsAnnouncedReleases: releases announced over MQTT are fetched from S3 and
// installed with the A/B updater, every step reported on firmware/status: a commit, an
// unhealthy release rolled back, a wrong checksum and a downgrade rejected, announcements
// heard again after a restart not reinstalled, then a commit.
func TestWatchInstallsAnnouncedReleases(t *testing.T) {
	r := newWatchRig(t)
	if err := os.WriteFile(r.s.live, []byte("station: st-1\nposition: 4\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	stop := r.startWatcher()

	r.announce("1.0.0", relOpts{}, true, "")
	final, seen := r.outcome("1.0.0")
	if final.State != wire.FirmwareCommitted || !contains(seen, wire.FirmwareDownloading) || !contains(seen, wire.FirmwareInstalling) {
		t.Fatalf("1.0.0 on the line topic: states %v, want downloading, installing..., committed", seen)
	}
	if got := r.s.running(t); got != "1.0.0" {
		t.Fatalf("running %s after commit, want 1.0.0", got)
	}

	r.publish(false, []byte(`{"schema":1,"version":"9.9.9"`)) // malformed: dropped, the watcher goes on
	r.announce("1.1.0", relOpts{unready: true, configVersion: 2}, false, "")
	if final, seen = r.outcome("1.1.0"); final.State != wire.FirmwareRolledBack || !strings.Contains(final.Reason, "not healthy") ||
		!strings.Contains(final.Reason, "config restored from the snapshot slot a ran with") {
		t.Fatalf("unhealthy 1.1.0: states %v, final %+v; want rolled-back, saying why and that the config was restored", seen, final)
	}
	if got := r.s.running(t); got != "1.0.0" {
		t.Fatalf("running %s after rollback, want 1.0.0", got)
	}

	r.announce("1.2.0", relOpts{}, false, strings.Repeat("ab", 32))
	if final, _ = r.outcome("1.2.0"); final.State != wire.FirmwareRejected || !strings.Contains(final.Reason, "sha256") {
		t.Fatalf("1.2.0 announced with a wrong sha256: final %+v, want rejected naming the sha256", final)
	}
	r.announce("1.0.5", relOpts{keys: "station"}, false, "")
	if final, _ = r.outcome("1.0.5"); final.State != wire.FirmwareRejected || !strings.Contains(final.Reason, "unknown key position") {
		t.Fatalf("1.0.5 refusing the station config: final %+v, want rejected naming the key", final)
	}
	r.announce("0.9.0", relOpts{}, false, "")
	if final, _ = r.outcome("0.9.0"); final.State != wire.FirmwareRejected || !strings.Contains(final.Reason, "downgrade") {
		t.Fatalf("downgrade 0.9.0: final %+v, want rejected as a downgrade", final)
	}

	// A restart hears the retained announcements again (0.9.0 on the station, 1.0.0 on the
	// line): neither is installed again.
	stop()
	restarted := time.Now()
	stop = r.startWatcher()
	defer func() { stop() }()
	// The test's handlers run concurrently, so a status from before the restart may still
	// arrive: judge only those published after it.
	for quiet := time.After(3 * time.Second); ; {
		select {
		case m := <-r.status:
			if m.Time.After(restarted) && (m.State == wire.FirmwareDownloading || m.State == wire.FirmwareInstalling) {
				t.Fatalf("after a restart the watcher acted on a retained announcement again: %+v", m)
			}
			continue
		case <-quiet:
		}
		break
	}

	r.announce("1.3.0", relOpts{}, false, "")
	if final, seen = r.outcome("1.3.0"); final.State != wire.FirmwareCommitted {
		t.Fatalf("1.3.0: states %v, want committed", seen)
	}
	if got := r.s.running(t); got != "1.3.0" {
		t.Fatalf("running %s, want 1.3.0", got)
	}
	checkBootable(t, r.s.root, r.k.keys)
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}
