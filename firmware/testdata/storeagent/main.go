// Command storeagent stands in for takt-agent in the firmware store tests, with the real
// verdict store (agent/store) and the real uploader (cloudsync) but no camera or model.
//
// It reads its release's properties from <exe>/../etc/agent.yaml ("version: X",
// "ready: true|false", "sync: true|false", and those of package stationconfig), refuses to
// start on a station config ($TAKT_TEST_CONFIG) it does not read, opens the store in
// $TAKT_TEST_DATA_DIR, records $TAKT_TEST_PARTS verdicts (serials "<version>-<n>"; the id
// of each is appended to $TAKT_TEST_STATE_DIR/committed-<version> once Commit returned),
// uploads the backlog to the object store in the TAKT_S3_* environment when sync is true,
// and serves on $TAKT_TEST_LISTEN until SIGTERM: GET /readyz, /version, /config (the
// station config it runs with), /format (the store's format) and /verdicts (every record
// and the backlog, JSON).
//
// Built with -tags takt_next_format it plays the next release: its store migrates to a
// newer format that the plain build still reads.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/takt-edge/takt/agent/store"
	"github.com/takt-edge/takt/cloudsync"
	"github.com/takt-edge/takt/firmware/testdata/stationconfig"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "storeagent:", err)
		os.Exit(1)
	}
}

func run() error {
	if len(os.Args) > 1 && os.Args[1] == "config" {
		return stationconfig.Cmd(os.Args[2:])
	}
	rel, err := stationconfig.Release()
	if err != nil {
		return err
	}
	station, err := stationconfig.Load(rel)
	if err != nil {
		return err
	}
	version := rel["version"]
	log := zerolog.New(os.Stderr).With().Timestamp().Str("agent", version).Logger()
	st, err := store.Open(os.Getenv("TAKT_TEST_DATA_DIR"), store.Options{Logger: log, OpenTimeout: 10 * time.Second})
	if err != nil {
		return err
	}
	defer st.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	l, err := net.Listen("tcp", os.Getenv("TAKT_TEST_LISTEN"))
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: handler(st, version, rel["ready"] == "true", station)}
	go srv.Serve(l)
	defer srv.Close()

	done := make(chan error, 1)
	if rel["sync"] == "true" {
		up, err := cloudsync.New(syncConfig(), st, log)
		if err != nil {
			return err
		}
		go func() { done <- up.Run(ctx) }()
	} else {
		close(done)
	}
	parts, _ := strconv.Atoi(os.Getenv("TAKT_TEST_PARTS"))
	if err := record(ctx, st, version, parts); err != nil && ctx.Err() == nil {
		return err
	}
	<-ctx.Done()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// record commits parts verdicts and notes each id once it is durable.
func record(ctx context.Context, st *store.Store, version string, parts int) error {
	f, err := os.OpenFile(filepath.Join(os.Getenv("TAKT_TEST_STATE_DIR"), "committed-"+version), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	for i := range parts {
		if ctx.Err() != nil {
			return nil
		}
		score := 0.1
		v := &store.Verdict{Station: "st-1", CameraID: "cam0", Serial: fmt.Sprintf("%s-%d", version, i), Time: time.Now(),
			Decision: store.Pass, Score: &score, Threshold: 0.5, Provider: "cpu"}
		if err := st.Commit(ctx, v, &store.Image{Data: []byte(fmt.Sprintf("image of %s-%d", version, i)), Ext: "jpg"}); err != nil {
			return err
		}
		fmt.Fprintf(f, "%d\n", v.ID)
	}
	return nil
}

func syncConfig() cloudsync.Config {
	cfg := cloudsync.DefaultConfig()
	cfg.Endpoint = os.Getenv("TAKT_S3_ENDPOINT")
	cfg.Bucket = os.Getenv("TAKT_S3_BUCKET")
	cfg.Region = os.Getenv("TAKT_S3_REGION")
	cfg.AccessKey = os.Getenv("TAKT_S3_ACCESS_KEY")
	cfg.SecretKey = cloudsync.Secret(os.Getenv("TAKT_S3_SECRET_KEY"))
	cfg.PathStyle = true
	cfg.PollInterval = 20 * time.Millisecond
	cfg.BackoffMin, cfg.BackoffMax = 20*time.Millisecond, 500*time.Millisecond
	cfg.Sample.PassFraction = 1
	return cfg
}

func handler(st *store.Store, version string, ready bool, station []byte) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !ready {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprint(w, "ok")
	})
	mux.HandleFunc("GET /version", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, version) })
	mux.HandleFunc("GET /config", func(w http.ResponseWriter, r *http.Request) { w.Write(station) })
	mux.HandleFunc("GET /format", func(w http.ResponseWriter, r *http.Request) {
		fi, err := st.Format()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		json.NewEncoder(w).Encode(fi)
	})
	mux.HandleFunc("GET /verdicts", func(w http.ResponseWriter, r *http.Request) {
		all, err := st.List(0, 1<<20)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		b, err := st.Backlog()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		json.NewEncoder(w).Encode(struct {
			Verdicts []store.Verdict `json:"verdicts"`
			Backlog  int             `json:"backlog"`
		}{all, b.Count})
	})
	return mux
}
