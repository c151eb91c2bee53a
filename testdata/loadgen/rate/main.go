// Command rate sends GET requests to one URL at a fixed rate, whatever the server's
// speed, and prints latency percentiles. Each request's latency is measured from the
// moment it was due, not from when a connection became free, so a server that stalls
// is charged for every request it held up (an open-loop load, unlike wrk's closed
// loop, which slows down with the server and under-reports its stalls).
//
// Output, one line: "requests N errors E p50_ms X p90_ms X p99_ms X p999_ms X max_ms X".
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"sync"
	"time"
)

func main() {
	url := flag.String("url", "", "URL to GET")
	rate := flag.Float64("rate", 1000, "requests per second")
	duration := flag.Duration("duration", 15*time.Second, "how long to send")
	conns := flag.Int("conns", 8, "concurrent connections (workers)")
	out := flag.String("out", "", "also append every latency, in microseconds, one per line, to this file")
	flag.Parse()
	if *url == "" || *rate <= 0 || *conns < 1 || *duration <= 0 {
		fmt.Fprintln(os.Stderr, "rate: -url is required; -rate, -conns and -duration must be positive")
		os.Exit(2)
	}
	tr := &http.Transport{MaxIdleConnsPerHost: *conns, MaxConnsPerHost: *conns}
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}

	total := int(*rate * duration.Seconds())
	due := make(chan time.Time, total)
	lat := make([][]time.Duration, *conns)
	errs := make([]int, *conns)
	var wg sync.WaitGroup
	for w := 0; w < *conns; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for at := range due {
				resp, err := client.Get(*url)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err != nil {
					errs[w]++
					continue
				}
				lat[w] = append(lat[w], time.Since(at))
			}
		}(w)
	}

	interval := time.Duration(float64(time.Second) / *rate)
	start := time.Now()
	for i := 0; i < total; i++ {
		at := start.Add(time.Duration(i) * interval)
		if d := time.Until(at); d > 0 {
			time.Sleep(d)
		}
		due <- at
	}
	close(due)
	wg.Wait()

	var all []time.Duration
	nerr := 0
	for w := range lat {
		all = append(all, lat[w]...)
		nerr += errs[w]
	}
	if len(all) == 0 {
		fmt.Fprintln(os.Stderr, "rate: no request succeeded")
		os.Exit(1)
	}
	if *out != "" {
		f, err := os.OpenFile(*out, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			fmt.Fprintln(os.Stderr, "rate:", err)
			os.Exit(1)
		}
		w := bufio.NewWriter(f)
		for _, d := range all {
			fmt.Fprintln(w, d.Microseconds())
		}
		if err := w.Flush(); err != nil {
			fmt.Fprintln(os.Stderr, "rate:", err)
			os.Exit(1)
		}
		f.Close()
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	q := func(p float64) float64 {
		i := int(p * float64(len(all)-1))
		return float64(all[i]) / float64(time.Millisecond)
	}
	fmt.Printf("requests %d errors %d p50_ms %.3f p90_ms %.3f p99_ms %.3f p999_ms %.3f max_ms %.3f\n",
		len(all), nerr, q(0.5), q(0.9), q(0.99), q(0.999), q(1))
}
