package agent

import (
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/simonvetter/modbus"

	plcreg "github.com/takt-edge/takt/agent/plc"
	"github.com/takt-edge/takt/agent/store"
	"github.com/takt-edge/takt/camera"
)

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// expectedDecisions runs the model over the production run once (stream mode) and returns
// each image's decision by file name: what a triggered part showing that image must get.
func expectedDecisions(t *testing.T) map[string]string {
	t.Helper()
	cfg := testConfig(t)
	cfg.Images.Keep = KeepNone
	if _, err := runAgent(t, cfg); err != nil {
		t.Fatal(err)
	}
	st := openStore(t, cfg.DataDir)
	vs, err := st.List(0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	out := map[string]string{}
	for _, v := range vs {
		out[v.Serial] = v.Decision
	}
	return out
}

// plcConfig is a station whose camera waits for triggers; the PLC talks to it over Modbus.
func plcConfig(t *testing.T) Config {
	cfg := testConfig(t)
	cfg.Deadline = 2 * time.Second
	cfg.Images.Keep = KeepNone
	cfg.Camera.Loop = true
	cfg.Camera.Mode = camera.ModeTriggered
	cfg.Camera.FPS = 30
	cfg.Camera.TriggerWindow = 100 * time.Millisecond
	cfg.PLC.Mode = PLCServer
	cfg.PLC.Listen = freePort(t)
	cfg.PLC.AnswerTimeout = 2500 * time.Millisecond
	cfg.PLC.Heartbeat = 50 * time.Millisecond
	return cfg
}

// testPLC is the line's PLC in the test: a Modbus TCP client of the agent's server.
type testPLC struct {
	t   *testing.T
	c   *modbus.ModbusClient
	in  uint16
	out uint16
	seq uint16
}

func dialPLC(t *testing.T, addr string, in, out int) *testPLC {
	t.Helper()
	c, err := modbus.NewClient(&modbus.ClientConfiguration{URL: "tcp://" + addr, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Open(); err != nil {
		t.Fatalf("connect to the agent's Modbus server %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return &testPLC{t: t, c: c, in: uint16(in), out: uint16(out)}
}

func (p *testPLC) outs() []uint16 {
	p.t.Helper()
	regs, err := p.c.ReadRegisters(p.out, plcreg.OutLen, modbus.HOLDING_REGISTER)
	if err != nil {
		p.t.Fatalf("read out block: %v", err)
	}
	return regs
}

// trigger writes serial and a new trigger_seq in one request and polls until the agent
// answers that seq or timeout passes; it returns the out block and the time it took.
func (p *testPLC) trigger(serial string, timeout time.Duration) ([]uint16, time.Duration, bool) {
	p.t.Helper()
	p.seq++
	if p.seq == 0 {
		p.seq = 1
	}
	start := time.Now()
	if err := p.c.WriteRegisters(p.in, append([]uint16{p.seq}, plcreg.EncodeSerial(serial)...)); err != nil {
		p.t.Fatalf("write trigger: %v", err)
	}
	for {
		o := p.outs()
		if o[plcreg.RegResultSeq] == p.seq {
			return o, time.Since(start), true
		}
		if time.Since(start) > timeout {
			return o, time.Since(start), false
		}
		time.Sleep(500 * time.Microsecond)
	}
}

func verdictCode(decision string) uint16 {
	switch decision {
	case store.Pass:
		return plcreg.VerdictOK
	case store.Fail:
		return plcreg.VerdictNG
	}
	return plcreg.VerdictNoDecision
}

// The PLC triggers 1,000 parts; every one is answered within plc.answer_timeout with the
// verdict the model gives the image the camera took for it.
func TestPLCServerThousandTriggers(t *testing.T) {
	want := expectedDecisions(t)
	cfg := plcConfig(t)
	a, err := New(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	origin := map[string]string{} // trigger serial -> image file the camera took
	a.onCommit = func(v store.Verdict, f camera.Frame) {
		mu.Lock()
		origin[v.Serial] = f.Origin
		mu.Unlock()
	}
	r := startAgentWith(t, a)
	plc := dialPLC(t, cfg.PLC.Listen, cfg.PLC.InBase, cfg.PLC.OutBase)
	waitFor(t, "ready register", 10*time.Second, func() bool { return plc.outs()[plcreg.RegReady] == 1 })
	hb := plc.outs()[plcreg.RegHeartbeat]
	timeout := cfg.PLC.AnswerTimeout

	n := 1000
	if raceEnabled {
		n = 200 // `make test` also runs this test without -race, at 1,000
	}
	var lat []time.Duration
	counts := map[uint16]int{}
	st := r.a.live.Load().st
	for i := 1; i <= n; i++ {
		serial := fmt.Sprintf("P%05d", i)
		o, took, ok := plc.trigger(serial, timeout+time.Second)
		if !ok || took > timeout {
			t.Fatalf("trigger %d (%s): answered=%v after %s, want an answer within %s", i, serial, ok, took, timeout)
		}
		lat = append(lat, took)
		if o[plcreg.RegResultCode] == plcreg.ResultTimeout || o[plcreg.RegResultCode] == plcreg.ResultRejected {
			t.Fatalf("trigger %d: fail-safe answer (result code %d), want a verdict", i, o[plcreg.RegResultCode])
		}
		id := uint64(o[plcreg.RegVerdictID])<<16 | uint64(o[plcreg.RegVerdictID+1])
		v, err := st.Get(id)
		if err != nil || v.Serial != serial {
			t.Fatalf("trigger %d: verdict id %d in the registers: store has serial %q (%v), want %s", i, id, v.Serial, err, serial)
		}
		mu.Lock()
		img := origin[serial]
		mu.Unlock()
		exp, known := want[fileBase(img)]
		if !known {
			t.Fatalf("trigger %d: the camera took %q, not an image of the run", i, img)
		}
		if got := o[plcreg.RegVerdict]; got != verdictCode(exp) || got != verdictCode(v.Decision) || o[plcreg.RegResultCode] != plcreg.ResultCode(v) {
			t.Fatalf("trigger %d (%s, image %s): registers verdict=%d result=%d, want verdict %d (%s) result %d; store says %s",
				i, serial, fileBase(img), got, o[plcreg.RegResultCode], verdictCode(exp), exp, plcreg.ResultCode(v), v.Decision)
		}
		if o[plcreg.RegScore] == 65535 || (exp == store.Fail) != (o[plcreg.RegScore] > 1000) {
			t.Fatalf("trigger %d: score register %d does not match %s (1000 = threshold)", i, o[plcreg.RegScore], exp)
		}
		counts[o[plcreg.RegVerdict]]++
	}
	o := plc.outs()
	if o[plcreg.RegBusy] != 0 || o[plcreg.RegReady] != 1 || o[plcreg.RegHold] != 0 {
		t.Errorf("after the run: busy=%d ready=%d hold=%d, want 0 1 0", o[plcreg.RegBusy], o[plcreg.RegReady], o[plcreg.RegHold])
	}
	if o[plcreg.RegHeartbeat] == hb {
		t.Errorf("heartbeat register stayed at %d", hb)
	}
	slices.Sort(lat)
	t.Logf("%d triggers: OK=%d NG=%d NO_DECISION=%d; answer p50=%s p99=%s max=%s", n, counts[plcreg.VerdictOK], counts[plcreg.VerdictNG],
		counts[plcreg.VerdictNoDecision], lat[n/2], lat[n*99/100], lat[n-1])
	if counts[plcreg.VerdictOK] == 0 || counts[plcreg.VerdictNG] == 0 {
		t.Errorf("got %v verdicts, want both OK and NG parts", counts)
	}
	// The out block is read-only for the PLC, and outside the map is no register.
	if err := plc.c.WriteRegister(uint16(cfg.PLC.OutBase)+plcreg.RegVerdict, 1); err != modbus.ErrIllegalDataAddress {
		t.Errorf("write to the out block: got %v, want illegal data address", err)
	}
	if _, err := plc.c.ReadRegisters(50, 2, modbus.HOLDING_REGISTER); err != modbus.ErrIllegalDataAddress {
		t.Errorf("read outside the map: got %v, want illegal data address", err)
	}
	if in, err := plc.c.ReadRegisters(uint16(cfg.PLC.OutBase), plcreg.OutLen, modbus.INPUT_REGISTER); err != nil || in[plcreg.RegResultSeq] != plc.seq {
		t.Errorf("out block as input registers: got %v (%v), want result_seq %d", in, err, plc.seq)
	}
}

func fileBase(p string) string {
	b := p
	for i := len(p) - 1; i >= 0; i-- {
		if p[i] == '/' {
			b = p[i+1:]
			break
		}
	}
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] == '.' {
			return b[:i]
		}
	}
	return b
}

// When no verdict can come in time the PLC gets the configured fail-safe.
func TestPLCFailSafe(t *testing.T) {
	for _, tc := range []struct {
		name     string
		change   func(*Config)
		verdict  uint16
		result   uint16
		hold     uint16
		maxTaken time.Duration
	}{
		{"ng when the camera has no frame in time", func(c *Config) {
			c.Camera.FPS, c.Camera.TriggerWindow, c.Camera.ReadTimeout = 0.1, 0, 20*time.Second
			c.PLC.AnswerTimeout = 150 * time.Millisecond
		}, plcreg.VerdictNG, plcreg.ResultTimeout, 0, time.Second},
		{"hold when the camera has no frame in time", func(c *Config) {
			c.Camera.FPS, c.Camera.TriggerWindow, c.Camera.ReadTimeout = 0.1, 0, 20*time.Second
			c.PLC.AnswerTimeout, c.PLC.FailSafe = 150*time.Millisecond, FailSafeHold
		}, plcreg.VerdictNoDecision, plcreg.ResultTimeout, 1, time.Second},
		{"ng when the camera cannot be triggered", func(c *Config) {
			c.Camera.Mode, c.Camera.TriggerWindow, c.Camera.FPS = camera.ModeStream, 0, 5
		}, plcreg.VerdictNG, plcreg.ResultRejected, 0, time.Second},
		{"NO_DECISION from the agent when the trigger gets no frame", func(c *Config) {
			c.Camera.FPS, c.Camera.TriggerWindow, c.Camera.ReadTimeout = 0.1, 0, 200*time.Millisecond
			c.PLC.AnswerTimeout = 3 * time.Second
		}, plcreg.VerdictNoDecision, plcreg.ResultNoFrame, 0, 2 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := plcConfig(t)
			tc.change(&cfg)
			r := startAgent(t, cfg)
			plc := dialPLC(t, cfg.PLC.Listen, cfg.PLC.InBase, cfg.PLC.OutBase)
			time.Sleep(200 * time.Millisecond) // past the frame captured at open
			o, took, ok := plc.trigger("FS-1", 5*time.Second)
			if !ok || took > tc.maxTaken {
				t.Fatalf("answered=%v after %s, want an answer within %s", ok, took, tc.maxTaken)
			}
			if o[plcreg.RegVerdict] != tc.verdict || o[plcreg.RegResultCode] != tc.result || o[plcreg.RegHold] != tc.hold {
				t.Fatalf("got verdict=%d result=%d hold=%d, want %d %d %d", o[plcreg.RegVerdict], o[plcreg.RegResultCode], o[plcreg.RegHold], tc.verdict, tc.result, tc.hold)
			}
			if tc.hold == 1 {
				if o[plcreg.RegReady] != 0 {
					t.Fatalf("ready=%d during hold, want 0", o[plcreg.RegReady])
				}
				// The next trigger releases the hold.
				plc.seq++
				plc.c.WriteRegister(uint16(cfg.PLC.InBase), plc.seq)
				if o := plc.outs(); o[plcreg.RegHold] != 0 || o[plcreg.RegBusy] != 1 {
					t.Fatalf("after a new trigger: hold=%d busy=%d, want 0 1", o[plcreg.RegHold], o[plcreg.RegBusy])
				}
			}
			fs, _ := sample(scrapeLive(t, r), "takt_plc_fail_safe_total", nil)
			if wantFS := tc.result == plcreg.ResultTimeout || tc.result == plcreg.ResultRejected; (fs >= 1) != wantFS {
				t.Fatalf("takt_plc_fail_safe_total = %v, want fail-safe counted: %v", fs, wantFS)
			}
		})
	}
}

// The agent as Modbus client: it polls the PLC's registers (the PLC is the server here).
func TestPLCClientMode(t *testing.T) {
	plcAddr := freePort(t)
	bank := &regBank{}
	srv, err := modbus.NewServer(&modbus.ServerConfiguration{URL: "tcp://" + plcAddr, MaxClients: 2}, bank)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	bank.set(1000, []uint16{7}) // a trigger_seq left from before the agent started: not a trigger

	cfg := plcConfig(t)
	cfg.PLC.Mode, cfg.PLC.Address, cfg.PLC.InBase, cfg.PLC.OutBase = PLCClient, plcAddr, 1000, 1100
	cfg.PLC.Poll = 5 * time.Millisecond
	r := startAgent(t, cfg)
	waitFor(t, "the agent to write ready to the PLC", 10*time.Second, func() bool { return bank.get(1100+plcreg.RegReady, 1)[0] == 1 })
	if got := r.a.live.Load().plcStatus(); got != "connected to "+plcAddr {
		t.Fatalf("plc status %q, want connected", got)
	}
	seq := uint16(7)
	for i := 1; i <= 30; i++ {
		seq++
		serial := fmt.Sprintf("C%03d", i)
		bank.set(1001, plcreg.EncodeSerial(serial))
		start := time.Now()
		bank.set(1000, []uint16{seq})
		waitFor(t, fmt.Sprintf("answer to trigger %d", i), cfg.PLC.AnswerTimeout, func() bool { return bank.get(1100+plcreg.RegResultSeq, 1)[0] == seq })
		o := bank.get(1100, plcreg.OutLen)
		id := uint64(o[plcreg.RegVerdictID])<<16 | uint64(o[plcreg.RegVerdictID+1])
		v, err := r.a.live.Load().st.Get(id)
		if err != nil || v.Serial != serial || o[plcreg.RegVerdict] != verdictCode(v.Decision) {
			t.Fatalf("trigger %d after %s: registers %v, store %+v (%v)", i, time.Since(start), o, v, err)
		}
	}
	c, _ := r.a.live.Load().st.Counts()
	if c.Total != 30 {
		t.Fatalf("store holds %d verdicts, want 30 (the stale trigger_seq must not trigger)", c.Total)
	}
}

// regBank is the test PLC's register memory.
type regBank struct {
	mu   sync.Mutex
	regs [65536]uint16
}

func (b *regBank) set(addr int, vals []uint16) {
	b.mu.Lock()
	copy(b.regs[addr:], vals)
	b.mu.Unlock()
}

func (b *regBank) get(addr, n int) []uint16 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]uint16(nil), b.regs[addr:addr+n]...)
}

