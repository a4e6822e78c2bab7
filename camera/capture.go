package camera

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// State is where a camera's connection stands.
type State string

// States a Camera reports.
const (
	StateConnecting   State = "connecting"   // first open in progress (inside Open only)
	StateConnected    State = "connected"    // frames are coming
	StateStalled      State = "stalled"      // an open or read overran its deadline; waiting to reconnect
	StateReconnecting State = "reconnecting" // the source failed or stalled; reopening with backoff
	StateEnded        State = "ended"        // a folder or file reached its end (no loop)
	StateClosed       State = "closed"       // Close was called
)

// Stats counts what a camera did since Open.
type Stats struct {
	Frames        uint64   // frames captured and copied out of OpenCV
	Dropped       uint64   // free_run: captured frames that no Read returned (latest wins)
	Corrupt       uint64   // frames or files OpenCV could not decode, skipped with a warning
	Stalls        uint64   // opens or reads that overran their deadline
	Reconnects    uint64   // successful reopens after a stall or an error
	Abandoned     uint64   // captures given up while inside an OpenCV call, never waited on
	Stuck         int64    // of those, how many are still inside that call now
	Triggers      uint64   // triggers accepted
	TriggerMisses uint64   // triggers answered with a FrameError: no frame could be had
	Refused       []string // device settings the driver refused, e.g. "exposure 120 (driver gives 250)"
}

// Trigger asks a triggered camera for the part that is in place now.
type Trigger struct {
	// Serial is the part's serial from the line (PLC, MQTT cmd/trigger, HTTP); it is copied
	// into the Frame or FrameError that answers the trigger. May be empty.
	Serial string
	// Time is when the part was in place; zero means when Trigger is called.
	Time time.Time
}

// Option changes how Open and OpenSet set a camera up.
type Option func(*options)

type options struct {
	log  zerolog.Logger
	wake chan struct{}
}

// WithLogger gives the camera a logger; it adds component=camera and camera=<id>. The
// default logs nothing.
func WithLogger(log zerolog.Logger) Option { return func(o *options) { o.log = log } }

// capture reads frames from one opened source. One goroutine uses it at a time.
type capture interface {
	// grab waits for the next frame and copies it into a buffer from p. It returns a
	// *badFrame for one frame that could not be decoded (the capture stays usable), io.EOF
	// at the end of a folder or file, and any other error when the capture is broken.
	grab(p *pool) (Frame, error)
	// pos is how far the capture got (files or frames of the current pass), for resuming
	// a folder or file after a reopen.
	pos() uint64
	close()
}

// opener opens a capture for cfg, resuming a folder or file at resume. It returns the
// device settings the driver refused.
type opener func(cfg Config, resume uint64) (cp capture, refused []string, err error)

// badFrame is a failure to decode one frame; the capture stays usable.
type badFrame struct {
	origin string
	err    error
}

func (e *badFrame) Error() string { return e.origin + ": " + e.err.Error() }

// stallError says an OpenCV call overran its deadline.
type stallError struct {
	call  string // "open" or "read"
	limit time.Duration
}

func (e *stallError) Error() string {
	return fmt.Sprintf("%s gave no answer within %v", e.call, e.limit)
}

// pool recycles pixel buffers. get never blocks; put drops buffers beyond its capacity.
type pool struct{ free chan []byte }

func newPool(n int) *pool { return &pool{free: make(chan []byte, n)} }

func (p *pool) get(n int) []byte {
	select {
	case b := <-p.free:
		if cap(b) >= n {
			return b[:n]
		}
	default:
	}
	return make([]byte, n)
}

func (p *pool) put(b []byte) {
	if cap(b) == 0 {
		return
	}
	select {
	case p.free <- b:
	default:
	}
}

// Call states of a session, in session.call.
const (
	callIdle  int32 = iota // between OpenCV calls
	callOpen               // inside open
	callRead               // inside grab
	callStuck              // abandoned while inside a call: the session cleans up if it returns
	callGone               // abandoned between calls
)

// session is one opened capture and the goroutine that reads it. The supervisor abandons a
// session instead of closing its capture: only the session's goroutine touches the capture.
type session struct {
	quit     chan struct{} // closed when abandoned
	exited   chan struct{} // closed when the goroutine has released the capture
	events   chan error    // nil: opened; non-nil: the session ended with this error
	want     chan struct{} // stream mode: the slot was emptied; look again
	call     atomic.Int32
	since    atomic.Int64 // start of the current call, unix nanoseconds
	gotFrame atomic.Bool
	counted  bool // abandoned by a stall and counted in Stats.Stuck; guarded by Camera.mu
}

