package service

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"unsafe"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/linkgate/linkgate/paging"
	"github.com/linkgate/linkgate/upstream"
)

// rowWriter fills row messages of one Go type from upstream records of one
// layout. Row messages name their fields exactly as the upstream does, so
// one writer serves every dataset. Everything reflection would cost per row
// is paid once, when the writer is built: the struct field of each selected
// field, its position in the record and its type. Rows are then written by
// plain stores into the generated struct: a field with presence is a
// pointer, which points into a block allocated once per page rather than
// into a new allocation per field (which is what protoreflect's Set does).
type rowWriter struct {
	fields []fieldWriter
	// per is how many fields of a row take a slot of each block.
	per [slotKinds]int
}

// fieldWriter writes one struct field.
type fieldWriter struct {
	offset uintptr // of the field in the struct, checked against its type
	col    int     // position in the record
	kind   goKind
	slot   int // index among the row's fields of the same block
}

// goKind is the Go type of a generated field.
type goKind int

const (
	ptrString goKind = iota
	ptrInt64
	ptrFloat64
	ptrBool
	ptrTimestamp
	slotKinds // the kinds above take slots of a block
	listString
	listInt64
)

var goKinds = map[reflect.Type]goKind{
	reflect.TypeFor[*string]():                ptrString,
	reflect.TypeFor[*int64]():                 ptrInt64,
	reflect.TypeFor[*float64]():               ptrFloat64,
	reflect.TypeFor[*bool]():                  ptrBool,
	reflect.TypeFor[*timestamppb.Timestamp](): ptrTimestamp,
	reflect.TypeFor[[]string]():               listString,
	reflect.TypeFor[[]int64]():                listInt64,
}

var rowWriters sync.Map // key: Go type, selection and record layout

// fits lists the catalog kinds each Go type holds.
var fits = map[goKind][]upstream.Kind{
	ptrString:    {upstream.KindString},
	ptrInt64:     {upstream.KindInt},
	ptrFloat64:   {upstream.KindFloat, upstream.KindInt},
	ptrBool:      {upstream.KindBool},
	ptrTimestamp: {upstream.KindTime, upstream.KindDate},
	listString:   {upstream.KindStringList},
	listInt64:    {upstream.KindIntList},
}

// writerFor returns the writer of T's messages with the selected fields of
// schema, from records laid out as fetched (the upstream query's select).
func writerFor[T any](schema *upstream.Schema, selected, fetched []string) (*rowWriter, error) {
	typ := reflect.TypeFor[T]()
	key := typ.String() + "\x00" + string(schema.Endpoint) + "\x00" + strings.Join(selected, ",") + "\x00" + strings.Join(fetched, ",")
	if w, ok := rowWriters.Load(key); ok {
		return w.(*rowWriter), nil
	}
	byName := map[string]reflect.StructField{}
	for i := range typ.NumField() {
		f := typ.Field(i)
		if name := protoName(f.Tag.Get("protobuf")); name != "" {
			byName[name] = f
		}
	}
	w := &rowWriter{}
	for _, name := range selected {
		sf, ok := byName[name]
		if !ok {
			return nil, fmt.Errorf("message %s has no field %q", typ, name)
		}
		kind, ok := goKinds[sf.Type]
		if !ok {
			return nil, fmt.Errorf("field %s of %s: no writer for %s", name, typ, sf.Type)
		}
		if f, ok := schema.Field(name); !ok || !slices.Contains(fits[kind], f.Kind) {
			return nil, fmt.Errorf("field %s of %s: %s cannot hold the catalog's kind", name, typ, sf.Type)
		}
		col := slices.Index(fetched, name)
		if col < 0 {
			return nil, fmt.Errorf("field %q is not fetched", name)
		}
		fw := fieldWriter{offset: sf.Offset, col: col, kind: kind}
		if kind < slotKinds {
			fw.slot = w.per[kind]
			w.per[kind]++
		}
		w.fields = append(w.fields, fw)
	}
	rowWriters.Store(key, w)
	return w, nil
}

// protoName reads the field name from a generated struct tag,
// `protobuf:"bytes,76,opt,name=url_from,json=urlFrom,proto3,oneof"`.
func protoName(tag string) string {
	for part := range strings.SplitSeq(tag, ",") {
		if name, ok := strings.CutPrefix(part, "name="); ok {
			return name
		}
	}
	return ""
}

// block holds the values of a page's rows that the messages point to.
type block struct {
	strings []string
	ints    []int64
	floats  []float64
	bools   []bool
	stamps  []timestamppb.Timestamp
	per     [slotKinds]int
}

