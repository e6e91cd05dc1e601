package export

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/linkgate/linkgate/export/parts"
)

// BenchmarkCommit is the store's cost of one checkpoint: a fenced commit of
// a job holding 20 parts, which a runner pays once per part.
func BenchmarkCommit(b *testing.B) {
	for _, kind := range storeKinds {
		b.Run(kind, func(b *testing.B) {
			st := newStore(b, kind)
			ctx := context.Background()
			j := newJob("t1", "a")
			j.ID, j.Created, j.Expires = "bench", time.Now(), time.Now().Add(time.Hour)
			if _, _, err := st.Create(ctx, j); err != nil {
				b.Fatal(err)
			}
			c, err := st.Claim(ctx, "a", time.Hour, 0)
			if err != nil || c == nil {
				b.Fatal(err)
			}
			for i := range 20 {
				c.Parts = append(c.Parts, parts.Part{Key: fmt.Sprintf("t1/bench/part-%05d.ndjson", i), Rows: 100000, Bytes: 1 << 26,
					SHA256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"})
			}
			b.ResetTimer()
			for i := range b.N {
				c.Rows = int64(i)
				if err := st.Commit(ctx, c); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