func newSession() *session {
	return &session{quit: make(chan struct{}), exited: make(chan struct{}), events: make(chan error, 2), want: make(chan struct{}, 1)}
}

func (s *session) enter(call int32) bool {
	s.since.Store(time.Now().UnixNano())
	return s.call.CompareAndSwap(callIdle, call)
}

// leave reports false when the session was abandoned during the call.
func (s *session) leave(call int32) bool { return s.call.CompareAndSwap(call, callIdle) }

// abandon tells the session to stop; it reports whether the session was inside an OpenCV
// call, which it will finish on its own time (or never).
func (s *session) abandon() (stuck bool) {
	for {
		switch v := s.call.Load(); v {
		case callIdle:
			if s.call.CompareAndSwap(callIdle, callGone) {
				close(s.quit)
				return false
			}
		case callOpen, callRead:
			if s.call.CompareAndSwap(v, callStuck) {
				close(s.quit)
				return true
			}
		default:
			return false
		}
	}
}

type pendingTrigger struct {
	t        Trigger
	f        Frame
	err      error
	done     bool
	deadline time.Time
}

// Camera is one opened camera: a Source with a capture goroutine, reconnect, capture modes
// and triggers. Its methods are safe for concurrent use; Read serves one reader at a time.
type Camera struct {
	cfg  Config
	log  zerolog.Logger
	open opener
	pool *pool
	wake chan struct{} // one reader waits on it; shared by the cameras of a Set

	readMu sync.Mutex
	timer  *time.Timer
	self   []*Camera
	next   int

	closeOnce sync.Once
	done      chan struct{}
	supDone   chan struct{}

	mu         sync.Mutex
	state      State
	why        error
	sess       *session
	stats      Stats
	seq        uint64
	resume     uint64
	slot       Frame // stream mode: the frame read ahead
	slotErr    error
	slotFull   bool
	slotTaken  bool    // stream mode: the slot went to a reader that was waiting for it
	sessWait   bool    // stream mode: the session waits for the slot to be emptied
	readerWait bool    // a reader found nothing to return and waits for a wake-up
	ring       []Frame // free_run and triggered: recent frames not handed out
	ringNext   int
	lastRet    uint64
	outageSeen bool // ErrStalled was returned for the current outage
	pending    []*pendingTrigger
}

var _ Source = (*Camera)(nil)

// start opens the first capture (within OpenTimeout) and starts the supervisor.
func start(cfg Config, open opener, opts ...Option) (*Camera, error) {
	o := options{log: zerolog.Nop()}
	for _, opt := range opts {
		opt(&o)
	}
	cfg = cfg.withDefaults()
	if o.wake == nil {
		o.wake = make(chan struct{}, 1)
	}
	c := &Camera{
		cfg:     cfg,
		log:     o.log.With().Str("component", "camera").Str("camera", cfg.ID).Logger(),
		open:    open,
		pool:    newPool(cfg.Ring + 8),
		wake:    o.wake,
		timer:   time.NewTimer(time.Hour),
		done:    make(chan struct{}),
		supDone: make(chan struct{}),
		state:   StateConnecting,
		ring:    make([]Frame, cfg.Ring),
	}
	c.timer.Stop()
	c.self = []*Camera{c}
	s := newSession()
	c.sess = s
	go c.runSession(s)
	t := time.NewTimer(cfg.OpenTimeout)
	defer t.Stop()
	select {
	case err := <-s.events:
		if err != nil {
			return nil, err
		}
	case <-t.C:
		s.abandon()
		return nil, fmt.Errorf("camera %s: open %s: %w: %w", cfg.ID, cfg.source(), &stallError{call: "open", limit: cfg.OpenTimeout}, ErrStalled)
	}
	c.mu.Lock()
	c.state = StateConnected
	c.mu.Unlock()
	c.log.Info().Str("kind", cfg.Kind).Str("mode", cfg.Mode).Str("source", cfg.source()).Msg("camera connected")
	go c.supervise(s)
	return c, nil
}

// ID is the camera's id.
func (c *Camera) ID() string { return c.cfg.ID }

// Config is the camera's configuration with defaults filled in.
func (c *Camera) Config() Config { return c.cfg }

