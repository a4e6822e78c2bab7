package plc

import (
	"bytes"
	"context"
	"fmt"
	stdlog "log"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"github.com/simonvetter/modbus"

	"github.com/takt-edge/takt/agent/store"
)

// In block (PLC -> agent), in_base + ...:
const (
	RegTriggerSeq = 0 // PLC writes a new non-zero value (e.g. +1) to trigger one inspection
	RegSerial     = 1 // 10 registers: the part serial, ASCII, 2 characters per register, high byte first, NUL padded
	plcSerialRegs = 10
	InLen         = RegSerial + plcSerialRegs // registers in the in block
)

// Out block (agent -> PLC, read-only for the PLC), out_base + ...:
const (
	RegHeartbeat  = 0  // +1 every plc.heartbeat while the agent runs (wraps at 65535)
	RegReady      = 1  // 1: ready for a trigger (model loaded, store open, camera producing, no hold)
	RegBusy       = 2  // 1: at least one trigger is waiting for its verdict
	RegResultSeq  = 3  // trigger_seq the result registers below answer; written last
	RegVerdict    = 4  // VerdictOK, VerdictNG, VerdictNoDecision (VerdictNone before the first answer)
	RegResultCode = 5  // ResultOK ... ResultRejected
	RegScore      = 6  // score / threshold * 1000 (1000 = at the threshold), 65535 = no score
	RegHold       = 7  // 1: fail-safe hold; the line must stop until the next trigger
	RegVerdictID  = 8  // 2 registers: the verdict id in the store (uint32, high word first), 0 for none
	RegLatency    = 10 // trigger to answer in milliseconds (saturates at 65535)
	OutLen        = 11 // registers in the out block
)

// Verdict codes in RegVerdict.
const (
	VerdictNone       = 0
	VerdictOK         = 1 // PASS
	VerdictNG         = 2 // FAIL, or the ng fail-safe
	VerdictNoDecision = 3 // NO_DECISION, or the hold fail-safe
)

// Result codes in RegResultCode (also "result_code" in the HTTP API).
const (
	ResultOK       = 0 // PASS
	ResultDefect   = 1 // FAIL: score above the threshold
	ResultNoFrame  = 2 // NO_DECISION: the camera gave no frame for the trigger
	ResultError    = 3 // NO_DECISION: inference failed or the score is not a number
	ResultLate     = 4 // NO_DECISION: the agent's decision came after its deadline
	ResultTimeout  = 5 // fail-safe: no verdict within plc.answer_timeout
	ResultRejected = 6 // fail-safe: the trigger could not be queued (camera not triggered, busy, stopped)
)

// Station is what the handshake needs of the running station. Its methods are called
// from the handshake's goroutines (the Modbus server's, the client's poll loop), not from
// the inspection loop; none may block.
type Station interface {
	// Ready reports whether the station can take a trigger: model loaded, store answering,
	// camera producing, loop not stuck.
	Ready() bool
	// Trigger asks the camera for the part in place now, named serial, and returns the
	// channel its verdict arrives on once committed (closed if the station stops first)
	// and a cancel that forgets the request. An error is answered with the fail-safe.
	Trigger(serial string, at time.Time) (<-chan store.Verdict, func(), error)
	// Alert raises an alert of kind without blocking.
	Alert(kind, message string)
}

// Config is the station's plc settings (see the agent's plc section).
type Config struct {
	Server  bool   // the PLC connects to the station (else the station polls the PLC)
	Listen  string // server address
	Address string // the PLC's host:port (client)
	UnitID  int
	InBase  int
	OutBase int
	// AnswerTimeout is how long after a trigger the PLC gets its verdict at the latest.
	AnswerTimeout time.Duration
	FailSafe      string // FailSafeNG or FailSafeHold
	Heartbeat     time.Duration
	Poll          time.Duration
}

// Fail-safes: what the PLC is told when the station cannot answer a trigger in time.
const (
	FailSafeNG   = "ng"   // answer NG: the part is rejected
	FailSafeHold = "hold" // answer NO_DECISION and raise the hold register: stop the line
)

