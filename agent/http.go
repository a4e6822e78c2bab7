package agent

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"mime"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/takt-edge/takt/agent/plc"
	"github.com/takt-edge/takt/agent/store"
	"github.com/takt-edge/takt/models"
)

//go:embed web
var webFS embed.FS

var pageTmpl = template.Must(template.ParseFS(webFS, "web/*.html"))

// startHTTP binds http.listen and returns the server's run function.
func (l *live) startHTTP(context.Context) (func(context.Context) error, error) {
	c := l.cfg.HTTP
	ln, err := net.Listen("tcp", c.listenAddr())
	if err != nil {
		return nil, fmt.Errorf("http.listen: %w", err)
	}
	srv := &http.Server{
		Handler:           l.routes(),
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          nil,
	}
	scheme := "http"
	if c.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("http.tls_cert: %w", err)
		}
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		ln = tls.NewListener(ln, srv.TLSConfig)
		scheme = "https"
	}
	l.log.Info().Str("url", fmt.Sprintf("%s://%s/", scheme, ln.Addr())).Bool("auth", c.authOn()).Msg("operator page")
	l.httpAddr.Store(ln.Addr().String())
	return func(ctx context.Context) error {
		errc := make(chan error, 1)
		go func() { errc <- srv.Serve(ln) }()
		select {
		case err := <-errc:
			return fmt.Errorf("http: %w", err)
		case <-ctx.Done():
		}
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(sctx) // SSE streams end with ctx; Shutdown waits for the rest
		<-errc
		return nil
	}, nil
}

// HTTPAddr returns the address the HTTP server listens on while Run is running, or "".
func (a *Agent) HTTPAddr() string {
	if l := a.live.Load(); l != nil {
		s, _ := l.httpAddr.Load().(string)
		return s
	}
	return ""
}

func (l *live) routes() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(webFS, "web")
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	mux.HandleFunc("GET /{$}", l.page)
	mux.HandleFunc("GET /parts/{id}", l.partPage)
	mux.HandleFunc("GET /events", l.events)
	mux.HandleFunc("GET /status", l.status)
	mux.HandleFunc("GET /verdicts", l.listVerdicts)
	mux.HandleFunc("GET /verdicts/{id}", l.getVerdict)
	mux.HandleFunc("GET /verdicts/{id}/image", l.image)
	mux.HandleFunc("GET /verdicts/{id}/heatmap", l.heatmap)
	mux.HandleFunc("POST /verdicts/{id}/label", l.auth(l.postLabel))
	mux.HandleFunc("POST /trigger", l.auth(l.postTrigger))
	mux.HandleFunc("POST /model/install", l.auth(l.postModelInstall))
	mux.HandleFunc("GET /model/update", l.getModelUpdate)
	mux.Handle("GET /metrics", promhttp.HandlerFor(l.m.reg, promhttp.HandlerOpts{Registry: l.m.reg}))
	mux.HandleFunc("GET /healthz", l.healthz)
	mux.HandleFunc("GET /readyz", l.readyz)
	return mux
}

// auth guards a state change: with http.token or http.user set it needs the token (Bearer)
// or basic auth; always it refuses requests sent by a page of another origin.
func (l *live) auth(h http.HandlerFunc) http.HandlerFunc {
	c := l.cfg.HTTP
	return func(w http.ResponseWriter, r *http.Request) {
		if o := r.Header.Get("Origin"); o != "" {
			if u, err := url.Parse(o); err != nil || u.Host != r.Host {
				httpError(w, http.StatusForbidden, "cross-origin request from %q refused", o)
				return
			}
		}
		if c.authOn() && !l.authorized(r) {
			if c.User != "" {
				w.Header().Set("WWW-Authenticate", `Basic realm="takt", charset="UTF-8"`)
			} else {
				w.Header().Set("WWW-Authenticate", `Bearer realm="takt"`)
			}
			httpError(w, http.StatusUnauthorized, "authentication required: send Authorization: Bearer <http.token> or basic auth")
			return
		}
		h(w, r)
	}
}

func (l *live) authorized(r *http.Request) bool {
	c := l.cfg.HTTP
	eq := func(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }
	if c.Token != "" {
		if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && eq(tok, c.Token) {
			return true
		}
	}
	if c.User != "" {
		if u, p, ok := r.BasicAuth(); ok && eq(u, c.User) && eq(p, c.Password) {
			return true
		}
	}
	return false
}

type apiError struct {
	Error string `json:"error"`
}

