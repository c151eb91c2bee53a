// Command authtarget serves net/http/pprof behind the protections a production Go
// service may put in front of it: TLS (optionally requiring a client certificate
// signed by a given CA), and a bearer token or basic-auth credentials. It counts the
// requests it receives, so tests can tell whether a client connected at all.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	_ "net/http/pprof"
	"os"
	"sync/atomic"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	certFile := flag.String("cert", "", "PEM server certificate (TLS when set)")
	keyFile := flag.String("key", "", "PEM server key")
	clientCA := flag.String("client-ca", "", "PEM CA that client certificates must chain to (required when set)")
	token := flag.String("token", "", "bearer token required on every request")
	user := flag.String("user", "", "basic-auth user required on every request")
	password := flag.String("password", "", "basic-auth password")
	goroutines := flag.Int("goroutines", 5, "idle goroutines parked on a channel, so the profile has a known stack")
	flag.Parse()

	block := make(chan struct{})
	for i := 0; i < *goroutines; i++ {
		go parked(block)
	}

	var requests int64
	pprofMux := http.DefaultServeMux
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		atomic.AddInt64(&requests, 1)
		if r.URL.Path == "/requests" {
			fmt.Fprintln(w, atomic.LoadInt64(&requests)-1)
			return
		}
		if *token != "" && r.Header.Get("Authorization") != "Bearer "+*token {
			http.Error(w, "missing or wrong bearer token", http.StatusUnauthorized)
			return
		}
		if *user != "" {
			u, p, ok := r.BasicAuth()
			if !ok || u != *user || p != *password {
				w.Header().Set("WWW-Authenticate", `Basic realm="pprof"`)
				http.Error(w, "missing or wrong basic auth", http.StatusUnauthorized)
				return
			}
		}
		pprofMux.ServeHTTP(w, r)
	})

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	scheme := "http"
	if *certFile != "" {
		scheme = "https"
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if *clientCA != "" {
			pem, err := os.ReadFile(*clientCA)
			if err != nil {
				log.Fatal(err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				log.Fatal("no certificates in ", *clientCA)
			}
			cfg.ClientCAs = pool
			cfg.ClientAuth = tls.RequireAndVerifyClientCert
		}
		srv.TLSConfig = cfg
	}
	fmt.Printf("listening on %s://%s\n", scheme, ln.Addr())
	if scheme == "https" {
		err = srv.ServeTLS(ln, *certFile, *keyFile)
	} else {
		err = srv.Serve(ln)
	}
	log.Fatal(err)
}

// parked waits forever; its stack is what the goroutine profile shows.
func parked(block chan struct{}) {
	<-block
}
