package stationmqtt

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/takt-edge/takt/agent/stationmqtt/sparkplugpb"
	"github.com/takt-edge/takt/agent/store"
	"github.com/takt-edge/takt/cloudsync/cloudtest"
)

const (
	spGroup  = "takt"
	spNode   = "st-1"
	spDevice = "cam-1"
	// envSparkplugNode runs TestSparkplugNodeProcess as the station (store dir
	// and broker, separated by a space) in a child process the parent can kill.
	envSparkplugNode = "TAKT_TEST_SPARKPLUG_NODE"
)

// The station as a child process: its roles in Sparkplug mode on a store; a
// line "commit N" on stdin commits N verdicts.
func TestSparkplugNodeProcess(t *testing.T) {
	arg := os.Getenv(envSparkplugNode)
	if arg == "" {
		return // only as the child of TestSparkplugWithTahu
	}
	dir, broker, _ := strings.Cut(arg, " ")
	st := openStore(t, dir)
	cfg := testMQTTConfig(broker)
	cfg.Sparkplug = SparkplugConfig{Enabled: true, Group: spGroup, Node: spNode, Devices: []string{spDevice},
		StateFile: filepath.Join(dir, "sparkplug_bdseq")}
	r, stop := startRole(t, cfg, st, testStation{})
	in := bufio.NewScanner(os.Stdin)
	decisions := []string{store.Pass, store.Fail, store.Pass, store.NoDecision}
	for in.Scan() {
		var n int
		if _, err := fmt.Sscanf(in.Text(), "commit %d", &n); err != nil {
			t.Fatalf("child: %q: %v", in.Text(), err)
		}
		for i := range n {
			score := 0.1 * float64(i%10)
			v := store.Verdict{Station: spNode, CameraID: spDevice, Serial: fmt.Sprintf("S%d", i), Time: time.Now(),
				Decision: decisions[i%len(decisions)], Score: &score, Threshold: 0.5}
			if err := st.Commit(context.Background(), &v, nil); err != nil {
				t.Fatalf("child commit: %v", err)
			}
			r.VerdictCommitted()
		}
		fmt.Printf("committed %d\n", n)
	}
	stop()
}

// spMsg is one message as the Tahu decoder saw it.
type spMsg struct {
	Topic   string                     `json:"topic"`
	Seq     *uint64                    `json:"seq"`
	Error   string                     `json:"error"`
	Ready   bool                       `json:"ready"`
	Sent    string                     `json:"sent"`
	Metrics map[string]json.RawMessage `json:"metrics"`
}

func (m spMsg) kind() string {
	parts := strings.Split(m.Topic, "/")
	if len(parts) < 3 {
		return ""
	}
	return parts[2]
}

func (m spMsg) metric(name string) (value any) {
	var v struct {
		Value any `json:"value"`
	}
	json.Unmarshal(m.Metrics[name], &v)
	return v.Value
}

// sparkplugPeer is the Node.js host with Eclipse Tahu's decoder.
type sparkplugPeer struct {
	in   io.WriteCloser
	mu   sync.Mutex
	msgs []spMsg
}

func ensureSparkplugPeer(t *testing.T) string {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, ".deps", "node")
	have := func(pkg string) bool {
		_, err := os.Stat(filepath.Join(dir, "node_modules", pkg, "package.json"))
		return err == nil
	}
	if have("sparkplug-payload") && have("mqtt") {
		return dir
	}
	if _, err := exec.LookPath("npm"); err != nil {
		t.Fatalf("npm not found: install Node.js and npm (apt-get install nodejs npm) for the Sparkplug peer")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "package.json")); err != nil {
		os.WriteFile(filepath.Join(dir, "package.json"), []byte(`{"name": "takt-figures", "private": true}`+"\n"), 0o644)
	}
	t.Log("installing sparkplug-payload@1.0.3 and mqtt@5 into .deps/node (npm, once)")
	cmd := exec.Command("npm", "install", "--ignore-scripts", "--no-audit", "--no-fund", "sparkplug-payload@1.0.3", "mqtt@5")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm install sparkplug-payload mqtt: %v\n%s", err, out)
	}
	return dir
}

