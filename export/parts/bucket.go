package parts

import (
	"context"
	"fmt"
	"net/url"
	"time"

	"gocloud.dev/blob"
	_ "gocloud.dev/blob/fileblob" // file:///dir
	_ "gocloud.dev/blob/gcsblob"  // gs://bucket
	_ "gocloud.dev/blob/memblob"  // mem://
	_ "gocloud.dev/blob/s3blob"   // s3://bucket?endpoint=…&region=…&use_path_style=true
	"gocloud.dev/gcerrors"
)

// OpenBucket opens the bucket a blob URL names: s3:// (credentials from
// the standard AWS variables; ?endpoint=…&region=…&use_path_style=true
// for an S3-compatible server), gs:// (Google's default credentials),
// file:///dir (?base_url=…&secret_key_path=… lets it sign URLs), or mem://
// (tests).
func OpenBucket(ctx context.Context, rawURL string) (*blob.Bucket, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("parts: bucket URL: %w", err)
	}
	switch u.Scheme {
	case "s3", "gs", "file", "mem":
	default:
		return nil, fmt.Errorf("parts: bucket URL: scheme %q is not s3, gs, file or mem", u.Scheme)
	}
	b, err := blob.OpenBucket(ctx, rawURL)
	if err != nil {
		return nil, fmt.Errorf("parts: bucket URL %s://%s: %w", u.Scheme, u.Host, err)
	}
	return b, nil
}

// SignedURL is a URL that reads key from the bucket itself until expiry,
// or "" where the bucket cannot sign (mem://, file:// without a signer).
func SignedURL(ctx context.Context, b *blob.Bucket, key string, expiry time.Duration) (string, error) {
	u, err := b.SignedURL(ctx, key, &blob.SignedURLOptions{Expiry: expiry})
	if gcerrors.Code(err) == gcerrors.Unimplemented {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("parts: sign %s: %w", key, err)
	}
	return u, nil
}
