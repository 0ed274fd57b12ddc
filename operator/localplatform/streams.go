package localplatform

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"text/tabwriter"
	"time"
)

// jsz is what NATS's monitoring endpoint /jsz?streams=true&consumers=true says of each stream and its
// consumers (the fields make status shows).
type jsz struct {
	Accounts []struct {
		Streams []struct {
			Name  string `json:"name"`
			State struct {
				Messages uint64    `json:"messages"`
				LastSeq  uint64    `json:"last_seq"`
				LastTime time.Time `json:"last_ts"`
			} `json:"state"`
			Consumers []struct {
				Name     string `json:"name"`
				AckFloor struct {
					StreamSeq uint64 `json:"stream_seq"`
				} `json:"ack_floor"`
				NumPending     uint64 `json:"num_pending"`
				NumAckPending  int    `json:"num_ack_pending"`
				NumRedelivered int    `json:"num_redelivered"`
				NumWaiting     int    `json:"num_waiting"`
			} `json:"consumer_detail"`
		} `json:"stream_detail"`
	} `json:"account_details"`
}

// readStreams asks the NATS monitoring endpoint at monitor (host:port) for its streams and consumers.
func readStreams(ctx context.Context, monitor string) (jsz, error) {
	var j jsz
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+monitor+"/jsz?streams=true&consumers=true", nil)
	if err != nil {
		return j, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return j, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return j, fmt.Errorf("GET /jsz: %s", resp.Status)
	}
	return j, json.NewDecoder(resp.Body).Decode(&j)
}

// printStreams shows each JetStream stream and its durable consumers: how many events it holds, and for
// each consumer how many it has not delivered yet (pending), holds unacknowledged (in flight), delivered
// more than once, and up to which sequence everything is acknowledged.
func printStreams(ctx context.Context, monitor string, out io.Writer) error {
	j, err := readStreams(ctx, monitor)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "STREAM\tMESSAGES\tLAST\tCONSUMER\tPENDING\tIN FLIGHT\tREDELIVERED\tACKED UP TO")
	for _, a := range j.Accounts {
		for _, s := range a.Streams {
			last := "-"
			if s.State.LastSeq > 0 {
				last = fmt.Sprintf("#%d %s ago", s.State.LastSeq, time.Since(s.State.LastTime).Round(time.Second))
			}
			if len(s.Consumers) == 0 {
				fmt.Fprintf(tw, "%s\t%d\t%s\t-\t\t\t\t\n", s.Name, s.State.Messages, last)
			}
			for _, c := range s.Consumers {
				fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%d\t%d\t%d\t%s\n", s.Name, s.State.Messages, last, c.Name,
					c.NumPending, c.NumAckPending, c.NumRedelivered, "#"+strconv.FormatUint(c.AckFloor.StreamSeq, 10))
			}
		}
	}
	return tw.Flush()
}
