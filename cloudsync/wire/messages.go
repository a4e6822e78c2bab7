package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"time"
	"unicode"
	"unicode/utf8"
)

// MessageSchema is the schema version of the MQTT messages this package
// writes; every message carries it as "schema". Decoders accept exactly this
// version: a station and a cloud must be upgraded together when it changes.
const MessageSchema = 1

// Size limits of decoded payloads.
const (
	// MaxCommandBytes bounds a command payload (cmd/trigger, cmd/label).
	MaxCommandBytes = 4 << 10
	// MaxMessageBytes bounds every other payload.
	MaxMessageBytes = 64 << 10
)

// ErrBadMessage matches (errors.Is) every decoding and validation error of
// this file's messages; the error text names the field and the problem.
var ErrBadMessage = errors.New("bad message")

// Station states in StatusMsg.
const (
	StateOnline  = "online"
	StateOffline = "offline"
)

// Alert kinds (AlertMsg.Kind).
const (
	AlertFail             = "fail"              // a part FAILed
	AlertNoDecision       = "no_decision"       // a part got NO_DECISION
	AlertCameraStalled    = "camera_stalled"    // a camera gives no frames
	AlertProviderFallback = "provider_fallback" // inference fell back to a slower execution provider
	AlertDiskQuota        = "disk_quota"        // the store gave something up to stay in its quota
	AlertSyncBacklog      = "sync_backlog"      // verdicts wait for upload longer than the limit
	AlertDegraded         = "degraded"          // any other degradation
)

// Alert severities (AlertMsg.Severity).
const (
	SeverityInfo     = "info"
	SeverityWarning  = "warning"
	SeverityCritical = "critical"
)

// Model and firmware states (ModelStatusMsg.State, FirmwareStatusMsg.State).
const (
	ModelDownloading = "downloading"
	ModelValidating  = "validating"
	ModelShadow      = "shadow"
	ModelActive      = "active"
	ModelRejected    = "rejected"
	ModelRolledBack  = "rolled-back"

	FirmwareDownloading = "downloading"
	FirmwareInstalling  = "installing"
	FirmwareCommitted   = "committed"
	FirmwareRejected    = "rejected"
	FirmwareRolledBack  = "rolled-back"
)

// Message is implemented by every message type of the MQTT protocol.
type Message interface {
	// Validate checks the fields after decoding (and before sending); the
	// error matches ErrBadMessage and names the field.
	Validate() error
}

var (
	_ Message = (*StatusMsg)(nil)
	_ Message = (*VerdictMsg)(nil)
	_ Message = (*AlertMsg)(nil)
	_ Message = (*TriggerCmd)(nil)
	_ Message = (*LabelCmd)(nil)
	_ Message = (*ErrorMsg)(nil)
	_ Message = (*ModelAvailableMsg)(nil)
	_ Message = (*ModelStatusMsg)(nil)
	_ Message = (*FirmwareAvailableMsg)(nil)
	_ Message = (*FirmwareStatusMsg)(nil)
)

// ModelRef names a model.
type ModelRef struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	SHA256  string `json:"sha256,omitempty"`
}

// StatusMsg is the retained message on status: the birth message (online)
// and the last will (offline), refreshed while the station runs.
type StatusMsg struct {
	Schema       int       `json:"schema"`
	Station      string    `json:"station"`
	State        string    `json:"state"` // StateOnline or StateOffline
	Time         time.Time `json:"time"`
	AgentVersion string    `json:"agent_version,omitempty"`
	Model        *ModelRef `json:"model,omitempty"`
	Provider     string    `json:"provider,omitempty"` // execution provider in use
	Camera       string    `json:"camera,omitempty"`   // camera state
	// OutboxBacklog is the number of alert and verdict messages not yet
	// acknowledged by the broker; SyncBacklog the verdicts not yet uploaded.
	OutboxBacklog int `json:"outbox_backlog"`
	SyncBacklog   int `json:"sync_backlog"`
}