func startSparkplugPeer(t *testing.T, broker string) *sparkplugPeer {
	nodeDir := ensureSparkplugPeer(t)
	script, _ := filepath.Abs(filepath.Join("testdata", "sparkplug_peer.js"))
	cmd := exec.Command("node", script, strings.Replace(broker, "tcp://", "mqtt://", 1), "scada-host")
	cmd.Env = append(os.Environ(), "NODE_PATH="+filepath.Join(nodeDir, "node_modules"))
	cmd.Stderr = os.Stderr
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatalf("node: %v", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	p := &sparkplugPeer{in: in}
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var m spMsg
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				m.Error = "peer printed " + sc.Text()
			}
			p.mu.Lock()
			p.msgs = append(p.msgs, m)
			p.mu.Unlock()
		}
	}()
	p.wait(t, "peer subscribed", func(ms []spMsg) bool {
		for _, m := range ms {
			if m.Ready {
				return true
			}
		}
		return false
	})
	return p
}

func (p *sparkplugPeer) snapshot() []spMsg {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]spMsg(nil), p.msgs...)
}

func (p *sparkplugPeer) wait(t *testing.T, what string, ok func([]spMsg) bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if ok(p.snapshot()) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s; peer saw %d lines", what, len(p.snapshot()))
}

// count returns how many messages of kind arrived, and the last one.
func count(ms []spMsg, kind string) (int, spMsg) {
	n, last := 0, spMsg{}
	for _, m := range ms {
		if m.kind() == kind {
			n, last = n+1, m
		}
	}
	return n, last
}

// deathWith reports whether an NDEATH with bdSeq arrived.
func deathWith(ms []spMsg, bdSeq float64) bool {
	for _, m := range ms {
		if m.kind() == "NDEATH" && m.metric(metricBdSeq) == bdSeq {
			return true
		}
	}
	return false
}

// verdictIDs are the distinct Verdict/ID values of the DDATA seen.
func verdictIDs(ms []spMsg) map[float64]bool {
	ids := map[float64]bool{}
	for _, m := range ms {
		if m.kind() == "DDATA" {
			if id, ok := m.metric("Verdict/ID").(float64); ok {
				ids[id] = true
			}
		}
	}
	return ids
}

type nodeProcess struct {
	cmd *exec.Cmd
	in  io.WriteCloser
}

func startNodeProcess(t *testing.T, dir, broker string) *nodeProcess {
	cmd := exec.Command(os.Args[0], "-test.run=^TestSparkplugNodeProcess$", "-test.v")
	cmd.Env = append(os.Environ(), envSparkplugNode+"="+dir+" "+broker)
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	in, _ := cmd.StdinPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return &nodeProcess{cmd: cmd, in: in}
}

func (n *nodeProcess) commit(t *testing.T, k int) {
	if _, err := fmt.Fprintf(n.in, "commit %d\n", k); err != nil {
		t.Fatal(err)
	}
}

