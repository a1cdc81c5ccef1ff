// Command goticker is a Go workload for relocate's tests: the Go runtime
// holds an epoll and an eventfd, runs several threads and uses signals,
// and an HTTP server listens on 127.0.0.1 (an MPTCP listener: Go's
// default) and answers "hit N". It follows the ready/check/verdict
// protocol of the C workloads; ready also has "port=".
package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"
)

func main() {
	dir := os.Args[1]
	var ticks atomic.Int64
	data := make(map[int]string, 100000)
	for i := range 100000 {
		data[i] = fmt.Sprint(i * 3)
	}
	go func() {
		for range time.Tick(time.Millisecond) {
			ticks.Add(1)
		}
	}()
	write := func(name, text string) {
		tmp := filepath.Join(dir, name+".tmp")
		if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
			panic(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			panic(err)
		}
	}
	check := func() string {
		for i := range 100000 {
			if data[i] != fmt.Sprint(i*3) {
				return fmt.Sprintf("FAIL map entry %d is %q", i, data[i])
			}
		}
		before := ticks.Load()
		deadline := time.Now().Add(5 * time.Second)
		for ticks.Load() == before && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if ticks.Load() == before {
			return "FAIL ticker goroutine stopped"
		}
		return fmt.Sprintf("OK ticks=%d", ticks.Load())
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	var hits atomic.Int64
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hit %d\n", hits.Add(1))
	}))
	write("ready", fmt.Sprintf("pid=%d\nport=%d\n", os.Getpid(), ln.Addr().(*net.TCPAddr).Port))
	for {
		if _, err := os.Stat(filepath.Join(dir, "check")); err == nil {
			write("verdict", check()+"\n")
			os.Remove(filepath.Join(dir, "check"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}