// Validate implements Message.
func (m *StatusMsg) Validate() error {
	return check(m.Schema,
		required("station", m.Station),
		oneOf("state", m.State, StateOnline, StateOffline))
}

// VerdictMsg is one part's verdict on verdict.
type VerdictMsg struct {
	Schema int `json:"schema"`
	// MsgID is unique per message: consumers de-duplicate by it (a message
	// can arrive more than once).
	MsgID     string    `json:"msg_id"`
	ID        uint64    `json:"id"` // the verdict id in the station's store
	Station   string    `json:"station"`
	CameraID  string    `json:"camera_id,omitempty"`
	Serial    string    `json:"serial"`
	Time      time.Time `json:"time"`    // capture time, UTC
	Verdict   string    `json:"verdict"` // PASS, FAIL or NO_DECISION
	Reason    string    `json:"reason,omitempty"`
	Score     *float64  `json:"score"` // null when there is none
	Threshold float64   `json:"threshold"`
	Model     ModelRef  `json:"model"`
	Provider  string    `json:"provider,omitempty"`
	LatencyMs float64   `json:"latency_ms"`
	// Class and Confidence are a classifier's top class, or a detector's most confident
	// box; Boxes a detector's boxes in frame pixels. Absent for an anomaly model.
	Class      string  `json:"class,omitempty"`
	Confidence float64 `json:"confidence,omitempty"`
	Boxes      []Box   `json:"boxes,omitempty"`
	// CorrelationID is the cmd/trigger's correlation_id when a trigger
	// command asked for this part (MQTT 3.1.1 has no correlation data).
	CorrelationID string `json:"correlation_id,omitempty"`
}

// Box is one box a detector found: its class, confidence and rectangle in frame pixels
// (x0 <= x < x1, y0 <= y < y1), as verdicts store it and messages carry it.
type Box struct {
	Class      string  `json:"class"`
	Confidence float64 `json:"confidence"`
	X0         float64 `json:"x0"`
	Y0         float64 `json:"y0"`
	X1         float64 `json:"x1"`
	Y1         float64 `json:"y1"`
}

// Width and Height are the box's size in frame pixels (the part page draws it).
func (b Box) Width() float64  { return b.X1 - b.X0 }
func (b Box) Height() float64 { return b.Y1 - b.Y0 }

// Validate implements Message.
func (m *VerdictMsg) Validate() error {
	return check(m.Schema,
		required("msg_id", m.MsgID),
		required("station", m.Station),
		oneOf("verdict", m.Verdict, "PASS", "FAIL", "NO_DECISION"))
}

// AlertMsg is one operator alert on alert.
type AlertMsg struct {
	Schema int `json:"schema"`
	// ID is unique per alert; a redelivered alert has the same ID.
	ID       string    `json:"id"`
	Station  string    `json:"station"`
	Kind     string    `json:"kind"`     // one of the Alert* kinds
	Severity string    `json:"severity"` // info, warning, critical
	Message  string    `json:"message"`
	Time     time.Time `json:"time"` // when the station raised it
	// VerdictID and Serial name the part for fail and no_decision alerts.
	VerdictID uint64 `json:"verdict_id,omitempty"`
	Serial    string `json:"serial,omitempty"`
	// Folded > 0 marks a summary: that many alerts of Kind were held back
	// by the rate limit since Since.
	Folded int        `json:"folded,omitempty"`
	Since  *time.Time `json:"since,omitempty"`
}

// Validate implements Message.
func (m *AlertMsg) Validate() error {
	return check(m.Schema,
		required("id", m.ID),
		required("station", m.Station),
		required("kind", m.Kind),
		oneOf("severity", m.Severity, SeverityInfo, SeverityWarning, SeverityCritical))
}

