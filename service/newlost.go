package service

import (
	"context"
	"slices"
	"unsafe"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/linkgate/linkgate/gen/linkgate/v1"
	"github.com/linkgate/linkgate/paging"
	"github.com/linkgate/linkgate/upstream"
)

// eventRows converts events to rows with the caller's fields, writing
// into msgs (one zeroed message per event) and links (one per event, the
// backlinks they hold). The events of a message come from a feed or two,
// each with its layout: a writer and a block of values per layout, not
// per event.
func eventRows(evs []paging.Event, msgs []v1.NewLostBacklink, links []v1.Backlink) ([]*v1.NewLostBacklink, error) {
	type layout struct {
		w    *rowWriter
		b    *block
		next int
	}
	var layouts []*layout
	var plans []*paging.Plan
	for _, ev := range evs {
		if !slices.Contains(plans, ev.Layout()) {
			plans = append(plans, ev.Layout())
		}
	}
	for _, pl := range plans {
		w, err := writerOf[v1.Backlink](pl)
		if err != nil {
			return nil, err
		}
		n := 0
		for _, ev := range evs {
			if ev.Layout() == pl {
				n++
			}
		}
		layouts = append(layouts, &layout{w: w, b: w.block(n)})
	}
	out := make([]*v1.NewLostBacklink, len(evs))
	stamps := make([]timestamppb.Timestamp, len(evs))
	for i, ev := range evs {
		// The feed's plan: its records are laid out as it fetched them.
		l := layouts[slices.Index(plans, ev.Layout())]
		l.w.fill(unsafe.Pointer(&links[i]), ev.Row, l.b, l.next)
		l.next++
		nl := &msgs[i]
		nl.Backlink, nl.Change = &links[i], v1.Change_CHANGE_NEW
		if ev.Change() == upstream.ChangeLost {
			nl.Change = v1.Change_CHANGE_LOST
		}
		if t := ev.Time(); t.Valid() {
			ts := &stamps[i]
			ts.Seconds, ts.Nanos = t.Unix()
			nl.ChangeTime = ts
		}
		out[i] = nl
	}
	return out, nil
}

var (
	newLostSlabs     = newSlabs[v1.NewLostBacklink]()
	newLostLinkSlabs = newSlabs[v1.Backlink]()
)

// ListNewLostBacklinks returns one page of the changes of backlinks in a
// window.
func (s *BacklinksServer) ListNewLostBacklinks(ctx context.Context, req *v1.ListNewLostBacklinksRequest) (*v1.ListNewLostBacklinksResponse, error) {
	_, page, err := s.list(ctx, paging.NewLost, req)
	if err != nil {
		return nil, err
	}
	rows, err := eventRows(page.Events, make([]v1.NewLostBacklink, len(page.Events)), make([]v1.Backlink, len(page.Events)))
	if err != nil {
		return nil, err
	}
	return &v1.ListNewLostBacklinksResponse{NewLostBacklinks: rows, NextPageToken: page.Token, Cost: pageCost(page.Cost)}, nil
}

// StreamNewLostBacklinks streams the changes of backlinks in a window.
func (s *BacklinksServer) StreamNewLostBacklinks(req *v1.StreamNewLostBacklinksRequest, srv grpc.ServerStreamingServer[v1.StreamNewLostBacklinksResponse]) error {
	return s.stream(srv.Context(), paging.NewLost, req, func(_ *paging.Plan, p paging.Chunk) error {
		msgs, links := newLostSlabs.get(len(p.Events)), newLostLinkSlabs.get(len(p.Events))
		rows, err := eventRows(p.Events, msgs, links)
		if err != nil {
			return err
		}
		return sendEncoded(srv, &v1.StreamNewLostBacklinksResponse{NewLostBacklinks: rows, NextPageToken: p.Token, Cost: pageCost(p.Cost)},
			func() {
				newLostSlabs.put(msgs)
				newLostLinkSlabs.put(links)
			})
	})
}
