package main

import (
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strings"
	"sync"

	"github.com/shapelog/shapelog/protocol"
)

// partitionStates releases STATEs in speed mode, as Airbyte's destinations
// do there: records and STATEs arrive on several sockets, so a STATE is
// echoed once every record of its partition (the records naming its
// partition_id, sourceStats.recordCount of them) is committed, and only
// after the STATEs before it (its id, counted from 1 per stream, or among
// GLOBAL states).
type partitionStates struct {
	mu        sync.Mutex
	out       *protocol.Writer
	committed map[string]*partitionCount
	queues    map[string]*stateQueue // by stream key; "" for GLOBAL
	totals    map[string]*partitionCount
}

type partitionCount struct{ records, bytes int64 }

func (c *partitionCount) add(o partitionCount) {
	c.records += o.records
	c.bytes += o.bytes
}

// committedFor is what is committed of a pending STATE's partitions.
func (ps *partitionStates) committedFor(p *pendingState) partitionCount {
	var got partitionCount
	for _, id := range p.partitions {
		if c := ps.committed[id]; c != nil {
			got.add(*c)
		}
	}
	return got
}

type stateQueue struct {
	next    int64
	pending map[int64]*pendingState
}

type pendingState struct {
	raw        json.RawMessage
	scope      string
	partitions []string
	records    int64
}

func newPartitionStates(out *protocol.Writer) *partitionStates {
	return &partitionStates{out: out, committed: map[string]*partitionCount{}, queues: map[string]*stateQueue{}, totals: map[string]*partitionCount{}}
}

// speedState is what the releasing reads of a STATE.
type speedState struct {
	Type   string `json:"type"`
	Stream *struct {
		StreamDescriptor protocol.StreamDescriptor `json:"stream_descriptor"`
	} `json:"stream"`
	Global *struct {
		StreamStates []struct {
			PartitionID string `json:"partition_id"`
		} `json:"stream_states"`
	} `json:"global"`
	ID          *int64 `json:"id"`
	PartitionID string `json:"partition_id"`
	SourceStats *struct {
		RecordCount *float64 `json:"recordCount"`
	} `json:"sourceStats"`
}

// add takes a STATE from a socket.
func (ps *partitionStates) add(raw json.RawMessage) error {
	var st speedState
	if err := json.Unmarshal(raw, &st); err != nil {
		return err
	}
	if st.ID == nil || st.PartitionID == "" || st.SourceStats == nil || st.SourceStats.RecordCount == nil {
		return fmt.Errorf("a STATE on the data channel needs id, partition_id and sourceStats.recordCount (the speed-mode contract)")
	}
	if *st.ID < 1 || *st.ID > math.MaxInt32 {
		return fmt.Errorf("STATE id %d: ids count from 1 and fit in 32 bits", *st.ID)
	}
	count := *st.SourceStats.RecordCount
	if count < 0 || count != math.Trunc(count) || count > 1<<53 {
		return fmt.Errorf("STATE id %d: sourceStats.recordCount %v is not a count of records", *st.ID, count)
	}
	p := &pendingState{raw: raw, partitions: []string{st.PartitionID}, records: int64(count)}
	if st.Type == protocol.StateStream && st.Stream != nil {
		p.scope = descKey(normalize(st.Stream.StreamDescriptor))
	} else if st.Global != nil {
		for _, ss := range st.Global.StreamStates {
			if ss.PartitionID != "" && ss.PartitionID != st.PartitionID {
				p.partitions = append(p.partitions, ss.PartitionID)
			}
		}
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	q := ps.queues[p.scope]
	if q == nil {
		q = &stateQueue{next: 1, pending: map[int64]*pendingState{}}
		ps.queues[p.scope] = q
	}
	if _, dup := q.pending[*st.ID]; dup || *st.ID < q.next {
		return fmt.Errorf("STATE id %d came twice for its stream", *st.ID)
	}
	q.pending[*st.ID] = p
	return ps.release()
}

// commit records committed records (and their bytes) by partition.
func (ps *partitionStates) commit(counts map[string]partitionCount) error {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	for id, c := range counts {
		have := ps.committed[id]
		if have == nil {
			have = &partitionCount{}
			ps.committed[id] = have
		}
		have.add(c)
	}
	return ps.release()
}

// release echoes every STATE whose records are all committed, in order.
func (ps *partitionStates) release() error {
	for scope, q := range ps.queues {
		for {
			p := q.pending[q.next]
			if p == nil {
				break
			}
			got := ps.committedFor(p)
			if got.records < p.records {
				break
			}
			total := ps.totals[scope]
			if total == nil {
				total = &partitionCount{}
				ps.totals[scope] = total
			}
			total.add(got)
			line, err := echoSpeedState(p.raw, got.records, total)
			if err != nil {
				return err
			}
			if err := ps.out.WriteLine(line, true); err != nil {
				return err
			}
			for _, id := range p.partitions {
				delete(ps.committed, id)
			}
			delete(q.pending, q.next)
			q.next++
		}
	}
	return nil
}

// echoSpeedState is the STATE echoed: as received, with destinationStats
// and the stream's committed totals so far.
func echoSpeedState(raw json.RawMessage, records int64, total *partitionCount) ([]byte, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return nil, err
	}
	fields["committedRecordsCount"], _ = json.Marshal(total.records)
	fields["committedBytesCount"], _ = json.Marshal(total.bytes)
	b, err := json.Marshal(fields)
	if err != nil {
		return nil, err
	}
	return protocol.EchoState(b, records)
}

// unfinished describes the STATEs still waiting at the end, if any: their
// records never all arrived, so the sync must not look complete.
func (ps *partitionStates) unfinished() error {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	var waiting []string
	for scope, q := range ps.queues {
		ids := make([]int64, 0, len(q.pending))
		for id := range q.pending {
			ids = append(ids, id)
		}
		sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
		for _, id := range ids {
			p := q.pending[id]
			got := ps.committedFor(p).records
			name := strings.ReplaceAll(scope, "\x00", ".")
			if scope == "" {
				name = "GLOBAL"
			}
			waiting = append(waiting, fmt.Sprintf("%s id %d (%d of %d records, waiting for id %d)", name, id, got, p.records, q.next))
		}
	}
	if len(waiting) == 0 {
		return nil
	}
	return fmt.Errorf("%d STATEs were never complete: %s", len(waiting), strings.Join(waiting, "; "))
}
