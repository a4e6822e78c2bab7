package cloudsync

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
	"github.com/rs/zerolog"

	"github.com/takt-edge/takt/cloudsync/wire"
)

// MQTTConfig configures a [Conn]: the broker, the client's identity and
// credentials, TLS, keepalive, session and reconnect timing. Every duration
// has a default in DefaultMQTTConfig.
type MQTTConfig struct {
	// Broker is the broker URL: tcp://host:port (also mqtt://), ssl://host:port
	// (also tls://, mqtts://), ws://host:port/path or wss://host:port/path.
	// Empty disables MQTT.
	Broker string `yaml:"broker"`
	// ClientID identifies the client to the broker; a persistent session
	// (CleanSession false) is kept under it.
	ClientID string `yaml:"client_id"`
	// Username and Password authenticate the client. The password is never
	// logged; prefer the environment (TAKT_MQTT_PASSWORD) to the file.
	Username string `yaml:"username"`
	Password Secret `yaml:"password"`
	// TLS configures ssl:// and wss:// brokers.
	TLS MQTTTLS `yaml:"tls"`
	// KeepAlive is the MQTT keepalive: the broker publishes the last will
	// when it heard nothing for 1.5 times this. Default 30s.
	KeepAlive time.Duration `yaml:"keepalive"`
	// CleanSession false keeps a persistent session at the broker: the
	// subscriptions and the QoS 1 messages for them that arrive while the
	// client is away. Default true.
	CleanSession bool `yaml:"clean_session"`
	// ConnectTimeout bounds one connection attempt. Default 10s.
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// ReconnectMin and ReconnectMax bound the wait between connection
	// attempts; it doubles per failed attempt (with jitter, never below half
	// of it) and starts over after a success. Defaults 500ms and 30s.
	ReconnectMin time.Duration `yaml:"reconnect_min"`
	ReconnectMax time.Duration `yaml:"reconnect_max"`
	// PublishTimeout bounds the wait for the broker's PUBACK. Default 10s.
	PublishTimeout time.Duration `yaml:"publish_timeout"`
}

// MQTTTLS holds the TLS files of an MQTT connection (PEM).
type MQTTTLS struct {
	// CA is a bundle of CA certificates that sign the broker's certificate;
	// empty trusts the system's roots.
	CA string `yaml:"ca"`
	// Cert and Key are the client certificate and key, for brokers that
	// require them (both or neither).
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// ServerName overrides the name checked in the broker's certificate.
	ServerName string `yaml:"server_name"`
}

// DefaultMQTTConfig returns the defaults: MQTT disabled (no broker).
func DefaultMQTTConfig() MQTTConfig {
	return MQTTConfig{
		KeepAlive:      30 * time.Second,
		CleanSession:   true,
		ConnectTimeout: 10 * time.Second,
		ReconnectMin:   500 * time.Millisecond,
		ReconnectMax:   30 * time.Second,
		PublishTimeout: 10 * time.Second,
	}
}

// Enabled reports whether a broker is configured.
func (c MQTTConfig) Enabled() bool { return strings.TrimSpace(c.Broker) != "" }

// ApplyEnv overrides the broker, username and password from TAKT_MQTT_BROKER,
// TAKT_MQTT_USERNAME and TAKT_MQTT_PASSWORD when they are set and not empty.
func (c *MQTTConfig) ApplyEnv(lookup func(string) (string, bool)) {
	if v, ok := lookup("TAKT_MQTT_BROKER"); ok && v != "" {
		c.Broker = v
	}
	if v, ok := lookup("TAKT_MQTT_USERNAME"); ok && v != "" {
		c.Username = v
	}
	if v, ok := lookup("TAKT_MQTT_PASSWORD"); ok && v != "" {
		c.Password = Secret(v)
	}
}

