package agent

import (
	"context"
	"time"

	"github.com/takt-edge/takt/agent/plc"
)

var _ plc.Station = (*live)(nil)

// Ready reports whether the station can take a trigger (readiness).
func (l *live) Ready() bool {
	ok, _ := l.readiness()
	return ok
}

// Alert raises an alert without blocking (alertAsync).
func (l *live) Alert(kind, message string) { l.alertAsync(kind, message) }

func (l *live) plcStatus() string {
	if l.plc == nil {
		return PLCOff
	}
	return l.plc.State()
}

func (l *live) startPLC(context.Context) (func(context.Context) error, error) {
	c := l.cfg.PLC
	cfg := plc.Config{Server: c.Mode == PLCServer, Listen: c.Listen, Address: c.Address, UnitID: c.UnitID,
		InBase: c.InBase, OutBase: c.OutBase, AnswerTimeout: c.answerTimeout(l.cfg.Deadline), FailSafe: c.FailSafe,
		Heartbeat: c.Heartbeat, Poll: c.Poll}
	p, run, err := plc.Start(cfg, l, func(kind string, took time.Duration) {
		if kind == "fail_safe" {
			l.m.plcFail.Inc()
		}
		l.m.plcAns.WithLabelValues(kind).Observe(took.Seconds())
	}, l.log)
	if err != nil {
		return nil, err
	}
	l.plc = p
	return run, nil
}