// State is the camera's connection state now.
func (c *Camera) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// Stats returns the camera's counters.
func (c *Camera) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stats
	s.Refused = append([]string(nil), s.Refused...)
	return s
}

// Recycle gives the pixel buffer of a frame this camera returned back to its pool. The
// caller must not use f.Pix afterwards. Optional: frames not recycled are garbage collected.
func (c *Camera) Recycle(f Frame) { c.pool.put(f.Pix) }

func (c *Camera) poke() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// runSession opens a capture and reads it until it fails or is abandoned.
func (c *Camera) runSession(s *session) {
	defer close(s.exited)
	if !s.enter(callOpen) {
		return
	}
	c.mu.Lock()
	resume := c.resume
	c.mu.Unlock()
	cp, refused, err := c.open(c.cfg, resume)
	if !s.leave(callOpen) {
		if cp != nil {
			cp.close()
		}
		c.unstuck(s)
		return
	}
	if err != nil {
		s.events <- err
		return
	}
	if len(refused) > 0 {
		c.mu.Lock()
		c.stats.Refused = refused
		c.mu.Unlock()
		for _, r := range refused {
			c.log.Warn().Str("setting", r).Msg("camera refused a setting")
		}
	}
	s.events <- nil
	defer cp.close()
	pace := newPacer(c.cfg.FPS)
	if c.cfg.Live() {
		pace = pacer{}
	}
	for {
		if c.cfg.Mode == ModeStream {
			if !c.streamTurn(s, false) {
				return
			}
		} else {
			select {
			case <-s.quit:
				return
			default:
			}
		}
		if !pace.wait(s.quit) {
			return
		}
		if !s.enter(callRead) {
			return
		}
		f, err := cp.grab(c.pool)
		if !s.leave(callRead) {
			c.pool.put(f.Pix)
			c.unstuck(s)
			return
		}
		var ferr error
		if err == nil {
			s.gotFrame.Store(true)
		} else if bad := (*badFrame)(nil); errors.As(err, &bad) {
			f, ferr = Frame{Origin: bad.origin}, bad.err
		} else {
			s.events <- err
			return
		}
		if c.cfg.Mode == ModeStream && !c.streamTurn(s, true) {
			c.pool.put(f.Pix)
			return
		}
		c.deliver(s, f, ferr, cp.pos())
	}
}

// streamTurn waits in stream mode until the session may go on, false if it was abandoned
// first. It may start reading the next frame when the slot is empty or its frame went to a
// reader that was already waiting for it (so the capture stays one frame ahead of the
// reader without waiting for it to wake up), and it may deliver when the slot is empty.
func (c *Camera) streamTurn(s *session, deliver bool) bool {
	for {
		c.mu.Lock()
		ok := !c.slotFull || (c.slotTaken && !deliver)
		c.sessWait = !ok
		c.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-s.want:
		case <-s.quit:
			return false
		}
	}
}

// unstuck is called by an abandoned session whose OpenCV call finally returned.
func (c *Camera) unstuck(s *session) {
	c.mu.Lock()
	counted := s.counted
	if counted {
		c.stats.Stuck--
	}
	c.mu.Unlock()
	if counted {
		c.log.Info().Msg("an abandoned capture returned from OpenCV and was closed")
	}
}

// deliver hands a captured frame (or a per-frame error) to the reader side.
func (c *Camera) deliver(s *session, f Frame, ferr error, pos uint64) {
	c.mu.Lock()
	if c.sess != s || c.state == StateClosed {
		c.mu.Unlock()
		c.pool.put(f.Pix)
		return
	}
	c.seq++
	c.resume = pos
	f.CameraID, f.Seq = c.cfg.ID, c.seq
	stream := c.cfg.Mode == ModeStream
	wake := c.readerWait // a reader waits for what this frame brings
	if ferr != nil {
		c.stats.Corrupt++
		wake = wake && stream
		if stream {
			c.slotErr, c.slotFull, c.slotTaken = &FrameError{CameraID: c.cfg.ID, Seq: f.Seq, Origin: f.Origin, Err: ferr}, true, wake
		}
		if wake {
			c.readerWait = false
		}
		c.mu.Unlock()
		c.log.Warn().Str("origin", f.Origin).Uint64("seq", f.Seq).Err(ferr).Msg("frame skipped")
		if wake {
			c.poke()
		}
		return
	}
	c.stats.Frames++
	switch c.cfg.Mode {
	case ModeStream:
		c.slot, c.slotErr, c.slotFull, c.slotTaken = f, nil, true, wake
	case ModeFreeRun:
		c.push(f)
	case ModeTriggered:
		if !c.answer(f) {
			c.push(f)
			wake = false
		}
	}
	if wake {
		c.readerWait = false
	}
	c.mu.Unlock()
	if wake {
		c.poke()
		// Let the reader run on this thread now, before the next OpenCV call: left in this
		// P's run queue during a cgo call it has to be stolen by another thread (with the
		// scheduler's back-off sleep), and sysmon goes back to polling every 20us to retake
		// the P. That cost more CPU per frame than everything else Camera does.
		runtime.Gosched()
	}
}

