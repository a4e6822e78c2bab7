package companion

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/takt-edge/takt/cloudsync/companion/trainer"
)

// Job states.
const (
	JobQueued    = "queued"
	JobRunning   = "running"
	JobSucceeded = "succeeded" // a winner was registered (promoted or not)
	JobFailed    = "failed"
)

// Triggers of a job.
const (
	TriggerManual = "manual" // CLI or POST /train
	TriggerLabels = "labels" // enough new operator labels
	TriggerDrift  = "drift"  // the PASS scores drifted from the baseline
)

// Job is one training job: a dataset snapshot, the experiments trained on
// it, the winner and the promotion decision. It is kept in
// state_dir/jobs/{id}/job.json with its log in log.txt.
type Job struct {
	ID       string    `json:"id"`
	Model    string    `json:"model"`
	Trigger  string    `json:"trigger"`
	Reason   string    `json:"reason,omitempty"`
	State    string    `json:"state"`
	Attempt  int       `json:"attempt"` // > 1 after a restart interrupted it
	Created  time.Time `json:"created"`
	Started  time.Time `json:"started,omitzero"`
	Finished time.Time `json:"finished,omitzero"`

	Dataset     DatasetSummary     `json:"dataset"`
	Experiments []ExperimentResult `json:"experiments,omitempty"`
	Winner      string             `json:"winner,omitempty"`
	Version     string             `json:"version,omitempty"`
	// Current is the promoted version's score on the same validation set.
	CurrentVersion string         `json:"current_version,omitempty"`
	Current        *trainer.Score `json:"current,omitempty"`
	Promoted       bool           `json:"promoted"`
	Decision       string         `json:"decision,omitempty"`
	Error          string         `json:"error,omitempty"`
}

// Active reports whether the job is queued or running.
func (j Job) Active() bool { return j.State == JobQueued || j.State == JobRunning }

// ExperimentResult is one experiment of a job.
type ExperimentResult struct {
	Name    string         `json:"name"`
	Trainer string         `json:"trainer"`
	State   string         `json:"state"` // running, succeeded, failed
	Error   string         `json:"error,omitempty"`
	Seconds float64        `json:"seconds"`
	Score   *trainer.Score `json:"score,omitempty"`
}

// jobStore keeps the jobs in memory and on disk.
type jobStore struct {
	dir string
	mu  sync.Mutex
	m   map[string]*Job
}

func openJobStore(dir string) (*jobStore, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	s := &jobStore{dir: dir, m: map[string]*Job{}}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name(), "job.json"))
		if errors.Is(err, os.ErrNotExist) {
			continue // created, crashed before its first save
		}
		if err != nil {
			return nil, err
		}
		var j Job
		if err := json.Unmarshal(data, &j); err != nil {
			return nil, fmt.Errorf("job %s: %w", e.Name(), err)
		}
		s.m[j.ID] = &j
	}
	return s, nil
}

func (s *jobStore) jobDir(id string) string { return filepath.Join(s.dir, id) }

// save writes the job durably and keeps it in memory.
func (s *jobStore) save(j Job) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	j.Experiments = slices.Clone(j.Experiments)
	s.m[j.ID] = &j
	if err := os.MkdirAll(s.jobDir(j.ID), 0o755); err != nil {
		return err
	}
	data, err := json.MarshalIndent(j, "", "  ")
	if err != nil {
		return err
	}
	return writeAtomic(filepath.Join(s.jobDir(j.ID), "job.json"), append(data, '\n'))
}

func (s *jobStore) get(id string) (Job, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j, ok := s.m[id]
	if !ok {
		return Job{}, false
	}
	return *j, true
}

// list returns every job, oldest first.
func (s *jobStore) list() []Job {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Job, 0, len(s.m))
	for _, j := range s.m {
		out = append(out, *j)
	}
	slices.SortFunc(out, func(a, b Job) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// active returns the queued or running job of model, if any.
func (s *jobStore) active(model string) (Job, bool) {
	for _, j := range s.list() {
		if j.Model == model && j.Active() {
			return j, true
		}
	}
	return Job{}, false
}

func (s *jobStore) logPath(id string) string { return filepath.Join(s.jobDir(id), "log.txt") }

// readLog returns the job's log.
func (s *jobStore) readLog(id string) string {
	data, _ := os.ReadFile(s.logPath(id))
	return string(data)
}

// jobLog appends lines to a job's log.txt, each with a time and a prefix.
type jobLog struct {
	mu     *sync.Mutex
	f      *os.File
	prefix string
	buf    []byte
}

func (s *jobStore) openLog(id string) (*jobLog, error) {
	if err := os.MkdirAll(s.jobDir(id), 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(s.logPath(id), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	return &jobLog{mu: &sync.Mutex{}, f: f}, nil
}

// with returns a writer into the same log whose lines carry prefix.
func (l *jobLog) with(prefix string) *jobLog {
	return &jobLog{mu: l.mu, f: l.f, prefix: prefix}
}

var _ io.Writer = (*jobLog)(nil)

func (l *jobLog) Write(p []byte) (int, error) {
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		l.emit(l.buf[:i])
		l.buf = l.buf[i+1:]
	}
	return len(p), nil
}

func (l *jobLog) emit(line []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := ""
	if l.prefix != "" {
		p = "[" + l.prefix + "] "
	}
	fmt.Fprintf(l.f, "%s %s%s\n", time.Now().UTC().Format("15:04:05.000"), p, line)
}

func (l *jobLog) Printf(format string, args ...any) { fmt.Fprintf(l, format+"\n", args...) }

// flush writes a last partial line.
func (l *jobLog) flush() {
	if len(l.buf) > 0 {
		l.emit(l.buf)
		l.buf = nil
	}
}

func (l *jobLog) Close() error {
	l.flush()
	return l.f.Close()
}
