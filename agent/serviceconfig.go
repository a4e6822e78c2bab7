package agent

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// HTTPConfig configures the operator page, the HTTP API, /metrics and the health endpoints.
type HTTPConfig struct {
	// Listen is the address to serve on: "host:port", or ":port" for 127.0.0.1:port.
	// Default "" serves nothing. An address that is not loopback requires auth (token, or
	// user and password) and TLS (tls_cert, tls_key).
	Listen string `yaml:"listen"`
	// Token, when set, is required as "Authorization: Bearer <token>" for every state
	// change (labels, triggers). Env TAKT_HTTP_TOKEN overrides.
	Token string `yaml:"token"`
	// User and Password, when set, are accepted as HTTP basic auth for state changes.
	// Env TAKT_HTTP_PASSWORD overrides the password.
	User     string `yaml:"user"`
	Password string `yaml:"password"`
	// TLSCert and TLSKey are PEM files; with both set the server speaks HTTPS only.
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
	// Recent is how many recent parts the live view keeps in memory with their images and
	// heatmaps. Default 48.
	Recent int `yaml:"recent"`
	// Shifts are the local start times of the shifts ("HH:MM"), for yield per shift.
	// Default 06:00, 14:00, 22:00.
	Shifts []string `yaml:"shifts"`
}

// PLC modes.
const (
	PLCOff    = "off"
	PLCServer = "server"
	PLCClient = "client"
)

// PLC fail-safes: what the PLC is told when the agent cannot answer a trigger in time.
const (
	FailSafeNG   = "ng"   // answer NG: the part is rejected
	FailSafeHold = "hold" // answer NO_DECISION and raise the hold register: stop the line
)

// PLCConfig configures the Modbus TCP handshake with the line's PLC (see the register
// map in agent/README.md, "PLC handshake over Modbus TCP").
type PLCConfig struct {
	// Mode is off (default), server (the PLC connects to the agent) or client (the agent
	// connects to the PLC and polls its registers).
	Mode string `yaml:"mode"`
	// Listen is the server address. Default 127.0.0.1:1502; a PLC on another host needs the
	// station's address, e.g. 0.0.0.0:502.
	Listen string `yaml:"listen"`
	// Address is the PLC's host:port (client mode).
	Address string `yaml:"address"`
	// UnitID is the Modbus unit id the agent answers to (server; 0 answers every id) or
	// addresses (client). Default 1.
	UnitID int `yaml:"unit_id"`
	// InBase and OutBase are the first holding register of the PLC-to-agent block (trigger,
	// serial) and of the agent-to-PLC block (heartbeat, verdict, ...). Defaults 0 and 100.
	InBase  int `yaml:"in_base"`
	OutBase int `yaml:"out_base"`
	// AnswerTimeout is how long after a trigger the PLC gets its verdict at the latest;
	// without a verdict by then it gets the fail-safe. Default: deadline + 500ms.
	AnswerTimeout time.Duration `yaml:"answer_timeout"`
	// FailSafe is ng (default) or hold.
	FailSafe string `yaml:"fail_safe"`
	// Heartbeat is the period of the heartbeat counter. Default 500ms.
	Heartbeat time.Duration `yaml:"heartbeat"`
	// Poll is how often the client reads the PLC's trigger block. Default 10ms.
	Poll time.Duration `yaml:"poll"`
}

func defaultHTTPConfig() HTTPConfig {
	return HTTPConfig{Recent: 48, Shifts: []string{"06:00", "14:00", "22:00"}}
}

func defaultPLCConfig() PLCConfig {
	return PLCConfig{Mode: PLCOff, Listen: "127.0.0.1:1502", UnitID: 1, InBase: 0, OutBase: 100,
		FailSafe: FailSafeNG, Heartbeat: 500 * time.Millisecond, Poll: 10 * time.Millisecond}
}

// listenAddr is Listen with an empty host made loopback.
func (c HTTPConfig) listenAddr() string {
	if strings.HasPrefix(c.Listen, ":") {
		return "127.0.0.1" + c.Listen
	}
	return c.Listen
}

func (c HTTPConfig) authOn() bool { return c.Token != "" || c.User != "" }

