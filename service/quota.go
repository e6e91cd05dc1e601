package service

import (
	"context"
	"slices"
	"strings"
	"unicode"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
	"github.com/linkgate/linkgate/paging"
	"github.com/linkgate/linkgate/quota"
)

// QuotaLedger is the part of the ledger the quota service reads and changes.
type QuotaLedger interface {
	Usage(ctx context.Context, tenant string) (quota.Usage, error)
	AllUsage(ctx context.Context) (quota.Report, error)
	SetTenantLimit(ctx context.Context, tenant string, limit *int64) error
}

// QuotaServer implements linkgate.v1.QuotaService.
type QuotaServer struct {
	v1.UnimplementedQuotaServiceServer
	ledger QuotaLedger
}

// NewQuotaServer returns the quota service over a ledger.
func NewQuotaServer(l QuotaLedger) *QuotaServer { return &QuotaServer{ledger: l} }

// GetQuota reports the pool and the caller's tenant.
func (s *QuotaServer) GetQuota(ctx context.Context, _ *v1.GetQuotaRequest) (*v1.GetQuotaResponse, error) {
	caller, ok := CallerFrom(ctx)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "no caller")
	}
	u, err := s.ledger.Usage(ctx, caller.Tenant)
	if err != nil {
		return nil, toStatus(err, "")
	}
	return &v1.GetQuotaResponse{
		Pool:        poolQuota(u.Pool),
		Tenant:      tenantQuota(u.Tenant, nil),
		PeriodStart: timestamppb.New(u.Pool.PeriodStart),
		PeriodEnd:   timestamppb.New(u.Pool.PeriodEnd),
	}, nil
}

// ListTenantQuotas reports every tenant; admins only.
func (s *QuotaServer) ListTenantQuotas(ctx context.Context, _ *v1.ListTenantQuotasRequest) (*v1.ListTenantQuotasResponse, error) {
	if err := requireAdmin(ctx); err != nil {
		return nil, err
	}
	r, err := s.ledger.AllUsage(ctx)
	if err != nil {
		return nil, toStatus(err, "")
	}
	resp := &v1.ListTenantQuotasResponse{
		Pool:        poolQuota(r.Pool),
		PeriodStart: timestamppb.New(r.Pool.PeriodStart),
		PeriodEnd:   timestamppb.New(r.Pool.PeriodEnd),
	}
	for _, t := range r.Tenants {
		resp.Tenants = append(resp.Tenants, tenantQuota(t, r.SpendByTenantLabel[t.Name]))
	}
	return resp, nil
}

// UpdateTenantLimit sets or removes a tenant's run-time limit; admins only.
func (s *QuotaServer) UpdateTenantLimit(ctx context.Context, req *v1.UpdateTenantLimitRequest) (*v1.UpdateTenantLimitResponse, error) {
	if err := requireAdmin(ctx); err != nil {
		return nil, err
	}
	if err := checkTenantName(req.GetTenant()); err != nil {
		return nil, toStatus(err, "")
	}
	if req.Limit != nil && (req.GetLimit() < 0 || req.GetLimit() > MaxUnits) {
		return nil, toStatus(paging.BadField("limit", "must be between 0 and %d units, got %d", MaxUnits, req.GetLimit()), "")
	}
	if err := s.ledger.SetTenantLimit(ctx, req.GetTenant(), req.Limit); err != nil {
		return nil, toStatus(err, "")
	}
	u, err := s.ledger.Usage(ctx, req.GetTenant())
	if err != nil {
		return nil, toStatus(err, "")
	}
	return &v1.UpdateTenantLimitResponse{Tenant: tenantQuota(u.Tenant, nil)}, nil
}

func requireAdmin(ctx context.Context) error {
	caller, ok := CallerFrom(ctx)
	if !ok {
		return status.Error(codes.Unauthenticated, "no caller")
	}
	if caller.Role != RoleAdmin {
		return status.Error(codes.PermissionDenied, "only admins may read other tenants' usage or change limits")
	}
	return nil
}

func poolQuota(a quota.Account) *v1.PoolQuota {
	return &v1.PoolQuota{Limit: a.Limit, Used: a.Used, Reserved: a.Reserved, Remaining: a.Remaining}
}

func tenantQuota(a quota.Account, spend map[string]int64) *v1.TenantQuota {
	t := &v1.TenantQuota{Tenant: a.Name, Used: a.Used, Reserved: a.Reserved, Remaining: a.Remaining}
	if a.Limit > 0 {
		t.Limit = &a.Limit
	}
	labels := make([]string, 0, len(spend))
	for l := range spend {
		labels = append(labels, l)
	}
	slices.Sort(labels)
	for _, l := range labels {
		t.Spend = append(t.Spend, &v1.Spend{Dataset: l, Units: spend[l]})
	}
	return t
}

// checkTenantName accepts what a tenants file may name: printable, without
// surrounding spaces, at most MaxTenantBytes.
func checkTenantName(name string) error {
	switch {
	case name == "":
		return paging.BadField("tenant", "is required")
	case len(name) > MaxTenantBytes:
		return paging.BadField("tenant", "is %d bytes long; the limit is %d", len(name), MaxTenantBytes)
	case strings.TrimSpace(name) != name:
		return paging.BadField("tenant", "must not begin or end with spaces")
	case strings.ContainsFunc(name, func(r rune) bool { return !unicode.IsPrint(r) }):
		return paging.BadField("tenant", "must be printable text")
	}
	return nil
}
