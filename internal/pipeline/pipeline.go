// Package pipeline runs a sync between a source and a destination the way
// the Airbyte platform does, for the demo, the end-to-end tests and the
// benchmarks: `source read | destination write` over stdio, or in speed
// mode with records on Unix sockets. It passes the saved states to the
// source and collects the states the destination echoes.
package pipeline

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/shapelog/shapelog/protocol"
)

// Sync is one sync between a source and a destination binary.
type Sync struct {
	SourceBin, DestinationBin string
	// SourceConfig, DestinationConfig and Catalog are file paths.
	SourceConfig, DestinationConfig, Catalog string
	// States are the source's input states (nil: none).
	States []json.RawMessage
	// OnState, if set, is called after each STATE the destination echoes,
	// with the processes (tests use it to kill one mid-sync).
	OnState func(echoed int, source, destination *os.Process)
	// OnStart, if set, is called once both processes run (tests use it to
	// kill one at a moment of their choosing).
	OnStart func(source, destination *os.Process)
	// Stderr receives both processes' stderr (default: discarded).
	Stderr io.Writer
	// Speed, if set, runs the sync in speed mode, wired as the platform
	// wires it: records on Unix sockets the source listens on and the
	// destination connects to, stdout for the rest.
	Speed *Speed
}

// Speed is a speed-mode data channel.
type Speed struct {
	Sockets int    // how many sockets (default 2)
	Format  string // PROTOBUF (default) or JSONL
}

// Result is what a sync did.
type Result struct {
	Took time.Duration
	// States are the last echoed state of each stream, without
	// destinationStats: the next sync's input.
	States []json.RawMessage
	// Records is the sum of the echoed destinationStats.
	Records int64
	// SourceRSS and DestinationRSS are the processes' peaks in MiB.
	SourceRSS, DestinationRSS float64
	// SourceCPU and DestinationCPU are the processes' user+system CPU time.
	SourceCPU, DestinationCPU time.Duration
}

// Run runs the sync and waits for both processes. It fails if either
// exits non-zero or the destination reports an error; the Result then
// still holds the states echoed before.
func (s Sync) Run(ctx context.Context) (*Result, error) {
	args := []string{"read", "--config", s.SourceConfig, "--catalog", s.Catalog}
	if s.States != nil {
		f, err := os.CreateTemp(filepath.Dir(s.Catalog), "state-*.json")
		if err != nil {
			return nil, err
		}
		defer os.Remove(f.Name())
		b, _ := json.Marshal(s.States)
		if _, err := f.Write(b); err != nil {
			return nil, err
		}
		if err := f.Close(); err != nil {
			return nil, err
		}
		args = append(args, "--state", f.Name())
	}
	src := exec.CommandContext(ctx, s.SourceBin, args...)
	dst := exec.CommandContext(ctx, s.DestinationBin, "write", "--config", s.DestinationConfig, "--catalog", s.Catalog)
	pipe, err := src.StdoutPipe()
	if err != nil {
		return nil, err
	}
	// Speed mode: the source's end (its reported error, then its exit),
	// and the destination's.
	var sourceDone chan [2]error
	destinationDone := make(chan struct{})
	if s.Speed != nil {
		env, cleanup, err := s.Speed.environment()
		if err != nil {
			return nil, err
		}
		defer cleanup()
		src.Env, dst.Env = env, env
		// The platform reads the source's stdout itself (logs, states,
		// traces) and gives the destination nothing on stdin.
		sourceDone = make(chan [2]error, 1)
	} else {
		dst.Stdin = pipe
	}
	src.Stderr, dst.Stderr = s.Stderr, s.Stderr
	out, err := dst.StdoutPipe()
	if err != nil {
		return nil, err
	}
	start := time.Now()
	if err := src.Start(); err != nil {
		return nil, err
	}
	if err := dst.Start(); err != nil {
		_ = src.Process.Kill()
		_ = src.Wait()
		return nil, err
	}
	if s.Speed == nil {
		// The destination has its own end of the pipe now. Ours would keep
		// the pipe open after the destination died, and the source would
		// block on it for ever instead of failing (the platform stops it
		// then too).
		_ = pipe.Close()
	}
	rss := WatchRSS(src.Process, dst.Process)
	if s.Speed != nil {
		go func() {
			reported := sourceErrors(pipe)
			rss.Forget(0) // its stdout ended: it exits, and Wait reaps it
			exit := src.Wait()
			sourceDone <- [2]error{reported, exit}
			if exit != nil {
				// A failed source fails the sync: the platform stops the
				// destination too, which may be waiting for a socket the
				// source never made, once it has had a moment to finish.
				select {
				case <-destinationDone:
				case <-time.After(sourceGrace):
					_ = dst.Process.Kill()
				}
			}
		}()
	}
	if s.OnStart != nil {
		s.OnStart(src.Process, dst.Process)
	}
	res := &Result{}
	last := map[string]json.RawMessage{}
	var destErr error
	echoed := 0
	sc := bufio.NewScanner(out)
	sc.Buffer(nil, 64<<20)
	for sc.Scan() {
		var m struct {
			Type  string          `json:"type"`
			State *protocol.State `json:"state"`
			Trace *protocol.Trace `json:"trace"`
		}
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			destErr = fmt.Errorf("the destination wrote a line that is not a message: %.200s", sc.Bytes())
			continue
		}
		if m.Trace != nil && m.Trace.Error != nil && destErr == nil {
			destErr = fmt.Errorf("destination: %s (%s)", m.Trace.Error.Message, m.Trace.Error.InternalMessage)
		}
		if m.State == nil {
			continue
		}
		if m.State.DestinationStats != nil {
			res.Records += int64(m.State.DestinationStats.RecordCount)
		}
		m.State.DestinationStats = nil
		b, _ := json.Marshal(m.State)
		key := "global"
		if m.State.Stream != nil {
			key = m.State.Stream.StreamDescriptor.String()
		}
		last[key] = b
		echoed++
		if s.OnState != nil {
			s.OnState(echoed, src.Process, dst.Process)
		}
	}
	_, _ = io.Copy(io.Discard, out)
	close(destinationDone)
	var srcReported, srcErr error
	if sourceDone != nil {
		// The destination is done. A source still running then has no
		// reader (it may be waiting for a connection that will not come):
		// the platform stops it, and so does this.
		var done [2]error
		select {
		case done = <-sourceDone:
		case <-time.After(sourceGrace):
			_ = src.Process.Kill()
			done = <-sourceDone
		}
		srcReported, srcErr = done[0], done[1]
	}
	peaks := rss.Stop() // before Wait: a reaped process's pid can be reused
	if sourceDone == nil {
		srcErr = src.Wait()
	}
	dstErr := dst.Wait()
	res.Took = time.Since(start)
	res.SourceRSS, res.DestinationRSS = peaks[0], peaks[1]
	res.SourceCPU, res.DestinationCPU = cpuTime(src), cpuTime(dst)
	keys := make([]string, 0, len(last))
	for k := range last {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		res.States = append(res.States, last[k])
	}
	if srcErr != nil {
		srcErr = fmt.Errorf("source: %w", srcErr)
	}
	if dstErr != nil {
		dstErr = fmt.Errorf("destination: %w", dstErr)
	}
	return res, errors.Join(destErr, srcReported, srcErr, dstErr)
}

