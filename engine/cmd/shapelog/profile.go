package main

import (
	"fmt"
	"os"
	"runtime/pprof"
)

// startCPUProfile writes a CPU profile of this process to
// $SHAPELOG_CPU_PROFILE.<pid> until the returned function is called (at
// exit), when the variable is set: how the benchmark figures in
// docs/benchmarks.md were broken down (go tool pprof -top FILE).
func startCPUProfile() func() {
	path := os.Getenv("SHAPELOG_CPU_PROFILE")
	if path == "" {
		return func() {}
	}
	f, err := os.Create(fmt.Sprintf("%s.%d", path, os.Getpid()))
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "shapelog: SHAPELOG_CPU_PROFILE:", err)
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		_ = f.Close()
	}
}
