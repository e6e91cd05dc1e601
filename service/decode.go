package service

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	// The proto codec registers itself; namingCodec wraps it.
	_ "google.golang.org/grpc/encoding/proto"
)

// A request that cannot be decoded (invalid UTF-8 in a string field, a
// truncated message, one larger than the server accepts) is the caller's
// mistake. grpc-go reports it as INTERNAL, or RESOURCE_EXHAUSTED for the
// size, and for unary RPCs before any interceptor runs. linkgate answers
// INVALID_ARGUMENT naming the field where it can, and logs it as a caller
// error: namingCodec names the field, GuardDecoding turns the status.

// namingCodec is grpc's proto codec, whose decoding errors name the
// string field that holds invalid UTF-8 (protobuf's own error does not).
type namingCodec struct{ encoding.CodecV2 }

func newNamingCodec() namingCodec { return namingCodec{encoding.GetCodecV2("proto")} }

func (c namingCodec) Unmarshal(data mem.BufferSlice, v any) error {
	err := c.CodecV2.Unmarshal(data, v)
	if err == nil {
		return nil
	}
	if m, ok := v.(proto.Message); ok {
		if field := invalidUTF8Field(data.Materialize(), m.ProtoReflect().Descriptor(), 0); field != "" {
			return fmt.Errorf("field %s: %w", field, err)
		}
	}
	return err
}

// invalidUTF8Field finds the first string field of b, a message of type md,
// that is not valid UTF-8, as a path (backlinks.target); "" when none is
// or b cannot be walked. depth bounds the recursion.
func invalidUTF8Field(b []byte, md protoreflect.MessageDescriptor, depth int) string {
	if depth > 8 {
		return ""
	}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return ""
		}
		b = b[n:]
		if typ != protowire.BytesType {
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return ""
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return ""
		}
		b = b[n:]
		fd := md.Fields().ByNumber(num)
		switch {
		case fd == nil:
		case fd.Kind() == protoreflect.StringKind && !utf8.Valid(v):
			return string(fd.Name())
		case fd.Kind() == protoreflect.MessageKind && !fd.IsMap():
			if inner := invalidUTF8Field(v, fd.Message(), depth+1); inner != "" {
				return string(fd.Name()) + "." + inner
			}
		}
	}
	return ""
}

// GuardDecoding returns a copy of desc whose handlers answer a request that
// cannot be decoded with INVALID_ARGUMENT (BadRequest naming the field),
// and log it as a caller error: for unary RPCs the message is decoded
// before the interceptors, so this is where the request's log line is
// written.
func GuardDecoding(desc *grpc.ServiceDesc, log *slog.Logger) *grpc.ServiceDesc {
	if log == nil {
		log = slog.Default()
	}
	out := *desc
	out.Methods = make([]grpc.MethodDesc, len(desc.Methods))
	for i, m := range desc.Methods {
		handler, method := m.Handler, "/"+desc.ServiceName+"/"+m.MethodName
		m.Handler = func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
			var decodeErr error
			start := time.Now()
			resp, err := handler(srv, ctx, func(v any) error {
				if err := dec(v); err != nil {
					decodeErr = malformed(err)
					return decodeErr
				}
				return nil
			}, interceptor)
			if decodeErr != nil {
				logRequest(ctx, log, method, start, &requestLog{}, decodeErr)
				return nil, decodeErr
			}
			return resp, err
		}
		out.Methods[i] = m
	}
	out.Streams = make([]grpc.StreamDesc, len(desc.Streams))
	for i, s := range desc.Streams {
		handler := s.Handler
		s.Handler = func(srv any, ss grpc.ServerStream) error {
			return handler(srv, &decodingStream{ServerStream: ss})
		}
		out.Streams[i] = s
	}
	return &out
}

// decodingStream turns the decoding errors of a stream's messages into
// INVALID_ARGUMENT; the interceptors around it log them as such.
type decodingStream struct{ grpc.ServerStream }

func (s *decodingStream) RecvMsg(m any) error { return malformed(s.ServerStream.RecvMsg(m)) }

// malformed maps grpc-go's decoding failures to INVALID_ARGUMENT; every
// other error is returned as it is.
func malformed(err error) error {
	st, ok := status.FromError(err)
	if !ok || err == nil {
		return err
	}
	const unmarshal = "grpc: failed to unmarshal the received message: "
	var desc, field string
	switch msg := st.Message(); {
	case st.Code() == codes.Internal && strings.HasPrefix(msg, unmarshal):
		desc, field = strings.TrimPrefix(msg, unmarshal), "request"
		if rest, ok := strings.CutPrefix(desc, "field "); ok {
			if name, cause, ok := strings.Cut(rest, ": "); ok {
				field, desc = name, cause
			}
		}
		desc = "cannot be decoded: " + strings.TrimPrefix(desc, "proto: ")
	case st.Code() == codes.ResourceExhausted && strings.Contains(msg, "larger than max"):
		// "grpc: received message larger than max (70123 vs. 65536)"
		field, desc = "request", "the message is larger than this server accepts"
		if i := strings.LastIndex(msg, "("); i >= 0 {
			desc += " " + msg[i:] + " bytes"
		}
		desc += ": shorten its fields (every bound is in docs/security.md)"
	default:
		return err
	}
	return withDetails(codes.InvalidArgument, field+": "+desc, &errdetails.BadRequest{
		FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: field, Description: desc}},
	})
}
