// Package yield counts a station's verdicts per minute over the last day, for the yield
// (PASS / parts) per hour and per shift that the operator page shows.
//
// # Caveats
//
// The book keeps 26 hours of minutes in memory; older verdicts drop out, and a restart
// starts empty unless the caller replays the store's recent verdicts with Add.
package yield

import (
	"sync"
	"time"

	"github.com/takt-edge/takt/agent/store"
)

// Book counts verdicts per minute over the last day, for yield per hour and shift.
type Book struct {
	mu     sync.Mutex
	shifts []int // shift starts, minutes after local midnight, ascending
	b      [yieldMinutes]minuteCount
	now    func() time.Time
}

const yieldMinutes = 26 * 60

type minuteCount struct {
	minute int64 // unix minute this bucket holds; buckets of older minutes are stale
	Counts
}

// Counts are verdict counts over some span, with the yield (PASS / parts).
type Counts struct {
	Parts      int     `json:"parts"`
	Pass       int     `json:"pass"`
	Fail       int     `json:"fail"`
	NoDecision int     `json:"no_decision"`
	Yield      float64 `json:"yield"` // PASS / parts; 0 without parts
}

// Span is the counts of one named span of time.
type Span struct {
	Name  string    `json:"name"`
	Start time.Time `json:"start"`
	Counts
}

// NewBook makes a book for shifts starting at the given minutes after local midnight
// (ascending, at least one).
func NewBook(shifts []int) *Book { return &Book{shifts: shifts, now: time.Now} }

// Add counts a verdict captured at t with decision.
func (y *Book) Add(t time.Time, decision string) {
	m := t.Unix() / 60
	y.mu.Lock()
	defer y.mu.Unlock()
	if m <= y.now().Unix()/60-yieldMinutes {
		return
	}
	b := &y.b[m%yieldMinutes]
	if b.minute != m {
		*b = minuteCount{minute: m}
	}
	b.Parts++
	switch decision {
	case store.Pass:
		b.Pass++
	case store.Fail:
		b.Fail++
	default:
		b.NoDecision++
	}
}

// sum counts the verdicts captured in [from, to).
func (y *Book) sum(from, to time.Time) Counts {
	var c Counts
	y.mu.Lock()
	defer y.mu.Unlock()
	lo, hi := from.Unix()/60, (to.Unix()+59)/60
	for i := range y.b {
		b := y.b[i]
		if b.Parts > 0 && b.minute >= lo && b.minute < hi {
			c.Parts += b.Parts
			c.Pass += b.Pass
			c.Fail += b.Fail
			c.NoDecision += b.NoDecision
		}
	}
	if c.Parts > 0 {
		c.Yield = float64(c.Pass) / float64(c.Parts)
	}
	return c
}

// Spans returns the current shift and the current and previous hours (local time), newest
// first after the shift.
func (y *Book) Spans(hours int) []Span {
	now := y.now()
	var out []Span
	start := y.shiftStart(now)
	out = append(out, Span{Name: "shift " + start.Format("15:04"), Start: start, Counts: y.sum(start, now.Add(time.Minute))})
	h := now.Truncate(time.Hour)
	for i := range hours {
		from := h.Add(-time.Duration(i) * time.Hour)
		out = append(out, Span{Name: from.Format("15:00"), Start: from, Counts: y.sum(from, from.Add(time.Hour))})
	}
	return out
}

// shiftStart is the start of the shift that t falls in (local time).
func (y *Book) shiftStart(t time.Time) time.Time {
	midnight := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, t.Location())
	m := t.Hour()*60 + t.Minute()
	last := -1
	for _, s := range y.shifts {
		if s <= m {
			last = s
		}
	}
	if last < 0 { // before the first shift of the day: the last shift of yesterday
		return midnight.AddDate(0, 0, -1).Add(time.Duration(y.shifts[len(y.shifts)-1]) * time.Minute)
	}
	return midnight.Add(time.Duration(last) * time.Minute)
}
