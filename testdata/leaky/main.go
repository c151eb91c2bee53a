// Command leaky is the Go service that pprof-exporter's tests scrape. It serves
// net/http/pprof and deliberately holds heap and goroutines in known places:
//
//   - heap retained by main.retainHeap, by main.makeBuffer (inlined into
//     main.retainViaInlined) and by the recursive main.recursiveAlloc;
//   - goroutines blocked forever on a channel send (main.blockedSender), in
//     `select {}` (main.selectForever), and labelled workers started under
//     pprof.Do waiting on a channel that stays reachable (main.labeledWorker);
//   - optionally a steady goroutine leak (-leak-every) that can be paused by
//     GET /leak/stop, for growth-trend tests;
//   - on request, a churning set of stacks: GET /churn?depths=3,7 replaces the
//     previous set with one goroutine per depth, parked in main.churnPark under that
//     many main.churnRecurse frames and labelled churn=<depth>, so each depth is a
//     distinct stack and a depth left out of the next request is a stack that vanishes.
//
// It prints "listening on http://ADDR" once the socket is bound, so callers wait on
// that line instead of sleeping.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	_ "net/http/pprof"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

var (
	retained  [][]byte
	retainMu  sync.Mutex
	workQueue = make(chan int) // reachable forever: its waiters are blocked, not leaked
	leaking   atomic.Bool

	churnMu   sync.Mutex
	churnStop chan struct{}
	churnDone sync.WaitGroup
)

//go:noinline
func retainHeap(n, size int) {
	for i := 0; i < n; i++ {
		keep(make([]byte, size))
	}
}

// makeBuffer is small enough for the compiler to inline into its caller.
func makeBuffer(size int) []byte {
	return make([]byte, size)
}

//go:noinline
func retainViaInlined(n, size int) {
	for i := 0; i < n; i++ {
		keep(makeBuffer(size))
	}
}

//go:noinline
func recursiveAlloc(depth, size int) {
	keep(make([]byte, size))
	if depth > 0 {
		recursiveAlloc(depth-1, size)
	}
}

func keep(b []byte) {
	retainMu.Lock()
	retained = append(retained, b)
	retainMu.Unlock()
}

//go:noinline
func blockedSender() {
	ch := make(chan int) // nobody else ever sees ch: the send can never complete
	go func() {
		ch <- 1
	}()
}

//go:noinline
func selectForever() {
	select {}
}

//go:noinline
func labeledWorker(ctx context.Context) {
	pprof.Do(ctx, pprof.Labels("worker", "ingest"), func(context.Context) {
		<-workQueue
	})
}

//go:noinline
func steadyLeak(every time.Duration) {
	for range time.Tick(every) {
		if leaking.Load() {
			blockedSender()
		}
	}
}

//go:noinline
func churnPark(stop <-chan struct{}) {
	<-stop
}

//go:noinline
func churnRecurse(depth int, stop <-chan struct{}) {
	if depth > 0 {
		churnRecurse(depth-1, stop)
		return
	}
	churnPark(stop)
}

// setChurn ends the goroutines of the previous set, waits until they have exited
// (so that no profile taken after it returns shows them), and starts one goroutine
// per depth; it returns once every new goroutine runs.
func setChurn(depths []int) {
	churnMu.Lock()
	defer churnMu.Unlock()
	if churnStop != nil {
		close(churnStop)
		churnDone.Wait()
	}
	stop := make(chan struct{})
	churnStop = stop
	var started sync.WaitGroup
	for _, d := range depths {
		d := d // one variable per iteration before Go 1.22
		started.Add(1)
		churnDone.Add(1)
		go func() {
			defer churnDone.Done()
			pprof.Do(context.Background(), pprof.Labels("churn", strconv.Itoa(d)), func(context.Context) {
				started.Done()
				churnRecurse(d, stop)
			})
		}()
	}
	started.Wait()
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	rate := flag.Int("memprofilerate", 4096, "runtime.MemProfileRate (bytes per heap sample)")
	senders := flag.Int("senders", 20, "goroutines blocked forever on a channel send")
	selects := flag.Int("selects", 5, "goroutines blocked forever in select {}")
	workers := flag.Int("workers", 7, "labelled goroutines waiting on a reachable channel")
	leakEvery := flag.Duration("leak-every", 0, "leak one more blocked sender this often (0 = never)")
	prefix := flag.String("alt-prefix", "/internal/prof", "second path prefix that also serves pprof")
	flag.Parse()

	// Record every allocation made while the known heap is set up, so the profile
	// holds exactly what was retained. In Go 1.19 a change of MemProfileRate does
	// not reset the per-P countdown to the next sample, drawn at start from the
	// 512 KiB default, so with the rate set only here the first allocations could
	// go unsampled (one run saw 43 of retainHeap's 64 buffers). Rate 1 samples
	// regardless of that countdown, and each sample draws the next countdown from
	// the rate in force, so the rate set after this holds from then on.
	runtime.MemProfileRate = 1
	retainHeap(64, 64<<10)
	retainViaInlined(32, 32<<10)
	for i := 0; i < 8; i++ {
		recursiveAlloc(5, 16<<10)
	}
	runtime.MemProfileRate = *rate
	// A heap profile shows what the last completed collections saw, up to two cycles
	// behind; a quiet program may not collect again for minutes. Two collections now
	// make the first profile show everything retained above.
	runtime.GC()
	runtime.GC()
	for i := 0; i < *senders; i++ {
		blockedSender()
	}
	for i := 0; i < *selects; i++ {
		go selectForever()
	}
	for i := 0; i < *workers; i++ {
		go labeledWorker(context.Background())
	}
	if *leakEvery > 0 {
		leaking.Store(true)
		go steadyLeak(*leakEvery)
	}

	// The same pprof handlers under a second prefix, for targets that mount them elsewhere.
	alt := strings.TrimSuffix(*prefix, "/") + "/"
	http.Handle(alt, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r2 := r.Clone(r.Context())
		r2.URL.Path = "/debug/pprof/" + strings.TrimPrefix(r.URL.Path, alt)
		http.DefaultServeMux.ServeHTTP(w, r2)
	}))
	http.HandleFunc("/leak/stop", func(w http.ResponseWriter, r *http.Request) {
		leaking.Store(false)
		fmt.Fprintln(w, "stopped")
	})
	http.HandleFunc("/leak/start", func(w http.ResponseWriter, r *http.Request) {
		leaking.Store(true)
		fmt.Fprintln(w, "started")
	})

	http.HandleFunc("/churn", func(w http.ResponseWriter, r *http.Request) {
		var depths []int
		for _, f := range strings.Split(r.URL.Query().Get("depths"), ",") {
			if f == "" {
				continue
			}
			d, err := strconv.Atoi(f)
			if err != nil || d < 0 || d > 1000 {
				http.Error(w, "depths: comma-separated integers from 0 to 1000", http.StatusBadRequest)
				return
			}
			depths = append(depths, d)
		}
		setChurn(depths)
		fmt.Fprintf(w, "churning %d stacks\n", len(depths))
	})

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("listening on http://%s\n", ln.Addr())
	if err := http.Serve(ln, nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
