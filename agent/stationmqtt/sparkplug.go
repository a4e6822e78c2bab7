package stationmqtt

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/takt-edge/takt/agent/stationmqtt/sparkplugpb"
	"github.com/takt-edge/takt/agent/store"
	"github.com/takt-edge/takt/cloudsync"
	"github.com/takt-edge/takt/cloudsync/wire"
)

// Sparkplug B topic namespace and the metric names the station uses.
const (
	sparkplugNamespace = "spBv1.0"
	metricBdSeq        = "bdSeq"
	metricRebirth      = "Node Control/Rebirth"
)

// SparkplugConfig makes the station a Sparkplug B edge node with one device per
// camera; the node's birth and death replace the JSON status, its DDATA the
// JSON verdict messages.
type SparkplugConfig struct {
	Enabled bool
	Group   string   // Sparkplug group id
	Node    string   // edge node id
	Devices []string // camera ids; verdicts of other cameras go to the first
	// StateFile keeps the last bdSeq across restarts, so the next NBIRTH and
	// its NDEATH carry the next one.
	StateFile string
}

// Validate checks the ids against the characters Sparkplug reserves.
func (c SparkplugConfig) Validate() error {
	if !c.Enabled {
		return nil
	}
	var errs []error
	check := func(what, id string) {
		if id == "" || strings.ContainsAny(id, "/+#") {
			errs = append(errs, fmt.Errorf("sparkplug %s %q: must be non-empty without '/', '+' or '#'", what, id))
		}
	}
	check("group id", c.Group)
	check("edge node id", c.Node)
	if len(c.Devices) == 0 {
		errs = append(errs, errors.New("sparkplug: at least one device (camera) is needed"))
	}
	for _, d := range c.Devices {
		check("device id", d)
	}
	if c.StateFile == "" {
		errs = append(errs, errors.New("sparkplug: no file to keep bdSeq in"))
	}
	return errors.Join(errs...)
}

// sparkplugNode is the Sparkplug side of the roles: the session sequence
// numbers, births and the node commands.
type sparkplugNode struct {
	cfg SparkplugConfig

	// mu orders every Sparkplug publication: births and the stamping of
	// outbox messages with seq happen under it, so seq is continuous on the wire.
	mu     sync.Mutex
	seq    uint64 // next seq of this session
	bdSeq  uint64 // bdSeq of the current (or next) connection
	lastBd int    // last bdSeq that reached a broker; -1: none yet
	born   bool   // NBIRTH of the current connection is out

	pass, fail, noDecision atomic.Uint64
	lastMu                 sync.Mutex
	last                   map[string]store.Verdict // device -> its last verdict
}

func newSparkplugNode(cfg SparkplugConfig) (*sparkplugNode, error) {
	n := &sparkplugNode{cfg: cfg, lastBd: -1, last: map[string]store.Verdict{}}
	data, err := os.ReadFile(cfg.StateFile)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("sparkplug: %w", err)
	default:
		v, err := strconv.Atoi(strings.TrimSpace(string(data)))
		if err != nil || v < 0 || v > 255 {
			return nil, fmt.Errorf("sparkplug: %s holds %q, want a bdSeq 0..255", cfg.StateFile, data)
		}
		n.lastBd = v
	}
	return n, nil
}

func (n *sparkplugNode) topic(kind, device string) string {
	t := sparkplugNamespace + "/" + n.cfg.Group + "/" + kind + "/" + n.cfg.Node
	if device != "" {
		t += "/" + device
	}
	return t
}

// device is the Sparkplug device a camera's verdicts belong to.
func (n *sparkplugNode) device(camera string) string {
	for _, d := range n.cfg.Devices {
		if d == camera {
			return d
		}
	}
	return n.cfg.Devices[0]
}

// nextWill is the NDEATH registered with the next connection attempt: the
// bdSeq after the last one a broker saw.
func (n *sparkplugNode) nextWill() *cloudsync.Will {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.born = false
	n.bdSeq = uint64((n.lastBd + 1) % 256)
	p := &sparkplugpb.Payload{Timestamp: proto.Uint64(uint64(time.Now().UnixMilli())),
		Metrics: []*sparkplugpb.Payload_Metric{uint64Metric(metricBdSeq, n.bdSeq)}}
	data, _ := proto.Marshal(p)
	return &cloudsync.Will{Topic: n.topic("NDEATH", ""), Payload: data}
}

