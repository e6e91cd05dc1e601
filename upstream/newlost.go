package upstream

import (
	"fmt"
	"strings"
	"time"
)

// Ahrefs v3 has no new/lost endpoint. v2's backlinks_new_lost listed each
// change of a link as a row of its own; in v3 the same events are two
// readings of all-backlinks with history=since:D:
//
//   - a link was gained at first_seen_link, so the NEW events of a window
//     are the links whose first_seen_link falls in it;
//   - a link was lost at last_seen (is_lost), so the LOST events are the
//     lost links whose last_seen falls in it.
//
// A link gained and lost in the same window is thus two events. The two
// readings are separate upstream queries (feeds) that a caller merges in
// the order it wants; the virtual fields change and change_time let a
// filter or an order name the event rather than the link.

// Change is the kind of a new/lost event.
type Change int

// The two changes, in the order change sorts them (ascending).
const (
	ChangeNew Change = iota + 1
	ChangeLost
)

func (c Change) String() string {
	if c == ChangeLost {
		return "lost"
	}
	return "new"
}

// The virtual fields of the new/lost events.
const (
	ChangeFieldName     = "change"
	ChangeTimeFieldName = "change_time"
)

var newLostSchema = func() *Schema {
	base := MustSchema(AllBacklinks)
	fields := append([]Field(nil), base.fields...)
	fields = append(fields,
		Field{Name: ChangeFieldName, Kind: KindString, Cost: 0, Where: true, Order: true, Enum: []string{"new", "lost"},
			Doc: "The change the row reports: new (the link was found) or lost. Ordering puts new before lost."},
		Field{Name: ChangeTimeFieldName, Kind: KindTime, Cost: 1, Where: true, Order: true,
			Doc: "When the change happened: first_seen_link for a new link, last_seen for a lost one."},
	)
	s := newSchema(AllBacklinks, base.ResponseKey, base.HasAggregation, base.HasHistory, fields)
	return s
}()

// NewLostSchema is the catalog of new/lost events: every all-backlinks
// field plus change and change_time, which filters and orders may name.
// Queries sent upstream never contain the virtual fields: ChangeFeed.Bind
// replaces them.
func NewLostSchema() *Schema { return newLostSchema }

// ChangeFeed is the upstream reading of one kind of change.
type ChangeFeed struct {
	Change Change
	// TimeField is the all-backlinks field holding the time of the change.
	TimeField string
}

// ChangeFeeds are the two readings, new first.
var ChangeFeeds = []ChangeFeed{
	{Change: ChangeNew, TimeField: "first_seen_link"},
	{Change: ChangeLost, TimeField: "last_seen"},
}

// History is the history parameter of a window starting at since: it keeps
// the live links and the links lost on or after since, which holds every
// event of the window.
func (f ChangeFeed) History(since time.Time) string { return HistorySince(since) }

// Window selects the feed's events in [since, until); a zero until leaves
// the window open.
func (f ChangeFeed) Window(since, until time.Time) Expr {
	day := func(t time.Time) string { return t.UTC().Format(time.DateOnly) }
	w := And{Is{Field: f.TimeField, Cond: Cond{Op: OpGte, Value: day(since)}}}
	if !until.IsZero() {
		w = append(w, Is{Field: f.TimeField, Cond: Cond{Op: OpLt, Value: day(until)}})
	}
	if f.Change == ChangeLost {
		w = append(And{Is{Field: "is_lost", Cond: Cond{Op: OpEq, Value: true}}}, w...)
	}
	return w
}

// Fields are the all-backlinks fields the feed's window filters on.
func (f ChangeFeed) Fields() []string {
	if f.Change == ChangeLost {
		return []string{"is_lost", f.TimeField}
	}
	return []string{f.TimeField}
}

// Field maps an event field to the feed's upstream field: change_time to
// the time field; change has none (it is constant within a feed).
func (f ChangeFeed) Field(name string) (string, bool) {
	switch name {
	case ChangeTimeFieldName:
		return f.TimeField, true
	case ChangeFieldName:
		return "", false
	}
	return name, true
}

// Bind rewrites an event filter for the feed: change_time becomes the time
// field and every condition on change is decided, since all the feed's
// rows have the same change. matches is false when no row of the feed can
// match (the feed need not be read at all); a nil Expr with matches true
// means every row matches.
func (f ChangeFeed) Bind(e Expr) (out Expr, matches bool, err error) {
	b, err := f.bind(e)
	if err != nil {
		return nil, false, err
	}
	return b.expr, !b.never, nil
}

// decided is an Expr or a constant.
type decided struct {
	expr          Expr
	always, never bool
}

func (f ChangeFeed) bind(e Expr) (decided, error) {
	switch e := e.(type) {
	case nil:
		return decided{always: true}, nil
	case And:
		var out And
		for _, x := range e {
			d, err := f.bind(x)
			if err != nil {
				return d, err
			}
			switch {
			case d.never:
				return d, nil
			case !d.always:
				out = append(out, d.expr)
			}
		}
		return collapse(out, len(out) == 0, false), nil
	case Or:
		var out Or
		for _, x := range e {
			d, err := f.bind(x)
			if err != nil {
				return d, err
			}
			switch {
			case d.always:
				return d, nil
			case !d.never:
				out = append(out, d.expr)
			}
		}
		return collapse(out, false, len(out) == 0), nil
	case Not:
		d, err := f.bind(e.X)
		if err != nil || d.always || d.never {
			return decided{always: d.never, never: d.always}, err
		}
		return decided{expr: Not{X: d.expr}}, nil
	case Is:
		switch e.Field {
		case ChangeFieldName:
			ok, err := f.changeIs(e.Cond)
			return decided{always: ok, never: !ok}, err
		case ChangeTimeFieldName:
			e.Field = f.TimeField
		}
		return decided{expr: e}, nil
	case ListIs:
		return decided{expr: e}, nil
	}
	return decided{}, fmt.Errorf("unknown where node %T", e)
}

func collapse[T And | Or](list T, always, never bool) decided {
	switch {
	case always || never:
		return decided{always: always, never: never}
	case len(list) == 1:
		return decided{expr: list[0]}
	}
	return decided{expr: Expr(list)}
}

// changeIs decides a condition on change for the feed. Values are compared
// without case, and CHANGE_NEW / CHANGE_LOST (the enum names of linkgate's
// rows) are accepted alongside new / lost.
func (f ChangeFeed) changeIs(c Cond) (bool, error) {
	have := f.Change.String()
	s, _ := c.Value.(string)
	want := strings.TrimPrefix(strings.ToLower(s), "change_")
	switch c.Op {
	case OpIsNull, OpEmpty:
		return false, nil
	case OpEq, OpNeq:
		if want != "new" && want != "lost" {
			return false, &InvalidError{Param: "filter", Field: ChangeFieldName, Problem: fmt.Sprintf("is new or lost, not %q", s)}
		}
		return (want == have) == (c.Op == OpEq), nil
	}
	return false, &InvalidError{Param: "filter", Field: ChangeFieldName, Problem: fmt.Sprintf("compare it with = or != (new or lost), not %s", c.Op)}
}