// Every message the Sparkplug node publishes decodes with Eclipse Tahu's
// sparkplug-payload: births with typed metrics, one DDATA per verdict, seq
// continuous and wrapping, a rebirth answered, and after a broker restart and a
// SIGKILL the NDEATH of the birth it belongs to and the next bdSeq.
func TestSparkplugWithTahu(t *testing.T) {
	b := cloudtest.StartMosquitto(t)
	peer := startSparkplugPeer(t, b.URL)
	dir := t.TempDir()
	node := startNodeProcess(t, dir, b.URL)

	peer.wait(t, "NBIRTH and DBIRTH", func(ms []spMsg) bool { n, _ := count(ms, "DBIRTH"); return n == 1 })
	_, birth := count(peer.snapshot(), "NBIRTH")
	bd0, ok := birth.metric(metricBdSeq).(float64)
	if !ok {
		t.Fatalf("NBIRTH without bdSeq: %+v", birth)
	}
	for _, name := range []string{"Station/State", "Model/Name", "Model/Version", "Model/Provider", "Counters/Pass", "Counters/Yield", metricRebirth} {
		if _, ok := birth.Metrics[name]; !ok {
			t.Errorf("NBIRTH lacks metric %q", name)
		}
	}
	_, dbirth := count(peer.snapshot(), "DBIRTH")
	if dbirth.Topic != "spBv1.0/takt/DBIRTH/st-1/cam-1" {
		t.Errorf("DBIRTH topic %q", dbirth.Topic)
	}
	for _, name := range []string{"Verdict/Decision", "Verdict/Score", "Verdict/Threshold", "Verdict/Serial", "Verdict/ID", "Verdict/LatencyMs"} {
		if _, ok := dbirth.Metrics[name]; !ok {
			t.Errorf("DBIRTH lacks metric %q", name)
		}
	}

	total := 300 // more than 256: seq wraps
	node.commit(t, total)
	peer.wait(t, "300 DDATA", func(ms []spMsg) bool { return len(verdictIDs(ms)) == total })

	fmt.Fprintf(peer.in, "rebirth %s %s\n", spGroup, spNode)
	peer.wait(t, "rebirth answered", func(ms []spMsg) bool { n, _ := count(ms, "DBIRTH"); return n == 2 })
	if _, nb := count(peer.snapshot(), "NBIRTH"); nb.metric(metricBdSeq) != bd0 {
		t.Errorf("rebirth NBIRTH bdSeq %v, want the session's %v", nb.metric(metricBdSeq), bd0)
	}
	node.commit(t, 20)
	total += 20
	peer.wait(t, "DDATA after the rebirth", func(ms []spMsg) bool { return len(verdictIDs(ms)) == total })

	b.Stop()
	node.commit(t, 20) // into the outbox while the broker is down
	total += 20
	time.Sleep(500 * time.Millisecond)
	b.Start()
	peer.wait(t, "NBIRTH after the broker restart", func(ms []spMsg) bool { n, _ := count(ms, "NBIRTH"); return n == 3 })
	if _, nb := count(peer.snapshot(), "NBIRTH"); nb.metric(metricBdSeq) != float64(int(bd0+1)%256) {
		t.Errorf("NBIRTH after the broker restart has bdSeq %v, want %v", nb.metric(metricBdSeq), int(bd0+1)%256)
	}
	peer.wait(t, "verdicts queued during the outage", func(ms []spMsg) bool { return len(verdictIDs(ms)) == total })
	// Mosquitto sends the will of the connection it loses when it stops; the
	// host's persistent session gets it after the restart.
	peer.wait(t, "NDEATH of the first session", func(ms []spMsg) bool { return deathWith(ms, bd0) })

	if err := node.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	node.cmd.Wait()
	peer.wait(t, "NDEATH after SIGKILL with the bdSeq of its NBIRTH", func(ms []spMsg) bool { return deathWith(ms, float64(int(bd0+1)%256)) })
	node = startNodeProcess(t, dir, b.URL)
	peer.wait(t, "NBIRTH after the restart", func(ms []spMsg) bool { n, _ := count(ms, "NBIRTH"); return n == 4 })
	if _, nb := count(peer.snapshot(), "NBIRTH"); nb.metric(metricBdSeq) != float64(int(bd0+2)%256) {
		t.Errorf("NBIRTH after SIGKILL has bdSeq %v, want %v", nb.metric(metricBdSeq), int(bd0+2)%256)
	}
	node.commit(t, 10)
	total += 10
	peer.wait(t, "DDATA after the restart", func(ms []spMsg) bool { return len(verdictIDs(ms)) == total })
	node.in.Close()
	node.cmd.Wait()
	peer.wait(t, "NDEATH at a clean stop", func(ms []spMsg) bool { return deathWith(ms, float64(int(bd0+2)%256)) })

	// Every message decoded; seq runs 0 at each NBIRTH, then +1 mod 256. As a
	// host does, an NDEATH ends the session only when its bdSeq is the one of
	// the session's NBIRTH (a late will of an older session does not).
	ms := peer.snapshot()
	var seq uint64
	var bd any
	inSession := false
	ddata := 0
	births := map[any]bool{}
	seen := map[string]bool{}
	redelivered := 0
	for i, m := range ms {
		// The broker redelivers to the host what it had not acknowledged
		// before the broker stopped: the same message again, not a new one.
		if m.Seq != nil {
			key := fmt.Sprintf("%v %s %d %v", bd, m.Topic, *m.Seq, m.metric("Verdict/ID"))
			if seen[key] && m.kind() == "DDATA" {
				redelivered++
				continue
			}
			seen[key] = true
		}
		switch {
		case m.Error != "":
			t.Errorf("message %d on %s: %s", i, m.Topic, m.Error)
			continue
		case m.Topic == "" || m.kind() == "NCMD":
			continue
		case m.kind() == "NDEATH":
			if !births[m.metric(metricBdSeq)] {
				t.Errorf("NDEATH %d with bdSeq %v, which no NBIRTH had", i, m.metric(metricBdSeq))
			}
			if m.metric(metricBdSeq) == bd {
				inSession = false
			}
			continue
		case m.Seq == nil:
			t.Errorf("message %d on %s has no seq", i, m.Topic)
			continue
		case m.kind() == "NBIRTH":
			if *m.Seq != 0 {
				t.Errorf("NBIRTH %d with seq %d, want 0", i, *m.Seq)
			}
			inSession, bd = true, m.metric(metricBdSeq)
			births[bd] = true
		case !inSession:
			t.Errorf("message %d on %s outside a session", i, m.Topic)
		case *m.Seq != (seq+1)%256:
			t.Errorf("message %d on %s: seq %d after %d", i, m.Topic, *m.Seq, seq)
		}
		if m.kind() == "DDATA" {
			ddata++
		}
		seq = *m.Seq
	}
	t.Logf("%d messages decoded by Tahu, %d DDATA for %d verdicts (%d distinct; %d redelivered by the broker to the host), 4 births with bdSeq %v..%v",
		len(ms), ddata, total, len(verdictIDs(ms)), redelivered, bd0, int(bd0+2)%256)
}

