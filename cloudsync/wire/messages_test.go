package wire

import (
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

func TestDecodeTriggerCmd(t *testing.T) {
	tests := []struct {
		name    string
		payload string
		want    TriggerCmd
		wantErr string // substring; "" means success
	}{
		{"full", `{"schema":1,"serial":"SN-1","meta":{"order":"A7"},"correlation_id":"c-1"}`,
			TriggerCmd{Schema: 1, Serial: "SN-1", Meta: map[string]string{"order": "A7"}, CorrelationID: "c-1"}, ""},
		{"minimal", ` {"schema":1} `, TriggerCmd{Schema: 1}, ""},
		{"missing schema", `{"serial":"x"}`, TriggerCmd{}, "schema: missing"},
		{"newer schema", `{"schema":2}`, TriggerCmd{}, "schema: 2, this side speaks 1"},
		{"unknown field", `{"schema":1,"serail":"x"}`, TriggerCmd{}, `unknown field "serail"`},
		{"wrong type", `{"schema":1,"serial":5}`, TriggerCmd{}, "serial: number is not a string"},
		{"trailing data", `{"schema":1}{}`, TriggerCmd{}, "data after the JSON object"},
		{"not an object", `null`, TriggerCmd{}, "want one JSON object"},
		{"empty", ``, TriggerCmd{}, "want one JSON object"},
		{"truncated", `{"schema":1,"serial":"SN`, TriggerCmd{}, "truncated JSON"},
		{"syntax", `{"schema":1,}`, TriggerCmd{}, "invalid JSON"},
		{"control character", `{"schema":1,"serial":"a\u0007b"}`, TriggerCmd{}, "serial: \"a\\ab\" holds a character that is not printable"},
		{"long serial", `{"schema":1,"serial":"` + strings.Repeat("x", 65) + `"}`, TriggerCmd{}, "serial: 65 bytes, want at most 64"},
		{"too big", `{"schema":1,"serial":"` + strings.Repeat("x", MaxCommandBytes) + `"}`, TriggerCmd{}, "bytes, want at most 4096"},
		{"invalid utf-8", "{\"schema\":1,\"serial\":\"\xff\"}", TriggerCmd{}, "not valid UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeTriggerCmd([]byte(tt.payload))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("DecodeTriggerCmd: %v, want nil", err)
				}
				gj, _ := json.Marshal(got)
				wj, _ := json.Marshal(tt.want)
				if string(gj) != string(wj) {
					t.Errorf("got %s, want %s", gj, wj)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrBadMessage) {
				t.Errorf("error = %v, want one matching ErrBadMessage containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestDecodeLabelCmd(t *testing.T) {
	tests := []struct {
		payload string
		wantErr string
	}{
		{`{"schema":1,"verdict_id":42,"label":"false_reject","correlation_id":"x"}`, ""},
		{`{"schema":1,"verdict_id":42,"label":""}`, ""},
		{`{"schema":1,"label":"false_reject"}`, "verdict_id: missing or 0"},
		{`{"schema":1,"verdict_id":-1}`, "verdict_id: number -1 is not a uint64"},
		{`{"schema":1,"verdict_id":"42"}`, "verdict_id: string is not a uint64"},
		{`{"schema":1,"verdict_id":1,"label":"` + strings.Repeat("y", 65) + `"}`, "label: 65 bytes"},
		{`[1]`, "want one JSON object"},
	}
	for _, tt := range tests {
		_, err := DecodeLabelCmd([]byte(tt.payload))
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("DecodeLabelCmd(%s): %v, want nil", tt.payload, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("DecodeLabelCmd(%s) error = %v, want one containing %q", tt.payload, err, tt.wantErr)
		}
	}
}

// model/status figures are decoded strictly: an unknown figure, a wrong type, a rate over 1
// or a step or limit not in the protocol are errors naming the field.
func TestDecodeModelStatusFigures(t *testing.T) {
	head := `{"schema":1,"station":"st-1","name":"m","version":"1.1.0","state":"rejected","time":"2026-05-04T10:00:00Z","figures":`
	tests := []struct {
		figures, wantErr string
	}{
		{`{"step":"watch","parts":20,"agreement":0,"dropped":0,"errors":0,"candidate_p50_ms":1,"candidate_p99_ms":2,"baseline_p99_ms":1,` +
			`"budget_ms":15,"candidate_fail_rate":0.8,"baseline_fail_rate":0,"limit":"watch.max_fail_rate_increase"}`, ""},
		{`{"step":"shadow","parts":5,"agreement_pct":90}`, `unknown field "agreement_pct"`},
		{`{"step":"shadow","parts":"5"}`, "parts"},
		{`{"step":"shadow","candidate_fail_rate":1.2}`, "figures.candidate_fail_rate: 1.2, want 0..1"},
		{`{"step":"shadow","candidate_p99_ms":-1}`, "figures.candidate_p99_ms: -1"},
		{`{"step":"later"}`, "figures.step"},
		{`{"step":"watch","limit":"watch.mood"}`, "figures.limit"},
	}
	for _, tt := range tests {
		var m ModelStatusMsg
		err := Decode([]byte(head+tt.figures+"}"), &m)
		switch {
		case tt.wantErr == "" && (err != nil || m.Figures == nil || m.Figures.Limit != "watch.max_fail_rate_increase"):
			t.Errorf("Decode(%s): %+v, %v; want the figures", tt.figures, m.Figures, err)
		case tt.wantErr != "" && (err == nil || !errors.Is(err, ErrBadMessage) || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("Decode(%s) error = %v, want ErrBadMessage containing %q", tt.figures, err, tt.wantErr)
		}
	}
}

// Every message type survives Encode and Decode, and Encode refuses what Decode would.
func TestMessagesRoundTrip(t *testing.T) {
	now := time.Date(2026, 5, 4, 10, 0, 0, 0, time.UTC)
	score := 1.25
	rate, seen, pval := 0.01, 0.2, 1e-9
	sha := strings.Repeat("ab", 32)
	msgs := []Message{
		&StatusMsg{Schema: 1, Station: "st-1", State: StateOnline, Time: now, Model: &ModelRef{Name: "m", Version: "1.0.0"}, OutboxBacklog: 3},
		&VerdictMsg{Schema: 1, MsgID: "st-1-v7-1", ID: 7, Station: "st-1", Serial: "SN", Time: now, Verdict: "FAIL", Score: &score, CorrelationID: "c"},
		&AlertMsg{Schema: 1, ID: "st-1-a1", Station: "st-1", Kind: AlertCameraStalled, Severity: SeverityCritical, Message: "camera is stalled", Time: now},
		&TriggerCmd{Schema: 1, Serial: "SN", CorrelationID: "c"},
		&LabelCmd{Schema: 1, VerdictID: 7, Label: "false_reject"},
		&ErrorMsg{Schema: 1, Station: "st-1", Time: now, Topic: "t", Error: "bad"},
		&ModelAvailableMsg{Schema: 1, Name: "m", Version: "1.1.0", Key: "models/m/1.1.0/bundle.tar", SHA256: sha},
		&ModelStatusMsg{Schema: 1, Station: "st-1", Name: "m", Version: "1.1.0", State: ModelShadow, Time: now},
		&ModelStatusMsg{Schema: 1, Station: "st-1", Name: "m", Version: "1.1.0", State: ModelRejected, Reason: "shadow: agreement", Time: now,
			Figures: &ModelFigures{Step: FiguresShadow, Parts: 200, Agreement: 0.9, Dropped: 3, CandidateP50Ms: 2.5, CandidateP99Ms: 4,
				BaselineP99Ms: 3, BudgetMs: 25, CandidateFailRate: 0.1, Limit: "shadow.min_agreement"}},
		&ModelStatusMsg{Schema: 1, Station: "st-1", Name: "m", Version: "1.2.0", State: ModelRejected, Reason: "shadow: false rejects", Time: now,
			Figures: &ModelFigures{Step: FiguresShadow, Parts: 200, Agreement: 0.9, Limit: "shadow.false_reject_significance",
				ExpectedFalseReject: &rate, ObservedFalseReject: &seen, FalseRejectParts: 190, FalseRejectP: &pval},
			Operating: &OperatingPoint{Threshold: 0.7, Rule: "false-reject", FalseRejectBudget: 0.01, ExpectedFalseReject: &rate}},
		&FirmwareAvailableMsg{Schema: 1, Version: "2.0.0", Key: "firmware/2.0.0/release.tar", SHA256: sha},
		&FirmwareStatusMsg{Schema: 1, Station: "st-1", Version: "2.0.0", State: FirmwareInstalling, Time: now},
	}
	for _, m := range msgs {
		data, err := Encode(m)
		if err != nil {
			t.Fatalf("Encode(%T): %v", m, err)
		}
		if err := Decode(data, m); err != nil {
			t.Errorf("Decode(%T, %s): %v", m, data, err)
		}
	}
	bad := []Message{
		&StatusMsg{Schema: 1, Station: "st-1", State: "sleeping"},
		&AlertMsg{Schema: 1, ID: "x", Station: "s", Kind: "fail", Severity: "meh"},
		&ModelAvailableMsg{Schema: 1, Name: "m", Version: "1", Key: "k", SHA256: "nothex"},
		&VerdictMsg{Schema: 1, MsgID: "x", Station: "s", Verdict: "MAYBE"},
		&ModelStatusMsg{Schema: 1, Station: "s", State: ModelRejected, Figures: &ModelFigures{Step: "guess"}},
		&ModelStatusMsg{Schema: 1, Station: "s", State: ModelRejected, Figures: &ModelFigures{Step: FiguresWatch, CandidateP99Ms: math.NaN()}},
		&ModelStatusMsg{Schema: 1, Station: "s", State: ModelRejected, Figures: &ModelFigures{Step: FiguresShadow, Agreement: 1.5}},
		&ModelStatusMsg{Schema: 1, Station: "s", State: ModelRejected, Figures: &ModelFigures{Step: FiguresShadow, Limit: "shadow.vibes"}},
		&ModelStatusMsg{Schema: 1, Station: "s", State: ModelRejected, Figures: &ModelFigures{Step: FiguresShadow, ObservedFalseReject: &score}},
		&ModelStatusMsg{Schema: 1, Station: "s", State: ModelActive, Operating: &OperatingPoint{ExpectedEscape: &score}},
		&ModelStatusMsg{Schema: 1, Station: "s", State: ModelActive, Operating: &OperatingPoint{Threshold: math.Inf(1)}},
	}
	for _, m := range bad {
		if _, err := Encode(m); !errors.Is(err, ErrBadMessage) {
			t.Errorf("Encode(%+v) error = %v, want ErrBadMessage", m, err)
		}
	}
}

// A model/status from a station that knows nothing of operating points decodes, with the
// expected rates absent.
func TestModelStatusWithoutExpectedRates(t *testing.T) {
	old := `{"schema":1,"station":"s","name":"m","version":"1.0.0","state":"active","time":"2026-05-04T10:00:00Z",` +
		`"figures":{"step":"watch","parts":20,"agreement":0,"dropped":0,"errors":0,"candidate_p50_ms":1,"candidate_p99_ms":2,` +
		`"baseline_p99_ms":2,"budget_ms":25,"candidate_fail_rate":0.1,"baseline_fail_rate":0.1}}`
	var m ModelStatusMsg
	if err := Decode([]byte(old), &m); err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if m.Operating != nil || m.Figures.ExpectedFalseReject != nil || m.Figures.ObservedFalseReject != nil {
		t.Errorf("decoded %+v / %+v: want no operating point and no false-reject figures", m.Operating, m.Figures)
	}
}

func TestTopics(t *testing.T) {
	tp, err := NewTopics("plant-a", "line-3", "st-7")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := tp.Topic(TopicCmdTrigger), "takt/v1/plant-a/line-3/st-7/cmd/trigger"; got != want {
		t.Errorf("Topic = %q, want %q", got, want)
	}
	if got, want := tp.LineModelAvailable(), "takt/v1/plant-a/line-3/model/available"; got != want {
		t.Errorf("LineModelAvailable = %q, want %q", got, want)
	}
	if got, want := Filter("", "line-3", "", TopicAlert), "takt/v1/+/line-3/+/alert"; got != want {
		t.Errorf("Filter = %q, want %q", got, want)
	}
	back, name, err := ParseTopic(tp.Topic(TopicCmdLabel))
	if err != nil || back != tp || name != TopicCmdLabel {
		t.Errorf("ParseTopic = %+v, %q, %v; want %+v, %q, nil", back, name, err, tp, TopicCmdLabel)
	}
	for _, bad := range []string{"", "a/b", "a+", "#", "a b", strings.Repeat("x", 65)} {
		if _, err := NewTopics("s", "l", bad); err == nil {
			t.Errorf("NewTopics station %q: nil error, want one", bad)
		}
	}
	for _, c := range []struct {
		filter, topic string
		want          bool
	}{
		{"takt/v1/+/+/+/alert", "takt/v1/s/l/st/alert", true},
		{"takt/v1/+/+/+/alert", "takt/v1/s/l/st/status", false},
		{"takt/v1/#", "takt/v1/s/l/st/cmd/label", true},
		{"takt/v1/s/l/st/cmd/trigger", "takt/v1/s/l/st/cmd/trigger", true},
		{"takt/v1/+/+/+", "takt/v1/s/l/st/alert", false},
	} {
		if got := MatchTopic(c.filter, c.topic); got != c.want {
			t.Errorf("MatchTopic(%q, %q) = %v, want %v", c.filter, c.topic, got, c.want)
		}
	}
}

// The command parsers never panic, and what they accept encodes again and
// decodes to the same command.
func FuzzDecodeTriggerCmd(f *testing.F) {
	f.Add([]byte(`{"schema":1,"serial":"SN-1"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := DecodeTriggerCmd(data)
		if err != nil {
			if !errors.Is(err, ErrBadMessage) {
				t.Fatalf("error %v does not match ErrBadMessage", err)
			}
			return
		}
		again, err := Encode(&c)
		if err != nil {
			t.Fatalf("accepted %q but Encode fails: %v", data, err)
		}
		if _, err := DecodeTriggerCmd(again); err != nil {
			t.Fatalf("accepted %q, re-encoded %s fails: %v", data, again, err)
		}
	})
}

func FuzzDecodeLabelCmd(f *testing.F) {
	f.Add([]byte(`{"schema":1,"verdict_id":1,"label":"false_accept"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := DecodeLabelCmd(data)
		if err != nil {
			if !errors.Is(err, ErrBadMessage) {
				t.Fatalf("error %v does not match ErrBadMessage", err)
			}
			return
		}
		if c.VerdictID == 0 || c.Schema != MessageSchema {
			t.Fatalf("accepted %q with verdict_id %d schema %d", data, c.VerdictID, c.Schema)
		}
		again, err := Encode(&c)
		if err != nil {
			t.Fatalf("accepted %q but Encode fails: %v", data, err)
		}
		if c2, err := DecodeLabelCmd(again); err != nil || c2 != c {
			t.Fatalf("round trip of %q: %+v, %v; want %+v", data, c2, err, c)
		}
	})
}
