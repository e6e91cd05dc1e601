package upstream

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"testing"
	"time"
)

// benchPage is a 1,000-row page of a typical 8-field select.
func benchPage() (*Query, []byte) {
	const rows = 1000
	var page bytes.Buffer
	page.WriteString(`{"backlinks":[`)
	for i := range rows {
		if i > 0 {
			page.WriteByte(',')
		}
		fmt.Fprintf(&page, `{"url_from":"https://blog%d.example.org/posts/%d/some-article-title","url_to":"https://example.com/page/%d",`+
			`"anchor":"an anchor text %d","domain_rating_source":%d.5,"first_seen_link":"2025-03-02T11:04:%02dZ",`+
			`"last_seen":null,"is_dofollow":%t,"http_code":200}`, i%97, i, i%13, i, i%100, i%60, i%3 == 0)
	}
	page.WriteString(`]}`)
	q := &Query{Endpoint: AllBacklinks, Target: "example.com",
		Select: []string{"url_from", "url_to", "anchor", "domain_rating_source", "first_seen_link", "last_seen", "is_dofollow", "http_code"}}
	return q, page.Bytes()
}

// BenchmarkDecodePage measures DecodePage, the decoder of every list
// response, on 1,000-row pages of a typical 8-field select, in rows per
// second; BenchmarkDecodePage/encoding-json is the same typed decoding with
// encoding/json's token reader, the baseline the JSON library is measured
// against.
func BenchmarkDecodePage(b *testing.B) {
	q, body := benchPage()
	b.Run("jsontext", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		b.ReportAllocs()
		for b.Loop() {
			n, err := DecodePage(bytes.NewReader(body), q, func(Record) error { return nil })
			if err != nil || n != 1000 {
				b.Fatal(n, err)
			}
		}
		b.ReportMetric(float64(b.N*1000)/b.Elapsed().Seconds(), "rows/s")
	})
	b.Run("encoding-json", func(b *testing.B) {
		cols, _ := columnsOf(q)
		b.SetBytes(int64(len(body)))
		b.ReportAllocs()
		for b.Loop() {
			n, err := tokenDecode(bytes.NewReader(body), cols, func(Record) error { return nil })
			if err != nil || n != 1000 {
				b.Fatal(n, err)
			}
		}
		b.ReportMetric(float64(b.N*1000)/b.Elapsed().Seconds(), "rows/s")
	})
}

// tokenDecode is DecodePage written over encoding/json's Decoder.Token,
// the standard library's streaming reader, for the benchmark only: it
// decodes the same typed records, without the error classification.
func tokenDecode(r io.Reader, cols *columns, fn func(Record) error) (int, error) {
	dec := json.NewDecoder(r)
	dec.UseNumber()
	tok := func() json.Token {
		t, err := dec.Token()
		if err != nil {
			panic(err)
		}
		return t
	}
	tok() // {
	n := 0
	for dec.More() {
		if tok().(string) != cols.responseKey {
			var skip json.RawMessage
			dec.Decode(&skip)
			continue
		}
		tok() // [
		for dec.More() {
			tok() // {
			rec := make(Record, len(cols.fields))
			for dec.More() {
				name := tok().(string)
				col, ok := cols.index[name]
				if !ok {
					var skip json.RawMessage
					dec.Decode(&skip)
					continue
				}
				f := cols.fields[col]
				switch t := tok().(type) {
				case nil:
					rec[col] = NullValue()
				case string:
					if f.Kind == KindTime || f.Kind == KindDate {
						tm, err := ParseTime(t)
						if err != nil {
							return n, err
						}
						rec[col] = TimeValue(tm)
					} else {
						rec[col] = StringValue(t)
					}
				case json.Number:
					if f.Kind == KindInt {
						i, _ := t.Int64()
						rec[col] = IntValue(i)
					} else {
						x, _ := t.Float64()
						rec[col] = FloatValue(x)
					}
				case bool:
					rec[col] = BoolValue(t)
				}
			}
			tok() // }
			if err := fn(rec); err != nil {
				return n, err
			}
			n++
		}
		tok() // ]
	}
	return n, nil
}

