package rowcsv

import (
	"bufio"
	"io"
	"strings"
)

// Writer writes records as RFC 4180 has them: CRLF after each record, a
// field in quotes when it holds a comma, a quote, CR or LF, with its
// quotes doubled. The text of a field is kept byte for byte, which
// encoding/csv does not do: with CRLF line ends it turns a line break
// inside a field into CRLF and drops a lone CR.
type Writer struct {
	w *bufio.Writer
}

// NewWriter writes to w through a buffer; Flush passes it on.
func NewWriter(w io.Writer) *Writer { return &Writer{w: bufio.NewWriter(w)} }

// Write writes one record. Errors of the underlying writer show in Write
// or Flush.
func (w *Writer) Write(record []string) error {
	for i, field := range record {
		if i > 0 {
			w.w.WriteByte(',')
		}
		if !strings.ContainsAny(field, ",\"\r\n") {
			w.w.WriteString(field)
			continue
		}
		w.w.WriteByte('"')
		for {
			j := strings.IndexByte(field, '"')
			if j < 0 {
				break
			}
			w.w.WriteString(field[:j+1])
			w.w.WriteByte('"')
			field = field[j+1:]
		}
		w.w.WriteString(field)
		w.w.WriteByte('"')
	}
	_, err := w.w.WriteString("\r\n")
	return err
}

// Flush writes what is buffered.
func (w *Writer) Flush() error { return w.w.Flush() }
