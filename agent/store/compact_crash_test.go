package store

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// compactHelperEnv makes TestHelperCompactProcess compact the store in that
// dir again and again; compactKillEnv makes it SIGKILL itself at that step of
// its first compaction.
const (
	compactHelperEnv = "TAKT_STORE_COMPACT_HELPER_DIR"
	compactKillEnv   = "TAKT_STORE_COMPACT_KILL_AT"
)

// TestHelperCompactProcess is not a test: run by
// TestCrashDuringCompactionLosesNothing as a child, it loops: commit verdicts
// from 4 goroutines, push MQTT messages through the outbox (free pages),
// compact online, with 4 more commits issued while the swap holds the store.
// It prints "id serial" for each Commit that returned nil, "compacting"
// before each compaction, "step NAME" at each of its steps and "compacted"
// after it.
func TestHelperCompactProcess(t *testing.T) {
	dir := os.Getenv(compactHelperEnv)
	if dir == "" {
		return
	}
	time.AfterFunc(60*time.Second, func() { os.Exit(3) }) // never outlive a lost parent
	var outMu sync.Mutex
	say := func(format string, args ...any) {
		outMu.Lock()
		fmt.Fprintf(os.Stdout, format+"\n", args...)
		outMu.Unlock()
	}
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	s, err := Open(dir, Options{OpenTimeout: 5 * time.Second})
	if err != nil {
		fail(err)
	}
	ctx := context.Background()
	commit := func(serial string) {
		v := newVerdict([]string{Pass, Fail, NoDecision}[len(serial)%3], serial)
		if err := s.Commit(ctx, v, &Image{Data: crashImage(serial), Ext: "jpg"}); err != nil {
			fail(err)
		}
		say("%d %s", v.ID, serial)
	}
	killAt := os.Getenv(compactKillEnv)
	pid := os.Getpid()
	var during sync.WaitGroup
	s.hookCompact = func(step string) {
		say("step %s", step)
		if step == killAt {
			syscall.Kill(pid, syscall.SIGKILL)
			select {}
		}
		if step == "locked" {
			for w := range 4 {
				during.Go(func() { commit(fmt.Sprintf("p%d-swap-%d-%d", pid, w, time.Now().UnixNano())) })
			}
		}
	}
	payload := bytes.Repeat([]byte("m"), 4096)
	for cycle := 0; ; cycle++ {
		var wg sync.WaitGroup
		for w := range 4 {
			wg.Go(func() {
				for i := range 10 {
					commit(fmt.Sprintf("p%d-c%d-w%d-%d", pid, cycle, w, i))
				}
			})
		}
		wg.Wait()
		var msgs []MQTTMessage
		for i := range 400 {
			msgs = append(msgs, MQTTMessage{ID: fmt.Sprint(cycle, "-", i), Kind: MQTTAlert, Topic: "t/alert", Payload: payload})
		}
		if _, err := s.EnqueueMQTT(ctx, MQTTEnqueue{Messages: msgs}); err != nil {
			fail(err)
		}
		pending, err := s.PendingMQTT(len(msgs))
		if err != nil {
			fail(err)
		}
		var seqs []uint64
		for _, m := range pending {
			seqs = append(seqs, m.Seq)
		}
		if err := s.AckMQTT(seqs); err != nil {
			fail(err)
		}
		say("compacting")
		res, err := s.CompactOnline()
		if err != nil {
			fail(err)
		}
		during.Wait()
		say("compacted %t %d %d %s", res.Compacted, res.Before, res.After, res.Pause)
	}
}

// TestCrashDuringCompactionLosesNothing SIGKILLs a child that compacts its
// store online while committing: once at each step of the swap (after the
// copy, with the store locked, right after the rename, right after the swap),
// then at a random moment after the second or third compaction began (3
// times, 16 under make soak). After
// each kill the store
// opens, passes its check, holds every verdict the child reported committed
// (with its image) and no compaction leftover.
func TestCrashDuringCompactionLosesNothing(t *testing.T) {
	dir := t.TempDir()
	committed := map[uint64]string{}
	compactions := 0
	steps := []string{"copied", "locked", "renamed", "swapped", "", "", ""}
	if soak {
		steps = append(steps, make([]string, 13)...) // 16 random kills under make soak
	}
	for round, step := range steps {
		killDelay := time.Duration(rand.IntN(40)) * time.Millisecond
		killIn := 2 + rand.IntN(2) // which compaction a random round kills
		begun := 0
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperCompactProcess$")
		cmd.Env = append(os.Environ(), compactHelperEnv+"="+dir, compactKillEnv+"="+step)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		guard := time.AfterFunc(60*time.Second, func() { cmd.Process.Kill() })
		var lastStep string
		inCompaction := false
		killed := false
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "compacting":
				inCompaction, lastStep = true, ""
				if begun++; step == "" && begun == killIn && !killed {
					killed = true
					time.AfterFunc(killDelay, func() { cmd.Process.Signal(syscall.SIGKILL) })
				}
			case strings.HasPrefix(line, "step "):
				lastStep = strings.TrimPrefix(line, "step ")
			case strings.HasPrefix(line, "compacted "):
				inCompaction = false
				if strings.HasPrefix(line, "compacted true") {
					compactions++
				}
			default:
				var id uint64
				var serial string
				if _, err := fmt.Sscanf(line, "%d %s", &id, &serial); err != nil {
					t.Errorf("child printed %q", line)
					continue
				}
				if prev, dup := committed[id]; dup {
					t.Errorf("id %d committed twice (%s, %s)", id, prev, serial)
				}
				committed[id] = serial
			}
		}
		cmd.Wait()
		guard.Stop()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("round %d: child ended with %v, want killed by SIGKILL; stderr:\n%s", round, cmd.ProcessState, stderr.String())
		}
		if step != "" && lastStep != step {
			t.Fatalf("round %d: child died after step %q, want killed at %q", round, lastStep, step)
		}
		where := "at step " + step
		if step == "" {
			where = fmt.Sprintf("%v after compaction %d began (last step %q, in compaction: %t)", killDelay, killIn, lastStep, inCompaction)
		}

		s := openStore(t, dir)
		if err := s.Check(); err != nil {
			t.Errorf("round %d: check after SIGKILL %s: %v", round, where, err)
		}
		lost := 0
		for id, serial := range committed {
			v, err := s.Get(id)
			if err != nil || v.Serial != serial {
				lost++
				t.Errorf("round %d: verdict %d (%s) after SIGKILL %s: %+v, %v", round, id, serial, where, v, err)
				continue
			}
			if data, err := os.ReadFile(s.ImagePath(v)); err != nil || !bytes.Equal(data, crashImage(serial)) {
				t.Errorf("round %d: image of %d: %v", round, id, err)
			}
		}
		if left := compactLeftovers(t, dir); len(left) != 0 {
			t.Errorf("round %d: compaction leftovers after reopen: %v", round, left)
		}
		s.Close()
		t.Logf("round %d: killed %s; %d verdicts committed so far, lost %d", round, where, len(committed), lost)
		if lost != 0 {
			t.FailNow()
		}
	}
	if compactions == 0 {
		t.Errorf("no compaction completed in any round, want some (the random rounds run several)")
	}
}
