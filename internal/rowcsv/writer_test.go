package rowcsv

import (
	"bytes"
	"encoding/csv"
	"slices"
	"strings"
	"testing"
)

// TestWriterKeepsText: fields are quoted where RFC 4180 needs it, line
// breaks and carriage returns inside a field are kept as they are, and
// records end with CRLF; encoding/csv reads the records back.
func TestWriterKeepsText(t *testing.T) {
	records := [][]string{
		{"plain", "", "a,b", `say "hi"`, "line\nbreak", "cr\ronly", "crlf\r\nin", "ü 🚀", " lead"},
		{"x", `""`, ",", "\n"},
	}
	var buf bytes.Buffer
	w := NewWriter(&buf)
	for _, r := range records {
		if err := w.Write(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	want := "plain,,\"a,b\",\"say \"\"hi\"\"\",\"line\nbreak\",\"cr\ronly\",\"crlf\r\nin\",ü 🚀, lead\r\n" +
		"x,\"\"\"\"\"\",\",\",\"\n\"\r\n"
	if buf.String() != want {
		t.Fatalf("got\n%q\nwant\n%q", buf.String(), want)
	}
	r := csv.NewReader(strings.NewReader(buf.String()))
	r.FieldsPerRecord = -1
	got, err := r.ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	// encoding/csv reads a CRLF inside quotes as LF; every other byte
	// comes back.
	records[0][6] = "crlf\nin"
	if !slices.EqualFunc(got, records, slices.Equal) {
		t.Errorf("read back %q", got)
	}
}