// TestDecodePage decodes every kind into records laid out by the query's
// select, in its order, with absent and null fields told apart.
func TestDecodePage(t *testing.T) {
	body := `{"backlinks":[{"url_from":"https://a.example/\u00e9","http_code":1e3,"domain_rating_source":71,
		"is_dofollow":true,"first_seen":"2025-03-02T11:04:00.5Z","first_seen_link":"2025-03-02T13:04:00+02:00",
		"source_page_publish_date":"2024-12-31","languages":["en","d\"e",""],"redirect_kind":[301,-302,0],
		"last_seen":null,"brand_new_field":{"x":[1]},"anchor":"first","anchor":"last"},{}]}`
	q := &Query{Endpoint: AllBacklinks, Select: []string{"languages", "url_from", "http_code", "domain_rating_source",
		"is_dofollow", "first_seen", "first_seen_link", "source_page_publish_date", "redirect_kind", "last_seen", "anchor", "alt"}}
	var recs []Record
	n, err := DecodePage(strings.NewReader(body), q, func(r Record) error { recs = append(recs, r); return nil })
	if err != nil || n != 2 || len(recs) != 2 {
		t.Fatalf("n = %d, err = %v, records %d", n, err, len(recs))
	}
	r := recs[0]
	if len(r) != len(q.Select) {
		t.Fatalf("record of %d values, want %d", len(r), len(q.Select))
	}
	checks := []struct {
		got, want any
	}{
		{r[0].Strings(), []string{"en", `d"e`, ""}},
		{r[1].Str(), "https://a.example/é"},
		{r[2].Int(), int64(1000)},
		{r[3].Float(), 71.0},
		{r[4].Bool(), true},
		{r[5].Time(), time.Date(2025, 3, 2, 11, 4, 0, 5e8, time.UTC)},
		{r[6].Time(), time.Date(2025, 3, 2, 11, 4, 0, 0, time.UTC)},
		{r[7].Time(), time.Date(2024, 12, 31, 0, 0, 0, 0, time.UTC)},
		{r[8].Ints(), []int64{301, -302, 0}},
		{[]bool{r[9].Null(), r[9].Valid()}, []bool{true, false}},
		{r[10].Str(), "last"},
		{[]bool{r[11].Null(), r[11].Valid()}, []bool{false, false}},
	}
	for i, c := range checks {
		if fmt.Sprintf("%T %v", c.got, c.got) != fmt.Sprintf("%T %v", c.want, c.want) {
			t.Errorf("%s = %T %v, want %T %v", q.Select[i], c.got, c.got, c.want, c.want)
		}
	}
	for i, v := range recs[1] {
		if v.Valid() || v.Null() {
			t.Errorf("empty row: %s = %v", q.Select[i], v)
		}
	}
}

