package parts

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"gocloud.dev/blob"
)

// ManifestVersion is the layout of Manifest; a reader refuses others.
const ManifestVersion = 1

// Manifest describes an export as a whole, beside its parts: what was
// asked, the table, the committed parts in order with their checksums,
// and the totals. A loader that reads the parts it lists, and only those,
// reads every row of the export once.
type Manifest struct {
	Version int    `json:"version"`
	Name    string `json:"name"` // exports/{id}
	Tenant  string `json:"tenant,omitempty"`
	// Request is the export's request as its JSON.
	Request json.RawMessage `json:"request,omitempty"`
	Format  Format          `json:"format"`
	Gzip    bool            `json:"gzip"`
	// Columns are the table of CSV and Parquet parts (NDJSON rows have
	// the same fields, absent ones left out).
	Columns []Column `json:"columns,omitempty"`
	Parts   []Part   `json:"parts"`
	Rows    int64    `json:"rows"`  // the sum of the parts' rows
	Units   int64    `json:"units"` // what the export was charged
	// State is where the export stands: RUNNING, SUCCEEDED, FAILED or
	// CANCELLED; a failed or cancelled export keeps its parts.
	State string `json:"state"`
	Error string `json:"error,omitempty"`
	// NextPageToken resumes a stream of the same request after the last
	// row of the parts; empty at the end of the data.
	NextPageToken string    `json:"next_page_token,omitempty"`
	CreateTime    time.Time `json:"create_time,omitzero"`
	EndTime       time.Time `json:"end_time,omitzero"`
	ExpireTime    time.Time `json:"expire_time,omitzero"`
}

// check refuses a manifest whose figures disagree.
func (m *Manifest) check() error {
	if m.Version != ManifestVersion {
		return fmt.Errorf("version %d, not %d", m.Version, ManifestVersion)
	}
	if Extension(Options{Format: m.Format}) == "" {
		return fmt.Errorf("format: %v is not NDJSON, CSV or Parquet", m.Format)
	}
	var rows int64
	for i, p := range m.Parts {
		if p.Key == "" || len(p.SHA256) != 64 {
			return fmt.Errorf("parts[%d]: a key and a hex SHA-256 are required", i)
		}
		rows += p.Rows
	}
	if rows != m.Rows {
		return fmt.Errorf("rows: %d, but the parts hold %d", m.Rows, rows)
	}
	return nil
}

// WriteManifest writes m as JSON under key, replacing an earlier one at
// once (the object is committed whole or not at all). A zero Version is
// ManifestVersion.
func WriteManifest(ctx context.Context, b *blob.Bucket, key string, m Manifest) error {
	if m.Version == 0 {
		m.Version = ManifestVersion
	}
	if m.Parts == nil {
		m.Parts = []Part{} // a list, also when empty
	}
	if err := m.check(); err != nil {
		return fmt.Errorf("parts: manifest: %w", err)
	}
	body, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("parts: manifest: %w", err)
	}
	if err := b.WriteAll(ctx, key, append(body, '\n'), &blob.WriterOptions{ContentType: "application/json"}); err != nil {
		return fmt.Errorf("parts: write manifest %s: %w", key, err)
	}
	return nil
}

// ReadManifest reads the manifest under key.
func ReadManifest(ctx context.Context, b *blob.Bucket, key string) (Manifest, error) {
	body, err := b.ReadAll(ctx, key)
	if err != nil {
		return Manifest{}, fmt.Errorf("parts: read manifest %s: %w", key, err)
	}
	var m Manifest
	if err := json.Unmarshal(body, &m); err != nil {
		return Manifest{}, fmt.Errorf("parts: manifest %s: %w", key, err)
	}
	if err := m.check(); err != nil {
		return Manifest{}, fmt.Errorf("parts: manifest %s: %w", key, err)
	}
	return m, nil
}

// MarshalText spells a format as its extension does: ndjson, csv, parquet.
func (f Format) MarshalText() ([]byte, error) {
	if Extension(Options{Format: f}) == "" {
		return nil, fmt.Errorf("parts: format %d is not NDJSON, CSV or Parquet", int32(f))
	}
	return []byte(f.String()), nil
}

// UnmarshalText reads what MarshalText writes.
func (f *Format) UnmarshalText(b []byte) error {
	for _, c := range []Format{FormatNDJSON, FormatCSV, FormatParquet} {
		if c.String() == string(b) {
			*f = c
			return nil
		}
	}
	return fmt.Errorf("parts: format %q is not ndjson, csv or parquet", b)
}
