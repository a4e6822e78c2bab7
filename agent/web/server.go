package web

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
	"mime"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/takt-edge/takt/agent/ota"
	"github.com/takt-edge/takt/agent/plc"
	"github.com/takt-edge/takt/agent/station"
	"github.com/takt-edge/takt/agent/store"
	"github.com/takt-edge/takt/agent/yield"
	"github.com/takt-edge/takt/cloudsync/wire"
)

//go:embed index.html part.html style.css app.js
var assets embed.FS

var pageTmpl = template.Must(template.ParseFS(assets, "*.html"))

// Station is what the HTTP side needs of the running station. Its methods are called from
// request goroutines, concurrently with the inspection loop.
type Station interface {
	// Status is the station's status as GET /status and the page's header show it.
	Status() Status
	// Label sets the operator label of verdict id ("" clears it). Errors: ErrBadLabel (and
	// store.ErrInvalid) for a label that does not fit, store.ErrNotFound, else the
	// station is not serving.
	Label(ctx context.Context, id uint64, label string) error
	// Trigger asks the camera for the part in place now, named serial (made up when
	// empty), and returns the channel its verdict arrives on once committed (closed if the
	// station stops first) and a cancel that forgets the request.
	Trigger(serial string, at time.Time) (<-chan store.Verdict, func(), error)
}

// ModelUpdates is the model updater as the API sees it.
type ModelUpdates interface {
	// Request queues an install; it never blocks.
	Request(ota.InstallRequest) error
	// Snapshot is a copy of the update state.
	Snapshot() ota.State
}

// Config is the HTTP side's settings (the agent's http section, resolved).
type Config struct {
	Listen          string // host:port
	TLSCert, TLSKey string // PEM files; with both set the server speaks HTTPS only
	// Token and User/Password guard state changes; none set: no auth.
	Token, User, Password string
	Station               string
	Recent                int    // recent parts kept with their images (for messages)
	ImagesKeep            string // images.keep (for messages)
	// TriggerWait is how long POST /trigger waits for its verdict.
	TriggerWait time.Duration
}

func (c Config) authOn() bool { return c.Token != "" || c.User != "" }

// Deps are what the HTTP side works with besides its configuration and the station.
type Deps struct {
	Store  *store.Store
	Recent *Recent
	// Metrics serves GET /metrics.
	Metrics http.Handler
	// Healthy reports whether the inspection loop is not stuck, with a note.
	Healthy func() (bool, string)
	// Ready runs the readiness checks.
	Ready func() (bool, []Check)
	// Models is the model updater; nil when updates are off.
	Models ModelUpdates
	// Done is closed when the station stops: event streams end.
	Done <-chan struct{}
}

// Server is the operator page and HTTP API of one running station.
type Server struct {
	cfg  Config
	st   Station
	deps Deps
	log  zerolog.Logger
	addr string
}

// Check is one readiness check.
type Check struct {
	Name string `json:"name"`
	OK   bool   `json:"ok"`
	Note string `json:"note"`
}

// Start binds cfg.Listen and returns the server and its run function, which serves until
// its context is done.
func Start(cfg Config, st Station, deps Deps, log zerolog.Logger) (*Server, func(context.Context) error, error) {
	l := &Server{cfg: cfg, st: st, deps: deps, log: log}
	c := cfg
	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return nil, nil, fmt.Errorf("http.listen: %w", err)
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
			return nil, nil, fmt.Errorf("http.tls_cert: %w", err)
		}
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		ln = tls.NewListener(ln, srv.TLSConfig)
		scheme = "https"
	}
	l.log.Info().Str("url", fmt.Sprintf("%s://%s/", scheme, ln.Addr())).Bool("auth", c.authOn()).Msg("operator page")
	l.addr = ln.Addr().String()
	return l, func(ctx context.Context) error {
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

// Addr is the address the server listens on.
func (l *Server) Addr() string { return l.addr }

func (l *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(assets)))
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
	mux.Handle("GET /metrics", l.deps.Metrics)
	mux.HandleFunc("GET /healthz", l.healthz)
	mux.HandleFunc("GET /readyz", l.readyz)
	return mux
}