// Handshake is the station's side of the handshake; the same register logic serves the
// server (the PLC reads and writes our registers) and the client (we poll the PLC's).
type Handshake struct {
	st      Station
	cfg     Config
	timeout time.Duration
	log     zerolog.Logger
	// answered, when set, sees every answer: kind "verdict" or "fail_safe", and the time
	// from the trigger.
	answered func(kind string, took time.Duration)

	mu       sync.Mutex
	in       [InLen]uint16
	out      [OutLen]uint16
	lastSeq  uint16
	primed   bool // client: the first read adopts the PLC's trigger_seq without triggering
	pending  int
	state    string
	lastSeen time.Time
	outGen   uint64 // bumped on every change of out (client writes when it moved)
}

// State is "listening" or "connected" for a server and the connection state of a client.
func (p *Handshake) State() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cfg.Server {
		if !p.lastSeen.IsZero() && time.Since(p.lastSeen) < 5*time.Second {
			return "connected"
		}
		return "listening"
	}
	return p.state
}

// Start binds the server (or makes the client) and returns the func that runs the handshake
// until its context is done. answered, when not nil, sees every answer: kind "verdict" or
// "fail_safe", and the time since the trigger.
func Start(cfg Config, st Station, answered func(kind string, took time.Duration), log zerolog.Logger) (*Handshake, func(context.Context) error, error) {
	p := &Handshake{st: st, cfg: cfg, timeout: cfg.AnswerTimeout, answered: answered,
		log: log.With().Str("component", "plc").Logger(), state: "connecting"}
	if p.answered == nil {
		p.answered = func(string, time.Duration) {}
	}
	p.out[RegScore] = math.MaxUint16
	p.primed = p.cfg.Server // a client adopts the PLC's trigger_seq on its first read
	p.refreshReady()
	mlog := stdlog.New(logWriter{p.log}, "", 0)
	if p.cfg.Server {
		srv, err := modbus.NewServer(&modbus.ServerConfiguration{URL: "tcp://" + p.cfg.Listen, Timeout: time.Minute, MaxClients: 8, Logger: mlog}, p)
		if err != nil {
			return nil, nil, fmt.Errorf("plc.listen %s: %w", p.cfg.Listen, err)
		}
		if err := srv.Start(); err != nil {
			return nil, nil, fmt.Errorf("plc.listen %s: %w", p.cfg.Listen, err)
		}
		p.log.Info().Str("listen", p.cfg.Listen).Int("in_base", p.cfg.InBase).Int("out_base", p.cfg.OutBase).
			Str("fail_safe", p.cfg.FailSafe).Dur("answer_timeout", p.timeout).Msg("Modbus server for the PLC")
		return p, func(ctx context.Context) error {
			p.heartbeat(ctx, nil)
			srv.Stop()
			return nil
		}, nil
	}
	cl, err := modbus.NewClient(&modbus.ClientConfiguration{URL: "tcp://" + p.cfg.Address, Timeout: time.Second, Logger: mlog})
	if err != nil {
		return nil, nil, fmt.Errorf("plc.address %s: %w", p.cfg.Address, err)
	}
	if p.cfg.UnitID > 0 {
		cl.SetUnitId(uint8(p.cfg.UnitID))
	}
	return p, func(ctx context.Context) error {
		p.runClient(ctx, cl)
		return nil
	}, nil
}

// heartbeat bumps the heartbeat register and refreshes ready until ctx is done; tick, if not
// nil, is called on every beat too.
func (p *Handshake) heartbeat(ctx context.Context, tick func()) {
	t := time.NewTicker(p.cfg.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			p.mu.Lock()
			p.out[RegHeartbeat]++
			p.outGen++
			p.mu.Unlock()
			p.refreshReady()
			if tick != nil {
				tick()
			}
		}
	}
}

func (p *Handshake) refreshReady() {
	ok := p.st.Ready()
	p.mu.Lock()
	defer p.mu.Unlock()
	r := uint16(0)
	if ok && p.out[RegHold] == 0 {
		r = 1
	}
	if p.out[RegReady] != r {
		p.out[RegReady] = r
		p.outGen++
	}
}