// Validate checks the config of an enabled connection; keys are named as in
// the agent's config file (mqtt.broker, ...).
func (c MQTTConfig) Validate() error {
	if !c.Enabled() {
		return nil
	}
	var errs []error
	if _, _, err := parseBroker(c.Broker); err != nil {
		errs = append(errs, fmt.Errorf("mqtt.broker: %w", err))
	}
	switch {
	case c.ClientID == "":
		errs = append(errs, errors.New("mqtt.client_id: must not be empty"))
	case len(c.ClientID) > 128 || strings.IndexFunc(c.ClientID, func(r rune) bool { return !unicode.IsPrint(r) || r == ' ' }) >= 0:
		errs = append(errs, fmt.Errorf("mqtt.client_id: %q must be at most 128 printable characters without spaces", c.ClientID))
	}
	if c.Password != "" && c.Username == "" {
		errs = append(errs, errors.New("mqtt.password: set, but mqtt.username is empty"))
	}
	if (c.TLS.Cert == "") != (c.TLS.Key == "") {
		errs = append(errs, errors.New("mqtt.tls.cert, mqtt.tls.key: give both or neither"))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
		min  time.Duration
	}{
		{"keepalive", c.KeepAlive, time.Second}, {"connect_timeout", c.ConnectTimeout, 100 * time.Millisecond},
		{"reconnect_min", c.ReconnectMin, 10 * time.Millisecond}, {"reconnect_max", c.ReconnectMax, 10 * time.Millisecond},
		{"publish_timeout", c.PublishTimeout, 100 * time.Millisecond},
	} {
		if d.v < d.min {
			errs = append(errs, fmt.Errorf("mqtt.%s: %v, want at least %v", d.name, d.v, d.min))
		}
	}
	if c.ReconnectMax < c.ReconnectMin {
		errs = append(errs, fmt.Errorf("mqtt.reconnect_max: %v is below mqtt.reconnect_min %v", c.ReconnectMax, c.ReconnectMin))
	}
	return errors.Join(errs...)
}

// parseBroker checks a broker URL and normalizes its scheme for paho.
func parseBroker(raw string) (string, bool, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", false, fmt.Errorf("%q is not a URL: %w", raw, err)
	}
	secure := false
	switch u.Scheme {
	case "tcp", "mqtt":
		u.Scheme = "tcp"
	case "ssl", "tls", "mqtts":
		u.Scheme, secure = "ssl", true
	case "ws":
	case "wss":
		secure = true
	default:
		return "", false, fmt.Errorf("%q: scheme %q is not one of tcp, mqtt, ssl, tls, mqtts, ws, wss", raw, u.Scheme)
	}
	if u.Hostname() == "" {
		return "", false, fmt.Errorf("%q has no host", raw)
	}
	if u.Port() == "" && (u.Scheme == "tcp" || u.Scheme == "ssl") {
		return "", false, fmt.Errorf("%q has no port (1883 for tcp, 8883 for ssl)", raw)
	}
	if u.User != nil {
		return "", false, fmt.Errorf("%q holds credentials; use mqtt.username and TAKT_MQTT_PASSWORD", u.Redacted())
	}
	return u.String(), secure, nil
}

// Connection states (ConnState.State).
const (
	ConnConnecting   = "connecting"   // an attempt is under way
	ConnConnected    = "connected"    // connected and subscribed
	ConnDisconnected = "disconnected" // waiting to try again; Err says why
	ConnClosed       = "closed"       // Run has not started or has returned
)

// ConnState is a snapshot of a Conn's connection.
type ConnState struct {
	State string
	Since time.Time // when State was entered
	// Err is the last connection error (nil once connected again).
	Err error
	// Attempts counts connection attempts since New; Connects the
	// successful ones.
	Attempts, Connects uint64
}

// ErrNotConnected is the "retry later" error of Publish: the Conn has no
// connection now, or lost it before the broker acknowledged.
var ErrNotConnected = errors.New("mqtt not connected")

// ConnectError is a failed connection attempt, with a hint at the likely
// cause (wrong credentials, TLS mismatch). Run retries after a backoff.
type ConnectError struct {
	Broker string
	Hint   string
	Err    error
}

func (e *ConnectError) Error() string {
	s := "mqtt connect " + e.Broker + ": " + e.Err.Error()
	if e.Hint != "" {
		s += " (" + e.Hint + ")"
	}
	return s
}

func (e *ConnectError) Unwrap() error { return e.Err }

// Will is the last will the broker publishes (QoS 1) when the client is gone
// without saying goodbye.
type Will struct {
	Topic    string
	Payload  []byte
	Retained bool
}

