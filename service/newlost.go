package service

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
	"github.com/linkgate/linkgate/paging"
	"github.com/linkgate/linkgate/upstream"
)

// eventRows converts events to rows with the caller's fields.
func eventRows(evs []paging.Event) ([]*v1.NewLostBacklink, error) {
	out := make([]*v1.NewLostBacklink, len(evs))
	for i, ev := range evs {
		// The feed's plan: its records are laid out as it fetched them.
		links, err := rowsOf[v1.Backlink](ev.Layout(), []upstream.Record{ev.Row})
		if err != nil {
			return nil, err
		}
		nl := &v1.NewLostBacklink{Backlink: links[0], Change: v1.Change_CHANGE_NEW}
		if ev.Change() == upstream.ChangeLost {
			nl.Change = v1.Change_CHANGE_LOST
		}
		if t := ev.Time(); t.Valid() {
			nl.ChangeTime = timestamppb.New(t.Time())
		}
		out[i] = nl
	}
	return out, nil
}

// ListNewLostBacklinks returns one page of the changes of backlinks in a
// window.
func (s *BacklinksServer) ListNewLostBacklinks(ctx context.Context, req *v1.ListNewLostBacklinksRequest) (*v1.ListNewLostBacklinksResponse, error) {
	_, page, err := s.list(ctx, paging.NewLost, req)
	if err != nil {
		return nil, err
	}
	rows, err := eventRows(page.Events)
	if err != nil {
		return nil, err
	}
	return &v1.ListNewLostBacklinksResponse{NewLostBacklinks: rows, NextPageToken: page.Token, Cost: pageCost(page.Cost)}, nil
}

// StreamNewLostBacklinks streams the changes of backlinks in a window.
func (s *BacklinksServer) StreamNewLostBacklinks(req *v1.StreamNewLostBacklinksRequest, srv grpc.ServerStreamingServer[v1.StreamNewLostBacklinksResponse]) error {
	return s.stream(srv.Context(), paging.NewLost, req, func(_ *paging.Plan, p paging.Chunk) error {
		rows, err := eventRows(p.Events)
		if err != nil {
			return err
		}
		return srv.Send(&v1.StreamNewLostBacklinksResponse{NewLostBacklinks: rows, NextPageToken: p.Token, Cost: pageCost(p.Cost)})
	})
}
