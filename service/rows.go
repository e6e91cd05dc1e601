package service

import (
	"fmt"
	"slices"
	"strings"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/linkgate/linkgate/upstream"
)

// rowWriter fills row messages of one type from upstream records of one
// layout. Row messages name their fields exactly as the upstream does, so
// one writer serves every dataset; what reflection costs is paid once, when
// the writer is built: each field's descriptor, its position in the record
// and the setter for its kind.
type rowWriter struct {
	fields []fieldWriter
	// stamps is the number of timestamp fields of a row, which a page's
	// rows take from one block.
	stamps int
}

type fieldWriter struct {
	fd  protoreflect.FieldDescriptor
	col int // position in the record
	set func(m protoreflect.Message, fd protoreflect.FieldDescriptor, v upstream.Value, ts *timestamppb.Timestamp)
	// stamp is the field's index among the row's timestamp fields, or -1.
	stamp int
}

var rowWriters sync.Map // key: message name, selection and record layout

// writerFor returns the writer of md's messages with the selected fields,
// from records laid out as fetched (the upstream query's select).
func writerFor(md protoreflect.MessageDescriptor, selected, fetched []string) (*rowWriter, error) {
	key := string(md.FullName()) + "\x00" + strings.Join(selected, ",") + "\x00" + strings.Join(fetched, ",")
	if w, ok := rowWriters.Load(key); ok {
		return w.(*rowWriter), nil
	}
	w := &rowWriter{}
	for _, name := range selected {
		fd := md.Fields().ByName(protoreflect.Name(name))
		if fd == nil {
			return nil, fmt.Errorf("message %s has no field %q", md.FullName(), name)
		}
		col := slices.Index(fetched, name)
		if col < 0 {
			return nil, fmt.Errorf("field %q is not fetched", name)
		}
		set, stamp, err := setterFor(fd)
		if err != nil {
			return nil, fmt.Errorf("field %s: %w", name, err)
		}
		fw := fieldWriter{fd: fd, col: col, set: set, stamp: -1}
		if stamp {
			fw.stamp = w.stamps
			w.stamps++
		}
		w.fields = append(w.fields, fw)
	}
	rowWriters.Store(key, w)
	return w, nil
}

// setterFor picks the setter of a message field; stamp reports a timestamp,
// which takes a *Timestamp from the page's block.
func setterFor(fd protoreflect.FieldDescriptor) (set func(protoreflect.Message, protoreflect.FieldDescriptor, upstream.Value, *timestamppb.Timestamp), stamp bool, err error) {
	if fd.IsList() {
		switch fd.Kind() {
		case protoreflect.StringKind:
			return setStrings, false, nil
		case protoreflect.Int64Kind:
			return setInts, false, nil
		}
		return nil, false, fmt.Errorf("no setter for a list of %s", fd.Kind())
	}
	switch fd.Kind() {
	case protoreflect.StringKind:
		return setString, false, nil
	case protoreflect.Int64Kind:
		return setInt, false, nil
	case protoreflect.DoubleKind:
		return setDouble, false, nil
	case protoreflect.BoolKind:
		return setBool, false, nil
	case protoreflect.MessageKind:
		if fd.Message().FullName() == "google.protobuf.Timestamp" {
			return setTimestamp, true, nil
		}
	}
	return nil, false, fmt.Errorf("no setter for %s", fd.Kind())
}

func setString(m protoreflect.Message, fd protoreflect.FieldDescriptor, v upstream.Value, _ *timestamppb.Timestamp) {
	m.Set(fd, protoreflect.ValueOfString(v.Str()))
}

func setInt(m protoreflect.Message, fd protoreflect.FieldDescriptor, v upstream.Value, _ *timestamppb.Timestamp) {
	n := v.Int()
	if v.Kind() == upstream.KindFloat {
		n = int64(v.Float())
	}
	m.Set(fd, protoreflect.ValueOfInt64(n))
}

func setDouble(m protoreflect.Message, fd protoreflect.FieldDescriptor, v upstream.Value, _ *timestamppb.Timestamp) {
	f := v.Float()
	if v.Kind() == upstream.KindInt {
		f = float64(v.Int())
	}
	m.Set(fd, protoreflect.ValueOfFloat64(f))
}

func setBool(m protoreflect.Message, fd protoreflect.FieldDescriptor, v upstream.Value, _ *timestamppb.Timestamp) {
	m.Set(fd, protoreflect.ValueOfBool(v.Bool()))
}