// TriggerCmd asks the station to capture and inspect a part now (cmd/trigger).
// The verdict answers on verdict with the same correlation_id.
type TriggerCmd struct {
	Schema int `json:"schema"`
	// Serial names the part; empty lets the station make one up.
	Serial string `json:"serial"`
	// Meta is carried for the caller; at most 16 entries.
	Meta map[string]string `json:"meta,omitempty"`
	// CorrelationID comes back in the VerdictMsg (and in an ErrorMsg).
	CorrelationID string `json:"correlation_id,omitempty"`
}

// Validate implements Message.
func (m *TriggerCmd) Validate() error {
	errs := []error{printable("serial", m.Serial, 64), printable("correlation_id", m.CorrelationID, 128)}
	if len(m.Meta) > 16 {
		errs = append(errs, fmt.Errorf("meta: %d entries, want at most 16", len(m.Meta)))
	}
	for k, v := range m.Meta {
		if k == "" {
			errs = append(errs, errors.New("meta: empty key"))
		}
		errs = append(errs, printable("meta key", k, 64), printable("meta."+k, v, 256))
	}
	return check(m.Schema, errs...)
}

// LabelCmd sets the operator label of a verdict (cmd/label): "false_reject"
// for a FAIL or NO_DECISION part that is good, "false_accept" for a PASS part
// that is defective, "" to clear. The station judges whether the label fits.
type LabelCmd struct {
	Schema        int    `json:"schema"`
	VerdictID     uint64 `json:"verdict_id"`
	Label         string `json:"label"`
	CorrelationID string `json:"correlation_id,omitempty"`
}

// Validate implements Message.
func (m *LabelCmd) Validate() error {
	var errs []error
	if m.VerdictID == 0 {
		errs = append(errs, errors.New("verdict_id: missing or 0"))
	}
	errs = append(errs, printable("label", m.Label, 64), printable("correlation_id", m.CorrelationID, 128))
	return check(m.Schema, errs...)
}

// ErrorMsg answers a command the station rejected, on error.
type ErrorMsg struct {
	Schema        int       `json:"schema"`
	Station       string    `json:"station"`
	Time          time.Time `json:"time"`
	Topic         string    `json:"topic"` // the command's topic
	CorrelationID string    `json:"correlation_id,omitempty"`
	Error         string    `json:"error"`
	// Payload is the start of the rejected payload (at most 256 bytes,
	// invalid UTF-8 replaced).
	Payload string `json:"payload,omitempty"`
}

// Validate implements Message.
func (m *ErrorMsg) Validate() error {
	return check(m.Schema, required("station", m.Station), required("error", m.Error))
}

// ModelAvailableMsg announces a signed model bundle (model/available, retained;
// published by takt-cloud for a station or a whole line).
type ModelAvailableMsg struct {
	Schema  int    `json:"schema"`
	Name    string `json:"name"`
	Version string `json:"version"`
	Key     string `json:"key"` // object key of the bundle
	SHA256  string `json:"sha256"`
	Size    int64  `json:"size,omitempty"`
	// Rollback allows a version below the running one (the bundle must be
	// signed as a rollback too).
	Rollback bool `json:"rollback,omitempty"`
}

// Validate implements Message.
func (m *ModelAvailableMsg) Validate() error {
	return check(m.Schema, required("name", m.Name), required("version", m.Version), required("key", m.Key), sha256Hex(m.SHA256))
}

// ModelStatusMsg is a station's model update progress (model/status, retained).
type ModelStatusMsg struct {
	Schema  int       `json:"schema"`
	Station string    `json:"station"`
	Name    string    `json:"name"`
	Version string    `json:"version"`
	State   string    `json:"state"`
	Reason  string    `json:"reason,omitempty"`
	Time    time.Time `json:"time"`
	// Figures are the measurements a decision was taken on (validation's latency check, a
	// shadow run, a watch); nil for a step that measured nothing.
	Figures *ModelFigures `json:"figures,omitempty"`
	// Operating is how the model's FAIL threshold was chosen and the rates its trainer
	// expects there; nil when unknown (a step before the bundle was verified, an older
	// station, a model without a manifest).
	Operating *OperatingPoint `json:"operating_point,omitempty"`
}

