// Package ahrefssim is a faithful simulator of the Ahrefs API v3 endpoints
// linkgate uses, over deterministic synthetic data, so the whole service can
// be run, tested and benchmarked offline.
//
// It serves /v3/site-explorer/{all-backlinks,refdomains,broken-backlinks,
// backlinks-stats} and /v3/subscription-info/limits-and-usage with the real
// parameters, JSON shapes, cost headers and {"error": …} bodies. Requests are
// parsed and priced by package upstream, so the simulator and the client
// share one field catalog.
//
// Use it in tests with httptest:
//
//	sim := ahrefssim.New(ahrefssim.Config{})
//	srv := httptest.NewServer(sim)
//	defer srv.Close()
//	// point the upstream client at srv.URL + "/v3" with key ahrefssim.DefaultKey
//
// or on a port with Start. See README.md for the data model, the orders and
// the knobs.
package ahrefssim
