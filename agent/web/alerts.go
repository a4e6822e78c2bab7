package web

import (
	"sync"
	"time"
)

// AlertLog keeps the station's recent local alerts for the page.
type AlertLog struct {
	mu   sync.Mutex
	max  int
	list []Alert // newest last
}

// Alert is one local alert shown on the operator page.
type Alert struct {
	Time    time.Time `json:"time"`
	Kind    string    `json:"kind"` // no_decision, degraded, camera, plc
	Message string    `json:"message"`
}

// NewAlertLog keeps the last n alerts.
func NewAlertLog(n int) *AlertLog { return &AlertLog{max: n} }

// Add records an alert now.
func (a *AlertLog) Add(kind, msg string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.list = append(a.list, Alert{Time: time.Now().UTC(), Kind: kind, Message: msg})
	if len(a.list) > a.max {
		a.list = a.list[len(a.list)-a.max:]
	}
}

// Recent returns the alerts, newest first.
func (a *AlertLog) Recent() []Alert {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]Alert, len(a.list))
	for i, x := range a.list {
		out[len(out)-1-i] = x
	}
	return out
}
