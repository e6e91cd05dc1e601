package parts

import (
	"fmt"
	"slices"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/linkgate/linkgate/internal/rowcsv"
)

// Column is a column of an export's table, as a manifest lists it.
type Column struct {
	Name string `json:"name"`
	// Type is the column's type: string, int32, int64, uint32, uint64,
	// float, double, bool, bytes, or timestamp (UTC), or list<T> of one
	// of them.
	Type string `json:"type"`
}

// Schema is the table of rows of type row with the given columns (all
// fields when none, as Options.Columns).
func Schema(row protoreflect.MessageDescriptor, columns []string) ([]Column, error) {
	cols, err := resolve(row, columns)
	if err != nil {
		return nil, err
	}
	out := make([]Column, len(cols))
	for i, c := range cols {
		t := typeName(c.fd)
		if c.fd.IsList() {
			t = "list<" + t + ">"
		}
		out[i] = Column{Name: c.name, Type: t}
	}
	return out, nil
}

// column is a column of a table and the field it comes from.
type column struct {
	name string
	// nested is the field that carries the row the field belongs to (the
	// backlink of a new/lost row), nil for a field of the row itself.
	nested protoreflect.FieldDescriptor
	fd     protoreflect.FieldDescriptor
}

// resolve finds the field of every column in the row type, as
// rowcsv.Lookup does in a row: in the nested row first.
func resolve(row protoreflect.MessageDescriptor, names []string) ([]column, error) {
	nested := rowcsv.Nested(row)
	if len(names) == 0 {
		names = allColumns(row, nested)
	}
	cols := make([]column, 0, len(names))
	for _, name := range names {
		if slices.ContainsFunc(cols, func(c column) bool { return c.name == name }) {
			return nil, fmt.Errorf("parts: columns: %q twice", name)
		}
		c := column{name: name}
		if nested != nil {
			if fd := nested.Message().Fields().ByName(protoreflect.Name(name)); fd != nil {
				c.nested, c.fd = nested, fd
			}
		}
		if c.fd == nil {
			c.fd = row.Fields().ByName(protoreflect.Name(name))
		}
		if c.fd == nil || c.fd == nested {
			return nil, fmt.Errorf("parts: columns: %q is not a field of %s", name, row.FullName())
		}
		if c.fd.IsMap() {
			return nil, fmt.Errorf("parts: columns: %q is a map, which a table cannot hold", name)
		}
		cols = append(cols, c)
	}
	return cols, nil
}

// allColumns are the fields of the row type in order, those of a nested
// row after the row's own (change and change_time, then the backlink's).
func allColumns(row protoreflect.MessageDescriptor, nested protoreflect.FieldDescriptor) []string {
	var names []string
	add := func(fields protoreflect.FieldDescriptors) {
		for i := range fields.Len() {
			if fd := fields.Get(i); fd != nested && !fd.IsMap() {
				names = append(names, string(fd.Name()))
			}
		}
	}
	add(row.Fields())
	if nested != nil {
		add(nested.Message().Fields())
	}
	return names
}

var timestampName = (&timestamppb.Timestamp{}).ProtoReflect().Descriptor().FullName()

func isTimestamp(fd protoreflect.FieldDescriptor) bool {
	return fd.Kind() == protoreflect.MessageKind && fd.Message().FullName() == timestampName
}

// typeName is the type of one value of a field.
func typeName(fd protoreflect.FieldDescriptor) string {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return "bool"
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return "int32"
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return "int64"
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return "uint32"
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return "uint64"
	case protoreflect.FloatKind:
		return "float"
	case protoreflect.DoubleKind:
		return "double"
	case protoreflect.BytesKind:
		return "bytes"
	case protoreflect.MessageKind, protoreflect.GroupKind:
		if isTimestamp(fd) {
			return "timestamp"
		}
	}
	return "string" // text, enums by name, other messages as their JSON
}
