package wire

import (
	"errors"
	"fmt"
	"strings"
)

// TopicPrefix is the first two levels of every Takt MQTT topic.
const TopicPrefix = "takt/v1"

// Topic names below a station's root, takt/v1/{site}/{line}/{station}/.
const (
	TopicStatus            = "status"             // out, QoS 1, retained: StatusMsg; the last will says offline
	TopicVerdict           = "verdict"            // out, QoS 1: VerdictMsg, one per part (through the outbox)
	TopicAlert             = "alert"              // out, QoS 1: AlertMsg (through the outbox)
	TopicError             = "error"              // out, QoS 1: ErrorMsg, the answer to a rejected command
	TopicCmdTrigger        = "cmd/trigger"        // in, QoS 1: TriggerCmd, answered on verdict
	TopicCmdLabel          = "cmd/label"          // in, QoS 1: LabelCmd
	TopicModelAvailable    = "model/available"    // in, QoS 1, retained: ModelAvailableMsg (also per line)
	TopicModelStatus       = "model/status"       // out, QoS 1, retained: ModelStatusMsg
	TopicFirmwareAvailable = "firmware/available" // in, QoS 1, retained: FirmwareAvailableMsg
	TopicFirmwareStatus    = "firmware/status"    // out, QoS 1, retained: FirmwareStatusMsg
)

// Topics builds the topic names of one station. Site, Line and Station must be
// valid topic levels (see ValidLevel); NewTopics checks them.
type Topics struct {
	Site, Line, Station string
}

// NewTopics checks site, line and station and returns their Topics.
func NewTopics(site, line, station string) (Topics, error) {
	for _, p := range []struct{ name, v string }{{"site", site}, {"line", line}, {"station", station}} {
		if err := ValidLevel(p.v); err != nil {
			return Topics{}, fmt.Errorf("%s: %w", p.name, err)
		}
	}
	return Topics{Site: site, Line: line, Station: station}, nil
}

// ValidLevel reports why s cannot be one level of a topic name: empty, longer
// than 64 bytes, or holding '/', '+', '#', a control character or a space.
func ValidLevel(s string) error {
	switch {
	case s == "":
		return errors.New("must not be empty")
	case len(s) > 64:
		return fmt.Errorf("%q is longer than 64 bytes", s)
	}
	for _, r := range s {
		if r == '/' || r == '+' || r == '#' || r <= ' ' || r == 0x7f {
			return fmt.Errorf("%q may not hold '/', '+', '#', spaces or control characters", s)
		}
	}
	return nil
}

// Root is "takt/v1/{site}/{line}/{station}".
func (t Topics) Root() string { return TopicPrefix + "/" + t.Site + "/" + t.Line + "/" + t.Station }

// Topic is the station topic named name (one of the Topic* constants).
func (t Topics) Topic(name string) string { return t.Root() + "/" + name }

// LineTopic is takt/v1/{site}/{line}/{name}, for a whole line: model/available and
// firmware/available are announced there as well as per station.
func (t Topics) LineTopic(name string) string {
	return TopicPrefix + "/" + t.Site + "/" + t.Line + "/" + name
}

// LineModelAvailable is takt/v1/{site}/{line}/model/available, for a whole line.
func (t Topics) LineModelAvailable() string { return t.LineTopic(TopicModelAvailable) }

// Filter is a subscription filter for topic name at the given site, line and
// station, where "" stands for any ("+"): Filter("", "", "", TopicAlert) is
// takt/v1/+/+/+/alert.
func Filter(site, line, station, name string) string {
	any := func(s string) string {
		if s == "" {
			return "+"
		}
		return s
	}
	return TopicPrefix + "/" + any(site) + "/" + any(line) + "/" + any(station) + "/" + name
}

// ParseTopic splits a station topic into its station and name
// (takt/v1/s/l/st/cmd/trigger gives {s l st} and "cmd/trigger").
func ParseTopic(topic string) (Topics, string, error) {
	parts := strings.SplitN(topic, "/", 6)
	if len(parts) < 6 || parts[0]+"/"+parts[1] != TopicPrefix {
		return Topics{}, "", fmt.Errorf("topic %q is not takt/v1/{site}/{line}/{station}/{name}", topic)
	}
	t, err := NewTopics(parts[2], parts[3], parts[4])
	if err != nil {
		return Topics{}, "", fmt.Errorf("topic %q: %w", topic, err)
	}
	return t, parts[5], nil
}

// MatchTopic reports whether topic matches the subscription filter (with the
// + and # wildcards).
func MatchTopic(filter, topic string) bool {
	f, t := strings.Split(filter, "/"), strings.Split(topic, "/")
	for i, p := range f {
		if p == "#" {
			return true
		}
		if i >= len(t) || (p != "+" && p != t[i]) {
			return false
		}
	}
	return len(f) == len(t)
}
