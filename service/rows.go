package service

import (
	"fmt"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/linkgate/linkgate/upstream"
)

// rowFields maps the selected Ahrefs field names to the fields of a row
// message. Row messages name their fields exactly as the upstream does, so
// one reflective converter serves every dataset.
type rowFields []protoreflect.FieldDescriptor

var rowFieldsCache sync.Map // key: message name + selection

func fieldsFor(md protoreflect.MessageDescriptor, selected []string) (rowFields, error) {
	key := fmt.Sprint(md.FullName(), selected)
	if v, ok := rowFieldsCache.Load(key); ok {
		return v.(rowFields), nil
	}
	fds := make(rowFields, len(selected))
	for i, name := range selected {
		fd := md.Fields().ByName(protoreflect.Name(name))
		if fd == nil {
			return nil, fmt.Errorf("message %s has no field %q", md.FullName(), name)
		}
		fds[i] = fd
	}
	rowFieldsCache.Store(key, fds)
	return fds, nil
}

// fill sets the selected fields of m from an upstream row. A field the
// upstream returned as null is left absent.
func fill(m proto.Message, fds rowFields, row upstream.Row) error {
	r := m.ProtoReflect()
	for _, fd := range fds {
		v, ok := row[string(fd.Name())]
		if !ok || v == nil {
			continue
		}
		if err := setField(r, fd, v); err != nil {
			return fmt.Errorf("field %s: %w", fd.Name(), err)
		}
	}
	return nil
}

func setField(r protoreflect.Message, fd protoreflect.FieldDescriptor, v any) error {
	if fd.IsList() {
		list := r.Mutable(fd).List()
		switch v := v.(type) {
		case []string:
			for _, s := range v {
				list.Append(protoreflect.ValueOfString(s))
			}
		case []int64:
			for _, i := range v {
				list.Append(protoreflect.ValueOfInt64(i))
			}
		case []any:
			for _, e := range v {
				pv, err := scalar(fd, e)
				if err != nil {
					return err
				}
				list.Append(pv)
			}
		default:
			return fmt.Errorf("want a list, got %T", v)
		}
		return nil
	}
	pv, err := scalar(fd, v)
	if err != nil {
		return err
	}
	r.Set(fd, pv)
	return nil
}

func scalar(fd protoreflect.FieldDescriptor, v any) (protoreflect.Value, error) {
	switch fd.Kind() {
	case protoreflect.StringKind:
		if s, ok := v.(string); ok {
			return protoreflect.ValueOfString(s), nil
		}
	case protoreflect.Int64Kind:
		switch n := v.(type) {
		case int64:
			return protoreflect.ValueOfInt64(n), nil
		case float64:
			return protoreflect.ValueOfInt64(int64(n)), nil
		}
	case protoreflect.DoubleKind:
		switch n := v.(type) {
		case float64:
			return protoreflect.ValueOfFloat64(n), nil
		case int64:
			return protoreflect.ValueOfFloat64(float64(n)), nil
		}
	case protoreflect.BoolKind:
		if b, ok := v.(bool); ok {
			return protoreflect.ValueOfBool(b), nil
		}
	case protoreflect.MessageKind:
		if fd.Message().FullName() == "google.protobuf.Timestamp" {
			switch t := v.(type) {
			case time.Time:
				return protoreflect.ValueOfMessage(timestamppb.New(t).ProtoReflect()), nil
			case string:
				pt, err := upstream.ParseTime(t)
				if err != nil {
					return protoreflect.Value{}, err
				}
				return protoreflect.ValueOfMessage(timestamppb.New(pt).ProtoReflect()), nil
			}
		}
	}
	return protoreflect.Value{}, fmt.Errorf("cannot hold a %T", v)
}