// write applies values written by the PLC to the in block at offset off and starts the
// inspections they trigger.
func (p *Handshake) write(off int, vals []uint16) {
	p.mu.Lock()
	copy(p.in[off:], vals)
	seq := p.in[RegTriggerSeq]
	fire := false
	switch {
	case !p.primed:
		p.primed = true
		p.lastSeq = seq
	case seq != 0 && seq != p.lastSeq:
		p.lastSeq = seq
		fire = true
		p.pending++
		p.out[RegBusy] = 1
		if p.out[RegHold] != 0 {
			p.out[RegHold] = 0
		}
		p.outGen++
	}
	serial := decodeSerial(p.in[RegSerial : RegSerial+plcSerialRegs])
	p.mu.Unlock()
	if !fire {
		return
	}
	at := time.Now()
	ch, cancel, err := p.st.Trigger(serial, at)
	if err != nil {
		p.log.Warn().Err(err).Uint16("trigger_seq", seq).Str("serial", serial).Msg("trigger rejected; fail-safe answered")
		p.st.Alert("plc", fmt.Sprintf("trigger %d (%s) rejected: %v", seq, serial, err))
		p.failSafe(seq, at, ResultRejected)
		return
	}
	go p.wait(seq, at, ch, cancel)
}

func (p *Handshake) wait(seq uint16, at time.Time, ch <-chan store.Verdict, cancel func()) {
	t := time.NewTimer(time.Until(at.Add(p.timeout)))
	defer t.Stop()
	select {
	case v, ok := <-ch:
		if ok {
			p.answer(seq, at, v)
			return
		}
		p.failSafe(seq, at, ResultRejected)
	case <-t.C:
		cancel()
		p.log.Warn().Uint16("trigger_seq", seq).Dur("answer_timeout", p.timeout).Msg("no verdict in time; fail-safe answered")
		p.st.Alert("plc", fmt.Sprintf("trigger %d: no verdict within %s, fail-safe %s", seq, p.timeout, p.cfg.FailSafe))
		p.failSafe(seq, at, ResultTimeout)
	}
}

func (p *Handshake) answer(seq uint16, at time.Time, v store.Verdict) {
	code := uint16(VerdictNoDecision)
	switch v.Decision {
	case store.Pass:
		code = VerdictOK
	case store.Fail:
		code = VerdictNG
	}
	score := uint16(math.MaxUint16)
	if v.Score != nil && v.Threshold > 0 {
		score = uint16(min(max(*v.Score/v.Threshold*1000, 0), math.MaxUint16-1))
	}
	p.set(seq, at, code, ResultCode(v), score, v.ID, false)
	p.answered("verdict", time.Since(at))
}

func (p *Handshake) failSafe(seq uint16, at time.Time, result uint16) {
	code, hold := uint16(VerdictNG), false
	if p.cfg.FailSafe == FailSafeHold {
		code, hold = VerdictNoDecision, true
	}
	p.set(seq, at, code, result, math.MaxUint16, 0, hold)
	p.answered("fail_safe", time.Since(at))
}

func (p *Handshake) set(seq uint16, at time.Time, verdict, result, score uint16, id uint64, hold bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.out[RegVerdict], p.out[RegResultCode], p.out[RegScore] = verdict, result, score
	p.out[RegVerdictID], p.out[RegVerdictID+1] = uint16(id>>16), uint16(id)
	p.out[RegLatency] = uint16(min(time.Since(at).Milliseconds(), math.MaxUint16))
	if hold {
		p.out[RegHold], p.out[RegReady] = 1, 0
	}
	p.pending--
	if p.pending <= 0 {
		p.pending, p.out[RegBusy] = 0, 0
	}
	p.out[RegResultSeq] = seq
	p.outGen++
}

