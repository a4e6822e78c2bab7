package companion

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"path"
	"path/filepath"
	"slices"

	"golang.org/x/sync/errgroup"

	"github.com/takt-edge/takt/cloudsync/companion/trainer"
)

// classOf says whether a sample is a good part, a defect or neither (""):
//
//	PASS, no label or false_reject     good
//	PASS labelled false_accept         defect (an escape the operator caught)
//	FAIL labelled false_reject         good   (and NO_DECISION labelled false_reject)
//	FAIL, no label                     defect when training.trust_fail, else left out
//	NO_DECISION, no label              left out
func classOf(s Sample, trustFail bool) string {
	switch {
	case s.Decision == "PASS" && s.Label == "false_accept":
		return trainer.ClassDefect
	case s.Decision == "PASS":
		return trainer.ClassGood
	case s.Label == "false_reject":
		return trainer.ClassGood
	case s.Decision == "FAIL" && s.Label == "" && trustFail:
		return trainer.ClassDefect
	}
	return ""
}

// datasetPlan is a job's split of the samples with images.
type datasetPlan struct {
	TrainGood, TrainDefect, ValGood, ValDefect []Sample
}

// DatasetSummary counts a job's dataset.
type DatasetSummary struct {
	TrainGood   int `json:"train_good"`
	TrainDefect int `json:"train_defect"`
	ValGood     int `json:"val_good"`
	ValDefect   int `json:"val_defect"`
	Labels      int `json:"labels"` // samples with an operator label
}

func (p datasetPlan) summary() DatasetSummary {
	d := DatasetSummary{TrainGood: len(p.TrainGood), TrainDefect: len(p.TrainDefect), ValGood: len(p.ValGood), ValDefect: len(p.ValDefect)}
	for _, l := range [][]Sample{p.TrainGood, p.TrainDefect, p.ValGood, p.ValDefect} {
		for _, s := range l {
			if s.Label != "" {
				d.Labels++
			}
		}
	}
	return d
}

// splitHash places a sample in the validation set by a hash of its station
// and id, so a sample stays on its side of the split from job to job. FNV-1a
// alone barely mixes its top bits for keys that differ in the last digits
// (the 14 defects of the demo's line all hashed below 0.5); the splitmix64
// finalizer spreads them.
func splitHash(s Sample) float64 {
	h := fnv.New64a()
	fmt.Fprintf(h, "%s/%d", s.Station, s.ID)
	x := h.Sum64()
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	x ^= x >> 31
	return float64(x>>11) / float64(1<<53)
}

// planDataset chooses and splits the samples of a model: the newest
// max_good good images, holdout of them (at least 2) for validation; the
// defects half and half by the order of their hashes (the validation side
// gets the odd one), so both sides get labelled defects once there are two.
func planDataset(samples []Sample, cfg TrainingConfig) (datasetPlan, error) {
	var good, defect []Sample
	for _, s := range samples {
		if s.Image == "" {
			continue
		}
		switch classOf(s, cfg.TrustFail) {
		case trainer.ClassGood:
			good = append(good, s)
		case trainer.ClassDefect:
			defect = append(defect, s)
		}
	}
	newest := func(a, b Sample) int {
		if c := b.Time.Compare(a.Time); c != 0 {
			return c
		}
		return cmp.Or(cmp.Compare(a.Station, b.Station), cmp.Compare(a.ID, b.ID))
	}
	slices.SortFunc(good, newest)
	slices.SortFunc(defect, newest)
	if len(good) > cfg.MaxGood {
		good = good[:cfg.MaxGood]
	}
	if len(good) < cfg.MinGood {
		return datasetPlan{}, fmt.Errorf("%d good images with an uploaded image, need training.min_good %d", len(good), cfg.MinGood)
	}
	var p datasetPlan
	byHash := slices.Clone(good)
	slices.SortStableFunc(byHash, func(a, b Sample) int { return cmp.Compare(splitHash(a), splitHash(b)) })
	nVal := max(2, int(float64(len(good))*cfg.Holdout+0.5))
	nVal = min(nVal, len(good)-2)
	p.ValGood, p.TrainGood = byHash[:nVal], byHash[nVal:]
	slices.SortFunc(p.ValGood, newest)
	slices.SortFunc(p.TrainGood, newest)
	byHash = slices.Clone(defect)
	slices.SortStableFunc(byHash, func(a, b Sample) int { return cmp.Compare(splitHash(a), splitHash(b)) })
	nDef := (len(defect) + 1) / 2
	p.ValDefect, p.TrainDefect = byHash[:nDef], byHash[nDef:]
	slices.SortFunc(p.ValDefect, newest)
	slices.SortFunc(p.TrainDefect, newest)
	return p, nil
}