// Received is an MQTT message the Conn received.
type Received struct {
	Topic     string
	Payload   []byte
	Retained  bool
	Duplicate bool
}

// Publication is one message to publish with QoS 1.
type Publication struct {
	Topic    string
	Payload  []byte
	Retained bool
}

// ConnOptions are a Conn's collaborators.
type ConnOptions struct {
	// Will, when set, is registered with every connection.
	Will *Will
	// NextWill, when set, is asked for the will before each connection attempt
	// (it replaces Will), for protocols whose will changes per session, such as
	// Sparkplug's NDEATH with its birth/death sequence number.
	NextWill func() *Will
	// Subscriptions maps topic filters to handlers; the Conn subscribes
	// with QoS 1 on every connection. A handler runs on its own goroutine
	// (messages may be handled concurrently); a panic in it is logged and
	// the message is dropped.
	Subscriptions map[string]func(Received)
	// OnConnect runs in Run after each connection is up and subscribed,
	// e.g. to publish a birth message. It may call Publish.
	OnConnect func(ctx context.Context)
	// Logger receives the connection's state changes (component=mqtt).
	Logger zerolog.Logger
}

// Conn is an MQTT connection that reconnects by itself. Create it with
// NewConn, run it with Run; Publish from any goroutine.
type Conn struct {
	cfg    MQTTConfig
	broker string
	tls    *tls.Config
	opts   ConnOptions
	log    zerolog.Logger

	mu       sync.Mutex
	client   mqtt.Client   // nil unless connected
	lost     chan struct{} // closed when the current connection is lost
	state    ConnState
	changed  chan struct{} // closed and replaced on every state change
	attempts uint64
}

