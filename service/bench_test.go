package service

import (
	"context"
	"io"
	"testing"

	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
)

// BenchmarkStreamBacklinks measures a whole stream through the service: the
// simulator over HTTP, the client's decoding, the ledger, the pager's
// look-ahead, row conversion and gRPC, for 50,000 rows in 1,000-row pages.
func BenchmarkStreamBacklinks(b *testing.B) {
	h := newHarness(b, harnessOptions{pageRows: 1000})
	h.sim.SetCacheTTL(-1)
	const rows = 50000
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		st, err := h.backlinks.StreamBacklinks(context.Background(), &v1.StreamBacklinksRequest{Target: "sized-50000.example", PageSize: 1000})
		if err != nil {
			b.Fatal(err)
		}
		n := 0
		for {
			m, err := st.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			n += len(m.GetBacklinks())
		}
		if n != rows {
			b.Fatalf("%d rows, want %d", n, rows)
		}
	}
	b.ReportMetric(float64(rows*b.N)/b.Elapsed().Seconds(), "rows/s")
}