func (b *regBank) HandleHoldingRegisters(req *modbus.HoldingRegistersRequest) ([]uint16, error) {
	if req.IsWrite {
		b.set(int(req.Addr), req.Args)
		return nil, nil
	}
	return b.get(int(req.Addr), int(req.Quantity)), nil
}
func (b *regBank) HandleInputRegisters(*modbus.InputRegistersRequest) ([]uint16, error) {
	return nil, modbus.ErrIllegalFunction
}
func (b *regBank) HandleCoils(*modbus.CoilsRequest) ([]bool, error) {
	return nil, modbus.ErrIllegalFunction
}
func (b *regBank) HandleDiscreteInputs(*modbus.DiscreteInputsRequest) ([]bool, error) {
	return nil, modbus.ErrIllegalFunction
}

func TestPLCConfigValidation(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*PLCConfig)
		want   string
	}{
		{"mode", func(c *PLCConfig) { c.Mode = "master" }, "plc.mode"},
		{"client without address", func(c *PLCConfig) { c.Mode = PLCClient }, "plc.address"},
		{"bad listen", func(c *PLCConfig) { c.Mode = PLCServer; c.Listen = "1502" }, "plc.listen"},
		{"overlap", func(c *PLCConfig) { c.Mode = PLCServer; c.OutBase = 5 }, "overlap"},
		{"fail safe", func(c *PLCConfig) { c.Mode = PLCServer; c.FailSafe = "pass" }, "plc.fail_safe"},
		{"unit id", func(c *PLCConfig) { c.Mode = PLCServer; c.UnitID = 300 }, "plc.unit_id"},
		{"heartbeat", func(c *PLCConfig) { c.Mode = PLCServer; c.Heartbeat = 0 }, "plc.heartbeat"},
	} {
		c := defaultPLCConfig()
		tc.change(&c)
		if err := c.validate(); err == nil || !containsStr(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}