func httpError(w http.ResponseWriter, code int, format string, args ...any) {
	writeJSON(w, code, apiError{Error: fmt.Sprintf(format, args...)})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// verdictJSON is a verdict as the API shows it, with links to its images.
type verdictJSON struct {
	store.Verdict
	ResultCode uint16 `json:"result_code"`
	ImageURL   string `json:"image_url,omitempty"`
	HeatmapURL string `json:"heatmap_url,omitempty"`
}

func (l *live) verdictJSON(v store.Verdict) verdictJSON {
	out := verdictJSON{Verdict: v, ResultCode: plc.ResultCode(v)}
	p, cached := l.recent.get(v.ID)
	if (v.ImageRef != "" && !v.ImageEvicted) || p.Image != nil {
		out.ImageURL = fmt.Sprintf("/verdicts/%d/image", v.ID)
	}
	if cached && p.Heatmap != nil {
		out.HeatmapURL = fmt.Sprintf("/verdicts/%d/heatmap", v.ID)
	}
	return out
}

func pathID(w http.ResponseWriter, r *http.Request) (uint64, bool) {
	s := r.PathValue("id")
	id, err := strconv.ParseUint(s, 10, 64)
	if err != nil || id == 0 {
		httpError(w, http.StatusBadRequest, "verdict id %q is not a positive integer", s)
		return 0, false
	}
	return id, true
}

// GET /verdicts?since=ID&limit=N: verdicts with an id above since, ascending; without since
// the latest limit verdicts.
func (l *live) listVerdicts(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	for k := range q {
		if k != "since" && k != "limit" {
			httpError(w, http.StatusBadRequest, "unknown query parameter %q (allowed: since, limit)", k)
			return
		}
	}
	limit := 50
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 1000 {
			httpError(w, http.StatusBadRequest, "limit %q is not in 1..1000", s)
			return
		}
		limit = n
	}
	var since uint64
	if s := q.Get("since"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			httpError(w, http.StatusBadRequest, "since %q is not a verdict id (an unsigned integer)", s)
			return
		}
		since = n
	} else if c, err := l.st.Counts(); err == nil && c.Total > uint64(limit) {
		since = c.Total - uint64(limit)
	}
	vs, err := l.st.List(since, limit)
	if err != nil {
		httpError(w, http.StatusInternalServerError, "%v", err)
		return
	}
	out := make([]verdictJSON, 0, len(vs))
	for _, v := range vs {
		out = append(out, l.verdictJSON(v))
	}
	writeJSON(w, http.StatusOK, out)
}

func (l *live) lookup(w http.ResponseWriter, r *http.Request) (store.Verdict, bool) {
	id, ok := pathID(w, r)
	if !ok {
		return store.Verdict{}, false
	}
	v, err := l.st.Get(id)
	if errors.Is(err, store.ErrNotFound) {
		httpError(w, http.StatusNotFound, "no verdict %d", id)
		return v, false
	}
	if err != nil {
		httpError(w, http.StatusInternalServerError, "%v", err)
		return v, false
	}
	return v, true
}

func (l *live) getVerdict(w http.ResponseWriter, r *http.Request) {
	if v, ok := l.lookup(w, r); ok {
		writeJSON(w, http.StatusOK, l.verdictJSON(v))
	}
}

// GET /verdicts/{id}/image: the kept image, else the live view's copy of a recent part.
func (l *live) image(w http.ResponseWriter, r *http.Request) {
	v, ok := l.lookup(w, r)
	if !ok {
		return
	}
	if p := l.st.ImagePath(v); p != "" && !v.ImageEvicted {
		if f, err := os.Open(p); err == nil {
			defer f.Close()
			w.Header().Set("Content-Type", mime.TypeByExtension(filepath.Ext(p)))
			w.Header().Set("Cache-Control", "max-age=86400, immutable")
			io.Copy(w, f)
			return
		}
	}
	if p, ok := l.recent.get(v.ID); ok && p.Image != nil {
		w.Header().Set("Content-Type", "image/jpeg")
		w.Write(p.Image)
		return
	}
	httpError(w, http.StatusNotFound, "verdict %d has no image (images.keep is %s, or it was evicted)", v.ID, l.cfg.Images.Keep)
}

// GET /verdicts/{id}/heatmap: the frame with the anomaly map overlaid, for recent parts.
func (l *live) heatmap(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	if p, ok := l.recent.get(id); ok && p.Heatmap != nil {
		w.Header().Set("Content-Type", "image/jpeg")
		w.Header().Set("Cache-Control", "max-age=3600")
		w.Write(p.Heatmap)
		return
	}
	httpError(w, http.StatusNotFound, "no heatmap for verdict %d: heatmaps are kept for the last %d parts only", id, l.cfg.HTTP.Recent)
}

type labelRequest struct {
	Label *string `json:"label"`
}