// HandleHoldingRegisters serves the PLC (server mode): reads of either block, writes of the
// in block only.
func (p *Handshake) HandleHoldingRegisters(req *modbus.HoldingRegistersRequest) ([]uint16, error) {
	if p.cfg.UnitID != 0 && int(req.UnitId) != p.cfg.UnitID {
		return nil, modbus.ErrGWTargetFailedToRespond
	}
	p.mu.Lock()
	p.lastSeen = time.Now()
	p.mu.Unlock()
	addr, n := int(req.Addr), int(req.Quantity)
	in, out := p.cfg.InBase, p.cfg.OutBase
	switch {
	case addr >= in && addr+n <= in+InLen:
		if req.IsWrite {
			p.write(addr-in, req.Args)
			return nil, nil
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		return append([]uint16(nil), p.in[addr-in:addr-in+n]...), nil
	case addr >= out && addr+n <= out+OutLen:
		if req.IsWrite {
			return nil, modbus.ErrIllegalDataAddress
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		return append([]uint16(nil), p.out[addr-out:addr-out+n]...), nil
	}
	return nil, modbus.ErrIllegalDataAddress
}

// HandleInputRegisters serves the out block as input registers (function code 4).
func (p *Handshake) HandleInputRegisters(req *modbus.InputRegistersRequest) ([]uint16, error) {
	return p.HandleHoldingRegisters(&modbus.HoldingRegistersRequest{UnitId: req.UnitId, Addr: req.Addr, Quantity: req.Quantity})
}

// HandleCoils: the map has no coils.
func (p *Handshake) HandleCoils(*modbus.CoilsRequest) ([]bool, error) {
	return nil, modbus.ErrIllegalFunction
}

// HandleDiscreteInputs: the map has no discrete inputs.
func (p *Handshake) HandleDiscreteInputs(*modbus.DiscreteInputsRequest) ([]bool, error) {
	return nil, modbus.ErrIllegalFunction
}

// runClient polls the PLC's in block and writes the out block to it whenever it changed,
// reconnecting with backoff (doubling from 250ms to 5s). The uploader and the MQTT
// connection back off alike inside cloudsync; were that backoff exported, this link would
// use it too.
func (p *Handshake) runClient(ctx context.Context, cl *modbus.ModbusClient) {
	beat, cancel := context.WithCancel(ctx)
	defer cancel()
	go p.heartbeat(beat, nil)
	backoff := 250 * time.Millisecond
	for ctx.Err() == nil {
		err := cl.Open()
		if err == nil {
			p.setState("connected to " + p.cfg.Address)
			p.log.Info().Str("plc", p.cfg.Address).Msg("connected to the PLC")
			backoff = 250 * time.Millisecond
			err = p.poll(ctx, cl)
			cl.Close()
		}
		if ctx.Err() != nil {
			return
		}
		p.setState("disconnected: " + err.Error())
		p.log.Warn().Err(err).Dur("retry_in", backoff).Msg("PLC link lost")
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (p *Handshake) poll(ctx context.Context, cl *modbus.ModbusClient) error {
	t := time.NewTicker(p.cfg.Poll)
	defer t.Stop()
	written := ^uint64(0)
	for {
		vals, err := cl.ReadRegisters(uint16(p.cfg.InBase), InLen, modbus.HOLDING_REGISTER)
		if err != nil {
			return fmt.Errorf("read in block at %d: %w", p.cfg.InBase, err)
		}
		p.write(0, vals)
		p.mu.Lock()
		gen, out := p.outGen, p.out
		p.mu.Unlock()
		if gen != written {
			if err := cl.WriteRegisters(uint16(p.cfg.OutBase), out[:]); err != nil {
				return fmt.Errorf("write out block at %d: %w", p.cfg.OutBase, err)
			}
			written = gen
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (p *Handshake) setState(s string) {
	p.mu.Lock()
	p.state = s
	p.mu.Unlock()
}

// decodeSerial reads ASCII, two characters per register, high byte first, up to the first NUL.
func decodeSerial(regs []uint16) string {
	b := make([]byte, 0, 2*len(regs))
	for _, r := range regs {
		b = append(b, byte(r>>8), byte(r))
	}
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return strings.TrimSpace(strings.ToValidUTF8(string(b), "?"))
}

// EncodeSerial is the PLC's side of decodeSerial: s in plcSerialRegs registers (longer
// serials are cut to 20 characters).
func EncodeSerial(s string) []uint16 {
	regs := make([]uint16, plcSerialRegs)
	for i := 0; i < len(s) && i < 2*plcSerialRegs; i++ {
		if i%2 == 0 {
			regs[i/2] |= uint16(s[i]) << 8
		} else {
			regs[i/2] |= uint16(s[i])
		}
	}
	return regs
}

// logWriter turns the Modbus library's log lines into debug lines of the plc logger.
type logWriter struct{ log zerolog.Logger }

func (w logWriter) Write(b []byte) (int, error) {
	w.log.Debug().Msg(strings.TrimSpace(string(b)))
	return len(b), nil
}

// ResultCode classifies a verdict for the PLC and the page (RegResultCode, the HTTP API's
// result_code).
func ResultCode(v store.Verdict) uint16 {
	switch {
	case v.Decision == store.Pass:
		return ResultOK
	case v.Decision == store.Fail:
		return ResultDefect
	case strings.HasPrefix(v.Reason, "no frame"):
		return ResultNoFrame
	case strings.HasPrefix(v.Reason, "over deadline"):
		return ResultLate
	default:
		return ResultError
	}
}
