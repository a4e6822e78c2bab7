package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/takt-edge/takt/cloudsync"
	"github.com/takt-edge/takt/cloudsync/cli"
	"github.com/takt-edge/takt/cloudsync/wire"
)

// cmdAlerts is the operator console: it prints the alerts (and station status
// changes) of the stations it watches, each alert once however often it arrives.
func cmdAlerts(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("alerts", stderr)
	broker := fs.String("broker", "", "broker URL: tcp://host:1883, ssl://host:8883, ws://host:port/path (env TAKT_MQTT_BROKER)")
	site := fs.String("site", "", "site to watch (empty: every site)")
	line := fs.String("line", "", "line to watch (empty: every line)")
	station := fs.String("station", "", "station to watch (empty: every station)")
	clientID := fs.String("client-id", "", "MQTT client id (default takt-alerts-<random>; give a fixed one with --persistent)")
	persistent := fs.Bool("persistent", false, "keep a persistent session: alerts raised while this console is away arrive when it is back")
	username := fs.String("username", "", "MQTT username (password from TAKT_MQTT_PASSWORD)")
	ca := fs.String("ca", "", "PEM CA bundle for ssl:// and wss:// brokers")
	cert := fs.String("cert", "", "client certificate (PEM)")
	key := fs.String("key", "", "client key (PEM)")
	status := fs.Bool("status", true, "also print station status changes (online, offline)")
	asJSON := fs.Bool("json", false, "print each alert as its JSON payload, one per line")
	count := fs.Int("count", 0, "exit after this many distinct alerts (0: run until interrupted)")
	timeout := fs.Duration("timeout", 0, "exit after this long (0: run until interrupted)")
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	cfg := cloudsync.DefaultMQTTConfig()
	cfg.Broker, cfg.ClientID, cfg.Username = *broker, *clientID, *username
	cfg.CleanSession = !*persistent
	cfg.TLS = cloudsync.MQTTTLS{CA: *ca, Cert: *cert, Key: *key}
	cfg.KeepAlive = 10 * time.Second
	cfg.ApplyEnv(os.LookupEnv)
	if cfg.ClientID == "" {
		if *persistent {
			return fmt.Errorf("alerts: --persistent needs a fixed --client-id")
		}
		var b [6]byte
		_, _ = rand.Read(b[:])
		cfg.ClientID = "takt-alerts-" + hex.EncodeToString(b[:])
	}
	if !cfg.Enabled() {
		fs.Usage()
		return cli.Usagef("alerts: --broker is required")
	}
	for _, p := range []struct{ name, v string }{{"site", *site}, {"line", *line}, {"station", *station}} {
		if p.v != "" {
			if err := wire.ValidLevel(p.v); err != nil {
				return fmt.Errorf("alerts: --%s: %w", p.name, err)
			}
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}
	ctx, done := context.WithCancel(ctx)
	defer done()

	c := &console{out: stdout, json: *asJSON, seen: map[string]bool{}, want: *count, done: done}
	subs := map[string]func(cloudsync.Received){
		wire.Filter(*site, *line, *station, wire.TopicAlert): c.alert,
	}
	if *status {
		subs[wire.Filter(*site, *line, *station, wire.TopicStatus)] = c.status
	}
	log := zerolog.New(zerolog.ConsoleWriter{Out: stderr, NoColor: true, TimeFormat: time.TimeOnly}).Level(zerolog.WarnLevel).With().Timestamp().Logger()
	conn, err := cloudsync.NewConn(cfg, cloudsync.ConnOptions{Subscriptions: subs, Logger: log})
	if err != nil {
		return fmt.Errorf("alerts: %w", err)
	}
	fmt.Fprintf(stderr, "takt alerts: watching %s on %s\n", wire.Filter(*site, *line, *station, wire.TopicAlert), cfg.Broker)
	return conn.Run(ctx)
}

// console prints alerts de-duplicated by id.
type console struct {
	out  io.Writer
	json bool
	want int
	done func()

	mu     sync.Mutex
	seen   map[string]bool
	order  []string
	n      int
	online map[string]string
}

const consoleRemember = 100000 // alert ids remembered for de-duplication

func (c *console) alert(m cloudsync.Received) {
	var a wire.AlertMsg
	if err := wire.Decode(m.Payload, &a); err != nil {
		c.mu.Lock()
		fmt.Fprintf(c.out, "%s  ?          bad alert on %s: %v\n", time.Now().UTC().Format(time.RFC3339), m.Topic, err)
		c.mu.Unlock()
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen[a.ID] {
		return
	}
	c.seen[a.ID] = true
	c.order = append(c.order, a.ID)
	if len(c.order) > consoleRemember {
		delete(c.seen, c.order[0])
		c.order = c.order[1:]
	}
	if c.json {
		fmt.Fprintf(c.out, "%s\n", m.Payload)
	} else {
		what := a.Message
		if a.Folded > 0 {
			what = fmt.Sprintf("[summary: %d folded] %s", a.Folded, a.Message)
		}
		fmt.Fprintf(c.out, "%s  %-8s  %-14s  %-16s  %s  (id %s)\n", a.Time.UTC().Format(time.RFC3339), strings.ToUpper(a.Severity),
			a.Station, a.Kind, what, a.ID)
	}
	c.n++
	if c.want > 0 && c.n >= c.want {
		c.done()
	}
}

func (c *console) status(m cloudsync.Received) {
	var s wire.StatusMsg
	if err := wire.Decode(m.Payload, &s); err != nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.online == nil {
		c.online = map[string]string{}
	}
	if c.online[m.Topic] == s.State || c.json {
		return
	}
	c.online[m.Topic] = s.State
	fmt.Fprintf(c.out, "%s  %-8s  %-14s  %-16s  station is %s\n", s.Time.UTC().Format(time.RFC3339), "STATUS", s.Station, "status", s.State)
}
