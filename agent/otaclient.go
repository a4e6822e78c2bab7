package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/takt-edge/takt/agent/web"
)

// InstallModel asks the agent running with cfg, through its HTTP API (http.listen), to
// install a model bundle: a file on this station (made absolute) or an object key in the
// sync bucket (models/{name}/{version}/bundle.tar). It returns once the request is queued;
// ModelUpdateState shows its progress. It is what `takt-agent model install` runs.
func InstallModel(ctx context.Context, cfg Config, bundle string) error {
	req := web.ModelInstallRequest{Key: bundle}
	if _, err := os.Stat(bundle); err == nil || strings.HasSuffix(bundle, ".tar") && !strings.HasPrefix(bundle, "models/") {
		abs, err := filepath.Abs(bundle)
		if err != nil {
			return err
		}
		req = web.ModelInstallRequest{File: abs}
	}
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	_, err = agentAPI(ctx, cfg, http.MethodPost, "/model/install", body)
	return err
}

// ModelUpdateState returns the running agent's model update state (GET /model/update) as
// indented JSON.
func ModelUpdateState(ctx context.Context, cfg Config) ([]byte, error) {
	return agentAPI(ctx, cfg, http.MethodGet, "/model/update", nil)
}

func agentAPI(ctx context.Context, cfg Config, method, path string, body []byte) ([]byte, error) {
	h := cfg.HTTP
	if h.Listen == "" {
		return nil, errors.New("http.listen is not set: the agent's API is off, so it cannot be asked to install a model")
	}
	scheme := "http"
	client := &http.Client{Timeout: 30 * time.Second}
	if h.TLSCert != "" {
		scheme = "https"
		pem, err := os.ReadFile(h.TLSCert)
		if err != nil {
			return nil, fmt.Errorf("http.tls_cert: %w", err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	}
	addr := h.listenAddr()
	if strings.HasPrefix(addr, "0.0.0.0:") || strings.HasPrefix(addr, "[::]:") {
		addr = "127.0.0.1:" + addr[strings.LastIndex(addr, ":")+1:]
	}
	req, err := http.NewRequestWithContext(ctx, method, scheme+"://"+addr+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	switch {
	case h.Token != "":
		req.Header.Set("Authorization", "Bearer "+h.Token)
	case h.User != "":
		req.SetBasicAuth(h.User, h.Password)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("agent API: %w (is takt-agent running?)", err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 != 2 {
		var e web.APIError
		if json.Unmarshal(out, &e) == nil && e.Error != "" {
			return nil, fmt.Errorf("agent API %s %s: %s", method, path, e.Error)
		}
		return nil, fmt.Errorf("agent API %s %s: %s", method, path, resp.Status)
	}
	return out, nil
}
