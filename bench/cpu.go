package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// clockTicks is the kernel's USER_HZ, the unit of /proc/<pid>/stat times
// (100 on every Linux this runs on).
const clockTicks = 100

// processCPU is a process's CPU time so far, its own and that of the
// children it has waited for (a PostgreSQL server's exited backends).
func processCPU(pid int) time.Duration {
	f := statFields(pid)
	if len(f) < 17 {
		return 0
	}
	var ticks int64
	for _, i := range []int{13, 14, 15, 16} { // utime stime cutime cstime
		n, _ := strconv.ParseInt(string(f[i]), 10, 64)
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks
}

// treeCPU is processCPU of pid and of its live children: a PostgreSQL
// server's CPU, backends and walsenders included.
func treeCPU(pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	total := processCPU(pid)
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		child, err := strconv.Atoi(filepath.Base(d))
		if err != nil || child == pid {
			continue
		}
		if f := statFields(child); len(f) > 3 && string(f[3]) == strconv.Itoa(pid) {
			total += processCPU(child)
		}
	}
	return total
}

// statFields are /proc/<pid>/stat's fields, the command name (which may
// hold spaces) counted as one.
func statFields(pid int) [][]byte {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil
	}
	return append([][]byte{b[:i+1], nil}, bytes.Fields(b[i+1:])...)
}

// cpuMeter measures the CPU time of processes over a span.
type cpuMeter struct {
	pids  []func() int
	start []time.Duration
}

func newCPUMeter(pids ...func() int) *cpuMeter {
	m := &cpuMeter{pids: pids}
	for _, p := range pids {
		m.start = append(m.start, treeCPU(p()))
	}
	return m
}

// since is each process's CPU time since the meter started.
func (m *cpuMeter) since() []time.Duration {
	out := make([]time.Duration, len(m.pids))
	for i, p := range m.pids {
		out[i] = treeCPU(p()) - m.start[i]
	}
	return out
}