func TestDecodePageErrors(t *testing.T) {
	q := &Query{Endpoint: AllBacklinks, Select: []string{"url_from", "http_code", "languages"}}
	stop := errors.New("stop")
	tests := map[string]struct {
		body string
		fn   func(Record) error
		want error
	}{
		"wrong kind":        {`{"backlinks":[{"http_code":"200"}]}`, nil, ErrMalformed},
		"object for int":    {`{"backlinks":[{"http_code":{"a":1}}]}`, nil, ErrMalformed},
		"too large":         {`{"backlinks":[{"http_code":1e300}]}`, nil, ErrMalformed},
		"bad element":       {`{"backlinks":[{"languages":["en",null]}]}`, nil, ErrMalformed},
		"list for string":   {`{"backlinks":[{"url_from":["a"]}]}`, nil, ErrMalformed},
		"bad escape":        {`{"backlinks":[{"url_from":"\x"}]}`, nil, ErrMalformed},
		"trailing garbage":  {`{"backlinks":[]}x`, nil, ErrMalformed},
		"cut in a string":   {`{"backlinks":[{"url_from":"abc`, nil, io.ErrUnexpectedEOF},
		"cut in a list":     {`{"backlinks":[{"languages":["a",`, nil, io.ErrUnexpectedEOF},
		"callback error":    {`{"backlinks":[{}]}`, func(Record) error { return stop }, stop},
		"unselected skiped": {`{"backlinks":[{"anchor":{"deep":[1,2,{"x":"y"}]}}]}`, nil, nil},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			fn := tt.fn
			if fn == nil {
				fn = func(Record) error { return nil }
			}
			_, err := DecodePage(strings.NewReader(tt.body), q, fn)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

// TestDecodePageResetConnection: the body's own read error reaches the
// caller as itself, so the client can tell a broken connection from a
// malformed body.
func TestDecodePageResetConnection(t *testing.T) {
	reset := errors.New("connection reset by peer")
	body := io.MultiReader(strings.NewReader(`{"backlinks":[{"url_from":"a"},`), errReader{reset})
	q := &Query{Endpoint: AllBacklinks, Select: []string{"url_from"}}
	n, err := DecodePage(body, q, func(Record) error { return nil })
	if n != 1 || err != reset {
		t.Fatalf("n = %d, err = %v, want 1 row and the reader's error", n, err)
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// FuzzDecodePage checks the decoder of untrusted upstream bodies against
// encoding/json: it never panics; when encoding/json sees a valid list
// response whose rows have the documented types, DecodePage returns the same
// values; its errors are classified.
func FuzzDecodePage(f *testing.F) {
	for _, seed := range []string{
		`{"backlinks":[]}`,
		`{"backlinks":[{"url_from":"a\u00e9\n","http_code":200,"domain_rating_source":1.5,"is_dofollow":true,"first_seen":"2025-01-01T00:00:00Z","languages":["en"],"redirect_kind":[301],"last_seen":null,"x":{"y":[1,2.5]}}]}`,
		`{"other":[1,{"a":[]}],"backlinks":[{"source_page_publish_date":"2024-12-31"}],"more":null}`,
		`{"backlinks":[{"http_code":1e3,"http_code":2}]}`,
		`{"backlinks":[{"url_from":"a`,
		`<html>429 Too Many Requests</html>`,
		`{"backlinks":[null]}`,
		`{"backlinks":[{"url_from":"\ud800"}]}`,
		``,
	} {
		f.Add([]byte(seed))
	}
	q := &Query{Endpoint: AllBacklinks, Select: []string{"url_from", "http_code", "domain_rating_source", "is_dofollow",
		"first_seen", "source_page_publish_date", "languages", "redirect_kind", "last_seen"}}
	f.Fuzz(func(t *testing.T, body []byte) {
		var recs []Record
		n, err := DecodePage(bytes.NewReader(body), q, func(r Record) error { recs = append(recs, r); return nil })
		if n != len(recs) {
			t.Fatalf("DecodePage says %d rows, fn saw %d", n, len(recs))
		}
		if err != nil && !errors.Is(err, ErrMalformed) && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("unclassified error %T: %v", err, err)
		}
		var doc struct {
			Backlinks []map[string]any `json:"backlinks"`
		}
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.UseNumber()
		stdErr := dec.Decode(&doc)
		if stdErr == nil && dec.More() {
			stdErr = errors.New("trailing data")
		}
		// Where the two may rightly differ, only the absence of panics and
		// the classification of errors are checked: a repeated response key
		// (DecodePage reads the first), invalid UTF-8 (replaced either way,
		// but not always by as many U+FFFD).
		if err != nil || stdErr != nil || !utf8Clean(body) || bytes.Count(body, []byte(`"backlinks"`)) != 1 {
			return
		}
		for i, raw := range doc.Backlinks {
			for j, name := range q.Select {
				want, present := raw[name]
				got := recs[i][j]
				if !present {
					if got.Valid() || got.Null() {
						t.Fatalf("row %d: %s absent, decoded %v", i, name, got)
					}
					continue
				}
				if want == nil {
					if !got.Null() {
						t.Fatalf("row %d: %s null, decoded %v", i, name, got)
					}
					continue
				}
				if !sameAsStd(got, want) {
					t.Fatalf("row %d: %s = %v, encoding/json %v", i, name, got, want)
				}
			}
		}
	})
}

func utf8Clean(b []byte) bool { return bytes.Equal(bytes.ToValidUTF8(b, nil), b) }

// sameAsStd compares a decoded value with what encoding/json made of it.
func sameAsStd(got Value, want any) bool {
	switch w := want.(type) {
	case string:
		if got.Kind() == KindTime || got.Kind() == KindDate {
			t, err := ParseTime(w)
			return err == nil && t.Equal(got.Time())
		}
		return got.Str() == w
	case json.Number:
		if got.Kind() == KindInt {
			i, err := parseInt([]byte(w.String()))
			return err == nil && i == got.Int()
		}
		f, err := w.Float64()
		return err == nil && (f == got.Float() || math.IsNaN(f))
	case bool:
		return got.Bool() == w
	case []any:
		if got.Len() != len(w) {
			return false
		}
		for i, e := range w {
			var ev Value
			switch got.Kind() {
			case KindStringList:
				ev = StringValue(got.Strings()[i])
			case KindIntList:
				ev = IntValue(got.Ints()[i])
			}
			if !sameAsStd(ev, e) {
				return false
			}
		}
		return true
	}
	return false
}

// TestValueCompare: values order as the upstream sorts them ascending,
// null first.
func TestValueCompare(t *testing.T) {
	t0 := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		a, b Value
		want int
	}{
		{NullValue(), NullValue(), 0},
		{NullValue(), StringValue(""), -1},
		{IntValue(-5), NullValue(), 1},
		{StringValue("a"), StringValue("b"), -1},
		{IntValue(10), IntValue(9), 1},
		{IntValue(2), FloatValue(2.5), -1},
		{FloatValue(3), IntValue(3), 0},
		{BoolValue(false), BoolValue(true), -1},
		{TimeValue(t0), TimeValue(t0.Add(time.Nanosecond)), -1},
		{TimeValue(t0.Add(time.Hour)), TimeValue(t0), 1},
	} {
		if got := tc.a.Compare(tc.b); got != tc.want {
			t.Errorf("%v.Compare(%v) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}