// death is the NDEATH a stopping station publishes itself.
func (n *sparkplugNode) death() cloudsync.Publication {
	n.mu.Lock()
	defer n.mu.Unlock()
	p := &sparkplugpb.Payload{Timestamp: proto.Uint64(uint64(time.Now().UnixMilli())),
		Metrics: []*sparkplugpb.Payload_Metric{uint64Metric(metricBdSeq, n.bdSeq)}}
	data, _ := proto.Marshal(p)
	return cloudsync.Publication{Topic: n.topic("NDEATH", ""), Payload: data}
}

// keepBdSeq records that the broker accepted the connection with the current
// bdSeq; the next connection, in this process or the next, uses the one after.
func (n *sparkplugNode) keepBdSeq() error {
	n.mu.Lock()
	bd := n.bdSeq
	n.lastBd = int(bd)
	n.mu.Unlock()
	tmp := n.cfg.StateFile + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(f, "%d\n", bd)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, n.cfg.StateFile)
	}
	if err == nil {
		if d, derr := os.Open(filepath.Dir(n.cfg.StateFile)); derr == nil {
			err = d.Sync()
			d.Close()
		}
	}
	return err
}

// count adds a verdict to the counters and the device's last verdict.
func (n *sparkplugNode) count(v store.Verdict) string {
	switch v.Decision {
	case store.Pass:
		n.pass.Add(1)
	case store.Fail:
		n.fail.Add(1)
	default:
		n.noDecision.Add(1)
	}
	dev := n.device(v.CameraID)
	n.lastMu.Lock()
	n.last[dev] = v
	n.lastMu.Unlock()
	return dev
}

// counterMetrics are the node's counters since the agent started and the yield
// (passed parts over all parts; null before the first part).
func (n *sparkplugNode) counterMetrics(ts uint64) []*sparkplugpb.Payload_Metric {
	p, f, nd := n.pass.Load(), n.fail.Load(), n.noDecision.Load()
	ms := []*sparkplugpb.Payload_Metric{
		uint64Metric("Counters/Pass", p), uint64Metric("Counters/Fail", f), uint64Metric("Counters/NoDecision", nd),
	}
	if total := p + f + nd; total > 0 {
		ms = append(ms, doubleMetric("Counters/Yield", float64(p)/float64(total)))
	} else {
		ms = append(ms, nullMetric("Counters/Yield", sparkplugpb.DataType_Double))
	}
	for _, m := range ms {
		m.Timestamp = proto.Uint64(ts)
	}
	return ms
}

// nodeMetrics are the NBIRTH metrics: bdSeq, the rebirth control, the
// station's state and its counters.
func (n *sparkplugNode) nodeMetrics(st wire.StatusMsg, ts uint64) []*sparkplugpb.Payload_Metric {
	model, version := "", ""
	if st.Model != nil {
		model, version = st.Model.Name, st.Model.Version
	}
	ms := []*sparkplugpb.Payload_Metric{
		uint64Metric(metricBdSeq, n.bdSeq),
		boolMetric(metricRebirth, false),
		stringMetric("Station/State", wire.StateOnline),
		stringMetric("Station/AgentVersion", st.AgentVersion),
		stringMetric("Station/Camera", st.Camera),
		stringMetric("Model/Name", model),
		stringMetric("Model/Version", version),
		stringMetric("Model/Provider", st.Provider),
	}
	for _, m := range ms {
		m.Timestamp = proto.Uint64(ts)
	}
	return append(ms, n.counterMetrics(ts)...)
}

// verdictMetrics are a device's metrics for verdict v; ok false: no verdict yet,
// every metric is null (the DBIRTH still declares their types).
func verdictMetrics(v store.Verdict, ok bool, ts uint64) []*sparkplugpb.Payload_Metric {
	var ms []*sparkplugpb.Payload_Metric
	if !ok {
		ms = []*sparkplugpb.Payload_Metric{
			nullMetric("Verdict/Decision", sparkplugpb.DataType_String),
			nullMetric("Verdict/Score", sparkplugpb.DataType_Double),
			nullMetric("Verdict/Threshold", sparkplugpb.DataType_Double),
			nullMetric("Verdict/Serial", sparkplugpb.DataType_String),
			nullMetric("Verdict/ID", sparkplugpb.DataType_UInt64),
			nullMetric("Verdict/LatencyMs", sparkplugpb.DataType_Double),
			nullMetric("Verdict/Time", sparkplugpb.DataType_DateTime),
		}
	} else {
		score := nullMetric("Verdict/Score", sparkplugpb.DataType_Double)
		if v.Score != nil {
			score = doubleMetric("Verdict/Score", *v.Score)
		}
		t := uint64Metric("Verdict/Time", uint64(v.Time.UnixMilli()))
		t.Datatype = proto.Uint32(uint32(sparkplugpb.DataType_DateTime))
		ms = []*sparkplugpb.Payload_Metric{
			stringMetric("Verdict/Decision", v.Decision),
			score,
			doubleMetric("Verdict/Threshold", v.Threshold),
			stringMetric("Verdict/Serial", v.Serial),
			uint64Metric("Verdict/ID", v.ID),
			doubleMetric("Verdict/LatencyMs", v.Latency.TotalMs),
			t,
		}
	}
	for _, m := range ms {
		m.Timestamp = proto.Uint64(ts)
	}
	return ms
}