// NewConn validates cfg and reads the TLS files; it does not connect.
func NewConn(cfg MQTTConfig, opts ConnOptions) (*Conn, error) {
	if !cfg.Enabled() {
		return nil, errors.New("mqtt.broker: empty, MQTT is disabled")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	broker, secure, _ := parseBroker(cfg.Broker)
	c := &Conn{
		cfg: cfg, broker: broker, opts: opts,
		log:     opts.Logger.With().Str("component", "mqtt").Str("broker", broker).Logger(),
		changed: make(chan struct{}),
		state:   ConnState{State: ConnClosed, Since: time.Now()},
	}
	if secure || cfg.TLS.CA != "" || cfg.TLS.Cert != "" {
		t, err := cfg.TLS.config()
		if err != nil {
			return nil, err
		}
		c.tls = t
	}
	return c, nil
}

func (t MQTTTLS) config() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
	if t.CA != "" {
		pem, err := os.ReadFile(t.CA)
		if err != nil {
			return nil, fmt.Errorf("mqtt.tls.ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("mqtt.tls.ca: %s holds no PEM certificate", t.CA)
		}
		cfg.RootCAs = pool
	}
	if t.Cert != "" {
		pair, err := tls.LoadX509KeyPair(t.Cert, t.Key)
		if err != nil {
			return nil, fmt.Errorf("mqtt.tls.cert, mqtt.tls.key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}

// State returns the connection's state now.
func (c *Conn) State() ConnState {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// Changed returns a channel that is closed at the next state change.
func (c *Conn) Changed() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.changed
}

// WaitConnected blocks until the Conn is connected or ctx is done.
func (c *Conn) WaitConnected(ctx context.Context) error {
	for {
		c.mu.Lock()
		ok, ch := c.client != nil, c.changed
		c.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (c *Conn) setState(state string, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.state.State, c.state.Since, c.state.Err = state, time.Now(), err
	c.state.Attempts = c.attempts
	close(c.changed)
	c.changed = make(chan struct{})
}

// Run connects and stays connected until ctx is done, reconnecting with
// backoff after a failed attempt or a lost connection. It returns nil after
// a clean DISCONNECT (so the broker does not publish the last will: publish
// the goodbye yourself before ctx ends).
func (c *Conn) Run(ctx context.Context) error {
	bo := backoff{min: c.cfg.ReconnectMin, max: c.cfg.ReconnectMax}
	wait := time.Duration(0)
	for {
		if wait > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(wait):
			}
		}
		if ctx.Err() != nil {
			c.setState(ConnClosed, nil)
			return nil
		}
		c.mu.Lock()
		c.attempts++
		c.mu.Unlock()
		c.setState(ConnConnecting, nil)
		cl, lost, err := c.connect(ctx)
		if err != nil {
			if ctx.Err() != nil {
				continue
			}
			wait = bo.next()
			c.setState(ConnDisconnected, err)
			c.log.Warn().Err(err).Dur("retry_in", wait).Msg("mqtt connect failed")
			continue
		}
		c.mu.Lock()
		c.client, c.lost = cl, lost
		c.state.Connects++
		c.mu.Unlock()
		c.setState(ConnConnected, nil)
		c.log.Info().Str("client_id", c.cfg.ClientID).Bool("clean_session", c.cfg.CleanSession).Msg("mqtt connected")
		if c.opts.OnConnect != nil {
			c.opts.OnConnect(ctx)
		}
		select {
		case <-ctx.Done():
			c.drop()
			cl.Disconnect(250)
			c.setState(ConnClosed, nil)
			c.log.Info().Msg("mqtt disconnected")
			return nil
		case <-lost:
			c.drop()
			cl.Disconnect(0)
			bo.reset()
			wait = bo.next()
			c.setState(ConnDisconnected, errors.New("connection lost"))
			c.log.Warn().Dur("retry_in", wait).Msg("mqtt connection lost")
		}
	}
}

func (c *Conn) drop() {
	c.mu.Lock()
	c.client, c.lost = nil, nil
	c.mu.Unlock()
}

func (c *Conn) connect(ctx context.Context) (mqtt.Client, chan struct{}, error) {
	lost := make(chan struct{})
	var once sync.Once
	o := mqtt.NewClientOptions().
		AddBroker(c.broker).
		SetClientID(c.cfg.ClientID).
		SetProtocolVersion(4).
		SetCleanSession(c.cfg.CleanSession).
		SetKeepAlive(c.cfg.KeepAlive).
		SetPingTimeout(min(c.cfg.KeepAlive, 10*time.Second)).
		SetConnectTimeout(c.cfg.ConnectTimeout).
		SetWriteTimeout(c.cfg.PublishTimeout).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetOrderMatters(false).
		SetConnectionLostHandler(func(mqtt.Client, error) { once.Do(func() { close(lost) }) }).
		SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) { c.route(m) })
	if c.cfg.Username != "" {
		o.SetUsername(c.cfg.Username).SetPassword(string(c.cfg.Password))
	}
	if c.tls != nil {
		o.SetTLSConfig(c.tls.Clone())
	}
	w := c.opts.Will
	if c.opts.NextWill != nil {
		w = c.opts.NextWill()
	}
	if w != nil {
		o.SetBinaryWill(w.Topic, w.Payload, 1, w.Retained)
	}
	cl := mqtt.NewClient(o)
	if err := c.wait(ctx, cl.Connect(), c.cfg.ConnectTimeout+time.Second); err != nil {
		cl.Disconnect(0)
		return nil, nil, c.connectError(err)
	}
	for filter := range c.opts.Subscriptions {
		if err := c.wait(ctx, cl.Subscribe(filter, 1, nil), c.cfg.ConnectTimeout); err != nil {
			cl.Disconnect(0)
			return nil, nil, &ConnectError{Broker: c.broker, Err: fmt.Errorf("subscribe %s: %w", filter, err)}
		}
	}
	return cl, lost, nil
}

func (c *Conn) wait(ctx context.Context, tok mqtt.Token, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return fmt.Errorf("no answer within %v", timeout)
	}
}

// connectError adds a hint for the common causes of a failed connection.
func (c *Conn) connectError(err error) error {
	e := &ConnectError{Broker: c.broker, Err: err}
	msg := err.Error()
	var unknownCA x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var recErr tls.RecordHeaderError
	switch {
	case errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword), errors.Is(err, packets.ErrorRefusedNotAuthorised):
		e.Hint = "the broker refused the credentials: check mqtt.username and TAKT_MQTT_PASSWORD"
	case errors.Is(err, packets.ErrorRefusedIDRejected):
		e.Hint = "the broker rejected mqtt.client_id"
	case errors.As(err, &unknownCA), strings.Contains(msg, "certificate signed by unknown authority"):
		e.Hint = "TLS: the broker's certificate is not signed by mqtt.tls.ca"
	case errors.As(err, &hostErr), strings.Contains(msg, "certificate is valid for"):
		e.Hint = "TLS: the broker's certificate does not name this host; set mqtt.tls.server_name"
	case errors.As(err, &recErr), strings.Contains(msg, "first record does not look like a TLS handshake"):
		e.Hint = "TLS mismatch: the broker does not speak TLS on this port; use tcp://"
	case strings.Contains(msg, "certificate required"), strings.Contains(msg, "bad certificate"):
		e.Hint = "TLS: the broker wants a client certificate (mqtt.tls.cert, mqtt.tls.key) it trusts"
	case c.tls == nil && (errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || strings.Contains(msg, "EOF")):
		e.Hint = "TLS mismatch: the broker closed the connection: it may want TLS on this port (ssl://)"
	case c.tls != nil && (errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || strings.Contains(msg, "EOF")):
		e.Hint = "TLS mismatch: the broker dropped the TLS handshake: it may not speak TLS on this port (use tcp://) or want a client certificate"
	case errors.Is(err, syscall.ECONNREFUSED):
		e.Hint = "nothing listens there: broker down or wrong port"
	}
	return e
}

// route hands a received message to the handler of the first matching filter.
func (c *Conn) route(m mqtt.Message) {
	for filter, h := range c.opts.Subscriptions {
		if !wire.MatchTopic(filter, m.Topic()) {
			continue
		}
		defer func() {
			if r := recover(); r != nil {
				c.log.Error().Str("topic", m.Topic()).Interface("panic", r).Msg("mqtt message handler panicked; message dropped")
			}
		}()
		h(Received{Topic: m.Topic(), Payload: m.Payload(), Retained: m.Retained(), Duplicate: m.Duplicate()})
		return
	}
	c.log.Debug().Str("topic", m.Topic()).Msg("mqtt message without a handler")
}

// Publish publishes one message with QoS 1 and returns after the broker's
// PUBACK. Errors: ErrNotConnected (retry later), a timeout after
// PublishTimeout, or ctx's error.
func (c *Conn) Publish(ctx context.Context, p Publication) error {
	return c.PublishAll(ctx, []Publication{p})[0]
}

// PublishAll publishes the messages with QoS 1, all in flight at once, and
// returns one error per message: nil only for those the broker acknowledged
// (PUBACK). Errors are as for Publish. A message whose PUBACK did not come
// may still have reached the broker: publish it again (consumers de-duplicate).
func (c *Conn) PublishAll(ctx context.Context, ps []Publication) []error {
	errs := make([]error, len(ps))
	c.mu.Lock()
	cl, lost := c.client, c.lost
	c.mu.Unlock()
	if cl == nil {
		for i := range errs {
			errs[i] = ErrNotConnected
		}
		return errs
	}
	toks := make([]mqtt.Token, len(ps))
	for i, p := range ps {
		toks[i] = cl.Publish(p.Topic, 1, p.Retained, p.Payload)
	}
	t := time.NewTimer(c.cfg.PublishTimeout)
	defer t.Stop()
	for i, tok := range toks {
		var err error
		select {
		case <-tok.Done():
			if err = tok.Error(); errors.Is(err, mqtt.ErrNotConnected) {
				err = ErrNotConnected
			} else if err != nil {
				err = fmt.Errorf("mqtt publish %s: %w", ps[i].Topic, err)
			}
		case <-lost:
			err = fmt.Errorf("%w: connection lost before PUBACK", ErrNotConnected)
		case <-ctx.Done():
			err = ctx.Err()
		case <-t.C:
			err = fmt.Errorf("mqtt publish %s: no PUBACK within %v", ps[i].Topic, c.cfg.PublishTimeout)
		}
		if err != nil {
			for j := i; j < len(errs); j++ {
				if j == i || !isDone(toks[j]) {
					errs[j] = err
				} else {
					errs[j] = toks[j].Error()
				}
			}
			return errs
		}
	}
	return errs
}

func isDone(t mqtt.Token) bool {
	select {
	case <-t.Done():
		return true
	default:
		return false
	}
}