// POST /verdicts/{id}/label {"label": "false_reject" | "false_accept" | ""}
func (l *live) postLabel(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	var req labelRequest
	if !decodeBody(w, r, &req) {
		return
	}
	if req.Label == nil {
		httpError(w, http.StatusBadRequest, `body needs "label": %q, %q or "" (clear)`, LabelFalseReject, LabelFalseAccept)
		return
	}
	err := l.Label(r.Context(), id, *req.Label)
	switch {
	case errors.Is(err, store.ErrNotFound):
		httpError(w, http.StatusNotFound, "no verdict %d", id)
	case errors.Is(err, ErrBadLabel), errors.Is(err, store.ErrInvalid):
		httpError(w, http.StatusUnprocessableEntity, "%v", err)
	case err != nil:
		httpError(w, http.StatusServiceUnavailable, "%v", err)
	default:
		v, err := l.st.Get(id)
		if err != nil {
			httpError(w, http.StatusInternalServerError, "%v", err)
			return
		}
		writeJSON(w, http.StatusOK, l.verdictJSON(v))
	}
}

// decodeBody decodes a JSON body strictly (at most 64 KiB, no unknown fields).
func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, _ := mime.ParseMediaType(ct); mt != "application/json" {
			httpError(w, http.StatusUnsupportedMediaType, "content type %q: send application/json", ct)
			return false
		}
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			httpError(w, http.StatusBadRequest, "empty body: send a JSON object")
		} else {
			httpError(w, http.StatusBadRequest, "malformed JSON body: %v", err)
		}
		return false
	}
	if dec.More() {
		httpError(w, http.StatusBadRequest, "malformed JSON body: more than one value")
		return false
	}
	return true
}

type triggerRequest struct {
	Serial string `json:"serial"`
	// Wait, when false, returns 202 at once instead of waiting for the verdict.
	Wait *bool `json:"wait"`
}

// POST /trigger {"serial": "...", "wait": true}: one part, inspected now.
func (l *live) postTrigger(w http.ResponseWriter, r *http.Request) {
	var req triggerRequest
	if r.ContentLength != 0 && !decodeBody(w, r, &req) {
		return
	}
	if len(req.Serial) > 64 {
		httpError(w, http.StatusBadRequest, "serial of %d bytes, want at most 64", len(req.Serial))
		return
	}
	ch, cancel, err := l.Trigger(req.Serial, time.Now())
	if err != nil {
		httpError(w, http.StatusConflict, "%v", err)
		return
	}
	if req.Wait != nil && !*req.Wait {
		cancel()
		writeJSON(w, http.StatusAccepted, map[string]string{"status": "triggered", "serial": req.Serial})
		return
	}
	wait := l.cfg.PLC.answerTimeout(l.cfg.Deadline) + l.cfg.Camera.ReadTimeout + 2*time.Second
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case v, ok := <-ch:
		if !ok {
			httpError(w, http.StatusServiceUnavailable, "agent stopped")
			return
		}
		writeJSON(w, http.StatusOK, l.verdictJSON(v))
	case <-t.C:
		cancel()
		httpError(w, http.StatusGatewayTimeout, "no verdict within %s", wait)
	case <-r.Context().Done():
		cancel()
	}
}

func (l *live) healthz(w http.ResponseWriter, _ *http.Request) {
	ok, why := l.healthy()
	code := http.StatusOK
	if !ok {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, map[string]any{"ok": ok, "note": why})
}

func (l *live) readyz(w http.ResponseWriter, _ *http.Request) {
	ok, cs := l.readiness()
	code := http.StatusOK
	if !ok {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, map[string]any{"ok": ok, "checks": cs})
}

// ModelStatus is one model serving on the station.
type ModelStatus struct {
	Station   string  `json:"station_name"` // the config's name for it (models[].name), else its own name
	Name      string  `json:"name"`
	Version   string  `json:"version"`
	SHA256    string  `json:"sha256"`
	Provider  string  `json:"provider"`
	Threshold float64 `json:"threshold"`
	// EngineBuild is the background TensorRT engine build, when one was started.
	EngineBuild *EngineBuildStatus `json:"engine_build,omitempty"`
}

// EngineBuildStatus is the progress of a TensorRT engine build while another provider serves.
type EngineBuildStatus struct {
	State          string  `json:"state"` // building, done or failed
	ElapsedSeconds float64 `json:"elapsed_seconds"`
	Error          string  `json:"error,omitempty"`
	CacheDir       string  `json:"cache_dir"`
}

func engineBuildStatus(b models.BuildStatus) *EngineBuildStatus {
	if b.Started.IsZero() {
		return nil
	}
	st := &EngineBuildStatus{State: "building", ElapsedSeconds: b.Elapsed.Seconds(), Error: b.Err, CacheDir: b.CacheDir}
	switch {
	case b.Err != "":
		st.State = "failed"
	case b.Done:
		st.State = "done"
	}
	return st
}

