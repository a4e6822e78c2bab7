package cloudsync

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/takt-edge/takt/cloudsync/cloudtest"
)

// The companion's bucket view: list with a start-after cursor and one level
// at a time, get with ETag, and compare-and-swap writes that lose to a
// concurrent writer with ErrPrecondition.
func TestBucketListGetAndConditionalReplace(t *testing.T) {
	s3 := cloudtest.StartS3(t)
	cfg := DefaultConfig()
	cfg.Endpoint, cfg.Bucket, cfg.Region, cfg.PathStyle = "http://"+s3.Endpoint, s3.NewBucket(t, "takt"), s3.Region, true
	cfg.AccessKey, cfg.SecretKey, cfg.RequestTimeout = s3.AccessKey, Secret(s3.SecretKey), 5*time.Second
	b, err := OpenBucket(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := context.Background()
	for _, k := range []string{"verdicts/a/1.jsonl", "verdicts/a/2.jsonl", "verdicts/b/1.jsonl"} {
		if _, err := b.PutNew(ctx, k, []byte(k), "text/plain"); err != nil {
			t.Fatal(err)
		}
	}
	var keys []string
	collect := func(o ObjectInfo) error { keys = append(keys, o.Key); return nil }
	if err := b.List(ctx, "verdicts/", "", false, collect); err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || keys[0] != "verdicts/a/" || keys[1] != "verdicts/b/" {
		t.Errorf("one level under verdicts/ = %q, want the two station prefixes", keys)
	}
	keys = nil
	if err := b.List(ctx, "verdicts/a/", "verdicts/a/1.jsonl", true, collect); err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 || keys[0] != "verdicts/a/2.jsonl" {
		t.Errorf("after verdicts/a/1.jsonl = %q, want [verdicts/a/2.jsonl]", keys)
	}
	if _, _, err := b.Get(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("get of a missing key = %v, want ErrNotFound", err)
	}

	const idx = "models/m/index.json"
	if err := b.PutIfMatch(ctx, idx, []byte("v1"), "application/json", ""); err != nil {
		t.Fatalf("create: %v", err)
	}
	if err := b.PutIfMatch(ctx, idx, []byte("v1b"), "application/json", ""); !errors.Is(err, ErrPrecondition) {
		t.Errorf("second create = %v, want ErrPrecondition", err)
	}
	data, etag, err := b.Get(ctx, idx)
	if err != nil || string(data) != "v1" || etag == "" {
		t.Fatalf("get = %q, %q, %v", data, etag, err)
	}
	if err := b.PutIfMatch(ctx, idx, []byte("v2"), "application/json", etag); err != nil {
		t.Fatalf("replace with the read etag: %v", err)
	}
	if err := b.PutIfMatch(ctx, idx, []byte("v3"), "application/json", etag); !errors.Is(err, ErrPrecondition) {
		t.Errorf("replace with a stale etag = %v, want ErrPrecondition", err)
	}
	if data, _, _ := b.Get(ctx, idx); string(data) != "v2" {
		t.Errorf("index = %q, want v2 (the stale write must not land)", data)
	}
}
