package parts_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"
	"gocloud.dev/blob"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/linkgate/linkgate/export/parts"
	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
	"github.com/linkgate/linkgate/internal/rowcsv"
)

// rowTypes are the four row types of the API.
var rowTypes = []proto.Message{&v1.Backlink{}, &v1.RefDomain{}, &v1.BrokenBacklink{}, &v1.NewLostBacklink{}}

// tricky strings: CSV's separators and quotes, line ends, unicode beyond
// the BMP, HTML that JSON escapes.
var tricky = []string{`plain`, `a, "quoted"` + "\nline", "über 日本 🚀", "<p>&amp;</p>", "\r\nx,", "", "cr\ronly"}

// fill sets the fields of m from seed, leaving about a third absent (as
// an unselected or null field), every kind of value the row types have:
// text, int64, double, bool, timestamps (whole microseconds, which every
// format keeps), and lists of text and of int64.
func fill(m protoreflect.Message, seed int) {
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		k := seed + int(fd.Number())
		if fd.Kind() == protoreflect.MessageKind && fd.Message().FullName() == "linkgate.v1.Backlink" {
			fill(m.Mutable(fd).Message(), seed)
			continue
		}
		if fd.Kind() == protoreflect.EnumKind {
			m.Set(fd, protoreflect.ValueOfEnum(protoreflect.EnumNumber(1+seed%2)))
			continue
		}
		if fd.Name() == "change_time" {
			m.Set(fd, protoreflect.ValueOfMessage(timestamppb.New(time.UnixMicro(1_700_000_000_000_000+int64(seed)*1001)).ProtoReflect()))
			continue
		}
		if k%3 == 0 {
			continue
		}
		if fd.IsList() {
			l := m.Mutable(fd).List()
			for j := range k % 4 { // 0 to 3 items
				l.Append(value(fd, k+j))
			}
			continue
		}
		m.Set(fd, value(fd, k))
	}
}

func value(fd protoreflect.FieldDescriptor, k int) protoreflect.Value {
	switch fd.Kind() {
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(tricky[k%len(tricky)] + fmt.Sprint(k))
	case protoreflect.Int64Kind:
		return protoreflect.ValueOfInt64(int64(k) * 9007199254740993 % math.MaxInt64 * int64(1-2*(k%2)))
	case protoreflect.DoubleKind:
		return protoreflect.ValueOfFloat64([]float64{0.1, 1e-7, 12.5, 1e21, -3}[k%5] * float64(k))
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(k%2 == 0)
	case protoreflect.MessageKind: // a timestamp
		return protoreflect.ValueOfMessage(timestamppb.New(time.UnixMicro(1_600_000_000_000_000 + int64(k)*86_400_000_123)).ProtoReflect())
	}
	panic(fmt.Sprintf("no test value for %s", fd.FullName()))
}

// rowsOf are n filled rows of the type of sample.
func rowsOf(sample proto.Message, n int) []proto.Message {
	rows := make([]proto.Message, n)
	for i := range rows {
		m := sample.ProtoReflect().New()
		fill(m, i)
		rows[i] = m.Interface()
	}
	return rows
}