// OperatingPoint is how a model's FAIL threshold was chosen and the rates its trainer
// expects at it, as the bundle's manifest records them (thresholds). Rates are fractions.
type OperatingPoint struct {
	Threshold float64 `json:"threshold,omitempty"`
	// Rule: "false-reject", "best-f1", "few-images"; "" when the threshold was set by hand.
	Rule              string  `json:"rule,omitempty"`
	FalseRejectBudget float64 `json:"false_reject_budget,omitempty"`
	// ExpectedFalseReject is the share of good parts the model is expected to FAIL,
	// ExpectedEscape the share of defective parts it is expected to PASS; nil when the
	// trainer could not tell.
	ExpectedFalseReject *float64 `json:"expected_false_reject,omitempty"`
	ExpectedEscape      *float64 `json:"expected_escape,omitempty"`
}

func (o *OperatingPoint) validate() error {
	var errs []error
	for _, v := range []struct {
		name string
		v    *float64
	}{
		{"false_reject_budget", &o.FalseRejectBudget}, {"expected_false_reject", o.ExpectedFalseReject}, {"expected_escape", o.ExpectedEscape},
	} {
		if v.v != nil && !(*v.v >= 0 && *v.v <= 1) {
			errs = append(errs, fmt.Errorf("operating_point.%s: %v, want 0..1", v.name, *v.v))
		}
	}
	if !(o.Threshold >= 0 && o.Threshold <= math.MaxFloat64) {
		errs = append(errs, fmt.Errorf("operating_point.threshold: %v, want a finite number >= 0", o.Threshold))
	}
	return errors.Join(errs...)
}

// Validate implements Message.
func (m *ModelStatusMsg) Validate() error {
	errs := []error{required("station", m.Station),
		oneOf("state", m.State, ModelDownloading, ModelValidating, ModelShadow, ModelActive, ModelRejected, ModelRolledBack)}
	if m.Figures != nil {
		errs = append(errs, m.Figures.validate())
	}
	if m.Operating != nil {
		errs = append(errs, m.Operating.validate())
	}
	return check(m.Schema, errs...)
}

// Steps that measure a model (ModelFigures.Step).
const (
	FiguresValidate = "validate" // latency on a live frame before anything else
	FiguresShadow   = "shadow"   // the candidate beside the serving model on live parts
	FiguresWatch    = "watch"    // the promoted model against the previous one's baseline
)

// ModelFigures are a model update's measured figures. "Candidate" is the model being
// judged (the candidate in validate and shadow, the promoted model in watch); "baseline"
// is what it is judged against (the serving model on the same parts in shadow, the
// previous model in watch). Times are inference milliseconds (preprocessing included);
// rates are fractions of Parts.
type ModelFigures struct {
	Step  string `json:"step"`
	Parts int    `json:"parts"` // parts compared (shadow), watched (watch), timed runs (validate)
	// Agreement: fraction of the parts both models decided alike (shadow).
	Agreement float64 `json:"agreement"`
	// Dropped: frames the shadow queue dropped because the candidate was behind.
	Dropped int64 `json:"dropped"`
	// Errors: parts (runs) the candidate answered with an error or a NaN/Inf score.
	Errors            int     `json:"errors"`
	CandidateP50Ms    float64 `json:"candidate_p50_ms"`
	CandidateP99Ms    float64 `json:"candidate_p99_ms"`
	BaselineP99Ms     float64 `json:"baseline_p99_ms"`
	BudgetMs          float64 `json:"budget_ms"` // validate.latency_fraction of the deadline
	CandidateFailRate float64 `json:"candidate_fail_rate"`
	BaselineFailRate  float64 `json:"baseline_fail_rate"`
	// Limit is the policy key the figures crossed ("shadow.min_agreement",
	// "watch.max_fail_rate_increase", ...); "" when they met the policy.
	Limit string `json:"limit,omitempty"`
	// ExpectedFalseReject is the judged model's expected false-reject rate (its
	// manifest's); nil when the bundle states none, and then the false-reject figures
	// below are absent too.
	ExpectedFalseReject *float64 `json:"expected_false_reject,omitempty"`
	// ObservedFalseReject is what the station saw against it over FalseRejectParts parts:
	// in shadow, the share of the parts the serving model PASSed that the candidate would
	// FAIL; in watch, the FAIL share, tested against the expected rate plus the previous
	// model's FAIL share (the defects the line makes). FalseRejectP is the one-sided
	// binomial test's p-value.
	ObservedFalseReject *float64 `json:"observed_false_reject,omitempty"`
	FalseRejectParts    int      `json:"false_reject_parts,omitempty"`
	FalseRejectP        *float64 `json:"false_reject_p,omitempty"`
}

