package parts

import (
	"io"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/linkgate/linkgate/internal/rowcsv"
)

// ndjsonEncoder writes each row as the REST API writes it: protojson with
// the proto field names, absent fields left out, on one line.
type ndjsonEncoder struct {
	w   io.Writer
	buf []byte
}

var rowJSON = protojson.MarshalOptions{UseProtoNames: true}

func (e *ndjsonEncoder) write(row protoreflect.Message) error {
	b, err := rowJSON.MarshalAppend(e.buf[:0], row.Interface())
	if err != nil {
		return err
	}
	e.buf = append(b, '\n')
	_, err = e.w.Write(e.buf)
	return err
}

func (*ndjsonEncoder) close() error { return nil }

// csvEncoder writes RFC 4180 (CRLF line ends, a header row) with the
// cells of the REST CSV output, and its writer.
type csvEncoder struct {
	csv    *rowcsv.Writer
	cols   []column
	record []string
}

func newCSVEncoder(w io.Writer, cols []column) (*csvEncoder, error) {
	e := &csvEncoder{csv: rowcsv.NewWriter(w), cols: cols, record: make([]string, len(cols))}
	for i, c := range cols {
		e.record[i] = c.name
	}
	return e, e.csv.Write(e.record)
}

func (e *csvEncoder) write(row protoreflect.Message) error {
	for i, c := range e.cols {
		e.record[i] = rowcsv.Cell(row, c.name)
	}
	return e.csv.Write(e.record)
}

func (e *csvEncoder) close() error { return e.csv.Flush() }
