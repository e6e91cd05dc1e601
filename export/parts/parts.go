// Package parts writes the files of an export to a bucket.
package parts

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"hash"
	"io"
	"time"

	"gocloud.dev/blob"
	_ "gocloud.dev/blob/fileblob" // file:// buckets
	_ "gocloud.dev/blob/memblob"  // mem:// buckets
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Format of the rows in a part.
type Format int32

const (
	FormatNDJSON  Format = 1
	FormatCSV     Format = 2
	FormatParquet Format = 3
)

// Part is one committed object of an export.
type Part struct {
	Key             string
	Rows, Bytes     int64
	SHA256          string
	ContentType     string
	ContentEncoding string
}

// Options choose a part's encoding. Columns and Row matter to CSV and
// Parquet only.
type Options struct {
	Format  Format
	Gzip    bool
	Columns []string
	Row     protoreflect.MessageDescriptor
}

// Column is a column of an export's table, as a manifest lists it.
type Column struct {
	Name string `json:"name"`
	Type string `json:"type"`
}

// Schema is the table of rows of type row with the given columns.
func Schema(row protoreflect.MessageDescriptor, columns []string) ([]Column, error) {
	out := make([]Column, len(columns))
	for i, c := range columns {
		out[i] = Column{Name: c}
	}
	return out, nil
}

// OpenBucket opens a blob URL (mem://, file:///…).
func OpenBucket(ctx context.Context, url string) (*blob.Bucket, error) {
	return blob.OpenBucket(ctx, url)
}

// Extension is the file name suffix of a part.
func Extension(o Options) string { return ".ndjson" }

// Writer writes one part; the object exists only after Close.
type Writer struct {
	ctx    context.Context
	w      *blob.Writer
	cancel context.CancelFunc
	buf    *bufio.Writer
	sum    hash.Hash
	key    string
	rows   int64
	bytes  int64
}

// NewWriter starts the part key.
func NewWriter(ctx context.Context, b *blob.Bucket, key string, o Options) (*Writer, error) {
	if o.Format != FormatNDJSON || o.Gzip {
		return nil, errors.New("parts: only plain NDJSON is supported")
	}
	ctx, cancel := context.WithCancel(ctx)
	w, err := b.NewWriter(ctx, key, &blob.WriterOptions{ContentType: "application/x-ndjson"})
	if err != nil {
		cancel()
		return nil, err
	}
	pw := &Writer{ctx: ctx, w: w, cancel: cancel, sum: sha256.New(), key: key}
	pw.buf = bufio.NewWriter(io.MultiWriter(w, pw.sum))
	return pw, nil
}

// Write appends one row.
func (w *Writer) Write(m proto.Message) error {
	b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if _, err := w.buf.Write(b); err != nil {
		return err
	}
	w.rows++
	w.bytes += int64(len(b))
	return nil
}

// Rows written so far.
func (w *Writer) Rows() int64 { return w.rows }

// Bytes written so far.
func (w *Writer) Bytes() int64 { return w.bytes }

// Close commits the object.
func (w *Writer) Close() (Part, error) {
	defer w.cancel()
	if err := w.buf.Flush(); err != nil {
		w.cancel()
		_ = w.w.Close()
		return Part{}, err
	}
	if err := w.w.Close(); err != nil {
		return Part{}, err
	}
	return Part{Key: w.key, Rows: w.rows, Bytes: w.bytes, SHA256: hex.EncodeToString(w.sum.Sum(nil)), ContentType: "application/x-ndjson"}, nil
}

// Abort drops the object.
func (w *Writer) Abort() {
	w.cancel()
	_ = w.w.Close()
}

// Manifest describes an export beside its parts.
type Manifest struct {
	Version       int             `json:"version"`
	Name          string          `json:"name"`
	Tenant        string          `json:"tenant,omitempty"`
	Request       json.RawMessage `json:"request,omitempty"`
	Format        Format          `json:"format"`
	Gzip          bool            `json:"gzip"`
	Columns       []Column        `json:"columns,omitempty"`
	Parts         []Part          `json:"parts"`
	Rows          int64           `json:"rows"`
	Units         int64           `json:"units"`
	State         string          `json:"state"`
	Error         string          `json:"error,omitempty"`
	NextPageToken string          `json:"next_page_token,omitempty"`
	CreateTime    time.Time       `json:"create_time,omitzero"`
	EndTime       time.Time       `json:"end_time,omitzero"`
	ExpireTime    time.Time       `json:"expire_time,omitzero"`
}

// WriteManifest writes m as JSON at key.
func WriteManifest(ctx context.Context, b *blob.Bucket, key string, m Manifest) error {
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return b.WriteAll(ctx, key, data, &blob.WriterOptions{ContentType: "application/json"})
}
