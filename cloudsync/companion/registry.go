package companion

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/takt-edge/takt/cloudsync"

	"github.com/takt-edge/takt/cloudsync/companion/trainer"
	"github.com/takt-edge/takt/models/bundle"
)

// The model registry in the bucket:
//
//	models/{name}/{version}/bundle.tar   signed bundle, written once (If-None-Match: *)
//	models/{name}/index.json             RegistryIndex, replaced with If-Match on its ETag

// RegistryIndex is models/{name}/index.json.
type RegistryIndex struct {
	Name string `json:"name"`
	// Promoted is the version stations should run ("" before the first).
	Promoted string         `json:"promoted,omitempty"`
	Versions []VersionEntry `json:"versions"`
	Updated  time.Time      `json:"updated"`
}

// VersionEntry is one bundle in the registry.
type VersionEntry struct {
	Version    string    `json:"version"`
	Key        string    `json:"key"`
	SHA256     string    `json:"sha256"` // of bundle.tar
	Size       int64     `json:"size"`
	Created    time.Time `json:"created"`
	Job        string    `json:"job"`
	Experiment string    `json:"experiment"`
	Trigger    string    `json:"trigger"`
	// Metrics: the validation results (val_*) and the trainer's figures.
	Metrics map[string]float64 `json:"metrics,omitempty"`
	// Baseline is the drift baseline: deciles of good-image scores.
	Baseline []float64 `json:"baseline,omitempty"`
	// ImageBaseline is the image drift baseline: mean and deviation of each
	// image statistic over the job's good images.
	ImageBaseline map[string]StatBaseline `json:"image_baseline,omitempty"`
	Promoted      bool                    `json:"promoted"`
	// Decision says why it was or was not promoted.
	Decision string `json:"decision"`
}

// BundleKey is models/{name}/{version}/bundle.tar.
func BundleKey(name, version string) string { return "models/" + name + "/" + version + "/bundle.tar" }

// IndexKey is models/{name}/index.json.
func IndexKey(name string) string { return "models/" + name + "/index.json" }

// readIndex reads a model's index and its ETag ("" when there is none yet).
func (c *Companion) readIndex(ctx context.Context, name string) (RegistryIndex, string, error) {
	data, etag, err := c.bucket.Get(ctx, IndexKey(name))
	if errors.Is(err, cloudsync.ErrNotFound) {
		return RegistryIndex{Name: name, Versions: []VersionEntry{}}, "", nil
	}
	if err != nil {
		return RegistryIndex{}, "", err
	}
	var idx RegistryIndex
	if err := json.Unmarshal(data, &idx); err != nil {
		return RegistryIndex{}, "", fmt.Errorf("%s: %w", IndexKey(name), err)
	}
	return idx, etag, nil
}

// updateIndex applies fn to the current index and writes it back with a
// conditional PUT, retrying when another writer got there first.
func (c *Companion) updateIndex(ctx context.Context, name string, fn func(*RegistryIndex) error) (RegistryIndex, error) {
	for attempt := 0; ; attempt++ {
		idx, etag, err := c.readIndex(ctx, name)
		if err != nil {
			return idx, err
		}
		if err := fn(&idx); err != nil {
			return idx, err
		}
		idx.Updated = time.Now().UTC()
		data, err := json.MarshalIndent(idx, "", "  ")
		if err != nil {
			return idx, err
		}
		err = c.bucket.PutIfMatch(ctx, IndexKey(name), append(data, '\n'), "application/json", etag)
		if err == nil {
			return idx, nil
		}
		if !errors.Is(err, cloudsync.ErrPrecondition) || attempt >= 5 {
			return idx, err
		}
		c.log.Info().Str("model", name).Msg("registry index changed meanwhile; reading it again")
	}
}

