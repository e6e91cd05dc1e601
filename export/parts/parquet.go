package parts

import (
	"bytes"
	"io"
	"reflect"

	"github.com/parquet-go/parquet-go"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/linkgate/linkgate/internal/rowcsv"
)

// Parquet parts have one column per table column, in order, each
// optional (an absent field is null): scalars as their Parquet types,
// timestamps as TIMESTAMP(MICROS, UTC), which Spark reads too (finer
// fractions are cut), enums and other messages as their JSON text, and
// repeated fields as the standard three-level LIST of required elements
// (an empty list is null, as its JSON and CSV leave it out).

// parquetEncoder turns rows into Parquet rows; the parquet writer holds a
// row group until it has RowGroupRows rows and then writes it out.
type parquetEncoder struct {
	w    *parquet.Writer
	cols []column
	row  parquet.Row
	rows []parquet.Row
}

func newParquetEncoder(w io.Writer, cols []column, o Options) (*parquetEncoder, error) {
	fields := make([]parquet.Field, len(cols))
	for i, c := range cols {
		node := leafNode(c.fd)
		if c.fd.IsList() {
			node = parquet.List(node)
		}
		fields[i] = namedField{Node: parquet.Optional(node), name: c.name}
	}
	codec := parquet.WriterOption(parquet.Compression(&parquet.Snappy))
	if o.Gzip {
		codec = parquet.Compression(&parquet.Gzip)
	}
	schema := parquet.NewSchema(string(o.Row.Name()), orderedGroup{fields: fields})
	// Version 1 data pages, which every reader takes (pyarrow writes them
	// by default; Spark's vectorized reader reads version 2 only since 3.3).
	pw := parquet.NewWriter(w, schema, codec, parquet.MaxRowsPerRowGroup(int64(o.RowGroupRows)), parquet.DataPageVersion(1))
	return &parquetEncoder{w: pw, cols: cols, rows: make([]parquet.Row, 1)}, nil
}

func (e *parquetEncoder) write(row protoreflect.Message) error {
	e.row = e.row[:0]
	for i, c := range e.cols {
		m := row
		if c.nested != nil {
			if !row.Has(c.nested) {
				e.row = append(e.row, parquet.NullValue().Level(0, 0, i))
				continue
			}
			m = row.Get(c.nested).Message()
		}
		if !m.Has(c.fd) {
			e.row = append(e.row, parquet.NullValue().Level(0, 0, i))
			continue
		}
		v := m.Get(c.fd)
		if !c.fd.IsList() {
			e.row = append(e.row, leafValue(c.fd, v).Level(0, 1, i))
			continue
		}
		// Levels of optional group (LIST) { repeated group list { required
		// element } }: a present element is at definition level 2; the
		// first of a list starts a new row (repetition 0).
		l := v.List()
		for j := range l.Len() {
			e.row = append(e.row, leafValue(c.fd, l.Get(j)).Level(min(j, 1), 2, i))
		}
	}
	e.rows[0] = e.row
	_, err := e.w.WriteRows(e.rows)
	return err
}

func (e *parquetEncoder) close() error { return e.w.Close() }

// leafNode is the Parquet type of one value of a field.
func leafNode(fd protoreflect.FieldDescriptor) parquet.Node {
	switch typeName(fd) {
	case "bool":
		return parquet.Leaf(parquet.BooleanType)
	case "int32":
		return parquet.Int(32)
	case "int64":
		return parquet.Int(64)
	case "uint32":
		return parquet.Uint(32)
	case "uint64":
		return parquet.Uint(64)
	case "float":
		return parquet.Leaf(parquet.FloatType)
	case "double":
		return parquet.Leaf(parquet.DoubleType)
	case "bytes":
		return parquet.Leaf(parquet.ByteArrayType)
	case "timestamp":
		return parquet.Timestamp(parquet.Microsecond)
	}
	return parquet.String()
}

// leafValue is one value of a field, of the type leafNode gives it.
func leafValue(fd protoreflect.FieldDescriptor, v protoreflect.Value) parquet.Value {
	switch typeName(fd) {
	case "bool":
		return parquet.BooleanValue(v.Bool())
	case "int32":
		return parquet.Int32Value(int32(v.Int()))
	case "int64":
		return parquet.Int64Value(v.Int())
	case "uint32":
		return parquet.Int32Value(int32(uint32(v.Uint())))
	case "uint64":
		return parquet.Int64Value(int64(v.Uint()))
	case "float":
		return parquet.FloatValue(float32(v.Float()))
	case "double":
		return parquet.DoubleValue(v.Float())
	case "bytes":
		return parquet.ByteArrayValue(bytes.Clone(v.Bytes())) // the row's own bytes are the caller's
	case "timestamp":
		ts := v.Message().Interface().(*timestamppb.Timestamp)
		return parquet.Int64Value(ts.AsTime().UnixMicro())
	}
	if fd.IsList() { // v is an element
		return parquet.ByteArrayValue([]byte(rowcsv.Scalar(fd, v)))
	}
	return parquet.ByteArrayValue([]byte(rowcsv.Text(fd, v))) // the change of a new/lost row as in CSV

}

// orderedGroup is a Parquet group whose columns keep the order given
// (parquet.Group sorts them by name): the table's order, as in its CSV.
type orderedGroup struct {
	parquet.Group // the group type; its fields are not used
	fields        []parquet.Field
}

func (g orderedGroup) Fields() []parquet.Field { return g.fields }

// namedField is a column of an orderedGroup. Rows are written as Parquet
// rows, never from Go values, so Value is not needed.
type namedField struct {
	parquet.Node
	name string
}

func (f namedField) Name() string { return f.name }

func (f namedField) Value(reflect.Value) reflect.Value { return reflect.Value{} }