// sourceGrace is how long a speed-mode source may run on once the
// destination has ended.
const sourceGrace = 10 * time.Second

// environment is the speed-mode environment of both processes, with
// sockets in a new directory (short: a socket path has at most 107 bytes)
// that cleanup removes.
func (sp *Speed) environment() ([]string, func(), error) {
	dir, err := os.MkdirTemp("", "sl-sock-")
	if err != nil {
		return nil, nil, err
	}
	n, format := sp.Sockets, sp.Format
	if n <= 0 {
		n = 2
	}
	if format == "" {
		format = "PROTOBUF"
	}
	paths := make([]string, n)
	for i := range paths {
		paths[i] = filepath.Join(dir, fmt.Sprintf("airbyte_socket_%d.sock", i+1))
	}
	env := append(os.Environ(), "DATA_CHANNEL_MEDIUM=SOCKET", "DATA_CHANNEL_FORMAT="+format,
		"DATA_CHANNEL_SOCKET_PATHS="+strings.Join(paths, ","), "NAMESPACE_MAPPING_CONFIG_PATH=")
	return env, func() { _ = os.RemoveAll(dir) }, nil
}

// sourceErrors reads the source's stdout in speed mode (records go to the
// sockets) and returns the first error it reports.
func sourceErrors(r io.Reader) error {
	var first error
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 64<<20)
	for sc.Scan() {
		var m struct {
			Type  string          `json:"type"`
			Trace *protocol.Trace `json:"trace"`
		}
		if json.Unmarshal(sc.Bytes(), &m) != nil {
			if first == nil {
				first = fmt.Errorf("the source wrote a line that is not a message: %.200s", sc.Bytes())
			}
			continue
		}
		if m.Type == "RECORD" && first == nil {
			first = errors.New("the source wrote a RECORD on stdout in speed mode")
		}
		if m.Trace != nil && m.Trace.Error != nil && first == nil {
			first = fmt.Errorf("source: %s (%s)", m.Trace.Error.Message, m.Trace.Error.InternalMessage)
		}
	}
	_, _ = io.Copy(io.Discard, r)
	return first
}

// cpuTime is a finished process's user+system CPU time.
func cpuTime(cmd *exec.Cmd) time.Duration {
	if cmd.ProcessState == nil {
		return 0
	}
	return cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
}

// RSSWatch follows processes' peak resident set size while they run.
// getrusage cannot tell it for a child: Linux starts a child's ru_maxrss
// from its parent's size at fork, so a large parent shows in every child.
type RSSWatch struct {
	stop, done chan struct{}
	mu         sync.Mutex
	peaks      []float64
	forgotten  []bool
}

// WatchRSS samples the processes' VmHWM (their peak RSS so far) every 50 ms
// until Stop.
func WatchRSS(procs ...*os.Process) *RSSWatch {
	w := &RSSWatch{stop: make(chan struct{}), done: make(chan struct{}), peaks: make([]float64, len(procs)), forgotten: make([]bool, len(procs))}
	sample := func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		for i, p := range procs {
			if !w.forgotten[i] {
				w.peaks[i] = max(w.peaks[i], vmHWM(p.Pid))
			}
		}
	}
	go func() {
		defer close(w.done)
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			sample()
			select {
			case <-w.stop:
				return
			case <-t.C:
			}
		}
	}()
	return w
}

// Forget stops sampling process i, keeping its peak: call it before the
// process is reaped, after which its pid may be another process's.
func (w *RSSWatch) Forget(i int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.forgotten[i] = true
}

// Stop ends the watch and returns each process's peak in MiB (the last
// sample before it exited).
func (w *RSSWatch) Stop() []float64 {
	close(w.stop)
	<-w.done
	return w.peaks
}

// vmHWM is a running process's peak RSS in MiB, 0 once it has exited.
func vmHWM(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}