// auth guards a state change: with http.token or http.user set it needs the token (Bearer)
// or basic auth; always it refuses requests sent by a page of another origin.
func (l *Server) auth(h http.HandlerFunc) http.HandlerFunc {
	c := l.cfg
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

func (l *Server) authorized(r *http.Request) bool {
	c := l.cfg
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

// APIError is the body of every error answer of the API.
type APIError struct {
	Error string `json:"error"`
}

func httpError(w http.ResponseWriter, code int, format string, args ...any) {
	writeJSON(w, code, APIError{Error: fmt.Sprintf(format, args...)})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// VerdictJSON is a verdict as the API shows it, with links to its images.
type VerdictJSON struct {
	store.Verdict
	ResultCode uint16 `json:"result_code"`
	ImageURL   string `json:"image_url,omitempty"`
	HeatmapURL string `json:"heatmap_url,omitempty"`
}

func (l *Server) verdictJSON(v store.Verdict) VerdictJSON {
	out := VerdictJSON{Verdict: v, ResultCode: plc.ResultCode(v)}
	p, cached := l.deps.Recent.get(v.ID)
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
func (l *Server) listVerdicts(w http.ResponseWriter, r *http.Request) {
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
	} else if c, err := l.deps.Store.Counts(); err == nil && c.Total > uint64(limit) {
		since = c.Total - uint64(limit)
	}
	vs, err := l.deps.Store.List(since, limit)
	if err != nil {
		httpError(w, http.StatusInternalServerError, "%v", err)
		return
	}
	out := make([]VerdictJSON, 0, len(vs))
	for _, v := range vs {
		out = append(out, l.verdictJSON(v))
	}
	writeJSON(w, http.StatusOK, out)
}

func (l *Server) lookup(w http.ResponseWriter, r *http.Request) (store.Verdict, bool) {
	id, ok := pathID(w, r)
	if !ok {
		return store.Verdict{}, false
	}
	v, err := l.deps.Store.Get(id)
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

func (l *Server) getVerdict(w http.ResponseWriter, r *http.Request) {
	if v, ok := l.lookup(w, r); ok {
		writeJSON(w, http.StatusOK, l.verdictJSON(v))
	}
}

// GET /verdicts/{id}/image: the kept image, else the live view's copy of a recent part.
func (l *Server) image(w http.ResponseWriter, r *http.Request) {
	v, ok := l.lookup(w, r)
	if !ok {
		return
	}
	if p := l.deps.Store.ImagePath(v); p != "" && !v.ImageEvicted {
		if f, err := os.Open(p); err == nil {
			defer f.Close()
			w.Header().Set("Content-Type", mime.TypeByExtension(filepath.Ext(p)))
			w.Header().Set("Cache-Control", "max-age=86400, immutable")
			io.Copy(w, f)
			return
		}
	}
	if p, ok := l.deps.Recent.get(v.ID); ok && p.Image != nil {
		w.Header().Set("Content-Type", "image/jpeg")
		w.Write(p.Image)
		return
	}
	httpError(w, http.StatusNotFound, "verdict %d has no image (images.keep is %s, or it was evicted)", v.ID, l.cfg.ImagesKeep)
}

// GET /verdicts/{id}/heatmap: the frame with the anomaly map overlaid, for recent parts.
func (l *Server) heatmap(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	if p, ok := l.deps.Recent.get(id); ok && p.Heatmap != nil {
		w.Header().Set("Content-Type", "image/jpeg")
		w.Header().Set("Cache-Control", "max-age=3600")
		w.Write(p.Heatmap)
		return
	}
	httpError(w, http.StatusNotFound, "no heatmap for verdict %d: heatmaps are kept for the last %d parts only", id, l.cfg.Recent)
}

type labelRequest struct {
	Label *string `json:"label"`
}

// POST /verdicts/{id}/label {"label": "false_reject" | "false_accept" | ""}
func (l *Server) postLabel(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	var req labelRequest
	if !decodeBody(w, r, &req) {
		return
	}
	if req.Label == nil {
		httpError(w, http.StatusBadRequest, `body needs "label": %q, %q or "" (clear)`, station.LabelFalseReject, station.LabelFalseAccept)
		return
	}
	err := l.st.Label(r.Context(), id, *req.Label)
	switch {
	case errors.Is(err, store.ErrNotFound):
		httpError(w, http.StatusNotFound, "no verdict %d", id)
	case errors.Is(err, station.ErrBadLabel), errors.Is(err, store.ErrInvalid):
		httpError(w, http.StatusUnprocessableEntity, "%v", err)
	case err != nil:
		httpError(w, http.StatusServiceUnavailable, "%v", err)
	default:
		v, err := l.deps.Store.Get(id)
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
func (l *Server) postTrigger(w http.ResponseWriter, r *http.Request) {
	var req triggerRequest
	if r.ContentLength != 0 && !decodeBody(w, r, &req) {
		return
	}
	if len(req.Serial) > 64 {
		httpError(w, http.StatusBadRequest, "serial of %d bytes, want at most 64", len(req.Serial))
		return
	}
	ch, cancel, err := l.st.Trigger(req.Serial, time.Now())
	if err != nil {
		httpError(w, http.StatusConflict, "%v", err)
		return
	}
	if req.Wait != nil && !*req.Wait {
		cancel()
		writeJSON(w, http.StatusAccepted, map[string]string{"status": "triggered", "serial": req.Serial})
		return
	}
	wait := l.cfg.TriggerWait
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

func (l *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	ok, why := l.deps.Healthy()
	code := http.StatusOK
	if !ok {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, map[string]any{"ok": ok, "note": why})
}

func (l *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	ok, cs := l.deps.Ready()
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
	// Operating is how the threshold was chosen (rule, false-reject budget) and the
	// false-reject and escape rates the trainer expects there; nil when the model records
	// none (a plain ONNX model). A rule of "" is a threshold set by hand.
	Operating *wire.OperatingPoint `json:"operating_point,omitempty"`
	// Seen is what the station saw of the model since it started serving.
	Seen SeenRates `json:"seen"`
}

// SeenRates is what the station saw of a model since it started serving (this agent start
// or its swap), beside what its trainer expects.
type SeenRates struct {
	Since time.Time `json:"since"`
	// Parts it PASSed or FAILed, and those it FAILed; FailShare is Fail over Parts. Defects
	// count too: it is the rate to hold the expected false rejects against only where the
	// line makes few.
	Parts     int64   `json:"parts"`
	Fail      int64   `json:"fail"`
	FailShare float64 `json:"fail_share"`
	// Operator labels on its parts: FAILs that were good (false rejects) and PASSes that
	// were defective (escapes). LabelledFalseRejectShare is LabelledFalseRejects over
	// Parts: a lower bound of the false-reject rate unless every FAIL is reviewed.
	// LabelledEscapeShare is the escapes among the defective parts as labels tell them
	// (the FAILs not labelled false rejects plus the labelled escapes); 0 without any.
	LabelledFalseRejects     int64   `json:"labelled_false_rejects"`
	LabelledFalseAccepts     int64   `json:"labelled_false_accepts"`
	LabelledFalseRejectShare float64 `json:"labelled_false_reject_share"`
	LabelledEscapeShare      float64 `json:"labelled_escape_share"`
}

// EngineBuildStatus is the progress of a TensorRT engine build while another provider serves.
type EngineBuildStatus struct {
	State          string  `json:"state"` // building, done or failed
	ElapsedSeconds float64 `json:"elapsed_seconds"`
	Error          string  `json:"error,omitempty"`
	CacheDir       string  `json:"cache_dir"`
}

// Status is what GET /status and the page's header show.
type Status struct {
	Station string    `json:"station"`
	Time    time.Time `json:"time"`
	Started time.Time `json:"started"`
	Ready   bool      `json:"ready"`
	Healthy bool      `json:"healthy"`
	Checks  []Check   `json:"checks"`
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
	Yield   []yield.Span `json:"yield"`
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

func (l *Server) status(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, l.st.Status())
}

// GET /events: server-sent events "part" and "label" (a verdict as in the API) and "status"
// every 2 s.
func (l *Server) events(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		httpError(w, http.StatusInternalServerError, "streaming unsupported")
		return
	}
	ch, unsub := l.deps.Recent.subscribe()
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
	if !send("status", l.st.Status()) {
		return
	}
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	ctx := r.Context()
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.deps.Done:
			return
		case e := <-ch:
			v, _ := e.data.(store.Verdict)
			if !send(e.name, l.verdictJSON(v)) {
				return
			}
		case <-tick.C:
			if !send("status", l.st.Status()) {
				return
			}
		}
	}
}

type pageData struct {
	Station string
	Auth    bool
	Part    *VerdictJSON
	Score   string
}

func (l *Server) page(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	pageTmpl.ExecuteTemplate(w, "index.html", pageData{Station: l.cfg.Station, Auth: l.cfg.authOn()})
}

// GET /parts/{id}: the part detail view.
func (l *Server) partPage(w http.ResponseWriter, r *http.Request) {
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
	pageTmpl.ExecuteTemplate(w, "part.html", pageData{Station: l.cfg.Station, Auth: l.cfg.authOn(), Part: &vj, Score: score})
}
