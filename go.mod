module github.com/linkgate/linkgate

go 1.26.8

require (
	github.com/grpc-ecosystem/grpc-gateway/v2 v2.28.0
	github.com/redis/go-redis/v9 v9.23.0
	go.etcd.io/bbolt v1.5.0
	go.uber.org/goleak v1.3.0
	google.golang.org/genproto/googleapis/api v0.0.0-20260209200024-4cfbd4190f57
	google.golang.org/grpc v1.79.1
	google.golang.org/protobuf v1.36.12
)