// ModelLimits are the values of ModelFigures.Limit, each a model_update policy key.
var ModelLimits = []string{"validate.latency_fraction", "validate.errors", "shadow.min_parts", "shadow.errors",
	"shadow.min_agreement", "shadow.max_latency_ratio", "shadow.false_reject_significance", "watch.max_error_rate",
	"watch.max_fail_rate_increase", "watch.max_latency_ratio", "watch.false_reject_significance"}

func (f *ModelFigures) validate() error {
	errs := []error{oneOf("figures.step", f.Step, FiguresValidate, FiguresShadow, FiguresWatch)}
	if f.Limit != "" {
		errs = append(errs, oneOf("figures.limit", f.Limit, ModelLimits...))
	}
	if f.Parts < 0 || f.Dropped < 0 || f.Errors < 0 || f.FalseRejectParts < 0 {
		errs = append(errs, fmt.Errorf("figures: negative count (parts %d, dropped %d, errors %d, false_reject_parts %d)",
			f.Parts, f.Dropped, f.Errors, f.FalseRejectParts))
	}
	for _, v := range []struct {
		name string
		v    *float64
	}{{"expected_false_reject", f.ExpectedFalseReject}, {"observed_false_reject", f.ObservedFalseReject}, {"false_reject_p", f.FalseRejectP}} {
		if v.v != nil && !(*v.v >= 0 && *v.v <= 1) {
			errs = append(errs, fmt.Errorf("figures.%s: %v, want 0..1", v.name, *v.v))
		}
	}
	for _, v := range []struct {
		name string
		v    float64
		max  float64
	}{
		{"agreement", f.Agreement, 1}, {"candidate_fail_rate", f.CandidateFailRate, 1}, {"baseline_fail_rate", f.BaselineFailRate, 1},
		{"candidate_p50_ms", f.CandidateP50Ms, math.MaxFloat64}, {"candidate_p99_ms", f.CandidateP99Ms, math.MaxFloat64},
		{"baseline_p99_ms", f.BaselineP99Ms, math.MaxFloat64}, {"budget_ms", f.BudgetMs, math.MaxFloat64},
	} {
		if !(v.v >= 0 && v.v <= v.max) { // NaN fails too
			want := fmt.Sprintf("0..%g", v.max)
			if v.max == math.MaxFloat64 {
				want = "a finite number >= 0"
			}
			errs = append(errs, fmt.Errorf("figures.%s: %v, want %s", v.name, v.v, want))
		}
	}
	return errors.Join(errs...)
}

// FirmwareAvailableMsg announces a signed agent release (firmware/available, retained).
type FirmwareAvailableMsg struct {
	Schema  int    `json:"schema"`
	Version string `json:"version"`
	Key     string `json:"key"`
	SHA256  string `json:"sha256"`
	Size    int64  `json:"size,omitempty"`
}

// Validate implements Message.
func (m *FirmwareAvailableMsg) Validate() error {
	return check(m.Schema, required("version", m.Version), required("key", m.Key), sha256Hex(m.SHA256))
}

// FirmwareStatusMsg is a station's firmware update progress (firmware/status, retained).
type FirmwareStatusMsg struct {
	Schema  int       `json:"schema"`
	Station string    `json:"station"`
	Version string    `json:"version"`
	State   string    `json:"state"`
	Reason  string    `json:"reason,omitempty"`
	Time    time.Time `json:"time"`
}

