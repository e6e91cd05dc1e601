package parts_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/linkgate/linkgate/export/parts"
	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
)

const duckdbDir = "testdata/duckdb"

// duckDBType is the DuckDB type a loader gives a manifest column type.
var duckDBType = map[string]string{
	"string": "VARCHAR", "int64": "BIGINT", "double": "DOUBLE", "bool": "BOOLEAN",
	"timestamp": "TIMESTAMP WITH TIME ZONE", "list<string>": "VARCHAR[]", "list<int64>": "BIGINT[]",
}

// TestDuckDBReadsParts writes the rows of one export as Parquet, CSV and
// NDJSON parts (to a file:// bucket) and reads them with DuckDB (npm
// @duckdb/node-api, pinned in testdata/duckdb): Parquet's columns have
// their types of their own, and all three formats hold the same rows,
// CSV and NDJSON read with the types of the manifest's columns. It skips
// when the npm package is not installed, except in CI
// (LINKGATE_REQUIRE_DUCKDB=1), where it must run.
func TestDuckDBReadsParts(t *testing.T) {
	node, err := filepath.Abs(filepath.Join(duckdbDir, "node_modules", ".bin", "node"))
	if err != nil {
		t.Fatal(err)
	}
	for _, need := range []string{node, filepath.Join(duckdbDir, "node_modules", "@duckdb", "node-api", "package.json")} {
		if _, err := os.Stat(need); err != nil {
			const why = "DuckDB's npm package is not installed in " + duckdbDir + ": run scripts/install-test-deps.sh"
			if os.Getenv("LINKGATE_REQUIRE_DUCKDB") == "1" {
				t.Fatal("LINKGATE_REQUIRE_DUCKDB=1 but " + why)
			}
			t.Skip(why)
		}
	}

	day := time.Date(2025, 8, 10, 12, 34, 56, 123456000, time.UTC)
	rows := []proto.Message{
		&v1.Backlink{UrlFrom: proto.String("https://a.example/über?q=1,2"), Anchor: proto.String(`say "hi", then` + "\nbye 🚀"),
			Traffic: proto.Int64(9007199254740993), DomainRatingSource: proto.Float64(12.5), IsDofollow: proto.Bool(true),
			FirstSeenLink: timestamppb.New(day), Languages: []string{"en", "de,at"}, RedirectKind: []int64{301, 302}},
		&v1.Backlink{UrlFrom: proto.String("https://b.example/"), Traffic: proto.Int64(-1), DomainRatingSource: proto.Float64(1e-7),
			IsDofollow: proto.Bool(false), FirstSeenLink: timestamppb.New(time.Unix(0, 0))},
		&v1.Backlink{UrlFrom: proto.String("https://c.example/日本")}, // the rest null
	}
	cols := []string{"url_from", "anchor", "traffic", "domain_rating_source", "is_dofollow", "first_seen_link", "languages", "redirect_kind"}
	schema, err := parts.Schema((&v1.Backlink{}).ProtoReflect().Descriptor(), cols)
	if err != nil {
		t.Fatal(err)
	}
	var wantColumns []duckColumn
	for _, c := range schema {
		wantColumns = append(wantColumns, duckColumn{c.Name, duckDBType[c.Type]})
	}

	dir := t.TempDir()
	b, err := parts.OpenBucket(t.Context(), "file://"+filepath.ToSlash(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var files []string
	for _, f := range []parts.Format{parts.FormatParquet, parts.FormatCSV, parts.FormatNDJSON} {
		o := parts.Options{Format: f, Columns: cols}
		key := "tenant/e1/00000" + parts.Extension(o)
		writePart(t, b, key, o, rows)
		files = append(files, filepath.Join(dir, filepath.FromSlash(key)))
	}
	typesJSON, _ := json.Marshal(wantColumns)
	cmd := exec.CommandContext(t.Context(), node, append([]string{"read.mjs"}, append(files, string(typesJSON))...)...)
	cmd.Dir = duckdbDir
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	var got map[string]struct {
		Columns []duckColumn `json:"columns"`
		Rows    [][]any      `json:"rows"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("%v: %s", err, out)
	}

	// Parquet's own types, with no help from the manifest.
	if pq := got["parquet"].Columns; !reflect.DeepEqual(pq, wantColumns) {
		t.Errorf("DuckDB reads the Parquet columns as\n%v\nwant\n%v", pq, wantColumns)
	}
	want := [][]any{
		{"https://a.example/über?q=1,2", "say \"hi\", then\nbye 🚀", "9007199254740993", 12.5, true, "2025-08-10 12:34:56.123456+00",
			[]any{"en", "de,at"}, []any{"301", "302"}},
		{"https://b.example/", nil, "-1", 1e-7, false, "1970-01-01 00:00:00+00", nil, nil},
		{"https://c.example/日本", nil, nil, nil, nil, nil, nil, nil},
	}
	for _, f := range []string{"parquet", "csv", "ndjson"} {
		if !reflect.DeepEqual(got[f].Columns, wantColumns) {
			t.Errorf("%s columns %v", f, got[f].Columns)
		}
		if !reflect.DeepEqual(got[f].Rows, want) {
			gotJSON, _ := json.Marshal(got[f].Rows)
			wantJSON, _ := json.Marshal(want)
			t.Errorf("DuckDB reads the %s part as\n%s\nwant\n%s", f, gotJSON, wantJSON)
		}
	}
}

type duckColumn struct {
	Name string `json:"name"`
	Type string `json:"type"`
}
