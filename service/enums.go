package service

import (
	"cmp"
	"slices"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// upstreamSpelling is each proto enum's values as the upstream spells them
// (exact, https, 1_per_domain), from the tables the service compiles
// requests with: the names every Ahrefs v3 user and SDK already knows.
var upstreamSpelling = func() map[protoreflect.FullName]map[string]protoreflect.EnumNumber {
	out := map[protoreflect.FullName]map[string]protoreflect.EnumNumber{}
	add := func(e protoreflect.EnumDescriptor, n protoreflect.EnumNumber, s string) {
		if out[e.FullName()] == nil {
			out[e.FullName()] = map[string]protoreflect.EnumNumber{}
		}
		out[e.FullName()][s] = n
	}
	for k, v := range modes {
		add(k.Descriptor(), k.Number(), string(v))
	}
	for k, v := range protocols {
		add(k.Descriptor(), k.Number(), string(v))
	}
	for k, v := range aggregations {
		add(k.Descriptor(), k.Number(), string(v))
	}
	return out
}()

// UpstreamEnumValue returns the value of enum e that the upstream spells s
// (mode=exact for MODE_EXACT), so REST callers may use Ahrefs' own values.
func UpstreamEnumValue(e protoreflect.EnumDescriptor, s string) (protoreflect.EnumNumber, bool) {
	n, ok := upstreamSpelling[e.FullName()][s]
	return n, ok
}

// UpstreamEnumNames returns the upstream's spellings of e's values in the
// order of their numbers; none for an enum the upstream does not have.
func UpstreamEnumNames(e protoreflect.EnumDescriptor) []string {
	m := upstreamSpelling[e.FullName()]
	names := make([]string, 0, len(m))
	for s := range m {
		names = append(names, s)
	}
	slices.SortFunc(names, func(a, b string) int { return cmp.Compare(m[a], m[b]) })
	return names
}
