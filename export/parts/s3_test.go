package parts_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"gocloud.dev/blob"
	"google.golang.org/protobuf/proto"

	"github.com/linkgate/linkgate/export/parts"
	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
)

// versitygwVersion is the S3 server scripts/install-test-deps.sh builds
// into the user's cache.
const versitygwVersion = "v1.8.0"

// versitygw finds the versitygw binary: $LINKGATE_VERSITYGW_BIN, on PATH,
// in GOBIN or GOPATH/bin, or where scripts/install-test-deps.sh puts it.
// Without it the test skips, except in CI (LINKGATE_REQUIRE_S3=1).
func versitygw(t *testing.T) string {
	t.Helper()
	if bin := os.Getenv("LINKGATE_VERSITYGW_BIN"); bin != "" {
		return bin
	}
	if bin, err := exec.LookPath("versitygw"); err == nil {
		return bin
	}
	var dirs []string
	if gobin := os.Getenv("GOBIN"); gobin != "" {
		dirs = append(dirs, gobin)
	}
	home, _ := os.UserHomeDir()
	if gopath := os.Getenv("GOPATH"); gopath != "" {
		dirs = append(dirs, filepath.Join(gopath, "bin"))
	} else if home != "" {
		dirs = append(dirs, filepath.Join(home, "go", "bin"))
	}
	cache := os.Getenv("LINKGATE_CACHE_DIR")
	if cache == "" {
		if xdg := os.Getenv("XDG_CACHE_HOME"); xdg != "" {
			cache = filepath.Join(xdg, "linkgate")
		} else if home != "" {
			cache = filepath.Join(home, ".cache", "linkgate")
		}
	}
	dirs = append(dirs, filepath.Join(cache, "versitygw-"+versitygwVersion))
	for _, d := range dirs {
		if bin := filepath.Join(d, "versitygw"); isExecutable(bin) {
			return bin
		}
	}
	const why = "versitygw is not installed: run scripts/install-test-deps.sh (go install github.com/versity/versitygw/cmd/versitygw@" + versitygwVersion + ")"
	if os.Getenv("LINKGATE_REQUIRE_S3") == "1" {
		t.Fatal("LINKGATE_REQUIRE_S3=1 but " + why)
	}
	t.Skip(why)
	return ""
}

func isExecutable(path string) bool {
	st, err := os.Stat(path)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}

// startS3 starts versitygw on a free loopback port, serving the folders
// of a temporary directory as buckets, with bucket as one of them. It
// stops with the test (and with the test process, should that die).
func startS3(t *testing.T, access, secret, bucket string) (endpoint string) {
	t.Helper()
	bin := versitygw(t)
	root := t.TempDir()
	if err := os.Mkdir(filepath.Join(root, bucket), 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cmd := exec.Command(bin, "--access", access, "--secret", secret, "--port", addr, "posix", "--sidecar", t.TempDir(), root)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("versitygw output:\n%s", out.String())
		}
	})
	for deadline := time.Now().Add(30 * time.Second); ; {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return "http://" + addr
		}
		select {
		case err := <-exited:
			t.Fatalf("versitygw exited: %v\n%s", err, out.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("versitygw did not listen on %s in 30s:\n%s", addr, out.String())
		}
	}
}