// Malformed or unknown node commands are errors that change nothing.
func TestDecodeNodeCommand(t *testing.T) {
	enc := func(ms ...*sparkplugpb.Payload_Metric) []byte {
		data, _ := proto.Marshal(&sparkplugpb.Payload{Metrics: ms})
		return data
	}
	if ok, err := DecodeNodeCommand(enc(boolMetric(metricRebirth, true))); err != nil || !ok {
		t.Errorf("rebirth: %v, %v", ok, err)
	}
	for name, payload := range map[string][]byte{
		"garbage":        []byte("\xff\xff\xff"),
		"no metrics":     enc(),
		"unknown metric": enc(boolMetric("Node Control/Reboot", true)),
		"not a boolean":  enc(stringMetric(metricRebirth, "true")),
	} {
		if _, err := DecodeNodeCommand(payload); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func FuzzDecodeNodeCommand(f *testing.F) {
	good, _ := proto.Marshal(&sparkplugpb.Payload{Metrics: []*sparkplugpb.Payload_Metric{boolMetric(metricRebirth, true)}})
	f.Add(good)
	f.Add([]byte{})
	f.Add([]byte("\x12\x02\x0a\x00"))
	f.Fuzz(func(t *testing.T, payload []byte) {
		rebirth, err := DecodeNodeCommand(payload)
		if err != nil && rebirth {
			t.Fatalf("an error that asks for a rebirth")
		}
	})
}