// push puts f in the ring, recycling the oldest frame nobody took.
func (c *Camera) push(f Frame) {
	old := c.ring[c.ringNext]
	c.pool.put(old.Pix)
	c.ring[c.ringNext] = f
	c.ringNext = (c.ringNext + 1) % len(c.ring)
}

// answer gives f to every waiting trigger it came after; the first gets f, the others a copy.
func (c *Camera) answer(f Frame) bool {
	used := false
	for _, p := range c.pending {
		if p.done || !f.Time.After(p.t.Time) {
			continue
		}
		g := f
		if used {
			g.Pix = c.pool.get(len(f.Pix))
			copy(g.Pix, f.Pix)
		}
		p.f, p.done, used = g, true, true
	}
	return used
}

// setStateLocked changes the state; leaving connected fails the waiting triggers.
func (c *Camera) setStateLocked(st State, why error) {
	if c.state == StateClosed {
		return
	}
	c.state, c.why = st, why
	if st == StateConnected {
		c.outageSeen = false
		return
	}
	for _, p := range c.pending {
		if !p.done {
			p.done, p.err = true, c.outageLocked()
		}
	}
}

func (c *Camera) outageLocked() error {
	if c.state == StateClosed {
		return ErrClosed
	}
	if c.why != nil {
		return fmt.Errorf("camera %s is %s (%v): %w", c.cfg.ID, c.state, c.why, ErrStalled)
	}
	return fmt.Errorf("camera %s is %s: %w", c.cfg.ID, c.state, ErrStalled)
}

var errQuit = errors.New("camera closed")

// supervise watches the session, declares stalls, and reopens with exponential backoff.
func (c *Camera) supervise(s *session) {
	defer close(c.supDone)
	backoff := c.cfg.ReconnectMin
	every := min(max(c.cfg.ReadTimeout/10, 5*time.Millisecond), 100*time.Millisecond)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		err := c.watch(s, tick)
		if err == errQuit {
			return
		}
		if s.gotFrame.Load() {
			backoff = c.cfg.ReconnectMin
		}
		if errors.Is(err, io.EOF) && !c.cfg.Live() {
			c.mu.Lock()
			c.setStateLocked(StateEnded, io.EOF)
			c.mu.Unlock()
			c.poke()
			c.log.Info().Msg("source ended")
			return
		}
		st := StateReconnecting
		var stall *stallError
		c.mu.Lock()
		if errors.As(err, &stall) {
			st = StateStalled
			c.stats.Stalls++
		}
		c.setStateLocked(st, err)
		c.mu.Unlock()
		c.poke()
		c.log.Warn().Err(err).Str("state", string(st)).Dur("retry_in", backoff).Msg("camera lost")
		t := time.NewTimer(backoff)
		select {
		case <-c.done:
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(backoff*2, c.cfg.ReconnectMax)
		c.mu.Lock()
		s = newSession()
		c.sess = s
		c.setStateLocked(StateReconnecting, err)
		c.mu.Unlock()
		go c.runSession(s)
	}
}

// watch returns when the session ends (its error), overruns a deadline (*stallError) or the
// camera closes (errQuit).
func (c *Camera) watch(s *session, tick *time.Ticker) error {
	for {
		select {
		case <-c.done:
			s.abandon()
			return errQuit
		case err := <-s.events:
			if err != nil {
				return err
			}
			c.mu.Lock()
			reconnected := c.state != StateConnected
			if reconnected {
				c.stats.Reconnects++
			}
			c.setStateLocked(StateConnected, nil)
			c.mu.Unlock()
			if reconnected {
				c.log.Info().Msg("camera reconnected")
			}
			c.poke()
		case now := <-tick.C:
			call := s.call.Load()
			if call != callOpen && call != callRead {
				continue
			}
			limit, what := c.cfg.ReadTimeout, "read"
			if call == callOpen {
				limit, what = c.cfg.OpenTimeout, "open"
			}
			if now.Sub(time.Unix(0, s.since.Load())) <= limit {
				continue
			}
			c.mu.Lock()
			if s.abandon() {
				s.counted = true
				c.stats.Abandoned++
				c.stats.Stuck++
			}
			c.mu.Unlock()
			return &stallError{call: what, limit: limit}
		}
	}
}