func (w *rowWriter) block(rows int) *block {
	return &block{
		strings: make([]string, rows*w.per[ptrString]),
		ints:    make([]int64, rows*w.per[ptrInt64]),
		floats:  make([]float64, rows*w.per[ptrFloat64]),
		bools:   make([]bool, rows*w.per[ptrBool]),
		stamps:  make([]timestamppb.Timestamp, rows*w.per[ptrTimestamp]),
		per:     w.per,
	}
}

// fill sets the selected fields of the message at msg, a *T of the writer,
// from the record of row i of the block; a field the upstream returned as
// null or not at all is left absent.
func (w *rowWriter) fill(msg unsafe.Pointer, rec upstream.Record, b *block, i int) {
	for _, f := range w.fields {
		v := rec[f.col]
		if !v.Valid() {
			continue
		}
		at := unsafe.Add(msg, f.offset)
		var slot int
		if f.kind < slotKinds {
			slot = i*b.per[f.kind] + f.slot
		}
		switch f.kind {
		case ptrString:
			p := &b.strings[slot]
			*p = v.Str()
			*(**string)(at) = p
		case ptrInt64:
			p := &b.ints[slot]
			*p = v.Int()
			*(**int64)(at) = p
		case ptrFloat64:
			p := &b.floats[slot]
			*p = v.Float()
			if v.Kind() == upstream.KindInt {
				*p = float64(v.Int())
			}
			*(**float64)(at) = p
		case ptrBool:
			p := &b.bools[slot]
			*p = v.Bool()
			*(**bool)(at) = p
		case ptrTimestamp:
			p := &b.stamps[slot]
			p.Seconds, p.Nanos = v.Unix()
			*(**timestamppb.Timestamp)(at) = p
		case listString:
			*(*[]string)(at) = v.Strings()
		case listInt64:
			*(*[]int64)(at) = v.Ints()
		}
	}
}

// writerOf is the writer of T's messages from the records of a plan.
func writerOf[T any](pl *paging.Plan) (*rowWriter, error) {
	w, err := writerFor[T](upstream.MustSchema(pl.Dataset().Endpoint()), pl.Selected(), pl.Fetched())
	if err != nil {
		// The protos and the catalog disagree: a bug, not the caller's.
		return nil, status.Error(codes.Internal, "internal error")
	}
	return w, nil
}

// message is a generated row message type T whose pointer is a proto.Message.
type message[T any] interface {
	*T
	proto.Message
}

// rowsOf converts records to row messages with the caller's fields. The
// messages of a page and the values they point to are allocated in one
// block per type: a page is a handful of allocations rather than several
// per row.
func rowsOf[T any, M message[T]](pl *paging.Plan, rows []upstream.Record) ([]M, error) {
	return rowsIn[T, M](pl, rows, make([]T, len(rows)))
}

// rowsIn is rowsOf writing into msgs, zeroed messages, one per row.
func rowsIn[T any, M message[T]](pl *paging.Plan, rows []upstream.Record, msgs []T) ([]M, error) {
	w, err := writerOf[T](pl)
	if err != nil {
		return nil, err
	}
	b := w.block(len(rows))
	out := make([]M, len(rows))
	for i, r := range rows {
		w.fill(unsafe.Pointer(&msgs[i]), r, b, i)
		out[i] = &msgs[i]
	}
	return out, nil
}

// slabs recycles the row messages of stream messages. Once a stream
// message is encoded its row messages are garbage; the next message of any
// stream takes them, cleared, rather than allocating (and the GC scanning)
// some 800 bytes per row again. A stalled stream holds none: they are given
// back before the send waits. The free list is short and bounded, unlike a
// sync.Pool, which keeps all it is given until the next GC: stalled streams
// allocate nothing, so no GC would come to free what a hundred of them gave
// back.
type slabs[T any] struct{ free chan []T }

func newSlabs[T any]() *slabs[T] { return &slabs[T]{free: make(chan []T, 4)} }

// get returns n zeroed messages.
func (s *slabs[T]) get(n int) []T {
	select {
	case msgs := <-s.free:
		if cap(msgs) >= n {
			return msgs[:n]
		}
	default:
	}
	return make([]T, n)
}

// put takes messages back; nothing may refer to them any more.
func (s *slabs[T]) put(msgs []T) {
	clear(msgs)
	select {
	case s.free <- msgs:
	default: // the list is full: leave them to the GC
	}
}