// nextVersion is the patch above every version in the registry and every
// version the stations reported; 1.0.0 when there is none.
func nextVersion(idx RegistryIndex, seen map[string]int) string {
	var top *bundle.Semver
	consider := func(v string) {
		s, err := bundle.ParseSemver(v)
		if err != nil {
			return
		}
		if top == nil || s.Compare(*top) > 0 {
			top = &s
		}
	}
	for _, v := range idx.Versions {
		consider(v.Version)
	}
	for v := range seen {
		consider(v)
	}
	if top == nil {
		return "1.0.0"
	}
	return fmt.Sprintf("%d.%d.%d", top.Major, top.Minor, top.Patch+1)
}

// signBundle builds the signed bundle of a candidate.
func signBundle(cand *trainer.Candidate, name, version, dataset string, metrics map[string]float64, key ed25519.PrivateKey) ([]byte, error) {
	m := cand.Manifest
	m.Name, m.Version, m.Dataset = name, version, dataset
	m.Metrics = map[string]float64{}
	for k, v := range cand.Manifest.Metrics {
		m.Metrics[k] = v
	}
	for k, v := range metrics {
		m.Metrics[k] = v
	}
	files := map[string][]byte{}
	if len(cand.Golden) > 0 {
		m.Golden = &bundle.GoldenSet{}
		for i, g := range cand.Golden {
			f := fmt.Sprintf("golden/%04d.png", i+1)
			files[f] = g.PNG
			m.Golden.Cases = append(m.Golden.Cases, bundle.GoldenCase{File: f, Score: g.Score})
		}
	}
	var buf bytes.Buffer
	if err := bundle.BuildBundle(&buf, m, cand.ONNX, files, key); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// publishVersion writes the bundle (once) and adds its entry to the index;
// with promote it becomes the promoted version. It refuses a version that
// is not above every version in the index.
func (c *Companion) publishVersion(ctx context.Context, name string, data []byte, e VersionEntry, promote bool) (RegistryIndex, error) {
	sum := sha256.Sum256(data)
	e.Key, e.SHA256, e.Size = BundleKey(name, e.Version), hex.EncodeToString(sum[:]), int64(len(data))
	e.Created, e.Promoted = time.Now().UTC(), promote
	if _, err := c.bucket.PutNew(ctx, e.Key, data, "application/x-tar"); err != nil {
		return RegistryIndex{}, fmt.Errorf("registry: %w", err)
	}
	return c.updateIndex(ctx, name, func(idx *RegistryIndex) error {
		nv, err := bundle.ParseSemver(e.Version)
		if err != nil {
			return err
		}
		for _, v := range idx.Versions {
			if v.Version == e.Version && v.SHA256 == e.SHA256 {
				return nil // this very entry, written before a crash
			}
			if ov, err := bundle.ParseSemver(v.Version); err == nil && ov.Compare(nv) >= 0 {
				return fmt.Errorf("registry: version %s is not above %s already in %s", e.Version, v.Version, IndexKey(name))
			}
		}
		if promote {
			for i := range idx.Versions {
				idx.Versions[i].Promoted = false
			}
			idx.Promoted = e.Version
		}
		idx.Versions = append(idx.Versions, e)
		slices.SortFunc(idx.Versions, func(a, b VersionEntry) int {
			x, _ := bundle.ParseSemver(a.Version)
			y, _ := bundle.ParseSemver(b.Version)
			return x.Compare(y)
		})
		return nil
	})
}

// promotedBundle downloads the promoted version's bundle ("" version when
// none is promoted).
func (c *Companion) promotedBundle(ctx context.Context, idx RegistryIndex) (VersionEntry, []byte, error) {
	if idx.Promoted == "" {
		return VersionEntry{}, nil, nil
	}
	for _, v := range idx.Versions {
		if v.Version == idx.Promoted {
			data, _, err := c.bucket.Get(ctx, v.Key)
			if err != nil {
				return v, nil, err
			}
			sum := sha256.Sum256(data)
			if hex.EncodeToString(sum[:]) != v.SHA256 {
				return v, nil, fmt.Errorf("registry: %s does not match its sha256 in the index", v.Key)
			}
			return v, data, nil
		}
	}
	return VersionEntry{}, nil, fmt.Errorf("registry: promoted version %s is not in the index", idx.Promoted)
}