func fileName(s Sample) string {
	return fmt.Sprintf("%s-%016d%s", s.Station, s.ID, path.Ext(s.Image))
}

// materialize writes the training folder (dir/data) and the validation
// folder (dir/validation), each with good/, defect/ and labels.json, from
// the image cache (fetching what is missing).
func (c *Companion) materialize(ctx context.Context, model, job, dir string, p datasetPlan) (data, val string, err error) {
	all := slices.Concat(p.TrainGood, p.TrainDefect, p.ValGood, p.ValDefect)
	if err := c.fetchImages(ctx, all); err != nil {
		return "", "", err
	}
	data, val = filepath.Join(dir, "data"), filepath.Join(dir, "validation")
	for _, side := range []struct {
		root         string
		good, defect []Sample
	}{{data, p.TrainGood, p.TrainDefect}, {val, p.ValGood, p.ValDefect}} {
		lf := trainer.LabelsFile{Model: model, Job: job, Images: []trainer.DatasetEntry{}}
		for _, class := range []string{trainer.ClassGood, trainer.ClassDefect} {
			if err := os.MkdirAll(filepath.Join(side.root, class), 0o755); err != nil {
				return "", "", err
			}
			list := side.good
			if class == trainer.ClassDefect {
				list = side.defect
			}
			for _, s := range list {
				rel := class + "/" + fileName(s)
				if err := linkOrCopy(c.cachePath(s.Image), filepath.Join(side.root, rel)); err != nil {
					return "", "", err
				}
				lf.Images = append(lf.Images, trainer.DatasetEntry{File: rel, Class: class, Station: s.Station, VerdictID: s.ID,
					Time: s.Time, Decision: s.Decision, Label: s.Label, Score: s.Score, Model: s.Version})
			}
		}
		js, err := json.MarshalIndent(lf, "", "  ")
		if err != nil {
			return "", "", err
		}
		if err := os.WriteFile(filepath.Join(side.root, "labels.json"), append(js, '\n'), 0o644); err != nil {
			return "", "", err
		}
	}
	return data, val, nil
}

func (c *Companion) cachePath(key string) string {
	return filepath.Join(c.cfg.StateDir, "cache", filepath.FromSlash(key))
}

// fetchImages downloads the images of samples not in the cache yet.
func (c *Companion) fetchImages(ctx context.Context, samples []Sample) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(c.cfg.Ingest.Concurrency)
	for _, s := range samples {
		g.Go(func() error { return c.fetchImage(ctx, s.Image) })
	}
	return g.Wait()
}

// fetchImage downloads one image into the cache unless it is there; a
// cached one is marked used now (the least recently used go first, see
// PruneCache).
func (c *Companion) fetchImage(ctx context.Context, key string) error {
	p := c.cachePath(key)
	if _, err := os.Stat(p); err == nil {
		touch(p)
		return nil
	}
	data, _, err := c.bucket.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("%s: %w", key, err)
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return writeAtomic(p, data)
}

func linkOrCopy(src, dst string) error {
	if err := os.Link(src, dst); err == nil || errors.Is(err, os.ErrExist) {
		return nil
	}
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, data, 0o644)
}

// writeAtomic writes a file that survives a crash whole or not at all.
func writeAtomic(p string, data []byte) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(p), "."+filepath.Base(p)+".tmp*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err = tmp.Write(data); err != nil {
		return err
	}
	if err = tmp.Sync(); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp.Name(), p); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(p))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