// TestS3 writes parts of every format to a real S3 server (versitygw on
// 127.0.0.1) through OpenBucket's s3:// URL with the standard AWS
// credential variables, reads them back, checks that an aborted and an
// unclosed part leave nothing, that a rewrite replaces, and that a signed
// URL fetches the bytes with plain net/http.
func TestS3(t *testing.T) {
	const access, secret, bucketName = "linkgatetest", "linkgate-test-secret", "exports"
	endpoint := startS3(t, access, secret, bucketName)
	t.Setenv("AWS_ACCESS_KEY_ID", access)
	t.Setenv("AWS_SECRET_ACCESS_KEY", secret)
	t.Setenv("AWS_SESSION_TOKEN", "")
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	b, err := parts.OpenBucket(t.Context(), fmt.Sprintf("s3://%s?endpoint=%s&region=us-east-1&use_path_style=true", bucketName, endpoint))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	rows := rowsOf(&v1.NewLostBacklink{}, 500)
	var keys []string
	for i, o := range []parts.Options{
		{Format: parts.FormatNDJSON}, {Format: parts.FormatNDJSON, Gzip: true},
		{Format: parts.FormatCSV}, {Format: parts.FormatCSV, Gzip: true},
		{Format: parts.FormatParquet, RowGroupRows: 100},
	} {
		key := fmt.Sprintf("tenant/e1/%05d%s", i, parts.Extension(o))
		keys = append(keys, key)
		p, data := writePart(t, b, key, o, rows)
		sum := sha256.Sum256(data)
		if p.Rows != int64(len(rows)) || p.Bytes != int64(len(data)) || p.SHA256 != hex.EncodeToString(sum[:]) {
			t.Errorf("%s: part %+v, object of %d bytes", key, p, len(data))
		}
		if o.Gzip {
			data = gunzip(t, data)
		}
		var got []proto.Message
		switch o.Format {
		case parts.FormatNDJSON:
			got = readNDJSON(t, data, &v1.NewLostBacklink{})
		case parts.FormatCSV:
			got = readCSV(t, data, &v1.NewLostBacklink{}, nil)
		case parts.FormatParquet:
			got = readParquet(t, data, &v1.NewLostBacklink{})
		}
		if len(got) != len(rows) {
			t.Fatalf("%s: %d rows back, wrote %d", key, len(got), len(rows))
		}
		for j := range rows {
			want := rows[j]
			if o.Format == parts.FormatCSV {
				want = withoutCR(want)
			}
			if d := diff(want, got[j]); d != "" {
				t.Fatalf("%s row %d: %s", key, j, d)
			}
		}

		// A signed URL reads the same bytes, with the part's content
		// type and no Content-Encoding to undo.
		u, err := parts.SignedURL(t.Context(), b, key, time.Minute)
		if err != nil || !strings.HasPrefix(u, endpoint) {
			t.Fatalf("%s: signed URL %q %v", key, u, err)
		}
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || sha256.Sum256(body) != sum {
			t.Fatalf("%s: GET signed URL: %s, %d bytes (sha256 %x), want %x", key, resp.Status, len(body), sha256.Sum256(body), sum)
		}
		if ct := resp.Header.Get("Content-Type"); ct != p.ContentType || resp.Header.Get("Content-Encoding") != "" {
			t.Errorf("%s: served as %q, encoding %q; part says %q", key, ct, resp.Header.Get("Content-Encoding"), p.ContentType)
		}
	}

	// A rewrite replaces; an aborted and an unclosed part leave nothing.
	p, data := writePart(t, b, keys[0], parts.Options{Format: parts.FormatNDJSON}, rows[:7])
	if got := readNDJSON(t, data, &v1.NewLostBacklink{}); len(got) != 7 || p.Rows != 7 {
		t.Errorf("rewritten part holds %d rows", len(got))
	}
	// Rows of 64 KiB, past the size where an upload turns multipart
	// (16 MiB), so that the object is in a multipart upload when it is
	// aborted.
	big := &v1.NewLostBacklink{Change: v1.Change_CHANGE_NEW, Backlink: &v1.Backlink{Anchor: proto.String(strings.Repeat("é", 32<<10))}}
	w, err := parts.NewWriter(t.Context(), b, "tenant/e1/aborted.csv", parts.Options{Format: parts.FormatCSV})
	if err != nil {
		t.Fatal(err)
	}
	for w.Bytes() < 20<<20 {
		if err := w.Write(big); err != nil {
			t.Fatal(err)
		}
	}
	for deadline := time.Now().Add(10 * time.Second); uploads(t, b, bucketName) == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no multipart upload started: the abort is not tested")
		}
	}
	w.Abort()
	w, err = parts.NewWriter(t.Context(), b, "tenant/e1/aborted.parquet", parts.Options{Format: parts.FormatParquet, RowGroupRows: 100})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rowsOf(&v1.NewLostBacklink{}, 300) {
		if err := w.Write(r); err != nil {
			t.Fatal(err)
		}
	}
	w.Abort()
	assertOnly(t, b, keys...)
	if n := uploads(t, b, bucketName); n != 0 {
		t.Errorf("%d multipart uploads left open", n)
	}
}

// uploads counts the multipart uploads open in the bucket (an aborted
// part must leave none: the store would keep its parts, unseen).
func uploads(t *testing.T, b *blob.Bucket, bucket string) int {
	t.Helper()
	var client *s3.Client
	if !b.As(&client) {
		t.Fatal("the bucket is not S3's")
	}
	out, err := client.ListMultipartUploads(t.Context(), &s3.ListMultipartUploadsInput{Bucket: &bucket})
	if err != nil {
		t.Fatal(err)
	}
	return len(out.Uploads)
}
