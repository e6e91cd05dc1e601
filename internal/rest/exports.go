package rest

import (
	"context"
	"errors"
	"io"
	"net/http"

	"cloud.google.com/go/longrunning/autogen/longrunningpb"
	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"

	longrunninggw "github.com/linkgate/linkgate/gen/google/longrunning"
	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
	"github.com/linkgate/linkgate/service"
)

// partPath is the REST path of a part's download.
const partPath = "/v1/{name=exports/*/parts/*}"

// registerExports serves ExportService and google.longrunning.Operations
// (Google's own HTTP bindings) through the gateway, and a part's download
// as the file itself.
func registerExports(ctx context.Context, gw *runtime.ServeMux, conn grpc.ClientConnInterface) error {
	exports := v1.NewExportServiceClient(conn)
	if err := v1.RegisterExportServiceHandlerClient(ctx, gw, exports); err != nil {
		return err
	}
	if err := longrunninggw.RegisterOperationsHandlerClient(ctx, gw, longrunningpb.NewOperationsClient(conn)); err != nil {
		return err
	}
	// Registered last, so it takes the path from the generated handler,
	// which would end every chunk of the file with a newline.
	return gw.HandlePath(http.MethodGet, partPath, downloadPart(gw, exports))
}

// downloadPart answers a part's bytes as they are stored, with the part's
// Content-Type, Content-Length and (for a gzip part) Content-Encoding, so
// that curl -o saves the object and its sha256 matches the export's. An
// error before the first byte is a JSON status with its HTTP code; one
// after it aborts the response, so the client sees a short body, never a
// complete-looking one.
func downloadPart(gw *runtime.ServeMux, client v1.ExportServiceClient) runtime.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request, params map[string]string) {
		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		_, m := runtime.MarshalerForRequest(gw, r)
		fail := func(err error) { errorHandler(ctx, gw, m, w, r, err) }
		actx, err := runtime.AnnotateContext(ctx, gw, r, "/linkgate.v1.ExportService/GetExportPart", runtime.WithHTTPPathPattern(partPath))
		if err != nil {
			fail(err)
			return
		}
		stream, err := client.GetExportPart(actx, &v1.GetExportPartRequest{Name: params["name"]})
		if err != nil {
			fail(err)
			return
		}
		first, err := stream.Recv()
		if err != nil {
			fail(err)
			return
		}
		md, _ := stream.Header()
		h := w.Header()
		h.Set("Content-Type", first.GetContentType())
		if v := md.Get(service.PartContentEncodingKey); len(v) == 1 {
			h.Set("Content-Encoding", v[0])
		}
		if v := md.Get(service.PartContentLengthKey); len(v) == 1 {
			h.Set("Content-Length", v[0])
		}
		if _, err := w.Write(first.GetData()); err != nil {
			return
		}
		for {
			msg, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return
			}
			if err != nil {
				panic(http.ErrAbortHandler)
			}
			if _, err := w.Write(msg.GetData()); err != nil {
				return
			}
		}
	}
}