func memBucket(t *testing.T) *blob.Bucket {
	t.Helper()
	b, err := parts.OpenBucket(t.Context(), "mem://")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// writePart writes rows as one part and returns it with its bytes.
func writePart(t *testing.T, b *blob.Bucket, key string, o parts.Options, rows []proto.Message) (parts.Part, []byte) {
	t.Helper()
	w, err := parts.NewWriter(t.Context(), b, key, o)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		if err := w.Write(r); err != nil {
			t.Fatal(err)
		}
	}
	p, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	data, err := b.ReadAll(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	return p, data
}

func gunzip(t *testing.T, data []byte) []byte {
	t.Helper()
	r, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestRoundTrip: rows of every type come back from every format as they
// went in (absent fields absent, lists, timestamps, unicode, quotes and
// line ends), with and without gzip, and the part's figures are those of
// the stored object.
func TestRoundTrip(t *testing.T) {
	b := memBucket(t)
	for _, sample := range rowTypes {
		rows := rowsOf(sample, 40)
		name := string(sample.ProtoReflect().Descriptor().Name())
		for _, f := range []parts.Format{parts.FormatNDJSON, parts.FormatCSV, parts.FormatParquet} {
			for _, gz := range []bool{false, true} {
				o := parts.Options{Format: f, Gzip: gz, RowGroupRows: 7}
				t.Run(fmt.Sprintf("%s/%v/gzip=%v", name, f, gz), func(t *testing.T) {
					key := "t/" + name + parts.Extension(o)
					p, data := writePart(t, b, key, o, rows)
					sum := sha256.Sum256(data)
					if p.Key != key || p.Rows != int64(len(rows)) || p.Bytes != int64(len(data)) || p.SHA256 != hex.EncodeToString(sum[:]) {
						t.Fatalf("part %+v; object of %d bytes, sha256 %x", p, len(data), sum)
					}
					attrs, err := b.Attributes(t.Context(), key)
					if err != nil {
						t.Fatal(err)
					}
					if attrs.ContentType != p.ContentType || p.ContentEncoding != "" {
						t.Errorf("stored as %q, part says %q %q", attrs.ContentType, p.ContentType, p.ContentEncoding)
					}
					if gz && f != parts.FormatParquet {
						if p.ContentType != parts.ContentTypeGzip {
							t.Errorf("content type %q", p.ContentType)
						}
						data = gunzip(t, data)
					}
					var got []proto.Message
					switch f {
					case parts.FormatNDJSON:
						got = readNDJSON(t, data, sample)
					case parts.FormatCSV:
						got = readCSV(t, data, sample, nil)
					case parts.FormatParquet:
						got = readParquet(t, data, sample)
					}
					if len(got) != len(rows) {
						t.Fatalf("%d rows back, wrote %d", len(got), len(rows))
					}
					for i := range rows {
						want := rows[i]
						if f == parts.FormatCSV {
							want = withoutCR(want)
						}
						if d := diff(want, got[i]); d != "" {
							t.Fatalf("row %d: %s", i, d)
						}
					}
				})
			}
		}
	}
}

// withoutCR is row with each CRLF in its text made LF: encoding/csv, which
// the test reads CSV with, reads a CRLF inside a field so (a list is
// JSON text, which escapes it).
func withoutCR(row proto.Message) proto.Message {
	row = proto.Clone(row)
	var strip func(m protoreflect.Message)
	strip = func(m protoreflect.Message) {
		m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			switch {
			case fd.Kind() == protoreflect.MessageKind && !fd.IsList():
				strip(v.Message())
			case fd.Kind() == protoreflect.StringKind && !fd.IsList(): // a list's JSON escapes its CRs
				m.Set(fd, protoreflect.ValueOfString(strings.ReplaceAll(v.String(), "\r\n", "\n")))
			}
			return true
		})
	}
	strip(row.ProtoReflect())
	return row
}

func diff(want, got proto.Message) string {
	if proto.Equal(want, got) {
		return ""
	}
	w, _ := protojson.Marshal(want)
	g, _ := protojson.Marshal(got)
	return fmt.Sprintf("got\n%s\nwant\n%s", g, w)
}

// readNDJSON decodes each line as one row: the REST row object, no
// wrapper (an unknown field such as "result" fails).
func readNDJSON(t *testing.T, data []byte, sample proto.Message) []proto.Message {
	t.Helper()
	var rows []proto.Message
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		m := sample.ProtoReflect().New().Interface()
		if err := protojson.Unmarshal(sc.Bytes(), m); err != nil {
			t.Fatalf("line %d %q: %v", len(rows)+1, sc.Text(), err)
		}
		want, _ := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
		if !bytes.Equal(sc.Bytes(), want) {
			t.Fatalf("line %d is not the REST row object:\n%s\n%s", len(rows)+1, sc.Bytes(), want)
		}
		rows = append(rows, m)
	}
	if !bytes.HasSuffix(data, []byte("\n")) && len(data) > 0 {
		t.Error("the last line has no newline")
	}
	return rows
}

