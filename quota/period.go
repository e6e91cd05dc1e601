package quota

import (
	"fmt"
	"time"
)

// periodKeyLayout names a period by the UTC date it starts on. It is part of
// every store key, so changing it orphans existing ledgers.
const periodKeyLayout = "2006-01-02"

// Period is one budget period: [Start, End) in UTC. Key names it in stores and
// in reservations, so a reservation is always charged to the period it was
// made in, even when it is settled after the rollover.
type Period struct {
	Key        string
	Start, End time.Time
}

// PeriodAt returns the period containing t for a budget that resets on
// resetDay (1..28) of every month at 00:00 UTC. The day is capped at 28 so
// that every month has it and no period is ever skipped or doubled.
func PeriodAt(t time.Time, resetDay int) Period {
	t = t.UTC()
	start := time.Date(t.Year(), t.Month(), resetDay, 0, 0, 0, 0, time.UTC)
	if t.Before(start) {
		start = start.AddDate(0, -1, 0)
	}
	return periodFrom(start)
}

func periodFrom(start time.Time) Period {
	return Period{Key: start.Format(periodKeyLayout), Start: start, End: start.AddDate(0, 1, 0)}
}

// Previous returns the period just before p.
func (p Period) Previous() Period {
	return periodFrom(p.Start.AddDate(0, -1, 0))
}

// Next returns the period just after p.
func (p Period) Next() Period { return periodFrom(p.End) }

// ParsePeriodKey turns a key from a Reservation back into its Period.
func ParsePeriodKey(key string) (Period, error) {
	start, err := time.Parse(periodKeyLayout, key)
	if err != nil {
		return Period{}, fmt.Errorf("quota: bad period key %q: %w", key, err)
	}
	return periodFrom(start), nil
}