func (c HTTPConfig) validate() error {
	var errs []error
	if c.Listen != "" {
		host, port, err := net.SplitHostPort(c.listenAddr())
		if err != nil {
			errs = append(errs, fmt.Errorf("http.listen: %q is not host:port or :port (%v)", c.Listen, err))
		} else if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
			errs = append(errs, fmt.Errorf("http.listen: port %q is not in 0..65535", port))
		} else if !isLoopback(host) {
			if !c.authOn() {
				errs = append(errs, fmt.Errorf("http.listen: %q is reachable from other hosts; set http.token or http.user and http.password", c.Listen))
			}
			if c.TLSCert == "" {
				errs = append(errs, fmt.Errorf("http.listen: %q is reachable from other hosts; set http.tls_cert and http.tls_key", c.Listen))
			}
		}
	}
	if (c.User == "") != (c.Password == "") {
		errs = append(errs, errors.New("http.user: user and password go together (set both or neither)"))
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		errs = append(errs, errors.New("http.tls_cert: tls_cert and tls_key go together (set both or neither)"))
	}
	if c.Recent < 1 || c.Recent > 1000 {
		errs = append(errs, fmt.Errorf("http.recent: %d is not in 1..1000", c.Recent))
	}
	if _, err := parseShifts(c.Shifts); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// parseShifts turns "HH:MM" shift starts into minutes after midnight, ascending.
func parseShifts(ss []string) ([]int, error) {
	if len(ss) == 0 {
		return nil, errors.New("http.shifts: list at least one shift start (HH:MM)")
	}
	var out []int
	for i, s := range ss {
		t, err := time.Parse("15:04", s)
		if err != nil {
			return nil, fmt.Errorf("http.shifts[%d]: %q is not a time of day HH:MM", i, s)
		}
		m := t.Hour()*60 + t.Minute()
		if len(out) > 0 && m <= out[len(out)-1] {
			return nil, fmt.Errorf("http.shifts[%d]: %q must come after %q (ascending)", i, s, ss[i-1])
		}
		out = append(out, m)
	}
	return out, nil
}

func (c PLCConfig) validate() error {
	var errs []error
	switch c.Mode {
	case PLCOff:
		return nil
	case PLCServer:
		if _, _, err := net.SplitHostPort(c.Listen); err != nil {
			errs = append(errs, fmt.Errorf("plc.listen: %q is not host:port", c.Listen))
		}
	case PLCClient:
		if _, _, err := net.SplitHostPort(c.Address); err != nil || c.Address == "" {
			errs = append(errs, fmt.Errorf("plc.address: %q is not the PLC's host:port (needed by plc.mode client)", c.Address))
		}
	default:
		return fmt.Errorf("plc.mode: %q is not one of off, server, client", c.Mode)
	}
	if c.UnitID < 0 || c.UnitID > 247 {
		errs = append(errs, fmt.Errorf("plc.unit_id: %d is not in 0..247", c.UnitID))
	}
	in, out := c.InBase, c.OutBase
	if in < 0 || in+plcInLen > 65536 {
		errs = append(errs, fmt.Errorf("plc.in_base: %d is not in 0..%d", in, 65536-plcInLen))
	}
	if out < 0 || out+plcOutLen > 65536 {
		errs = append(errs, fmt.Errorf("plc.out_base: %d is not in 0..%d", out, 65536-plcOutLen))
	}
	if in < out+plcOutLen && out < in+plcInLen {
		errs = append(errs, fmt.Errorf("plc.out_base: registers %d..%d overlap the in block %d..%d", out, out+plcOutLen-1, in, in+plcInLen-1))
	}
	if c.AnswerTimeout < 0 {
		errs = append(errs, fmt.Errorf("plc.answer_timeout: %v must be >= 0 (0 is deadline + 500ms)", c.AnswerTimeout))
	}
	if c.FailSafe != FailSafeNG && c.FailSafe != FailSafeHold {
		errs = append(errs, fmt.Errorf("plc.fail_safe: %q is not one of ng, hold", c.FailSafe))
	}
	if c.Heartbeat <= 0 {
		errs = append(errs, fmt.Errorf("plc.heartbeat: %v must be > 0", c.Heartbeat))
	}
	if c.Poll <= 0 {
		errs = append(errs, fmt.Errorf("plc.poll: %v must be > 0", c.Poll))
	}
	return errors.Join(errs...)
}

func (c PLCConfig) answerTimeout(deadline time.Duration) time.Duration {
	if c.AnswerTimeout > 0 {
		return c.AnswerTimeout
	}
	return deadline + 500*time.Millisecond
}
