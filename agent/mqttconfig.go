package agent

import (
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/takt-edge/takt/agent/stationmqtt"
	"github.com/takt-edge/takt/cloudsync"
	"github.com/takt-edge/takt/cloudsync/wire"
)

// MQTTConfig is the `mqtt:` section: the station's MQTT roles (status, verdict
// and alert messages through a durable outbox, cmd/trigger and cmd/label). MQTT
// is off while mqtt.broker is empty.
type MQTTConfig struct {
	// The connection: broker, client_id, username, password, tls, keepalive,
	// clean_session, connect_timeout, reconnect_min, reconnect_max and
	// publish_timeout (see cloudsync.MQTTConfig). Env TAKT_MQTT_BROKER,
	// TAKT_MQTT_USERNAME, TAKT_MQTT_PASSWORD. ClientID defaults to
	// "takt-{station}".
	cloudsync.MQTTConfig `yaml:",inline"`

	// Site and Line are the topic levels above the station:
	// takt/v1/{site}/{line}/{station}/. Defaults "site-1", "line-1".
	Site string `yaml:"site"`
	Line string `yaml:"line"`
	// Verdicts publishes one message per part on verdict. Default true.
	Verdicts bool `yaml:"verdicts"`
	// StatusInterval is how often the retained status is refreshed. Default 30s.
	StatusInterval time.Duration `yaml:"status_interval"`
	// AlertBurst alerts of one kind are sent per AlertWindow; the rest are
	// folded into one summary alert at the end of the window. Defaults 10, 1m.
	AlertBurst  int           `yaml:"alert_burst"`
	AlertWindow time.Duration `yaml:"alert_window"`
	// SyncBacklogAge raises a sync_backlog alert when the oldest verdict
	// waiting for upload is older than this (sync enabled). Default 1h.
	SyncBacklogAge time.Duration `yaml:"sync_backlog_age"`
	// OutboxMax bounds the messages kept for the broker; beyond it the
	// oldest verdict messages are dropped first (then alerts), with an alert.
	// Default 100000.
	OutboxMax int `yaml:"outbox_max"`
	// DrainTimeout is how long a stopping agent keeps sending queued
	// messages to a connected broker. Default 2s.
	DrainTimeout time.Duration `yaml:"drain_timeout"`
	// Sparkplug makes the station a Sparkplug B edge node (group
	// SparkplugGroup, edge node SparkplugNode, the camera as its device):
	// NBIRTH/DBIRTH/NDEATH replace the JSON status, DDATA the JSON verdicts.
	// Default false. Group defaults to "takt", node to the station id.
	Sparkplug      bool   `yaml:"sparkplug"`
	SparkplugGroup string `yaml:"sparkplug_group"`
	SparkplugNode  string `yaml:"sparkplug_node"`
}

func defaultMQTTConfig() MQTTConfig {
	return MQTTConfig{
		MQTTConfig: cloudsync.DefaultMQTTConfig(),
		Site:       "site-1", Line: "line-1", Verdicts: true, StatusInterval: 30 * time.Second,
		AlertBurst: 10, AlertWindow: time.Minute, SyncBacklogAge: time.Hour, OutboxMax: 100000,
		DrainTimeout: 2 * time.Second, SparkplugGroup: "takt",
	}
}

// Enabled reports whether a broker is configured.
func (m MQTTConfig) Enabled() bool { return m.conn("").Enabled() }

// conn is the connection part, with the client id defaulted for station.
func (m MQTTConfig) conn(station string) cloudsync.MQTTConfig {
	c := m.MQTTConfig
	if c.ClientID == "" && station != "" {
		c.ClientID = "takt-" + station
	}
	return c
}

// loadMQTTSettings resolves the TLS file paths against the config file's
// folder base and applies TAKT_MQTT_BROKER, TAKT_MQTT_USERNAME and
// TAKT_MQTT_PASSWORD.
func (c *Config) loadMQTTSettings(base string, lookup func(string) (string, bool)) {
	for _, p := range []*string{&c.MQTT.TLS.CA, &c.MQTT.TLS.Cert, &c.MQTT.TLS.Key} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(base, *p)
		}
	}
	c.MQTT.ApplyEnv(lookup)
}

// validate checks the mqtt: section when MQTT is enabled.
func (m MQTTConfig) validate(station string) error {
	if !m.Enabled() {
		return nil
	}
	errs := []error{m.conn(station).Validate()}
	if _, err := wire.NewTopics(m.Site, m.Line, station); err != nil {
		errs = append(errs, fmt.Errorf("mqtt: topic levels: %w (mqtt.site, mqtt.line and station may not hold '/', '+', '#' or spaces)", err))
	}
	if m.StatusInterval < time.Second {
		errs = append(errs, fmt.Errorf("mqtt.status_interval: %v, want at least 1s", m.StatusInterval))
	}
	if m.AlertBurst < 1 {
		errs = append(errs, fmt.Errorf("mqtt.alert_burst: %d, want at least 1", m.AlertBurst))
	}
	if m.AlertWindow < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("mqtt.alert_window: %v, want at least 100ms", m.AlertWindow))
	}
	if m.SyncBacklogAge <= 0 {
		errs = append(errs, fmt.Errorf("mqtt.sync_backlog_age: %v, want > 0", m.SyncBacklogAge))
	}
	if m.OutboxMax < 100 {
		errs = append(errs, fmt.Errorf("mqtt.outbox_max: %d, want at least 100", m.OutboxMax))
	}
	if m.Sparkplug {
		sp := m.sparkplug(station, "camera", "state")
		if err := sp.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("mqtt.sparkplug_group, mqtt.sparkplug_node: %w", err))
		}
	}
	if m.DrainTimeout < 0 {
		errs = append(errs, fmt.Errorf("mqtt.drain_timeout: %v, want >= 0", m.DrainTimeout))
	}
	return errors.Join(errs...)
}

// MQTTConn is the station's broker connection settings, for tools that talk to the same
// broker beside the agent (takt firmware watch), and its topics. Such a tool must use its
// own client id.
func (c Config) MQTTConn() (cloudsync.MQTTConfig, wire.Topics, error) {
	topics, err := wire.NewTopics(c.MQTT.Site, c.MQTT.Line, c.Station)
	return c.MQTT.conn(c.Station), topics, err
}

// sparkplug is the Sparkplug part of the roles' settings: camera is the one
// device, stateFile keeps bdSeq.
func (m MQTTConfig) sparkplug(station, camera, stateFile string) stationmqtt.SparkplugConfig {
	node := m.SparkplugNode
	if node == "" {
		node = station
	}
	if camera == "" {
		camera = "camera"
	}
	return stationmqtt.SparkplugConfig{Enabled: m.Sparkplug, Group: m.SparkplugGroup, Node: node,
		Devices: []string{camera}, StateFile: stateFile}
}