// Validate implements Message.
func (m *FirmwareStatusMsg) Validate() error {
	return check(m.Schema, required("station", m.Station),
		oneOf("state", m.State, FirmwareDownloading, FirmwareInstalling, FirmwareCommitted, FirmwareRejected, FirmwareRolledBack))
}

// Decode decodes one JSON object into m strictly and validates it: the payload
// must be a single object of at most MaxMessageBytes (MaxCommandBytes for
// commands) with no unknown fields and no trailing data, and schema must be
// MessageSchema. Errors match ErrBadMessage.
func Decode(data []byte, m Message) error {
	limit := MaxMessageBytes
	switch m.(type) {
	case *TriggerCmd, *LabelCmd:
		limit = MaxCommandBytes
	}
	if len(data) > limit {
		return fmt.Errorf("%w: %d bytes, want at most %d", ErrBadMessage, len(data), limit)
	}
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return fmt.Errorf("%w: want one JSON object", ErrBadMessage)
	}
	if !utf8.Valid(data) {
		return fmt.Errorf("%w: not valid UTF-8", ErrBadMessage)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(m); err != nil {
		return fmt.Errorf("%w: %s", ErrBadMessage, jsonReason(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: data after the JSON object", ErrBadMessage)
	}
	return m.Validate()
}

// DecodeTriggerCmd decodes a cmd/trigger payload (see Decode).
func DecodeTriggerCmd(data []byte) (TriggerCmd, error) {
	var c TriggerCmd
	if err := Decode(data, &c); err != nil {
		return TriggerCmd{}, fmt.Errorf("trigger command: %w", err)
	}
	return c, nil
}

// DecodeLabelCmd decodes a cmd/label payload (see Decode).
func DecodeLabelCmd(data []byte) (LabelCmd, error) {
	var c LabelCmd
	if err := Decode(data, &c); err != nil {
		return LabelCmd{}, fmt.Errorf("label command: %w", err)
	}
	return c, nil
}

// Encode validates m and marshals it.
func Encode(m Message) ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return json.Marshal(m)
}

// jsonReason turns encoding/json's errors into text naming the field.
func jsonReason(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		field := te.Field
		if field == "" {
			field = "value"
		}
		return fmt.Sprintf("%s: %s is not a %s", field, te.Value, te.Type)
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("invalid JSON at byte %d: %v", se.Offset, err)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return "truncated JSON"
	}
	return err.Error()
}

// check joins the schema check and the field errors into one ErrBadMessage.
func check(schema int, errs ...error) error {
	switch {
	case schema == 0:
		errs = append([]error{errors.New("schema: missing (want 1)")}, errs...)
	case schema != MessageSchema:
		errs = append([]error{fmt.Errorf("schema: %d, this side speaks %d", schema, MessageSchema)}, errs...)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrBadMessage, err)
	}
	return nil
}

func required(name, v string) error {
	if v == "" {
		return fmt.Errorf("%s: missing", name)
	}
	return nil
}

func oneOf(name, v string, allowed ...string) error {
	for _, a := range allowed {
		if v == a {
			return nil
		}
	}
	return fmt.Errorf("%s: %q is not one of %q", name, v, allowed)
}

func printable(name, v string, max int) error {
	if len(v) > max {
		return fmt.Errorf("%s: %d bytes, want at most %d", name, len(v), max)
	}
	for _, r := range v {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("%s: %q holds a character that is not printable", name, v)
		}
	}
	return nil
}

func sha256Hex(v string) error {
	if len(v) != 64 {
		return fmt.Errorf("sha256: %q is not 64 hex digits", v)
	}
	for _, r := range v {
		if !('0' <= r && r <= '9' || 'a' <= r && r <= 'f') {
			return fmt.Errorf("sha256: %q is not 64 lowercase hex digits", v)
		}
	}
	return nil
}
