package companion

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
)

// handler is the HTTP API:
//
//	GET  /healthz          200 "ok"
//	GET  /jobs             every job, oldest first (without logs)
//	GET  /jobs/{id}        {"job": Job, "log": "..."}
//	POST /train            {"model": "name"} -> 202 Job; 404 unknown model; 409 a job is active
//	                       (POSTs need "Authorization: Bearer <api_token>" when api_token is set: 401)
//	POST /ingest           one ingest pass now -> IngestResult
//	GET  /models/{name}    registry index, dataset counters, drift status, announce_pending
//	GET  /cache            the image cache after the last prune (CacheStatus)
func (c *Companion) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /jobs", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, c.Jobs()) })
	mux.HandleFunc("GET /jobs/{id}", func(w http.ResponseWriter, r *http.Request) {
		j, log, ok := c.Job(r.PathValue("id"))
		if !ok {
			httpError(w, http.StatusNotFound, "no job "+r.PathValue("id"))
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"job": j, "log": log})
	})
	mux.HandleFunc("POST /train", c.auth(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Model  string `json:"model"`
			Reason string `json:"reason"`
		}
		dec := json.NewDecoder(io.LimitReader(r.Body, 4<<10))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil || req.Model == "" {
			httpError(w, http.StatusBadRequest, `body must be {"model": "NAME"} (optional "reason")`)
			return
		}
		j, err := c.Enqueue(req.Model, TriggerManual, req.Reason)
		switch {
		case errors.Is(err, ErrUnknownModel):
			httpError(w, http.StatusNotFound, err.Error())
		case errors.Is(err, ErrBusy):
			writeJSON(w, http.StatusConflict, map[string]any{"error": err.Error(), "job": j})
		case err != nil:
			httpError(w, http.StatusInternalServerError, err.Error())
		default:
			writeJSON(w, http.StatusAccepted, j)
		}
	}))
	mux.HandleFunc("POST /ingest", c.auth(func(w http.ResponseWriter, r *http.Request) {
		res, err := c.Ingest(r.Context())
		if err != nil {
			httpError(w, http.StatusBadGateway, err.Error())
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"verdicts": res.Verdicts, "images": res.Images, "labels": res.Labels,
			"objects": res.Objects, "skipped": res.Skipped, "seconds": res.Elapsed.Seconds()})
	}))
	mux.HandleFunc("GET /cache", func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		st := c.cacheStatus
		c.mu.Unlock()
		writeJSON(w, http.StatusOK, st)
	})
	mux.HandleFunc("GET /models/{name}", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		if _, ok := c.cfg.model(name); !ok {
			httpError(w, http.StatusNotFound, "model "+name+" is not configured (configured: "+strings.Join(c.modelNames(), ", ")+")")
			return
		}
		idx, _, err := c.readIndex(r.Context(), name)
		if err != nil {
			httpError(w, http.StatusBadGateway, err.Error())
			return
		}
		st, err := c.index.stats(name)
		if err != nil {
			httpError(w, http.StatusInternalServerError, err.Error())
			return
		}
		drift, _ := c.Drift(r.Context(), name)
		pending, _ := c.index.announcements()
		_, announcing := pending[name]
		st.Recent, st.RecentImages, st.ImageQueue = nil, nil, nil // large; the drift status summarizes them
		writeJSON(w, http.StatusOK, map[string]any{"name": name, "registry": idx, "dataset": st, "drift": drift,
			"labels_since_train": st.Labels - st.LabelsAtTrain, "announce_pending": announcing})
	})
	return mux
}

// auth requires "Authorization: Bearer <api_token>" when api_token is set.
func (c *Companion) auth(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if tok := string(c.cfg.APIToken); tok != "" {
			got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(tok)) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="takt-cloud"`)
				httpError(w, http.StatusUnauthorized, "this call needs Authorization: Bearer <api_token>")
				return
			}
		}
		h(w, r)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func httpError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