// ddata is the outbox message of verdict v: its DDATA without seq, which the
// sender stamps when it publishes.
func (n *sparkplugNode) ddata(v store.Verdict, msgID string) (store.MQTTMessage, error) {
	dev := n.count(v)
	ts := uint64(v.Time.UnixMilli())
	data, err := proto.Marshal(&sparkplugpb.Payload{Timestamp: proto.Uint64(ts), Metrics: verdictMetrics(v, true, ts)})
	if err != nil {
		return store.MQTTMessage{}, err
	}
	return store.MQTTMessage{ID: msgID, Kind: store.MQTTVerdict, Topic: n.topic("DDATA", dev), Payload: data}, nil
}

// isSparkplug reports whether an outbox message is a Sparkplug message that
// needs its seq.
func isSparkplug(topic string) bool { return strings.HasPrefix(topic, sparkplugNamespace+"/") }

// stamp sets the next seq in a Sparkplug payload; n.mu is held.
func (n *sparkplugNode) stamp(payload []byte) ([]byte, error) {
	var p sparkplugpb.Payload
	if err := proto.Unmarshal(payload, &p); err != nil {
		return nil, err
	}
	p.Seq = proto.Uint64(n.seq)
	n.seq = (n.seq + 1) % 256
	return proto.Marshal(&p)
}

// births are the NBIRTH (seq 0) and one DBIRTH per device of a new session;
// n.mu is held.
func (n *sparkplugNode) births(st wire.StatusMsg) []cloudsync.Publication {
	ts := uint64(time.Now().UnixMilli())
	n.seq = 0
	var ps []cloudsync.Publication
	add := func(topic string, p *sparkplugpb.Payload) {
		p.Timestamp, p.Seq = proto.Uint64(ts), proto.Uint64(n.seq)
		n.seq = (n.seq + 1) % 256
		data, _ := proto.Marshal(p)
		ps = append(ps, cloudsync.Publication{Topic: topic, Payload: data})
	}
	add(n.topic("NBIRTH", ""), &sparkplugpb.Payload{Metrics: n.nodeMetrics(st, ts)})
	for _, d := range n.cfg.Devices {
		n.lastMu.Lock()
		v, ok := n.last[d]
		n.lastMu.Unlock()
		add(n.topic("DBIRTH", d), &sparkplugpb.Payload{Metrics: verdictMetrics(v, ok, ts)})
	}
	return ps
}

// nodeData is an NDATA with the counters; n.mu is held.
func (n *sparkplugNode) nodeData() cloudsync.Publication {
	ts := uint64(time.Now().UnixMilli())
	data, _ := n.stamp(mustMarshal(&sparkplugpb.Payload{Timestamp: proto.Uint64(ts), Metrics: n.counterMetrics(ts)}))
	return cloudsync.Publication{Topic: n.topic("NDATA", ""), Payload: data}
}

func mustMarshal(p *sparkplugpb.Payload) []byte {
	data, _ := proto.Marshal(p)
	return data
}

// errNotBorn holds Sparkplug messages back until the session's NBIRTH is out.
var errNotBorn = errors.New("sparkplug: waiting for the node birth")

// DecodeNodeCommand decodes an NCMD payload and reports whether it asks for a
// rebirth. A payload that does not decode, a rebirth metric that is not a
// boolean, or a metric the node does not know is an error.
func DecodeNodeCommand(payload []byte) (rebirth bool, err error) {
	var p sparkplugpb.Payload
	if err := proto.Unmarshal(payload, &p); err != nil {
		return false, fmt.Errorf("sparkplug NCMD: not a Sparkplug B payload: %w", err)
	}
	if len(p.Metrics) == 0 {
		return false, errors.New("sparkplug NCMD: no metrics")
	}
	for _, m := range p.Metrics {
		if m.GetName() != metricRebirth {
			return false, fmt.Errorf("sparkplug NCMD: unknown metric %q (this node takes %q)", m.GetName(), metricRebirth)
		}
		b, ok := m.Value.(*sparkplugpb.Payload_Metric_BooleanValue)
		if !ok {
			return false, fmt.Errorf("sparkplug NCMD: %q must be a Boolean", metricRebirth)
		}
		rebirth = rebirth || b.BooleanValue
	}
	return rebirth, nil
}

