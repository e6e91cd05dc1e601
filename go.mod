module github.com/linkgate/linkgate

go 1.26.8

require (
	go.opentelemetry.io/otel v1.47.0
	go.opentelemetry.io/otel/trace v1.47.0
	golang.org/x/time v0.16.0
)

require github.com/cespare/xxhash/v2 v2.3.0 // indirect
