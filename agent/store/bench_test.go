package store

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// BenchmarkCommit measures Commit sequentially and from many goroutines,
// against a baseline measured in the same run: one plain bbolt Update (one
// fsync) per record, which is what Commit would cost without group commit.
// Compare store/* with bolt-update/* rather than reading absolute times.
//
//	go test -run=^$ -bench=BenchmarkCommit -benchmem ./agent/store/
func BenchmarkCommit(b *testing.B) {
	img := &Image{Data: make([]byte, 64<<10), Ext: "jpg"} // a small JPEG's worth
	for _, mode := range []struct {
		name     string
		parallel bool
	}{{"seq", false}, {"par", true}} {
		b.Run(mode.name+"/bolt-update", func(b *testing.B) {
			s := openStore(b, b.TempDir())
			v := newVerdict(Pass, "bench")
			var id atomic.Uint64
			commit := func() {
				v := *v
				v.ID = id.Add(1)
				data, err := json.Marshal(&v)
				if err != nil {
					b.Fatal(err)
				}
				err = s.db.Update(func(tx *bolt.Tx) error {
					return tx.Bucket(bucketVerdicts).Put(idKey(v.ID), data)
				})
				if err != nil {
					b.Fatal(err)
				}
			}
			run(b, mode.parallel, commit)
		})
		for _, withImage := range []bool{false, true} {
			name := mode.name + "/store"
			var im *Image
			if withImage {
				name += "+image64k"
				im = img
			}
			b.Run(name, func(b *testing.B) {
				s := openStore(b, b.TempDir())
				ctx := context.Background()
				commit := func() {
					if err := s.Commit(ctx, newVerdict(Pass, "bench"), im); err != nil {
						b.Fatal(err)
					}
				}
				run(b, mode.parallel, commit)
				st := s.Stats()
				b.ReportMetric(float64(st.Verdicts)/float64(max(st.Transactions, 1)), "verdicts/tx")
			})
		}
	}
}

// run calls commit b.N times, from one goroutine or from 8 per GOMAXPROCS.
func run(b *testing.B, parallel bool, commit func()) {
	b.ReportAllocs()
	b.ResetTimer()
	if !parallel {
		for range b.N {
			commit()
		}
		return
	}
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			commit()
		}
	})
}
