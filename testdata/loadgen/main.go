// Command loadgen is the Go service pprof-exporter's benchmarks scrape: it parks N
// goroutines across M distinct stacks, holds some heap in a few functions, and
// serves a small CPU-bound handler (/work) whose latency shows whether scraping it
// costs it anything. net/http/pprof is served on the same listener, as it usually is.
//
// Stacks are made distinct by the path a goroutine takes through ten non-inlined
// functions (main.hop0 ... main.hop9), one per decimal digit of its stack number, so
// M stacks need ceil(log10 M) hops and every stack has its own sequence of names.
//
// It prints "listening on http://ADDR" once the socket is bound.
package main

import (
	"crypto/sha256"
	"flag"
	"fmt"
	"net"
	"net/http"
	_ "net/http/pprof"
	"os"
	"strconv"
	"sync"
)

var (
	park    = make(chan struct{})
	hops    [10]func(path []int)
	heldMu  sync.Mutex
	held    [][]byte
	payload = make([]byte, 4096)
)

func init() {
	hops = [10]func(path []int){hop0, hop1, hop2, hop3, hop4, hop5, hop6, hop7, hop8, hop9}
}

func next(path []int) {
	if len(path) == 0 {
		<-park
		return
	}
	hops[path[0]](path[1:])
}

//go:noinline
func hop0(path []int) { next(path) }

//go:noinline
func hop1(path []int) { next(path) }

//go:noinline
func hop2(path []int) { next(path) }

//go:noinline
func hop3(path []int) { next(path) }

//go:noinline
func hop4(path []int) { next(path) }

//go:noinline
func hop5(path []int) { next(path) }

//go:noinline
func hop6(path []int) { next(path) }

//go:noinline
func hop7(path []int) { next(path) }

//go:noinline
func hop8(path []int) { next(path) }

//go:noinline
func hop9(path []int) { next(path) }

// digits writes stack number s as `width` decimal digits, most significant first.
func digits(s, width int) []int {
	path := make([]int, width)
	for i := width - 1; i >= 0; i-- {
		path[i] = s % 10
		s /= 10
	}
	return path
}

//go:noinline
func retainSmall(n int) {
	for i := 0; i < n; i++ {
		keep(make([]byte, 512))
	}
}

//go:noinline
func retainLarge(n int) {
	for i := 0; i < n; i++ {
		keep(make([]byte, 64<<10))
	}
}

func keep(b []byte) {
	heldMu.Lock()
	held = append(held, b)
	heldMu.Unlock()
}

// work is the measured handler: a fixed amount of hashing and a small allocation, so
// its latency moves with CPU and GC pressure in the process.
func work(w http.ResponseWriter, _ *http.Request) {
	sum := sha256.Sum256(payload)
	for i := 0; i < 15; i++ {
		sum = sha256.Sum256(append(sum[:], payload[:256]...))
	}
	w.Header().Set("Content-Type", "text/plain")
	fmt.Fprintf(w, "%x\n", sum[:8])
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	goroutines := flag.Int("goroutines", 10000, "parked goroutines")
	stacks := flag.Int("stacks", 1000, "distinct stacks they are spread across")
	flag.Parse()
	if *stacks < 1 || *goroutines < 0 {
		fmt.Fprintln(os.Stderr, "loadgen: -stacks must be >= 1 and -goroutines >= 0")
		os.Exit(2)
	}
	width := len(strconv.Itoa(*stacks - 1))
	for g := 0; g < *goroutines; g++ {
		go next(digits(g%*stacks, width))
	}
	retainSmall(2000)
	retainLarge(64)

	http.HandleFunc("/work", work)
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
	fmt.Printf("listening on http://%s\n", ln.Addr())
	if err := http.Serve(ln, nil); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}
