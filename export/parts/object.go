package parts

import (
	"context"
	"errors"
	"io"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"gocloud.dev/blob"
)

// object is where a part's bytes go until it is committed whole or
// discarded.
type object interface {
	io.Writer
	commit() error
	discard()
}

func openObject(ctx context.Context, b *blob.Bucket, key string, contentType string) (object, error) {
	opts := &blob.WriterOptions{
		ContentType:                 contentType,
		DisableContentTypeDetection: true,
		// An export's rows come at the key's rate, far slower than any
		// upload: one upload part in flight at a time bounds a writer's
		// memory (S3 holds up to 16 MiB before it goes multipart).
		BufferSize:     5 << 20,
		MaxConcurrency: 1,
	}
	var client *s3.Client
	if b.As(&client) {
		return uploadObject(ctx, b, key, opts), nil
	}
	// Cancelling the context an object is written under discards it.
	ctx, cancel := context.WithCancel(ctx)
	w, err := b.NewWriter(ctx, key, opts)
	if err != nil {
		cancel()
		return nil, err
	}
	return &streamObject{w: w, cancel: cancel}, nil
}

// streamObject writes through a blob writer, which commits on Close and
// discards when its context is cancelled first.
type streamObject struct {
	w      *blob.Writer
	cancel context.CancelFunc
}

func (o *streamObject) Write(p []byte) (int, error) { return o.w.Write(p) }

func (o *streamObject) commit() error {
	defer o.cancel()
	return o.w.Close()
}

func (o *streamObject) discard() {
	o.cancel()
	_ = o.w.Close() // fails, as it must: the write was cancelled
}

// errDiscarded ends the reader of a discarded upload.
var errDiscarded = errors.New("parts: part discarded")

// pipeObject feeds an S3 upload through a pipe. A part larger than one
// upload part becomes a multipart upload; cancelling its context would
// also cancel the request that aborts it, leaving the upload open (and
// its parts stored, unseen). Discarding fails the upload's reader instead,
// and the uploader aborts the upload while its context still holds.
type pipeObject struct {
	pw   *io.PipeWriter
	done chan error
}

func uploadObject(ctx context.Context, b *blob.Bucket, key string, opts *blob.WriterOptions) *pipeObject {
	pr, pw := io.Pipe()
	o := &pipeObject{pw: pw, done: make(chan error, 1)}
	go func() {
		err := b.Upload(ctx, key, pr, opts)
		pr.CloseWithError(err) // a writer still writing learns of the failure
		o.done <- err
	}()
	return o
}

func (o *pipeObject) Write(p []byte) (int, error) { return o.pw.Write(p) }

func (o *pipeObject) commit() error {
	o.pw.Close()
	return <-o.done
}

func (o *pipeObject) discard() {
	o.pw.CloseWithError(errDiscarded)
	<-o.done
}