func uint64Metric(name string, v uint64) *sparkplugpb.Payload_Metric {
	return &sparkplugpb.Payload_Metric{Name: proto.String(name), Datatype: proto.Uint32(uint32(sparkplugpb.DataType_UInt64)),
		Value: &sparkplugpb.Payload_Metric_LongValue{LongValue: v}}
}

func doubleMetric(name string, v float64) *sparkplugpb.Payload_Metric {
	return &sparkplugpb.Payload_Metric{Name: proto.String(name), Datatype: proto.Uint32(uint32(sparkplugpb.DataType_Double)),
		Value: &sparkplugpb.Payload_Metric_DoubleValue{DoubleValue: v}}
}

func boolMetric(name string, v bool) *sparkplugpb.Payload_Metric {
	return &sparkplugpb.Payload_Metric{Name: proto.String(name), Datatype: proto.Uint32(uint32(sparkplugpb.DataType_Boolean)),
		Value: &sparkplugpb.Payload_Metric_BooleanValue{BooleanValue: v}}
}

func stringMetric(name, v string) *sparkplugpb.Payload_Metric {
	return &sparkplugpb.Payload_Metric{Name: proto.String(name), Datatype: proto.Uint32(uint32(sparkplugpb.DataType_String)),
		Value: &sparkplugpb.Payload_Metric_StringValue{StringValue: v}}
}

func nullMetric(name string, t sparkplugpb.DataType) *sparkplugpb.Payload_Metric {
	return &sparkplugpb.Payload_Metric{Name: proto.String(name), Datatype: proto.Uint32(uint32(t)), IsNull: proto.Bool(true)}
}

// sparkplugBirth publishes the node and device births of a new connection (or
// a rebirth) and, on a new connection, keeps its bdSeq.
func (r *Role) sparkplugBirth(ctx context.Context, newConnection bool) {
	n := r.sp
	if newConnection {
		if err := n.keepBdSeq(); err != nil {
			r.log.Error().Err(err).Msg("sparkplug: cannot keep bdSeq; the next restart may repeat it")
		}
	}
	st := wire.StatusMsg{Station: r.station}
	r.deps.Station.FillStatus(&st)
	n.mu.Lock()
	defer n.mu.Unlock()
	ps := n.births(st)
	pctx, cancel := context.WithTimeout(ctx, r.cfg.PublishTimeout)
	defer cancel()
	for _, err := range r.conn.PublishAll(pctx, ps) {
		if err != nil {
			r.log.Warn().Err(err).Msg("sparkplug birth not published")
			return
		}
	}
	n.born = true
	r.log.Info().Uint64("bdSeq", n.bdSeq).Int("devices", len(n.cfg.Devices)).Msg("sparkplug birth published")
	r.wakeSender()
}

// publishNodeData sends the counters as NDATA (the ticker's refresh).
func (r *Role) publishNodeData(ctx context.Context) {
	n := r.sp
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.born {
		return
	}
	pctx, cancel := context.WithTimeout(ctx, r.cfg.PublishTimeout)
	defer cancel()
	if err := r.conn.Publish(pctx, n.nodeData()); err != nil && ctx.Err() == nil {
		r.log.Warn().Err(err).Msg("sparkplug NDATA not published")
	}
}

// onNodeCommand handles NCMD: a rebirth is answered with new births; anything
// else is refused with a logged error and changes nothing.
func (r *Role) onNodeCommand(msg cloudsync.Received) {
	rebirth, err := DecodeNodeCommand(msg.Payload)
	if err != nil {
		r.reject(msg, "", err)
		return
	}
	if !rebirth {
		return
	}
	r.log.Info().Msg("sparkplug rebirth asked for")
	r.sparkplugBirth(context.Background(), false)
}

// onDeviceCommand handles DCMD: the cameras take no device commands.
func (r *Role) onDeviceCommand(msg cloudsync.Received) {
	var p sparkplugpb.Payload
	if err := proto.Unmarshal(msg.Payload, &p); err != nil {
		r.reject(msg, "", fmt.Errorf("sparkplug DCMD: not a Sparkplug B payload: %w", err))
		return
	}
	r.reject(msg, "", errors.New("sparkplug DCMD: the station's devices take no commands (trigger over cmd/trigger)"))
}
