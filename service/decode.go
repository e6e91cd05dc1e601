package service

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	// The proto codec registers itself; namingCodec wraps it.
	_ "google.golang.org/grpc/encoding/proto"
)

// A request that cannot be decoded (invalid UTF-8 in a string field, a
// truncated message, one larger than the server accepts) is the caller's
// mistake. grpc-go reports a codec failure as INTERNAL and writes that
// status itself, before any handler or interceptor can say otherwise. So
// for linkgate's services the codec does not fail: it leaves the message
// empty with a marker (an unknown field) saying what was wrong, and
// GuardDecoding answers INVALID_ARGUMENT naming the field and logs it as a
// caller error.

// decodeErrorField is the unknown field that marks a message the codec
// could not decode; its value is the error. The largest field number, no
// request has it.
const decodeErrorField protowire.Number = protowire.MaxValidNumber

// guardedPackages are the proto packages whose services GuardDecoding
// wraps: the codec marks their messages instead of failing. Others (the
// reflection service) fail as grpc-go makes them.
var guardedPackages sync.Map

// namingCodec is grpc's proto codec with linkgate's bound on the message
// size, whose failures name the string field that holds invalid UTF-8
// (protobuf's own error does not) and, for guarded messages, become a
// marker rather than an error.
type namingCodec struct {
	encoding.CodecV2
	maxBytes int
}

func newNamingCodec(maxBytes int) namingCodec {
	return namingCodec{CodecV2: encoding.GetCodecV2("proto"), maxBytes: maxBytes}
}

func (c namingCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return c.CodecV2.Unmarshal(data, v)
	}
	var err error
	if n := data.Len(); c.maxBytes > 0 && n > c.maxBytes {
		err = fmt.Errorf("field request: the message is %d bytes; this server accepts at most %d: shorten its fields (every bound is in docs/security.md)", n, c.maxBytes)
	} else if err = c.CodecV2.Unmarshal(data, v); err == nil {
		return nil
	} else if field := invalidUTF8Field(data.Materialize(), m.ProtoReflect().Descriptor(), 0); field != "" {
		err = fmt.Errorf("field %s: %w", field, err)
	}
	if _, guarded := guardedPackages.Load(m.ProtoReflect().Descriptor().ParentFile().Package()); !guarded {
		return err
	}
	proto.Reset(m)
	b := protowire.AppendTag(nil, decodeErrorField, protowire.BytesType)
	m.ProtoReflect().SetUnknown(protowire.AppendString(b, err.Error()))
	return nil
}

// decodeError takes the codec's marker off a received message and returns
// the caller's error it describes; nil when the message was decoded.
func decodeError(v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return nil
	}
	unknown := m.ProtoReflect().GetUnknown()
	num, typ, n := protowire.ConsumeTag(unknown)
	if n < 0 || num != decodeErrorField || typ != protowire.BytesType {
		return nil
	}
	text, _ := protowire.ConsumeString(unknown[n:])
	m.ProtoReflect().SetUnknown(nil)
	field, desc := "request", text
	if rest, ok := strings.CutPrefix(text, "field "); ok {
		if name, cause, ok := strings.Cut(rest, ": "); ok {
			field, desc = name, cause
		}
	}
	if field != "request" || !strings.HasPrefix(desc, "the message is") {
		desc = "cannot be decoded: " + strings.TrimPrefix(desc, "proto: ")
	}
	return withDetails(codes.InvalidArgument, field+": "+desc, &errdetails.BadRequest{
		FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: field, Description: desc}},
	})
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
	if i := strings.LastIndex(desc.ServiceName, "."); i > 0 {
		guardedPackages.Store(protoreflect.FullName(desc.ServiceName[:i]), true)
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
					return err
				}
				decodeErr = decodeError(v)
				return decodeErr
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

// decodingStream turns the codec's marker on a stream's messages into
// INVALID_ARGUMENT; the interceptors around it log them as such.
type decodingStream struct{ grpc.ServerStream }

func (s *decodingStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return decodeError(m)
}