// Trigger asks for the frame of the part in place now (triggered mode). It does not wait:
// Read returns the answers in trigger order, a Frame with t.Serial or a FrameError saying
// why no frame could be had. It returns ErrNotTriggered, ErrTriggerBusy or ErrClosed
// without queueing the trigger.
func (c *Camera) Trigger(t Trigger) error {
	if c.cfg.Mode != ModeTriggered {
		return fmt.Errorf("camera %s: %w (mode %s)", c.cfg.ID, ErrNotTriggered, c.cfg.Mode)
	}
	if t.Time.IsZero() {
		t.Time = time.Now()
	}
	c.mu.Lock()
	if c.state == StateClosed {
		c.mu.Unlock()
		return ErrClosed
	}
	if len(c.pending) >= MaxPendingTriggers {
		c.mu.Unlock()
		return fmt.Errorf("camera %s: %w (%d)", c.cfg.ID, ErrTriggerBusy, MaxPendingTriggers)
	}
	p := &pendingTrigger{t: t, deadline: t.Time.Add(c.cfg.ReadTimeout)}
	c.stats.Triggers++
	if c.state != StateConnected {
		p.done, p.err = true, c.outageLocked()
	} else if i := c.ringMatch(t.Time); i >= 0 {
		p.f, p.done = c.ring[i], true
		c.ring[i] = Frame{}
	}
	c.pending = append(c.pending, p)
	c.mu.Unlock()
	c.poke()
	return nil
}

// ringMatch finds a ring frame for a trigger at t: the oldest captured after t, else, with
// a TriggerWindow, the newest captured within the window before t; -1 if none.
func (c *Camera) ringMatch(t time.Time) int {
	after, before := -1, -1
	for i, f := range c.ring {
		if f.Pix == nil {
			continue
		}
		if f.Time.After(t) {
			if after < 0 || f.Seq < c.ring[after].Seq {
				after = i
			}
		} else if c.cfg.TriggerWindow > 0 && t.Sub(f.Time) <= c.cfg.TriggerWindow {
			if before < 0 || f.Seq > c.ring[before].Seq {
				before = i
			}
		}
	}
	if after >= 0 {
		return after
	}
	return before
}

// tryRead returns the next answer without blocking: ok is false when there is none yet, and
// wakeAt, if not zero, is when the reader must look again even without a wake-up.
func (c *Camera) tryRead(now time.Time) (f Frame, ok bool, wakeAt time.Time, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.readerWait = false
	switch c.cfg.Mode {
	case ModeTriggered:
		if len(c.pending) > 0 {
			p := c.pending[0]
			if !p.done && now.After(p.deadline) {
				p.done, p.err = true, fmt.Errorf("camera %s: no frame within read_timeout %v after the trigger: %w", c.cfg.ID, c.cfg.ReadTimeout, ErrStalled)
			}
			if !p.done {
				c.readerWait = true
				return Frame{}, false, p.deadline, nil
			}
			c.pending[0] = nil
			c.pending = c.pending[1:]
			if p.err != nil {
				c.stats.TriggerMisses++
				return Frame{}, true, time.Time{}, &FrameError{CameraID: c.cfg.ID, Serial: p.t.Serial, Err: p.err}
			}
			p.f.Serial = p.t.Serial
			c.lastRet = p.f.Seq
			return p.f, true, time.Time{}, nil
		}
	case ModeStream:
		if c.slotFull {
			f, err := c.slot, c.slotErr
			c.slot, c.slotErr, c.slotFull = Frame{}, nil, false
			c.slotTaken = false
			if c.sessWait {
				c.sessWait = false
				select {
				case c.sess.want <- struct{}{}:
				default:
				}
			}
			if err == nil {
				c.lastRet = f.Seq
			}
			return f, true, time.Time{}, err
		}
	case ModeFreeRun:
		newest := -1
		for i, g := range c.ring {
			if g.Pix != nil && g.Seq > c.lastRet && (newest < 0 || g.Seq > c.ring[newest].Seq) {
				newest = i
			}
		}
		if newest >= 0 {
			f := c.ring[newest]
			c.ring[newest] = Frame{}
			c.stats.Dropped += f.Seq - c.lastRet - 1
			c.lastRet = f.Seq
			return f, true, time.Time{}, nil
		}
	}
	switch c.state {
	case StateClosed:
		return Frame{}, true, time.Time{}, ErrClosed
	case StateEnded:
		return Frame{}, true, time.Time{}, io.EOF
	case StateStalled, StateReconnecting:
		if c.cfg.Mode != ModeTriggered && !c.outageSeen {
			c.outageSeen = true
			return Frame{}, true, time.Time{}, c.outageLocked()
		}
	}
	c.readerWait = true
	return Frame{}, false, time.Time{}, nil
}

