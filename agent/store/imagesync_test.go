package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// The committer fsyncs the folder of a group's images once, before the
// transaction that names them: when it starts, every image of the batch is
// complete at its final name. A failed folder fsync fails the verdicts whose
// image is in that folder (their images removed, no record) and commits the
// rest of the group.
func TestImageFoldersSyncedOncePerGroup(t *testing.T) {
	const writers, perWriter = 8, 6
	s := openStore(t, t.TempDir())
	s.gatherWait = 50 * time.Millisecond // groups of several, whatever the disk's speed
	imageOf := func(serial string) []byte { return bytes.Repeat([]byte(serial+"|"), 2000) }
	var mu sync.Mutex
	var groups, txImages, folderSyncs, largest int
	var bad []string
	s.hookTxImages = func(paths []string) {
		mu.Lock()
		defer mu.Unlock()
		groups++
		txImages += len(paths)
		largest = max(largest, len(paths))
		for _, p := range paths {
			if data, err := os.ReadFile(p); err != nil || len(data) == 0 {
				bad = append(bad, fmt.Sprintf("%s: %d bytes, %v", p, len(data), err))
			}
		}
	}
	// Failing day: the images of verdicts captured that day sit in a folder
	// whose fsync fails.
	failDay := testTime.AddDate(0, 0, 1)
	failDir := filepath.Join(s.dir, imagesDir, failDay.UTC().Format("2006/01/02"))
	syncErr := errors.New("injected fsync failure")
	s.hookSyncFolder = func(dir string) error {
		mu.Lock()
		folderSyncs++
		mu.Unlock()
		if dir == failDir {
			return syncErr
		}
		return nil
	}
	type result struct {
		serial  string
		failing bool
		v       Verdict
		err     error
	}
	results := make(chan result, writers*perWriter)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				serial := fmt.Sprintf("w%d-%d", w, i)
				v := newVerdict(Fail, serial)
				failing := i == 3
				if failing {
					v.Time = failDay
				}
				err := s.Commit(context.Background(), v, &Image{Data: imageOf(serial), Ext: "jpg"})
				results <- result{serial, failing, *v, err}
			}
		})
	}
	wg.Wait()
	close(results)
	committed := 0
	for r := range results {
		if r.failing {
			if !errors.Is(r.err, syncErr) {
				t.Errorf("commit %s into a folder whose fsync fails = %v, want that error", r.serial, r.err)
			}
			continue
		}
		if r.err != nil {
			t.Errorf("commit %s: %v", r.serial, r.err)
			continue
		}
		committed++
		data, err := os.ReadFile(s.ImagePath(r.v))
		if err != nil || !bytes.Equal(data, imageOf(r.serial)) {
			t.Errorf("image of %s (%s): %d bytes, %v; want its content", r.serial, r.v.ImageRef, len(data), err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(bad) > 0 {
		t.Errorf("images not complete at their final name when their transaction started: %v", bad)
	}
	if largest < 2 {
		t.Errorf("largest group held %d images, want several", largest)
	}
	if folderSyncs >= writers*perWriter {
		t.Errorf("%d folder fsyncs for %d images, want one per group and folder", folderSyncs, writers*perWriter)
	}
	all, err := s.List(0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != committed {
		t.Errorf("store holds %d records, want the %d committed ones", len(all), committed)
	}
	for _, v := range all {
		if v.Time.Equal(failDay) {
			t.Errorf("record %d (%s) committed although its image folder was not synced", v.ID, v.Serial)
		}
	}
	mustCheck(t, s)
	if tmp := tempFiles(t, s.dir); len(tmp) != 0 {
		t.Errorf("temp files left: %v", tmp)
	}
	entries, err := os.ReadDir(failDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Errorf("%d files left in the failing folder, want its images removed", len(entries))
	}
	t.Logf("%d verdicts committed with their images in %d groups (largest %d images), %d folder fsyncs", committed, groups, largest, folderSyncs)
}
