package web

import (
	"errors"
	"net/http"
	"path/filepath"

	"github.com/takt-edge/takt/agent/ota"
)

// ModelInstallRequest is the body of POST /model/install: a bundle file on the station or
// an object key in the sync bucket (as model/available names it).
type ModelInstallRequest struct {
	File     string `json:"file,omitempty"`
	Key      string `json:"key,omitempty"`
	SHA256   string `json:"sha256,omitempty"`
	Rollback bool   `json:"rollback,omitempty"`
}

// postModelInstall queues a model install; 202 when queued. Its progress is on GET
// /model/update and model/status.
func (l *Server) postModelInstall(w http.ResponseWriter, r *http.Request) {
	u := l.deps.Models
	if u == nil {
		httpError(w, http.StatusConflict, "%v", errUpdatesOff)
		return
	}
	var req ModelInstallRequest
	if !decodeBody(w, r, &req) {
		return
	}
	if (req.File == "") == (req.Key == "") {
		httpError(w, http.StatusBadRequest, `body needs "file" (a bundle on the station) or "key" (an object key), one of them`)
		return
	}
	if req.File != "" && !filepath.IsAbs(req.File) {
		httpError(w, http.StatusBadRequest, "file %q: give an absolute path on the station", req.File)
		return
	}
	if err := u.Request(ota.InstallRequest{File: req.File, Key: req.Key, SHA256: req.SHA256, Rollback: req.Rollback, From: "http"}); err != nil {
		httpError(w, http.StatusUnprocessableEntity, "%v", err)
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]string{"queued": req.File + req.Key}) // one of them is set
}

// getModelUpdate shows the update state: active, previous, candidate, watch, last status.
func (l *Server) getModelUpdate(w http.ResponseWriter, r *http.Request) {
	u := l.deps.Models
	if u == nil {
		httpError(w, http.StatusConflict, "%v", errUpdatesOff)
		return
	}
	writeJSON(w, http.StatusOK, u.Snapshot())
}

var errUpdatesOff = errors.New("model updates are off: set model_update.enabled")
