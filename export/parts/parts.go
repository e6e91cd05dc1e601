// Package parts writes the objects of an export to a bucket: each part is
// one object of rows in NDJSON, CSV or Parquet, and the manifest lists
// them. It knows rows only as protobuf messages, through protoreflect: the
// descriptor of the row type gives the columns and their types, and a
// field without a value (not selected, or null upstream) is an absent
// value, as in the row's JSON.
//
// A part becomes visible in the bucket only when its Writer's Close
// succeeds (every blob driver commits an object on Close and discards it
// when the write is cancelled, and an S3 upload is aborted), and a part written again under the same
// key replaces the earlier copy: a part that was being written when its
// writer died leaves nothing behind.
package parts

import (
	"bufio"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"

	"gocloud.dev/blob"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Format is the encoding of an export's parts. The numbers are those of
// the API's ExportFormat.
type Format int32

const (
	FormatNDJSON  Format = 1 // one row object per line
	FormatCSV     Format = 2 // RFC 4180 with a header
	FormatParquet Format = 3 // typed columns
)

func (f Format) String() string {
	switch f {
	case FormatNDJSON:
		return "ndjson"
	case FormatCSV:
		return "csv"
	case FormatParquet:
		return "parquet"
	}
	return fmt.Sprintf("Format(%d)", int32(f))
}

// DefaultRowGroupRows bounds a Parquet row group, which the writer holds
// in memory until it is full.
const DefaultRowGroupRows = 16384

// Options say how a part is written.
type Options struct {
	Format Format
	// Gzip compresses an NDJSON or CSV part into a gzip file (.ndjson.gz,
	// .csv.gz), and the pages of a Parquet part with Parquet's GZIP codec
	// instead of Snappy (a Parquet file is compressed inside).
	Gzip bool
	// Columns are the columns of CSV and Parquet parts, in order: those
	// of the CSV stream of the same request (rowcsv.Columns of its
	// select). Empty means every field of the row type: for a new/lost
	// row change and change_time, then the fields of its backlink.
	// NDJSON writes each row's JSON whatever Columns say.
	Columns []string
	// Row is the type of the rows. Without it the first row's type is
	// used; only an empty CSV or Parquet part needs it (for its header or
	// schema).
	Row protoreflect.MessageDescriptor
	// RowGroupRows bounds the rows of a Parquet row group (and so the
	// memory of a writer); DefaultRowGroupRows when 0.
	RowGroupRows int
}

// Part is one committed object.
type Part struct {
	Key   string `json:"key"`
	Rows  int64  `json:"rows"`
	Bytes int64  `json:"bytes"`
	// SHA256 is the hex SHA-256 of the stored bytes (those a download
	// gets: gzip parts are gzip files, stored with no Content-Encoding).
	SHA256          string `json:"sha256"`
	ContentType     string `json:"content_type"`
	ContentEncoding string `json:"content_encoding,omitempty"`
}

// Content types of parts. A gzip part is a gzip file (.csv.gz), which a
// download keeps as it is: a Content-Encoding would let HTTP clients
// unpack it on the way, and its bytes would no longer match SHA256.
const (
	ContentTypeNDJSON  = "application/x-ndjson"
	ContentTypeCSV     = "text/csv; charset=utf-8; header=present"
	ContentTypeParquet = "application/vnd.apache.parquet"
	ContentTypeGzip    = "application/gzip"
)

// Extension is the file extension of a part written with o.
func Extension(o Options) string {
	switch o.Format {
	case FormatNDJSON:
		return gz(".ndjson", o)
	case FormatCSV:
		return gz(".csv", o)
	case FormatParquet:
		return ".parquet"
	}
	return ""
}

func gz(ext string, o Options) string {
	if o.Gzip {
		return ext + ".gz"
	}
	return ext
}

func contentType(o Options) string {
	switch {
	case o.Format == FormatParquet:
		return ContentTypeParquet
	case o.Gzip:
		return ContentTypeGzip
	case o.Format == FormatCSV:
		return ContentTypeCSV
	}
	return ContentTypeNDJSON
}

// encoder writes rows in one format.
type encoder interface {
	write(row protoreflect.Message) error
	// close writes what the format holds back (buffers, a footer).
	close() error
}

// Writer writes one part. It is not safe for concurrent use.
type Writer struct {
	o      Options
	key    string
	obj    object        // nil once committed or discarded
	out    *counter      // what reaches the object
	gzip   *gzip.Writer  // nil unless the part is a gzip file
	buf    *bufio.Writer // between the encoder and gzip or the object
	enc    encoder       // made for the row type, at the first row
	rows   int64
	err    error // the first failure: the part can then only be aborted
	closed bool
}

// NewWriter starts the part key in b. Nothing is visible under key until
// Close succeeds.
func NewWriter(ctx context.Context, b *blob.Bucket, key string, o Options) (*Writer, error) {
	if Extension(o) == "" {
		return nil, fmt.Errorf("parts: format: %v is not NDJSON, CSV or Parquet", o.Format)
	}
	if key == "" {
		return nil, errors.New("parts: key: empty")
	}
	if o.RowGroupRows < 0 {
		return nil, fmt.Errorf("parts: row group rows: %d is negative", o.RowGroupRows)
	}
	if o.RowGroupRows == 0 {
		o.RowGroupRows = DefaultRowGroupRows
	}
	obj, err := openObject(ctx, b, key, contentType(o))
	if err != nil {
		return nil, fmt.Errorf("parts: open %s: %w", key, err)
	}
	w := &Writer{o: o, key: key, obj: obj, out: &counter{w: obj, h: sha256.New()}}
	var sink io.Writer = w.out
	if o.Gzip && o.Format != FormatParquet {
		w.gzip = gzip.NewWriter(sink)
		sink = w.gzip
	}
	w.buf = bufio.NewWriterSize(sink, 32<<10)
	return w, nil
}

// Write adds a row. The row is encoded at once, so the caller may reuse
// it after the call. Every row of a part has the same type.
func (w *Writer) Write(m proto.Message) error {
	if w.err != nil {
		return w.err
	}
	if w.closed {
		return errors.New("parts: write after Close or Abort")
	}
	row := m.ProtoReflect()
	if w.enc == nil {
		if w.o.Row == nil {
			w.o.Row = row.Descriptor()
		}
		if w.err = w.start(); w.err != nil {
			return w.err
		}
	}
	if got := row.Descriptor(); got.FullName() != w.o.Row.FullName() {
		return fmt.Errorf("parts: row %d is a %s, not a %s", w.rows+1, got.FullName(), w.o.Row.FullName())
	}
	if err := w.enc.write(row); err != nil {
		w.err = fmt.Errorf("parts: write %s: %w", w.key, err)
		return w.err
	}
	w.rows++
	return nil
}

// start makes the encoder for the row type.
func (w *Writer) start() error {
	if w.o.Format == FormatNDJSON {
		w.enc = &ndjsonEncoder{w: w.buf}
		return nil
	}
	cols, err := resolve(w.o.Row, w.o.Columns)
	if err != nil {
		return err
	}
	if w.o.Format == FormatCSV {
		w.enc, err = newCSVEncoder(w.buf, cols)
	} else {
		w.enc, err = newParquetEncoder(w.buf, cols, w.o)
	}
	return err
}

// Rows is the number of rows written so far.
func (w *Writer) Rows() int64 { return w.rows }

// Bytes is the size of what reached the object so far, after compression:
// what the encoders and compressors still hold (at most a buffer, or the
// current Parquet row group) is not counted until they pass it on.
func (w *Writer) Bytes() int64 { return w.out.n }

// Close writes what is held back and commits the object. On an error
// nothing is committed.
func (w *Writer) Close() (Part, error) {
	if w.closed {
		return Part{}, errors.New("parts: Close after Close or Abort")
	}
	if err := w.finish(); err != nil {
		w.Abort()
		return Part{}, err
	}
	w.closed = true
	return Part{Key: w.key, Rows: w.rows, Bytes: w.out.n, SHA256: hex.EncodeToString(w.out.h.Sum(nil)),
		ContentType: contentType(w.o)}, nil
}

func (w *Writer) finish() error {
	if w.err != nil {
		return w.err
	}
	if w.enc == nil {
		if w.o.Row == nil && w.o.Format != FormatNDJSON {
			return fmt.Errorf("parts: %s: an empty %v part needs Options.Row for its columns", w.key, w.o.Format)
		}
		if err := w.start(); err != nil {
			return err
		}
	}
	if err := w.enc.close(); err != nil {
		return fmt.Errorf("parts: write %s: %w", w.key, err)
	}
	if err := w.buf.Flush(); err != nil {
		return fmt.Errorf("parts: write %s: %w", w.key, err)
	}
	if w.gzip != nil {
		if err := w.gzip.Close(); err != nil {
			return fmt.Errorf("parts: write %s: %w", w.key, err)
		}
	}
	obj := w.obj
	w.obj = nil // closed, whatever the outcome
	if err := obj.commit(); err != nil {
		return fmt.Errorf("parts: commit %s: %w", w.key, err)
	}
	return nil
}

// Abort discards the part: nothing is written under its key (an earlier
// object there stays as it was).
func (w *Writer) Abort() {
	if w.closed {
		return
	}
	w.closed = true
	if w.obj != nil {
		w.obj.discard()
		w.obj = nil
	}
}

// counter passes bytes on to the object and counts and hashes them.
type counter struct {
	w io.Writer
	h hash.Hash
	n int64
}

func (c *counter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.h.Write(p[:n])
	c.n += int64(n)
	return n, err
}
