package cloudsync

import (
	"context"

	"github.com/takt-edge/takt/cloudsync/wire"
)

// Outbox is the station's durable queue of verdicts to upload, as the
// [Uploader] sees it. agent/store implements it; cloudsync defines it so that
// it never imports the station.
//
// Contract:
//
//   - Pending returns up to n items that are not yet acknowledged, lowest id
//     first. The set it returns is fixed durably when it is first returned:
//     every later call, also after a crash and restart, returns the same items
//     (or the first n of them) until each is acknowledged, and only then a new
//     set. A batch built from it therefore gets the same object key when it is
//     retried. It returns an empty slice, not an error, when nothing is
//     pending. It may block briefly on the disk; it honours ctx only before it
//     starts.
//   - Ack marks items done after the object store confirmed them: they are
//     never returned again and their local copies become free to evict. Ids
//     that are unknown or already acknowledged are ignored. Ack returns after
//     the change is durable.
//   - PendingLabels returns up to n operator label entries that are not yet
//     acknowledged, lowest sequence first. An entry never changes once it is
//     queued, and its object key and content follow from it alone, so no
//     set needs sealing: a retry after a crash writes the same keys with the
//     same bytes. It returns an empty slice when nothing is pending.
//   - AckLabels removes label entries (by Label.Seq) after the object store
//     confirmed them; unknown sequences are ignored. It returns after the
//     change is durable.
//   - Backlog reports what is still to upload; it is a short read.
//
// Items and Labels own their byte slices; the Uploader does not modify them.
type Outbox interface {
	Pending(ctx context.Context, n int) ([]wire.Item, error)
	Ack(ctx context.Context, ids []uint64) error
	PendingLabels(ctx context.Context, n int) ([]wire.Label, error)
	AckLabels(ctx context.Context, seqs []uint64) error
	Backlog() (wire.Backlog, error)
}
