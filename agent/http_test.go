package agent

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/rs/zerolog"

	"github.com/takt-edge/takt/agent/plc"
	"github.com/takt-edge/takt/agent/store"
	"github.com/takt-edge/takt/agent/web"
)

// running is an agent inside Run, for tests of its servers.
type running struct {
	a    *Agent
	base string // http://127.0.0.1:port when HTTP is on
	stop func() error
}

// startAgent runs an agent with cfg until the test ends (or stop is called) and waits until
// its services are up.
func startAgent(t *testing.T, cfg Config) *running {
	t.Helper()
	a, err := New(cfg, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return startAgentWith(t, a)
}

func startAgentWith(t *testing.T, a *Agent) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var stopErr error
	stopped := false
	r := &running{a: a}
	r.stop = func() error {
		if !stopped {
			cancel()
			stopErr, stopped = <-done, true
		}
		return stopErr
	}
	t.Cleanup(func() { r.stop() })
	deadline := time.Now().Add(30 * time.Second)
	for a.live.Load() == nil {
		select {
		case err := <-done:
			stopped, stopErr = true, err
			t.Fatalf("Run returned before its services were up: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("services not up after 30s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if addr := a.HTTPAddr(); addr != "" {
		r.base = "http://" + addr
		if a.cfg.HTTP.TLSCert != "" {
			r.base = "https://" + addr
		}
	}
	return r
}

// httpConfig is a test config with the HTTP server on a free loopback port and a camera
// replaying the production run in a loop at a line's pace.
func httpConfig(t *testing.T) Config {
	cfg := testConfig(t)
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.Camera.Loop = true
	cfg.Camera.FPS = 20
	return cfg
}

func getJSON(t *testing.T, c *http.Client, url string, want int, out any) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("GET %s: got status %d (%s), want %d", url, resp.StatusCode, body, want)
	}
	if out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			t.Fatalf("GET %s: %v in %s", url, err, body)
		}
	}
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: status %d", url, resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse %s: %v", url, err)
	}
	return fams
}

