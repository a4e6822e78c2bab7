package store

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// helperEnv makes TestHelperProcess act as a crashing writer on that dir.
const helperEnv = "TAKT_STORE_CRASH_HELPER_DIR"

// crashImage is the image the helper commits for serial, so the parent can
// check the content without talking to the child.
func crashImage(serial string) []byte {
	return bytes.Repeat([]byte(serial+"|"), 4096/(len(serial)+1))
}

// TestHelperProcess is not a test: run by TestCrashLosesNothing as a child, it
// commits verdicts from 4 goroutines until killed and prints "id serial" for
// each Commit that returned nil.
func TestHelperProcess(t *testing.T) {
	dir := os.Getenv(helperEnv)
	if dir == "" {
		return
	}
	time.AfterFunc(60*time.Second, func() { os.Exit(3) }) // never outlive a lost parent
	s, err := Open(dir, Options{OpenTimeout: 5 * time.Second})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	for w := range 4 {
		go func() {
			for n := 0; ; n++ {
				serial := fmt.Sprintf("p%d-w%d-%d", os.Getpid(), w, n)
				v := newVerdict([]string{Pass, Fail, NoDecision}[n%3], serial)
				v.Time = time.Now()
				if err := s.Commit(context.Background(), v, &Image{Data: crashImage(serial), Ext: "jpg"}); err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(2)
				}
				fmt.Fprintf(os.Stdout, "%d %s\n", v.ID, serial)
			}
		}()
	}
	select {}
}

// TestCrashLosesNothing SIGKILLs a committing child process, three times on
// the same store, and checks that every verdict a child reported as committed
// is there, with its image.
func TestCrashLosesNothing(t *testing.T) {
	const rounds, killAfter = 3, 100
	dir := t.TempDir()
	committed := map[uint64]string{}
	for round := range rounds {
		n := len(committed)
		crashChild(t, dir, killAfter, committed)
		t.Logf("round %d: child reported %d ids before SIGKILL", round, len(committed)-n)
	}

	s := openStore(t, dir)
	var maxID uint64
	for id, serial := range committed {
		maxID = max(maxID, id)
		v, err := s.Get(id)
		if err != nil {
			t.Errorf("verdict %d (%s) lost: %v", id, serial, err)
			continue
		}
		if v.Serial != serial {
			t.Errorf("Get(%d).Serial = %q, want %q", id, v.Serial, serial)
		}
		data, err := os.ReadFile(s.ImagePath(v))
		if err != nil {
			t.Errorf("image of %d: %v", id, err)
		} else if !bytes.Equal(data, crashImage(serial)) {
			t.Errorf("image of %d is %d bytes %q..., want %d bytes of %q", id, len(data), data[:min(16, len(data))], len(crashImage(serial)), serial)
		}
	}
	// Every record in the store (some committed after the last printed id)
	// points to an intact image, and nothing half-written is left.
	all, err := s.List(0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range all {
		if data, err := os.ReadFile(s.ImagePath(v)); err != nil || !bytes.Equal(data, crashImage(v.Serial)) {
			t.Errorf("record %d: image %s unreadable or wrong (%v)", v.ID, v.ImageRef, err)
		}
	}
	if tmp := tempFiles(t, dir); len(tmp) != 0 {
		t.Errorf("temp files after reopen: %v, want none", tmp)
	}
	c, err := s.Counts()
	if err != nil {
		t.Fatal(err)
	}
	if c.Total != uint64(len(all)) || c.Total < uint64(len(committed)) {
		t.Errorf("Counts().Total = %d, want %d records (>= %d reported)", c.Total, len(all), len(committed))
	}
	v := newVerdict(Pass, "after-crash")
	if err := s.Commit(context.Background(), v, nil); err != nil {
		t.Fatal(err)
	}
	if v.ID <= maxID {
		t.Errorf("id after crash = %d, want > %d", v.ID, maxID)
	}
	t.Logf("children reported %d ids, store has %d records", len(committed), len(all))
}

// crashChild runs TestHelperProcess on dir, SIGKILLs it once it reported
// killAfter ids, and adds every id it reported to committed.
func crashChild(t *testing.T, dir string, killAfter int, committed map[uint64]string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), helperEnv+"="+dir)
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
	defer guard.Stop()

	n := 0
	killed := false
	sc := bufio.NewScanner(stdout)
	for sc.Scan() { // after the kill, read what was printed before it
		var id uint64
		var serial string
		if _, err := fmt.Sscanf(sc.Text(), "%d %s", &id, &serial); err != nil {
			t.Errorf("child printed %q, want \"id serial\"", sc.Text())
			continue
		}
		if prev, dup := committed[id]; dup {
			t.Errorf("id %d committed twice (%s, %s)", id, prev, serial)
		}
		committed[id] = serial
		if n++; n >= killAfter && !killed {
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			killed = true
		}
	}
	err = cmd.Wait()
	if !killed {
		t.Fatalf("child exited (%v) after %d ids, want >= %d; stderr:\n%s", err, n, killAfter, stderr.String())
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child ended with %v, want killed by SIGKILL; stderr:\n%s", err, stderr.String())
	}
}
