package main

// dsrctl capture: a live capture of a VIP's packets from the running data
// plane (POST /api/v1/captures, then its pcap).

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"

	v1 "github.com/dsrlb/dsrlb/api/v1"
)

func (c *apiCmd) capture() error {
	if len(c.args) != 0 || c.captureReq.VIP == "" || c.pcapFile == "" {
		return usageError("usage: dsrctl capture --vip V [--backend B] [--count N] [--duration D] [--snaplen S] -w FILE.pcap")
	}
	raw, err := c.call(http.MethodPost, "/api/v1/captures", c.captureReq)
	if err != nil {
		return err
	}
	var st v1.CaptureStatus
	if err := json.Unmarshal(raw, &st); err != nil {
		return fmt.Errorf("POST /api/v1/captures: bad response: %w", err)
	}
	fmt.Fprintf(c.errOut, "capture %s: packets to %s%s, up to %d packets or %s\n", st.ID, st.VIP,
		map[bool]string{true: " sent to " + st.Backend, false: ""}[st.Backend != ""], st.Count, st.Duration)
	path := "/api/v1/captures/" + url.PathEscape(st.ID)
	// The pcap comes when the capture ends: no overall client timeout.
	req, err := http.NewRequest(http.MethodGet, c.api+path+"/pcap", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	wait := *c.client
	wait.Timeout = 0
	resp, err := wait.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return fmt.Errorf("GET %s/pcap: %s: %s", path, resp.Status, strings.TrimSpace(string(b)))
	}
	f, err := os.Create(c.pcapFile)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return fmt.Errorf("GET %s/pcap: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	if _, err := c.fetch(path, &st); err != nil {
		return err
	}
	fmt.Fprintf(c.out, "%s: %d packets (received and, when forwarded, sent), %d lost; %s\n", c.pcapFile, st.Packets, st.Lost, st.Reason)
	return nil
}
