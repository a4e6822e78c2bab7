package cloudtest

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Proxy is a loopback TCP proxy to a server, for fault tests: Cut closes its
// listener and every connection through it (clients see connection refused
// and resets, as when a cable is pulled), Restore listens again on the same
// port. It is closed at the end of the test.
type Proxy struct {
	// Addr is "127.0.0.1:PORT", where clients connect instead of the server.
	Addr string

	t      testing.TB
	target string

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]bool
	wg    sync.WaitGroup
}

// StartProxy starts a TCP proxy to target ("host:port").
func StartProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("cloudtest: proxy listen: %v", err)
	}
	p := &Proxy{Addr: ln.Addr().String(), t: t, target: target, conns: map[net.Conn]bool{}}
	p.serve(ln)
	t.Cleanup(func() { p.Cut(); p.wg.Wait() })
	return p
}

func (p *Proxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				p.pipe(c)
			}()
		}
	}()
}

func (p *Proxy) track(c net.Conn, on bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if on && p.ln == nil {
		return false
	}
	if on {
		p.conns[c] = true
	} else {
		delete(p.conns, c)
	}
	return true
}

func (p *Proxy) pipe(c net.Conn) {
	defer c.Close()
	up, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		return
	}
	defer up.Close()
	if !p.track(c, true) || !p.track(up, true) {
		return
	}
	defer p.track(c, false)
	defer p.track(up, false)
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go cp(up, c)
	go cp(c, up)
	<-done
	<-done
}

// Cut closes the listener and every connection through the proxy. Cut on a
// cut proxy does nothing.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln == nil {
		return
	}
	p.ln.Close()
	p.ln = nil
	for c := range p.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0) // RST, like a dead path
		}
		c.Close()
	}
	clear(p.conns)
}

// Restore listens on the proxy's port again. It fails the test if the port
// cannot be bound within 10 s; call it from the test's goroutine.
func (p *Proxy) Restore() {
	p.t.Helper()
	deadline := time.Now().Add(restartTimeout)
	for {
		ln, err := net.Listen("tcp", p.Addr)
		if err == nil {
			p.serve(ln)
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("cloudtest: proxy restore on %s: %v", p.Addr, err)
		}
		time.Sleep(probeInterval)
	}
}

// FaultProxy is a loopback HTTP reverse proxy to a server that can answer
// requests itself with an error status or delay them, for fault tests. It
// passes the Host header through, so S3 signatures made for its address stay
// valid. It counts the requests it receives.
type FaultProxy struct {
	// URL is "http://127.0.0.1:PORT", Addr "127.0.0.1:PORT".
	URL, Addr string

	mu       sync.Mutex
	fault    func(r *http.Request) (status int, delay time.Duration)
	requests atomic.Int64
}

// StartFaultProxy starts an HTTP proxy to target ("host:port", plain HTTP).
func StartFaultProxy(t testing.TB, target string) *FaultProxy {
	t.Helper()
	u := &url.URL{Scheme: "http", Host: target}
	rp := httputil.NewSingleHostReverseProxy(u)
	tr := &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 16}
	rp.Transport = tr
	rp.ErrorLog = nil
	f := &FaultProxy{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("cloudtest: fault proxy listen: %v", err)
	}
	f.Addr = ln.Addr().String()
	f.URL = "http://" + f.Addr
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.requests.Add(1)
		f.mu.Lock()
		fault := f.fault
		f.mu.Unlock()
		if fault != nil {
			status, delay := fault(r)
			if delay > 0 {
				select {
				case <-time.After(delay):
				case <-r.Context().Done():
					return
				}
			}
			if status != 0 {
				io.Copy(io.Discard, r.Body)
				w.Header().Set("Content-Type", "application/xml")
				w.WriteHeader(status)
				io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code><Message>injected by cloudtest</Message></Error>`)
				return
			}
		}
		rp.ServeHTTP(w, r)
	})}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Logf("cloudtest: fault proxy: %v", err)
		}
	}()
	t.Cleanup(func() { srv.Close(); tr.CloseIdleConnections() })
	return f
}

// SetFault makes fn decide each request: a non-zero status is answered by the
// proxy (with an S3 error body), a delay is waited first; (0, 0) forwards.
// nil forwards everything.
func (f *FaultProxy) SetFault(fn func(r *http.Request) (status int, delay time.Duration)) {
	f.mu.Lock()
	f.fault = fn
	f.mu.Unlock()
}

// Requests is the number of requests received so far.
func (f *FaultProxy) Requests() int64 { return f.requests.Load() }