// Read returns the next frame as Config.Mode says (see the package doc). It blocks until
// there is one, ctx is done, or the camera ends or closes; it never waits on OpenCV.
// Errors: a *FrameError for one frame or trigger that got no image (the camera stays
// usable), an error wrapping ErrStalled once per outage (stream and free_run; Read keeps
// waiting for the reconnect when called again), io.EOF at the end of a folder or file,
// ErrClosed after Close, or ctx's error.
func (c *Camera) Read(ctx context.Context) (Frame, error) {
	c.readMu.Lock()
	defer c.readMu.Unlock()
	return readAny(ctx, c.self, c.wake, c.timer, &c.next)
}

// readAny reads the cameras round robin; it returns io.EOF when every one has ended.
func readAny(ctx context.Context, cams []*Camera, wake chan struct{}, timer *time.Timer, next *int) (Frame, error) {
	for {
		if err := ctx.Err(); err != nil {
			return Frame{}, err
		}
		var wakeAt time.Time
		ended := 0
		now := time.Now()
		for i := range cams {
			c := cams[(*next+i)%len(cams)]
			f, ok, at, err := c.tryRead(now)
			if ok && errors.Is(err, io.EOF) && len(cams) > 1 {
				ended++
				continue
			}
			if ok {
				*next = (*next + i + 1) % len(cams)
				return f, err
			}
			if !at.IsZero() && (wakeAt.IsZero() || at.Before(wakeAt)) {
				wakeAt = at
			}
		}
		if ended == len(cams) {
			return Frame{}, io.EOF
		}
		var tc <-chan time.Time
		if !wakeAt.IsZero() {
			timer.Reset(time.Until(wakeAt) + time.Millisecond)
			tc = timer.C
		}
		select {
		case <-ctx.Done():
		case <-wake:
		case <-tc:
		}
		if tc != nil {
			timer.Stop()
		}
	}
}

// Close stops the capture and releases the source. It waits at most ReadTimeout for an
// OpenCV call in progress to return; a call stuck longer is abandoned, not waited on.
func (c *Camera) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.setStateLocked(StateClosed, ErrClosed)
		c.state = StateClosed
		s := c.sess
		for i := range c.ring {
			c.pool.put(c.ring[i].Pix)
			c.ring[i] = Frame{}
		}
		c.mu.Unlock()
		close(c.done)
		c.poke()
		<-c.supDone
		if s != nil {
			t := time.NewTimer(c.cfg.ReadTimeout)
			defer t.Stop()
			select {
			case <-s.exited:
			case <-t.C:
				c.log.Warn().Msg("capture still inside OpenCV at close; abandoned")
			}
		}
	})
	return nil
}

// pacer spaces reads 1/fps apart.
type pacer struct {
	interval time.Duration
	next     time.Time
	timer    *time.Timer
}

func newPacer(fps float64) pacer {
	if fps <= 0 {
		return pacer{}
	}
	return pacer{interval: time.Duration(float64(time.Second) / fps)}
}

// wait blocks until the next frame is due; false if quit closed first.
func (p *pacer) wait(quit <-chan struct{}) bool {
	if p.interval == 0 {
		return true
	}
	now := time.Now()
	if p.next.After(now) {
		if p.timer == nil {
			p.timer = time.NewTimer(p.next.Sub(now))
		} else {
			p.timer.Reset(p.next.Sub(now))
		}
		select {
		case <-quit:
			p.timer.Stop()
			return false
		case <-p.timer.C:
		}
		now = p.next
	}
	p.next = now.Add(p.interval)
	return true
}