func setTimestamp(m protoreflect.Message, fd protoreflect.FieldDescriptor, v upstream.Value, ts *timestamppb.Timestamp) {
	sec, nsec := v.Unix()
	ts.Seconds, ts.Nanos = sec, nsec
	m.Set(fd, protoreflect.ValueOfMessage(ts.ProtoReflect()))
}

func setStrings(m protoreflect.Message, fd protoreflect.FieldDescriptor, v upstream.Value, _ *timestamppb.Timestamp) {
	l := m.Mutable(fd).List()
	for _, s := range v.Strings() {
		l.Append(protoreflect.ValueOfString(s))
	}
}

func setInts(m protoreflect.Message, fd protoreflect.FieldDescriptor, v upstream.Value, _ *timestamppb.Timestamp) {
	l := m.Mutable(fd).List()
	for _, n := range v.Ints() {
		l.Append(protoreflect.ValueOfInt64(n))
	}
}

// fill sets the selected fields of m from a record; a field the upstream
// returned as null or not at all is left absent. stamps holds the row's
// timestamps.
func (w *rowWriter) fill(m protoreflect.Message, rec upstream.Record, stamps []timestamppb.Timestamp) {
	for i := range w.fields {
		f := &w.fields[i]
		v := rec[f.col]
		if !v.Valid() || !kindFits(v.Kind(), f.fd) {
			continue
		}
		var ts *timestamppb.Timestamp
		if f.stamp >= 0 {
			ts = &stamps[f.stamp]
		}
		f.set(m, f.fd, v, ts)
	}
}

// kindFits reports whether a decoded value can go into a message field; the
// decoder types values by the catalog, which the messages follow, so a
// mismatch would be a catalog out of step with the protos.
func kindFits(k upstream.Kind, fd protoreflect.FieldDescriptor) bool {
	switch fd.Kind() {
	case protoreflect.StringKind:
		return k == upstream.KindString || k == upstream.KindStringList
	case protoreflect.Int64Kind:
		return k == upstream.KindInt || k == upstream.KindFloat || k == upstream.KindIntList
	case protoreflect.DoubleKind:
		return k == upstream.KindFloat || k == upstream.KindInt
	case protoreflect.BoolKind:
		return k == upstream.KindBool
	case protoreflect.MessageKind:
		return k == upstream.KindTime || k == upstream.KindDate
	}
	return false
}

// message is a generated row message type T whose pointer is a proto.Message.
type message[T any] interface {
	*T
	proto.Message
}

// rowsOf converts records to row messages with the caller's fields. The
// messages of a page and their timestamps are allocated in one block each:
// a page is a handful of allocations rather than several per row.
func rowsOf[T any, M message[T]](pl *plan, rows []upstream.Record) ([]M, error) {
	w, err := writerFor(M(nil).ProtoReflect().Descriptor(), pl.selected, pl.query.Select)
	if err != nil {
		// The protos and the catalog disagree: a bug, not the caller's.
		return nil, status.Error(codes.Internal, "internal error")
	}
	msgs := make([]T, len(rows))
	stamps := make([]timestamppb.Timestamp, len(rows)*w.stamps)
	out := make([]M, len(rows))
	for i, r := range rows {
		m := M(&msgs[i])
		w.fill(m.ProtoReflect(), r, stamps[i*w.stamps:(i+1)*w.stamps])
		out[i] = m
	}
	return out, nil
}

// afterAll is the cursor after rows, which follow c: what c.after gives row
// by row, read from the run of equal keys that ends the rows, so that only
// one key per page is built.
func (c cursor) afterAll(keys []sortKey, rows []upstream.Record) cursor {
	if len(rows) == 0 {
		return c
	}
	last := rows[len(rows)-1]
	run := 1
	for run < len(rows) && sameRecordKey(keys, rows[len(rows)-1-run], last) {
		run++
	}
	k := keyOf(keys, last)
	if run == len(rows) && c.Key != nil && sameKey(k, c.Key) {
		return cursor{Key: c.Key, Skip: c.Skip + run}
	}
	return cursor{Key: k, Skip: run}
}

func sameRecordKey(keys []sortKey, a, b upstream.Record) bool {
	for _, k := range keys {
		if !a[k.col].Equal(b[k.col]) {
			return false
		}
	}
	return true
}