// Status is what GET /status and the page's header show.
type Status struct {
	Station string    `json:"station"`
	Time    time.Time `json:"time"`
	Started time.Time `json:"started"`
	Ready   bool      `json:"ready"`
	Healthy bool      `json:"healthy"`
	Checks  []check   `json:"checks"`
	// Model is the first (or only) model; Models lists every model that scores each frame.
	Model  ModelStatus   `json:"model"`
	Models []ModelStatus `json:"models"`
	Camera struct {
		ID         string `json:"id"`
		Kind       string `json:"kind"`
		Mode       string `json:"mode"`
		State      string `json:"state"`
		Frames     uint64 `json:"frames"`
		Stalls     uint64 `json:"stalls"`
		Reconnects uint64 `json:"reconnects"`
	} `json:"camera"`
	Totals  store.Counts `json:"totals"`
	Yield   []Span       `json:"yield"`
	Backlog *struct {
		Count  int       `json:"count"`
		Bytes  int64     `json:"bytes"`
		Oldest time.Time `json:"oldest"`
	} `json:"backlog"`
	Sync     string  `json:"sync"`
	MQTT     string  `json:"mqtt"`
	PLC      string  `json:"plc"`
	Alerts   []Alert `json:"alerts"`
	AlertsTo string  `json:"alerts_to"`
	Auth     bool    `json:"auth"`
}

func (l *live) statusNow() Status {
	var s Status
	s.Station, s.Time, s.Started = l.cfg.Station, time.Now().UTC(), l.started.UTC()
	s.Ready, s.Checks = l.readiness()
	s.Healthy, _ = l.healthy()
	for _, m := range l.models.snapshot() {
		s.Models = append(s.Models, ModelStatus{Name: m.info.Model.Name, Version: m.info.Model.Version, SHA256: m.info.Model.SHA256,
			Provider: m.provider(), Threshold: m.threshold, Station: m.name, EngineBuild: engineBuildStatus(m.rt.EngineBuild())})
	}
	s.Model = s.Models[0]
	s.Camera.State = l.cameraState()
	var ids, kinds, modes []string
	for _, c := range l.cams {
		st, cc := c.Stats(), c.Config()
		ids, kinds, modes = append(ids, cc.ID), append(kinds, cc.Kind), append(modes, cc.Mode)
		s.Camera.Frames += st.Frames
		s.Camera.Stalls += st.Stalls
		s.Camera.Reconnects += st.Reconnects
	}
	s.Camera.ID, s.Camera.Kind, s.Camera.Mode = strings.Join(ids, ", "), strings.Join(kinds, ", "), strings.Join(modes, ", ")
	s.Totals, _ = l.st.Counts()
	s.Yield = l.yield.spans(8)
	if b, err := l.st.Backlog(); err == nil {
		s.Backlog = &struct {
			Count  int       `json:"count"`
			Bytes  int64     `json:"bytes"`
			Oldest time.Time `json:"oldest"`
		}{b.Count, b.Bytes, b.Oldest}
	}
	s.Sync, s.MQTT = l.link("s3"), l.link("mqtt")
	s.PLC = l.plcStatus()
	s.Alerts = l.alerts.recent()
	s.AlertsTo = "local only (MQTT " + l.link("mqtt") + ")"
	s.Auth = l.cfg.HTTP.authOn()
	return s
}

func (l *live) status(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, l.statusNow())
}

// GET /events: server-sent events "part" and "label" (a verdict as in the API) and "status"
// every 2 s.
func (l *live) events(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		httpError(w, http.StatusInternalServerError, "streaming unsupported")
		return
	}
	ch, unsub := l.recent.subscribe()
	defer unsub()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	send := func(name string, v any) bool {
		data, _ := json.Marshal(v)
		_, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", name, data)
		fl.Flush()
		return err == nil
	}
	if !send("status", l.statusNow()) {
		return
	}
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	ctx := r.Context()
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.done():
			return
		case e := <-ch:
			v, _ := e.data.(store.Verdict)
			if !send(e.name, l.verdictJSON(v)) {
				return
			}
		case <-tick.C:
			if !send("status", l.statusNow()) {
				return
			}
		}
	}
}

type pageData struct {
	Station string
	Auth    bool
	Part    *verdictJSON
	Score   string
}

func (l *live) page(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	pageTmpl.ExecuteTemplate(w, "index.html", pageData{Station: l.cfg.Station, Auth: l.cfg.HTTP.authOn()})
}

// GET /parts/{id}: the part detail view.
func (l *live) partPage(w http.ResponseWriter, r *http.Request) {
	v, ok := l.lookup(w, r)
	if !ok {
		return
	}
	vj := l.verdictJSON(v)
	score := "none"
	if v.Score != nil {
		score = strconv.FormatFloat(*v.Score, 'g', 4, 64)
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	pageTmpl.ExecuteTemplate(w, "part.html", pageData{Station: l.cfg.Station, Auth: l.cfg.HTTP.authOn(), Part: &vj, Score: score})
}