// readCSV parses RFC 4180 (CRLF) and rebuilds rows from the cells: each
// cell must be the REST CSV's text of the field.
func readCSV(t *testing.T, data []byte, sample proto.Message, columns []string) []proto.Message {
	t.Helper()
	if len(data) > 0 && !bytes.HasSuffix(data, []byte("\r\n")) {
		t.Errorf("not CRLF line ends: %q", data[max(0, len(data)-20):])
	}
	recs, err := csv.NewReader(bytes.NewReader(data)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	md := sample.ProtoReflect().Descriptor()
	schema, err := parts.Schema(md, columns)
	if err != nil {
		t.Fatal(err)
	}
	var header []string
	for _, c := range schema {
		header = append(header, c.Name)
	}
	if !slices.Equal(recs[0], header) {
		t.Fatalf("header %q, want %q", recs[0], header)
	}
	var rows []proto.Message
	for _, rec := range recs[1:] {
		m := sample.ProtoReflect().New()
		for j, cell := range rec {
			if cell == "" {
				continue
			}
			fm, fd := field(m, header[j])
			if err := setText(fm, fd, cell); err != nil {
				t.Fatalf("column %s: %q: %v", header[j], cell, err)
			}
			if again := rowcsv.Cell(m, header[j]); again != cell {
				t.Fatalf("column %s: %q is not the text of the value it holds (%q)", header[j], cell, again)
			}
		}
		rows = append(rows, m.Interface())
	}
	return rows
}

// field is the message and field of a column, in the nested backlink of
// a new/lost row first.
func field(m protoreflect.Message, name string) (protoreflect.Message, protoreflect.FieldDescriptor) {
	if bl := m.Descriptor().Fields().ByName("backlink"); bl != nil {
		if fd := bl.Message().Fields().ByName(protoreflect.Name(name)); fd != nil {
			return m.Mutable(bl).Message(), fd
		}
	}
	return m, m.Descriptor().Fields().ByName(protoreflect.Name(name))
}

// setText sets a field from its CSV text, through the row's JSON.
func setText(m protoreflect.Message, fd protoreflect.FieldDescriptor, text string) error {
	js := text
	switch {
	case fd.IsList():
		var items []string
		if err := json.Unmarshal([]byte(text), &items); err != nil {
			return err
		}
		b, _ := json.Marshal(items) // int64 items too: protojson reads quoted integers
		js = string(b)
	case fd.Kind() == protoreflect.EnumKind && fd.Name() == "change":
		js = quote("CHANGE_" + strings.ToUpper(text))
	case fd.Kind() == protoreflect.StringKind || fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.Int64Kind:
		js = quote(text)
	}
	tmp := m.New()
	if err := protojson.Unmarshal([]byte(`{"`+string(fd.Name())+`":`+js+`}`), tmp.Interface()); err != nil {
		return err
	}
	m.Set(fd, tmp.Get(fd))
	return nil
}

func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// readParquet reads the file with parquet-go and rebuilds rows from the
// typed columns and their levels.
func readParquet(t *testing.T, data []byte, sample proto.Message) []proto.Message {
	t.Helper()
	f, err := parquet.OpenFile(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	var names []string // a column per field, each one leaf
	for _, fl := range f.Schema().Fields() {
		names = append(names, fl.Name())
	}
	if len(f.Schema().Columns()) != len(names) {
		t.Fatalf("%d leaf columns for %d fields", len(f.Schema().Columns()), len(names))
	}
	r := parquet.NewReader(f)
	defer r.Close()
	var rows []proto.Message
	buf := make([]parquet.Row, 5)
	for {
		n, err := r.ReadRows(buf)
		for _, pr := range buf[:n] {
			m := sample.ProtoReflect().New()
			for _, v := range pr {
				if v.IsNull() {
					continue
				}
				fm, fd := field(m, names[v.Column()])
				setParquet(t, fm, fd, v)
			}
			rows = append(rows, m.Interface())
		}
		if err == io.EOF {
			return rows
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

func setParquet(t *testing.T, m protoreflect.Message, fd protoreflect.FieldDescriptor, v parquet.Value) {
	var pv protoreflect.Value
	switch fd.Kind() {
	case protoreflect.StringKind:
		pv = protoreflect.ValueOfString(string(v.ByteArray()))
	case protoreflect.Int64Kind:
		pv = protoreflect.ValueOfInt64(v.Int64())
	case protoreflect.DoubleKind:
		pv = protoreflect.ValueOfFloat64(v.Double())
	case protoreflect.BoolKind:
		pv = protoreflect.ValueOfBool(v.Boolean())
	case protoreflect.EnumKind:
		ev := fd.Enum().Values().ByName(protoreflect.Name("CHANGE_" + strings.ToUpper(string(v.ByteArray()))))
		if ev == nil {
			t.Fatalf("%s: %q", fd.Name(), v.ByteArray())
		}
		pv = protoreflect.ValueOfEnum(ev.Number())
	case protoreflect.MessageKind:
		pv = protoreflect.ValueOfMessage(timestamppb.New(time.UnixMicro(v.Int64())).ProtoReflect())
	default:
		t.Fatalf("%s: kind %v", fd.Name(), fd.Kind())
	}
	if fd.IsList() {
		m.Mutable(fd).List().Append(pv)
		return
	}
	m.Set(fd, pv)
}

// TestParquetTypes: the columns are typed, in the order asked, optional,
// with UTC microsecond timestamps and the standard LIST layout.
func TestParquetTypes(t *testing.T) {
	b := memBucket(t)
	cols := []string{"change", "change_time", "url_from", "traffic", "domain_rating_source", "is_dofollow", "first_seen_link", "languages", "redirect_kind"}
	_, data := writePart(t, b, "p.parquet", parts.Options{Format: parts.FormatParquet, Columns: cols}, rowsOf(&v1.NewLostBacklink{}, 3))
	f, err := parquet.OpenFile(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	got := f.Schema().String()
	want := `message NewLostBacklink {
	optional binary change (STRING);
	optional int64 change_time (TIMESTAMP(isAdjustedToUTC=true,unit=MICROS));
	optional binary url_from (STRING);
	optional int64 traffic (INT(64,true));
	optional double domain_rating_source;
	optional boolean is_dofollow;
	optional int64 first_seen_link (TIMESTAMP(isAdjustedToUTC=true,unit=MICROS));
	optional group languages (LIST) {
		repeated group list {
			required binary element (STRING);
		}
	}
	optional group redirect_kind (LIST) {
		repeated group list {
			required int64 element (INT(64,true));
		}
	}
}`
	if got != want {
		t.Errorf("schema\n%s\nwant\n%s", got, want)
	}
}

// TestColumns: CSV and Parquet have the columns asked for, in their
// order; NDJSON rows are whole; a column the row type lacks is refused,
// by name.
func TestColumns(t *testing.T) {
	b := memBucket(t)
	rows := rowsOf(&v1.Backlink{}, 5)
	cols := []string{"url_to", "anchor", "languages", "domain_rating_source"}
	_, data := writePart(t, b, "c.csv", parts.Options{Format: parts.FormatCSV, Columns: cols}, rows)
	got := readCSV(t, data, &v1.Backlink{}, cols)
	for i, r := range rows {
		want := &v1.Backlink{}
		src := r.(*v1.Backlink)
		want.UrlTo, want.Anchor, want.Languages, want.DomainRatingSource = src.UrlTo, src.Anchor, src.Languages, src.DomainRatingSource
		if d := diff(withoutCR(want), got[i]); d != "" {
			t.Fatalf("row %d: %s", i, d)
		}
	}
	_, data = writePart(t, b, "c.parquet", parts.Options{Format: parts.FormatParquet, Columns: cols}, rows)
	f, err := parquet.OpenFile(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, fl := range f.Schema().Fields() {
		names = append(names, fl.Name())
	}
	if !slices.Equal(names, cols) {
		t.Errorf("parquet columns %q, want %q", names, cols)
	}

	for _, f := range []parts.Format{parts.FormatCSV, parts.FormatParquet} {
		w, err := parts.NewWriter(t.Context(), b, "bad", parts.Options{Format: f, Columns: []string{"url_to", "no_such_field"}})
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Write(rows[0]); err == nil || !strings.Contains(err.Error(), `"no_such_field"`) {
			t.Errorf("%v: unknown column: %v", f, err)
		}
		if _, err := w.Close(); err == nil {
			t.Errorf("%v: a part that failed was committed", f)
		}
	}
	if ok, _ := b.Exists(t.Context(), "bad"); ok {
		t.Error("a failed part left an object")
	}
}

// TestMixedRowsRefused: a part holds rows of one type.
func TestMixedRowsRefused(t *testing.T) {
	w, err := parts.NewWriter(t.Context(), memBucket(t), "m.ndjson", parts.Options{Format: parts.FormatNDJSON})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	if err := w.Write(&v1.Backlink{}); err != nil {
		t.Fatal(err)
	}
	if err := w.Write(&v1.RefDomain{}); err == nil || !strings.Contains(err.Error(), "linkgate.v1.RefDomain") {
		t.Errorf("a RefDomain after a Backlink: %v", err)
	}
}

// TestCSVCells: the cells of the tricky values, as the REST CSV writes
// them, RFC 4180-quoted.
func TestCSVCells(t *testing.T) {
	b := memBucket(t)
	seen := time.Date(2025, 8, 10, 12, 34, 56, 120_000_000, time.FixedZone("", 2*3600))
	row := &v1.NewLostBacklink{Change: v1.Change_CHANGE_LOST, ChangeTime: timestamppb.New(seen),
		Backlink: &v1.Backlink{Anchor: proto.String("a, \"q\"\r\nü🚀"), Traffic: proto.Int64(9007199254740993),
			DomainRatingSource: proto.Float64(1e-7), RedirectKind: []int64{301, 302}, Languages: []string{"<en>", "a,b"},
			IsDofollow: proto.Bool(false)}}
	cols := []string{"change", "change_time", "anchor", "traffic", "domain_rating_source", "redirect_kind", "languages", "is_dofollow", "title"}
	_, data := writePart(t, b, "x.csv", parts.Options{Format: parts.FormatCSV, Columns: cols}, []proto.Message{row})
	want := "change,change_time,anchor,traffic,domain_rating_source,redirect_kind,languages,is_dofollow,title\r\n" +
		"lost,2025-08-10T10:34:56.120Z,\"a, \"\"q\"\"\r\nü🚀\",9007199254740993,1e-7,\"[\"\"301\"\",\"\"302\"\"]\",\"[\"\"\\u003cen\\u003e\"\",\"\"a,b\"\"]\",false,\r\n"
	if string(data) != want {
		t.Errorf("got\n%q\nwant\n%q", data, want)
	}
}

// TestGzip: a gzip part is a gzip file of the plain part's bytes.
func TestGzip(t *testing.T) {
	b := memBucket(t)
	rows := rowsOf(&v1.RefDomain{}, 300)
	for _, f := range []parts.Format{parts.FormatNDJSON, parts.FormatCSV} {
		_, plain := writePart(t, b, "plain", parts.Options{Format: f}, rows)
		p, zipped := writePart(t, b, "zipped", parts.Options{Format: f, Gzip: true}, rows)
		if !bytes.HasPrefix(zipped, []byte{0x1f, 0x8b}) || !bytes.Equal(gunzip(t, zipped), plain) {
			t.Errorf("%v: the gzip part does not unpack to the plain one", f)
		}
		if p.Bytes >= int64(len(plain)) {
			t.Errorf("%v: gzip part of %d bytes, plain %d", f, p.Bytes, len(plain))
		}
	}
	for _, c := range []struct {
		f   parts.Format
		gz  bool
		ext string
	}{
		{parts.FormatNDJSON, false, ".ndjson"}, {parts.FormatNDJSON, true, ".ndjson.gz"},
		{parts.FormatCSV, false, ".csv"}, {parts.FormatCSV, true, ".csv.gz"},
		{parts.FormatParquet, false, ".parquet"}, {parts.FormatParquet, true, ".parquet"},
	} {
		if got := parts.Extension(parts.Options{Format: c.f, Gzip: c.gz}); got != c.ext {
			t.Errorf("Extension(%v, gzip %v) = %q, want %q", c.f, c.gz, got, c.ext)
		}
	}
	// Parquet's own GZIP codec: still a Parquet file, read as any other.
	_, data := writePart(t, b, "g.parquet", parts.Options{Format: parts.FormatParquet, Gzip: true}, rows)
	if got := readParquet(t, data, &v1.RefDomain{}); len(got) != len(rows) || !proto.Equal(got[299], rows[299]) {
		t.Error("a GZIP-coded Parquet part does not read back")
	}
}

// TestCounts: Rows counts rows; Bytes grows as data reaches the object
// (a Parquet writer passes each full row group on) and ends at its size.
func TestCounts(t *testing.T) {
	b := memBucket(t)
	for _, o := range []parts.Options{{Format: parts.FormatNDJSON}, {Format: parts.FormatCSV, Gzip: true}, {Format: parts.FormatParquet, RowGroupRows: 200}} {
		w, err := parts.NewWriter(t.Context(), b, "n", o)
		if err != nil {
			t.Fatal(err)
		}
		rows := rowsOf(&v1.Backlink{}, 1000)
		var last int64
		grew := 0
		for i, r := range rows {
			if err := w.Write(r); err != nil {
				t.Fatal(err)
			}
			if w.Rows() != int64(i+1) {
				t.Fatalf("Rows %d after %d", w.Rows(), i+1)
			}
			if w.Bytes() < last {
				t.Fatalf("Bytes went down: %d to %d", last, w.Bytes())
			}
			if w.Bytes() > last {
				grew++
			}
			last = w.Bytes()
		}
		if grew < 3 {
			t.Errorf("%+v: Bytes grew %d times over 1000 rows: not counted as written", o, grew)
		}
		p, err := w.Close()
		if err != nil {
			t.Fatal(err)
		}
		attrs, _ := b.Attributes(t.Context(), "n")
		if p.Bytes != attrs.Size || w.Bytes() != attrs.Size || p.Rows != 1000 {
			t.Errorf("%+v: part %d bytes, writer %d, object %d", o, p.Bytes, w.Bytes(), attrs.Size)
		}
	}
}

// TestParquetRowGroups: a Parquet part is written in bounded row groups.
func TestParquetRowGroups(t *testing.T) {
	_, data := writePart(t, memBucket(t), "g.parquet", parts.Options{Format: parts.FormatParquet, RowGroupRows: 100}, rowsOf(&v1.BrokenBacklink{}, 1050))
	f, err := parquet.OpenFile(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(f.RowGroups()); n != 11 || f.NumRows() != 1050 {
		t.Errorf("%d row groups of %d rows, want 11 of 1050", n, f.NumRows())
	}
}

// TestEmptyPart: a part without rows has the CSV header or the Parquet
// schema of the row type.
func TestEmptyPart(t *testing.T) {
	b := memBucket(t)
	md := (&v1.RefDomain{}).ProtoReflect().Descriptor()
	p, data := writePart(t, b, "e.csv", parts.Options{Format: parts.FormatCSV, Row: md, Columns: []string{"domain", "domain_rating"}}, nil)
	if string(data) != "domain,domain_rating\r\n" || p.Rows != 0 {
		t.Errorf("empty CSV %q", data)
	}
	_, data = writePart(t, b, "e.parquet", parts.Options{Format: parts.FormatParquet, Row: md}, nil)
	if got := readParquet(t, data, &v1.RefDomain{}); len(got) != 0 {
		t.Errorf("%d rows", len(got))
	}
	_, data = writePart(t, b, "e.ndjson", parts.Options{Format: parts.FormatNDJSON}, nil)
	if len(data) != 0 {
		t.Errorf("empty NDJSON %q", data)
	}
	w, _ := parts.NewWriter(t.Context(), b, "e2.parquet", parts.Options{Format: parts.FormatParquet})
	if _, err := w.Close(); err == nil || !strings.Contains(err.Error(), "Options.Row") {
		t.Errorf("an empty Parquet part of no known type: %v", err)
	}
}

// TestAbortLeavesNothing: an aborted part leaves no object, and an
// earlier object under its key as it was.
func TestAbortLeavesNothing(t *testing.T) {
	for _, url := range []string{"mem://", "file://" + filepath.ToSlash(t.TempDir())} {
		b, err := parts.OpenBucket(t.Context(), url)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range []parts.Format{parts.FormatNDJSON, parts.FormatCSV, parts.FormatParquet} {
			o := parts.Options{Format: f, RowGroupRows: 10}
			w, err := parts.NewWriter(t.Context(), b, "a", o)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range rowsOf(&v1.Backlink{}, 600) { // past the buffers: bytes reach the object
				if err := w.Write(r); err != nil {
					t.Fatal(err)
				}
			}
			if w.Bytes() == 0 {
				t.Fatalf("%v: nothing reached the object: the abort is not tested", f)
			}
			w.Abort()
			if ok, err := b.Exists(t.Context(), "a"); ok || err != nil {
				t.Errorf("%s %v: aborted part exists: %v %v", url, f, ok, err)
			}
			if _, err := w.Close(); err == nil {
				t.Errorf("%s %v: Close after Abort succeeded", url, f)
			}
			_, before := writePart(t, b, "kept", o, rowsOf(&v1.Backlink{}, 2))
			w, _ = parts.NewWriter(t.Context(), b, "kept", o)
			w.Write(rowsOf(&v1.Backlink{}, 5)[4])
			w.Abort()
			if after, _ := b.ReadAll(t.Context(), "kept"); !bytes.Equal(after, before) {
				t.Errorf("%s %v: an aborted rewrite changed the earlier part", url, f)
			}
		}
		assertOnly(t, b, "kept")
		b.Close()
	}
}

// TestUnclosedLeavesNothing: a writer that dies before Close (its context
// ends, as when the process stops) leaves no object, however much it
// wrote.
func TestUnclosedLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	for _, url := range []string{"mem://", "file://" + filepath.ToSlash(dir)} {
		b, err := parts.OpenBucket(t.Context(), url)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		w, err := parts.NewWriter(ctx, b, "u.csv", parts.Options{Format: parts.FormatCSV})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rowsOf(&v1.Backlink{}, 600) {
			if err := w.Write(r); err != nil {
				t.Fatal(err)
			}
		}
		if w.Bytes() == 0 {
			t.Fatal("nothing reached the object: the test proves nothing")
		}
		if ok, _ := b.Exists(t.Context(), "u.csv"); ok {
			t.Errorf("%s: the part is visible before Close", url)
		}
		cancel()
		if _, err := w.Close(); err == nil {
			t.Errorf("%s: Close after the context ended committed the part", url)
		}
		assertOnly(t, b)
		b.Close()
	}
	if names, _ := filepath.Glob(filepath.Join(dir, "*")); len(names) != 0 {
		t.Errorf("files left in the bucket's folder: %q", names)
	}
}

// TestRewriteReplaces: a part written again under its key replaces the
// earlier copy whole.
func TestRewriteReplaces(t *testing.T) {
	b, err := parts.OpenBucket(t.Context(), "file://"+filepath.ToSlash(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	rows := rowsOf(&v1.Backlink{}, 50)
	o := parts.Options{Format: parts.FormatNDJSON}
	writePart(t, b, "t1/e1/00001.ndjson", o, rows)
	p, data := writePart(t, b, "t1/e1/00001.ndjson", o, rows[:20])
	if got := readNDJSON(t, data, &v1.Backlink{}); len(got) != 20 || p.Rows != 20 {
		t.Errorf("after the rewrite %d rows, part says %d", len(got), p.Rows)
	}
	assertOnly(t, b, "t1/e1/00001.ndjson")
}

// assertOnly fails unless the bucket holds exactly keys.
func assertOnly(t *testing.T, b *blob.Bucket, keys ...string) {
	t.Helper()
	var got []string
	it := b.List(nil)
	for {
		obj, err := it.Next(t.Context())
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, obj.Key)
	}
	if !slices.Equal(got, keys) {
		t.Errorf("bucket holds %q, want %q", got, keys)
	}
}

// TestManifest: a manifest reads back as written, and one whose totals
// disagree with its parts is refused.
func TestManifest(t *testing.T) {
	b := memBucket(t)
	md := (&v1.Backlink{}).ProtoReflect().Descriptor()
	cols, err := parts.Schema(md, []string{"url_from", "languages", "first_seen_link"})
	if err != nil {
		t.Fatal(err)
	}
	p1, _ := writePart(t, b, "t/e/00000.csv.gz", parts.Options{Format: parts.FormatCSV, Gzip: true}, rowsOf(&v1.Backlink{}, 3))
	p2, _ := writePart(t, b, "t/e/00001.csv.gz", parts.Options{Format: parts.FormatCSV, Gzip: true}, rowsOf(&v1.Backlink{}, 2))
	m := parts.Manifest{Name: "exports/e", Tenant: "t", Request: []byte(`{"backlinks":{"target":"example.com"}}`),
		Format: parts.FormatCSV, Gzip: true, Columns: cols, Parts: []parts.Part{p1, p2}, Rows: 5, Units: 150,
		State: "SUCCEEDED", CreateTime: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	if err := parts.WriteManifest(t.Context(), b, "t/e/manifest.json", m); err != nil {
		t.Fatal(err)
	}
	got, err := parts.ReadManifest(t.Context(), b, "t/e/manifest.json")
	if err != nil {
		t.Fatal(err)
	}
	m.Version = parts.ManifestVersion
	if !cmpJSON(t, got, m) {
		t.Errorf("read back\n%+v\nwrote\n%+v", got, m)
	}
	raw, _ := b.ReadAll(t.Context(), "t/e/manifest.json")
	for _, want := range []string{`"format": "csv"`, `"type": "list\u003cstring\u003e"`, `"type": "timestamp"`, `"sha256": "` + p1.SHA256 + `"`} {
		if !bytes.Contains(raw, []byte(want)) {
			t.Errorf("manifest lacks %s:\n%s", want, raw)
		}
	}
	m.Rows = 6
	if err := parts.WriteManifest(t.Context(), b, "t/e/bad.json", m); err == nil || !strings.Contains(err.Error(), "rows") {
		t.Errorf("rows that disagree with the parts: %v", err)
	}
}

func cmpJSON(t *testing.T, a, b parts.Manifest) bool {
	t.Helper()
	var ra, rb bytes.Buffer
	if json.Compact(&ra, a.Request) != nil || json.Compact(&rb, b.Request) != nil || ra.String() != rb.String() {
		return false
	}
	a.Request, b.Request = nil, nil
	return fmt.Sprintf("%+v", a) == fmt.Sprintf("%+v", b)
}

// TestSignedURL: mem:// cannot sign; file:// with a signer can, and the
// URL carries the key.
func TestSignedURL(t *testing.T) {
	u, err := parts.SignedURL(t.Context(), memBucket(t), "k", time.Hour)
	if u != "" || err != nil {
		t.Errorf("mem://: %q %v", u, err)
	}
	dir := t.TempDir()
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("0123456789abcdef0123456789abcdef"), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := parts.OpenBucket(t.Context(), "file://"+filepath.ToSlash(dir)+"?base_url=https://linkgate.example/files&secret_key_path="+secret)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	u, err = parts.SignedURL(t.Context(), b, "t/e/00000.csv", time.Hour)
	if err != nil || !strings.HasPrefix(u, "https://linkgate.example/files") || !strings.Contains(u, "t%2Fe%2F00000.csv") && !strings.Contains(u, "t/e/00000.csv") {
		t.Errorf("file:// with a signer: %q %v", u, err)
	}
	plain, err := parts.OpenBucket(t.Context(), "file://"+filepath.ToSlash(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if u, err := parts.SignedURL(t.Context(), plain, "k", time.Hour); u != "" || err != nil {
		t.Errorf("file:// without a signer: %q %v", u, err)
	}
}

// TestOpenBucketErrors: a URL of no supported store is refused by its
// scheme.
func TestOpenBucketErrors(t *testing.T) {
	for _, url := range []string{"ftp://x", "bucket", "azblob://c"} {
		if _, err := parts.OpenBucket(t.Context(), url); err == nil || !strings.Contains(err.Error(), "scheme") {
			t.Errorf("%s: %v", url, err)
		}
	}
	_, err := parts.NewWriter(t.Context(), memBucket(t), "k", parts.Options{Format: 7})
	if err == nil || !strings.Contains(err.Error(), "format") {
		t.Errorf("format 7: %v", err)
	}
}

// TestParquetTimestamps: Parquet timestamps are whole microseconds (finer
// fractions are cut), before 1970 too, and UTC whatever the zone of the
// value.
func TestParquetTimestamps(t *testing.T) {
	zone := time.FixedZone("", -5*3600)
	in := []time.Time{
		time.Date(2025, 8, 10, 12, 34, 56, 123456789, zone),
		time.Date(1969, 12, 31, 23, 59, 59, 999999999, time.UTC),
	}
	var rows []proto.Message
	for _, ts := range in {
		rows = append(rows, &v1.RefDomain{Domain: proto.String("a.example"), FirstSeen: timestamppb.New(ts)})
	}
	_, data := writePart(t, memBucket(t), "ts.parquet", parts.Options{Format: parts.FormatParquet, Columns: []string{"first_seen"}}, rows)
	got := readParquet(t, data, &v1.RefDomain{})
	want := []string{"2025-08-10T17:34:56.123456Z", "1969-12-31T23:59:59.999999Z"}
	for i := range want {
		if s := got[i].(*v1.RefDomain).GetFirstSeen().AsTime().Format(time.RFC3339Nano); s != want[i] {
			t.Errorf("%v: read back %s, want %s", in[i], s, want[i])
		}
	}
}

// BenchmarkWriter: writing full Backlink rows (every field selected) in
// each format, to memory; reports the time and the bytes per row.
func BenchmarkWriter(b *testing.B) {
	rows := rowsOf(&v1.Backlink{}, 1000)
	bucket, err := parts.OpenBucket(b.Context(), "mem://")
	if err != nil {
		b.Fatal(err)
	}
	defer bucket.Close()
	for _, o := range []parts.Options{{Format: parts.FormatNDJSON}, {Format: parts.FormatNDJSON, Gzip: true},
		{Format: parts.FormatCSV}, {Format: parts.FormatCSV, Gzip: true}, {Format: parts.FormatParquet}} {
		b.Run(strings.TrimPrefix(parts.Extension(o), "."), func(b *testing.B) {
			var p parts.Part
			for b.Loop() {
				w, err := parts.NewWriter(b.Context(), bucket, "bench", o)
				if err != nil {
					b.Fatal(err)
				}
				for _, r := range rows {
					if err := w.Write(r); err != nil {
						b.Fatal(err)
					}
				}
				if p, err = w.Close(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(rows)), "ns/row")
			b.ReportMetric(float64(p.Bytes)/float64(len(rows)), "stored-B/row")
		})
	}
}

// TestParquetWriterMemory: a Parquet writer holds one row group, so its
// memory depends on RowGroupRows, not on the rows of the part: the heap
// in use after 8 row groups is about what it was after 2.
func TestParquetWriterMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 16,000 full rows")
	}
	rows := rowsOf(&v1.Backlink{}, 500)
	const groupRows = 2000
	b, err := parts.OpenBucket(t.Context(), "file://"+filepath.ToSlash(t.TempDir())) // the stored bytes off the heap
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	w, err := parts.NewWriter(t.Context(), b, "m.parquet", parts.Options{Format: parts.FormatParquet, RowGroupRows: groupRows})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	// Live bytes after two collections: the first only moves sync.Pool
	// contents (buffers the writer gave back) to the pools' victim caches.
	live := func() int64 {
		var m runtime.MemStats
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&m)
		return int64(m.HeapAlloc)
	}
	base := live()
	grew := map[int]int64{} // after n row groups, just before the next is full
	for i := range 8*groupRows + groupRows - 1 {
		if err := w.Write(rows[i%len(rows)]); err != nil {
			t.Fatal(err)
		}
		if n := (i + 1) / groupRows; (n == 2 || n == 8) && (i+1)%groupRows == groupRows-1 {
			grew[n] = live() - base
		}
	}
	t.Logf("heap grew by %d KiB after 2 row groups, %d KiB after 8 (%d KiB stored)", grew[2]>>10, grew[8]>>10, w.Bytes()>>10)
	if grew[8] > grew[2]+grew[2]/2 {
		t.Errorf("the writer's memory grows with its rows: %d bytes after 2 row groups, %d after 8", grew[2], grew[8])
	}
}
