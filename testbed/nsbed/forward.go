package nsbed

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"sync"
)

// Forward makes the appliance's API, which listens on the loopback of its
// namespace, reachable from namespace from (the host's if nil): it listens
// on a free port of from's loopback and pipes every connection to the
// API, dialled from inside the appliance's namespace. It returns the base
// URL in from (http://127.0.0.1:PORT) and a stop function that closes the
// listener and every connection. The console's tests run a browser in a
// namespace of its own, with nothing but loopback, and reach the API
// through it.
func (a *Appliance) Forward(from *NS) (string, func(), error) {
	u, err := url.Parse(a.API)
	if err != nil {
		return "", nil, fmt.Errorf("nsbed: API URL %q: %w", a.API, err)
	}
	listen := net.Listen
	if from != nil {
		listen = from.Listen
	}
	ln, err := listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	track := func(c net.Conn, add bool) bool {
		mu.Lock()
		defer mu.Unlock()
		if add && ctx.Err() != nil {
			return false
		}
		if add {
			conns[c] = true
		} else {
			delete(conns, c)
		}
		return true
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				up, err := a.NS.DialContext(ctx, "tcp", u.Host)
				if err != nil {
					return
				}
				defer up.Close()
				if !track(c, true) || !track(up, true) {
					return
				}
				defer track(c, false)
				defer track(up, false)
				done := make(chan struct{}, 2)
				go func() { io.Copy(up, c); done <- struct{}{} }()
				go func() { io.Copy(c, up); done <- struct{}{} }()
				<-done
			}()
		}
	}()
	stop := func() {
		cancel()
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	}
	return "http://" + ln.Addr().String(), stop, nil
}
