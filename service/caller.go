package service

import "context"

// Role is what a caller may do.
type Role int

// The roles of callers: readers read data and their own quota; admins also
// read every tenant's usage and change tenants' limits.
const (
	RoleReader Role = iota + 1
	RoleAdmin
)

// Caller is the authenticated party of a request.
type Caller struct {
	Tenant string
	Role   Role
}

type callerKey struct{}

// WithCaller returns a context carrying the caller, as set by the
// authentication interceptor.
func WithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// CallerFrom returns the caller of a request.
func CallerFrom(ctx context.Context) (Caller, bool) {
	c, ok := ctx.Value(callerKey{}).(Caller)
	return c, ok && c.Tenant != ""
}
