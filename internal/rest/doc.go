// Package rest is linkgate's REST edge: the grpc-gateway mux over a
// connection to the gRPC services, with the strict query parser
// (query.go), the error handlers that keep a status's details and set
// Retry-After (gateway.go), the middlewares that check a request before
// the gateway reads it — CORS, credentials, the body's time and size, the
// query string parsed once (middleware.go) — and the NDJSON and CSV
// output (gateway.go, csv.go). New builds the whole handler from a Config;
// the server that runs it keeps the listeners.
package rest