// sample returns the value of the metric family's sample whose labels include want
// (counter, gauge or histogram count), and whether there is one.
func sample(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	f, ok := fams[name]
	if !ok {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		for k, v := range want {
			found := false
			for _, lp := range m.GetLabel() {
				if lp.GetName() == k && lp.GetValue() == v {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

func TestHTTPAPIMetricsAndHealth(t *testing.T) {
	cfg := httpConfig(t)
	r := startAgent(t, cfg)
	c := http.DefaultClient

	var vs []web.VerdictJSON
	waitFor(t, "10 verdicts over the API", 30*time.Second, func() bool {
		getJSON(t, c, r.base+"/verdicts?since=0&limit=100", 200, &vs)
		return len(vs) >= 10
	})
	for i, v := range vs {
		if i > 0 && v.ID <= vs[i-1].ID {
			t.Fatalf("GET /verdicts: ids not ascending: %d after %d", v.ID, vs[i-1].ID)
		}
	}
	var after []web.VerdictJSON
	getJSON(t, c, fmt.Sprintf("%s/verdicts?since=%d", r.base, vs[4].ID), 200, &after)
	if len(after) == 0 || after[0].ID != vs[5].ID {
		t.Fatalf("GET /verdicts?since=%d: got %d verdicts starting %v, want from id %d", vs[4].ID, len(after), after, vs[5].ID)
	}

	// A FAIL part: its verdict with image and heatmap, the heatmap different from the image.
	var fail *web.VerdictJSON
	waitFor(t, "a FAIL part with a heatmap", 30*time.Second, func() bool {
		getJSON(t, c, r.base+"/verdicts?limit=40", 200, &vs)
		for i := range vs {
			if vs[i].Decision == store.Fail && vs[i].HeatmapURL != "" {
				fail = &vs[i]
				return true
			}
		}
		return false
	})
	var got web.VerdictJSON
	getJSON(t, c, fmt.Sprintf("%s/verdicts/%d", r.base, fail.ID), 200, &got)
	if got.ID != fail.ID || got.Serial != fail.Serial || got.ResultCode != plc.ResultDefect || got.ImageURL == "" {
		t.Fatalf("GET /verdicts/%d: got id=%d serial=%s result_code=%d image_url=%q, want id=%d serial=%s result_code=%d and an image",
			fail.ID, got.ID, got.Serial, got.ResultCode, got.ImageURL, fail.ID, fail.Serial, plc.ResultDefect)
	}
	img := getBytes(t, r.base+got.ImageURL, "image/jpeg")
	heat := getBytes(t, r.base+got.HeatmapURL, "image/jpeg")
	if bytes.Equal(img, heat) || len(heat) < 1000 {
		t.Fatalf("heatmap: %d bytes, equal to the image: %v; want a distinct JPEG", len(heat), bytes.Equal(img, heat))
	}

	// Labels go through Agent.Label into the store.
	code, body := postJSON(t, nil, r.base+fmt.Sprintf("/verdicts/%d/label", fail.ID), `{"label":"false_reject"}`, nil)
	if code != 200 {
		t.Fatalf("POST label: got %d (%s), want 200", code, body)
	}
	st := r.a.live.Load().st
	if v, err := st.Get(fail.ID); err != nil || v.Label != LabelFalseReject {
		t.Fatalf("store after label: got label %q (%v), want %s", v.Label, err, LabelFalseReject)
	}

	var status web.Status
	getJSON(t, c, r.base+"/status", 200, &status)
	if status.Station != "st-test" || status.Model.Name != "fixture-part" || status.Model.Provider != "cpu" ||
		status.Camera.State != "connected" || status.Totals.Total == 0 || len(status.Yield) != 9 || status.Yield[0].Parts == 0 {
		t.Fatalf("GET /status: got %+v", status)
	}
	if status.MQTT != "not configured" || status.PLC != PLCOff {
		t.Fatalf("GET /status: mqtt=%q plc=%q, want not configured and off", status.MQTT, status.PLC)
	}
	getJSON(t, c, r.base+"/healthz", 200, nil)
	var ready struct {
		OK     bool        `json:"ok"`
		Checks []web.Check `json:"checks"`
	}
	getJSON(t, c, r.base+"/readyz", 200, &ready)
	if !ready.OK || len(ready.Checks) != 4 {
		t.Fatalf("GET /readyz: got %+v, want ok with 4 checks", ready)
	}

	// Metrics move as parts flow.
	m1 := scrape(t, r.base+"/metrics")
	total := func(m map[string]*dto.MetricFamily) float64 {
		var n float64
		for _, d := range []string{store.Pass, store.Fail, store.NoDecision} {
			v, _ := sample(m, "takt_parts_total", map[string]string{"verdict": d})
			n += v
		}
		return n
	}
	n1 := total(m1)
	waitFor(t, "takt_parts_total to grow by 5", 30*time.Second, func() bool { return total(scrape(t, r.base+"/metrics")) >= n1+5 })
	m2 := scrape(t, r.base+"/metrics")
	for _, tc := range []struct {
		name   string
		labels map[string]string
		check  func(float64) bool
		want   string
	}{
		{"takt_stage_duration_seconds", map[string]string{"stage": "infer"}, func(v float64) bool { return v >= n1+5 }, fmt.Sprintf(">= %v observations", n1+5)},
		{"takt_stage_duration_seconds", map[string]string{"stage": "commit"}, func(v float64) bool { return v >= n1+5 }, fmt.Sprintf(">= %v observations", n1+5)},
		{"takt_model_info", map[string]string{"name": "fixture-part", "version": "0.1.0", "provider": "cpu"}, func(v float64) bool { return v == 1 }, "1"},
		{"takt_execution_provider", map[string]string{"provider": "cpu"}, func(v float64) bool { return v == 1 }, "1"},
		{"takt_camera_state", map[string]string{"camera": "cam0", "state": "connected"}, func(v float64) bool { return v == 1 }, "1"},
		{"takt_camera_frames_total", map[string]string{"camera": "cam0"}, func(v float64) bool { return v >= n1+5 }, "frames >= parts"},
		{"takt_camera_stalls_total", map[string]string{"camera": "cam0"}, func(v float64) bool { return v == 0 }, "0"},
		{"takt_store_db_bytes", nil, func(v float64) bool { return v > 0 }, "> 0"},
		{"takt_store_image_bytes", nil, func(v float64) bool { return v > 0 }, "> 0"},
		{"takt_labels_total", map[string]string{"label": "false_reject"}, func(v float64) bool { return v == 1 }, "1"},
		{"takt_labels_total", map[string]string{"label": "false_accept"}, func(v float64) bool { return v == 0 }, "0"},
		{"takt_link_state", map[string]string{"link": "mqtt", "state": "not configured"}, func(v float64) bool { return v == 1 }, "1"},
		{"takt_ready", nil, func(v float64) bool { return v == 1 }, "1"},
		{"takt_healthy", nil, func(v float64) bool { return v == 1 }, "1"},
		{"takt_sync_backlog_verdicts", nil, func(v float64) bool { return v >= 0 }, ">= 0"},
	} {
		v, ok := sample(m2, tc.name, tc.labels)
		if !ok || !tc.check(v) {
			t.Errorf("%s%v: got %v (present %v), want %s", tc.name, tc.labels, v, ok, tc.want)
		}
	}
	// Every metric the Grafana dashboard queries exists.
	dash, err := os.ReadFile("../packaging/grafana/takt-station.json")
	if err != nil {
		t.Fatal(err)
	}
	names := regexp.MustCompile(`takt_[a-z_]+`).FindAllString(string(dash), -1)
	if len(names) < 10 {
		t.Fatalf("dashboard queries %d takt metrics, want its panels", len(names))
	}
	for _, n := range names {
		if _, ok := m2[strings.TrimSuffix(n, "_bucket")]; !ok && n != "takt_station" {
			t.Errorf("dashboard queries %s, which /metrics does not export", n)
		}
	}
	if c2 := total(m2); c2 < n1+5 {
		t.Errorf("takt_parts_total: got %v, want >= %v", c2, n1+5)
	}

	// Malformed requests get 4xx with a reason.
	for _, tc := range []struct {
		method, path, body string
		ctype              string
		want               int
		reason             string
	}{
		{"GET", "/verdicts?since=abc", "", "", 400, "since"},
		{"GET", "/verdicts?limit=0", "", "", 400, "limit"},
		{"GET", "/verdicts?limit=5000", "", "", 400, "limit"},
		{"GET", "/verdicts?sinse=1", "", "", 400, "unknown query parameter"},
		{"GET", "/verdicts/abc", "", "", 400, "not a positive integer"},
		{"GET", "/verdicts/0", "", "", 400, "not a positive integer"},
		{"GET", "/verdicts/999999", "", "", 404, "no verdict 999999"},
		{"GET", "/verdicts/999999/image", "", "", 404, "no verdict"},
		{"GET", "/verdicts/999999/heatmap", "", "", 404, "no heatmap"},
		{"GET", "/parts/999999", "", "", 404, "no verdict"},
		{"POST", fmt.Sprintf("/verdicts/%d/label", fail.ID), `{"label":`, "application/json", 400, "malformed JSON"},
		{"POST", fmt.Sprintf("/verdicts/%d/label", fail.ID), ``, "application/json", 400, "empty body"},
		{"POST", fmt.Sprintf("/verdicts/%d/label", fail.ID), `{}`, "application/json", 400, "body needs"},
		{"POST", fmt.Sprintf("/verdicts/%d/label", fail.ID), `{"label":"false_reject","x":1}`, "application/json", 400, "unknown field"},
		{"POST", fmt.Sprintf("/verdicts/%d/label", fail.ID), `{"label":"great"}`, "application/json", 422, "not one of"},
		{"POST", fmt.Sprintf("/verdicts/%d/label", fail.ID), `{"label":"false_accept"}`, "application/json", 422, "for PASS parts"},
		{"POST", fmt.Sprintf("/verdicts/%d/label", fail.ID), `label=false_reject`, "application/x-www-form-urlencoded", 415, "application/json"},
		{"POST", "/verdicts/999999/label", `{"label":"false_reject"}`, "application/json", 404, "no verdict"},
		{"POST", "/trigger", `{"serial":"x"}`, "application/json", 409, "camera.mode: triggered"},
		{"POST", "/trigger", `{"serial":`, "application/json", 400, "malformed JSON"},
		{"DELETE", "/verdicts/1", "", "", 405, ""},
		{"GET", "/trigger", "", "", 405, ""},
	} {
		req, _ := http.NewRequest(tc.method, r.base+tc.path, strings.NewReader(tc.body))
		if tc.ctype != "" {
			req.Header.Set("Content-Type", tc.ctype)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.want || !strings.Contains(string(b), tc.reason) {
			t.Errorf("%s %s %s: got %d %s, want %d with %q", tc.method, tc.path, tc.body, resp.StatusCode, bytes.TrimSpace(b), tc.want, tc.reason)
		}
	}
	if v, _ := st.Get(fail.ID); v.Label != LabelFalseReject {
		t.Errorf("after rejected label requests: label %q, want still %s", v.Label, LabelFalseReject)
	}
	if err := r.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

func getBytes(t *testing.T, url, ctype string) []byte {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != ctype {
		t.Fatalf("GET %s: got %d %s, want 200 %s", url, resp.StatusCode, resp.Header.Get("Content-Type"), ctype)
	}
	return b
}

func postJSON(t *testing.T, c *http.Client, url, body string, hdr map[string]string) (int, string) {
	t.Helper()
	if c == nil {
		c = http.DefaultClient
	}
	req, _ := http.NewRequest("POST", url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// selfSigned writes a certificate for 127.0.0.1 and its key, and returns a client trusting it.
func selfSigned(t *testing.T) (certFile, keyFile string, c *http.Client) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "takt-test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

func TestHTTPAuthOverTLS(t *testing.T) {
	cfg := httpConfig(t)
	cfg.HTTP.Token = "s3cret-token"
	cfg.HTTP.User, cfg.HTTP.Password = "operator", "pa55"
	cert, key, c := selfSigned(t)
	cfg.HTTP.TLSCert, cfg.HTTP.TLSKey = cert, key
	r := startAgent(t, cfg)
	if !strings.HasPrefix(r.base, "https://") {
		t.Fatalf("base %s, want https", r.base)
	}
	var vs []web.VerdictJSON
	waitFor(t, "a FAIL verdict", 30*time.Second, func() bool {
		getJSON(t, c, r.base+"/verdicts?limit=40", 200, &vs) // reads need no login
		for _, v := range vs {
			if v.Decision == store.Fail {
				return true
			}
		}
		return false
	})
	var id uint64
	for _, v := range vs {
		if v.Decision == store.Fail {
			id = v.ID
		}
	}
	url := fmt.Sprintf("%s/verdicts/%d/label", r.base, id)
	basic := func(u, p string) string {
		req, _ := http.NewRequest("GET", "/", nil)
		req.SetBasicAuth(u, p)
		return req.Header.Get("Authorization")
	}
	for _, tc := range []struct {
		name string
		hdr  map[string]string
		want int
	}{
		{"no credentials", nil, 401},
		{"wrong token", map[string]string{"Authorization": "Bearer nope"}, 401},
		{"token without Bearer", map[string]string{"Authorization": "s3cret-token"}, 401},
		{"wrong password", map[string]string{"Authorization": basic("operator", "guess")}, 401},
		{"cross-origin with the token", map[string]string{"Authorization": "Bearer s3cret-token", "Origin": "https://evil.example"}, 403},
		{"token", map[string]string{"Authorization": "Bearer s3cret-token"}, 200},
		{"basic auth", map[string]string{"Authorization": basic("operator", "pa55")}, 200},
	} {
		code, body := postJSON(t, c, url, `{"label":"false_reject"}`, tc.hdr)
		if code != tc.want {
			t.Errorf("%s: got %d (%s), want %d", tc.name, code, body, tc.want)
		}
		if code == 401 && !strings.Contains(body, "authentication required") {
			t.Errorf("%s: 401 body %q does not say why", tc.name, body)
		}
	}
	code, _ := postJSON(t, c, r.base+"/trigger", `{}`, nil)
	if code != 401 {
		t.Errorf("POST /trigger without credentials: got %d, want 401", code)
	}
	// Plain HTTP to the TLS port is refused.
	if resp, err := http.Get("http://" + strings.TrimPrefix(r.base, "https://") + "/status"); err == nil {
		resp.Body.Close()
		if resp.StatusCode < 400 {
			t.Errorf("plain HTTP to the TLS server: got %d, want a failure", resp.StatusCode)
		}
	}
}

func TestHTTPConfigValidation(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*HTTPConfig)
		want   string
	}{
		{"exposed without auth", func(c *HTTPConfig) { c.Listen = "0.0.0.0:8080"; c.TLSCert, c.TLSKey = "c", "k" }, "set http.token"},
		{"exposed without TLS", func(c *HTTPConfig) { c.Listen = "0.0.0.0:8080"; c.Token = "t" }, "set http.tls_cert"},
		{"bad address", func(c *HTTPConfig) { c.Listen = "localhost" }, "http.listen"},
		{"user without password", func(c *HTTPConfig) { c.User = "op" }, "http.user"},
		{"cert without key", func(c *HTTPConfig) { c.TLSCert = "c" }, "http.tls_cert"},
		{"recent", func(c *HTTPConfig) { c.Recent = 0 }, "http.recent"},
		{"shift", func(c *HTTPConfig) { c.Shifts = []string{"6am"} }, "http.shifts[0]"},
		{"shift order", func(c *HTTPConfig) { c.Shifts = []string{"14:00", "06:00"} }, "ascending"},
	} {
		c := defaultHTTPConfig()
		tc.change(&c)
		if err := c.validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
	c := defaultHTTPConfig()
	c.Listen = ":8080"
	if err := c.validate(); err != nil || c.listenAddr() != "127.0.0.1:8080" {
		t.Errorf(":8080: got %v and address %s, want valid and 127.0.0.1:8080", err, c.listenAddr())
	}
}
